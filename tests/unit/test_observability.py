"""The shared Logger's debug sampling: off at the template's default rate "0" (no per-invocation re-levelling)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from smartsheet_oauth.observability import debug_sampling_rate

from tests.support.events import LambdaContext


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), (" ", None), ("0", 0), ("0.0", 0), ("0.05", "0.05"), ("1", "1"), ("often", "often")],
)
def test_the_sample_rate_is_off_at_zero_and_otherwise_left_to_powertools(value: str | None, expected: object) -> None:
    assert debug_sampling_rate(value) == expected


def _relevels_per_invocation(rate: str, monkeypatch: pytest.MonkeyPatch) -> int:
    logger = Logger(service="sampling-test", sampling_rate=debug_sampling_rate(rate))  # type: ignore[arg-type]
    levels: list[int] = []
    real = logging.Logger.setLevel

    def counted(self: logging.Logger, level: Any) -> None:
        if self is logger._logger:
            levels.append(level)
        real(self, level)

    monkeypatch.setattr(logging.Logger, "setLevel", counted)

    @logger.inject_lambda_context
    def handler(event: dict[str, Any], context: Any) -> None:
        return None

    for _ in range(3):
        handler({}, LambdaContext())
    return len(levels)


def test_rate_zero_does_not_relevel_the_logger_on_warm_invocations(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _relevels_per_invocation("0", monkeypatch) == 0


def test_a_real_rate_still_resamples_each_warm_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Powertools' behaviour the broker keeps when sampling is asked for: a fresh draw per invocation.
    assert _relevels_per_invocation("0.5", monkeypatch) >= 2
