"""The shared Logger's debug sampling: off at the template's default rate "0" (no per-invocation re-levelling); and
metrics flushed mid-sweep keep their own lines while worker threads log."""

from __future__ import annotations

import json
import logging
import threading
from contextlib import redirect_stdout
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from smartsheet_oauth.platform.observability import add_metric_safely, debug_sampling_rate, flush_metrics_now, logger

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


class _SharedStdout:
    """One stream for the Logger and for print(), as on Lambda. The first time a text arrives without its newline
    (print() writes a line's text, then its newline), another thread logs a record right then."""

    def __init__(self) -> None:
        self.text = ""
        self.interloper: threading.Thread | None = None

    def write(self, text: str) -> int:
        self.text += text
        if self.interloper is None and not text.endswith("\n"):
            self.interloper = threading.Thread(target=lambda: logger.info("a worker thread logs"))
            self.interloper.start()
            self.interloper.join(0.3)  # it writes now, unless something holds it back
        return len(text)

    def flush(self) -> None:
        pass


def test_a_flushed_metric_document_keeps_its_line_while_other_threads_log(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _SharedStdout()
    monkeypatch.setattr(logger.registered_handler, "stream", shared)
    add_metric_safely("refresh_lost", "Count", 1)

    with redirect_stdout(shared):
        flush_metrics_now()
    assert shared.interloper is not None
    shared.interloper.join(5)

    lines = [line for line in shared.text.splitlines() if line]
    documents = [json.loads(line) for line in lines]  # each line one JSON document, none run together
    assert [document.get("refresh_lost") for document in documents] == [[1.0], None]
    assert documents[1]["message"] == "a worker thread logs"
