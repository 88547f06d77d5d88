"""The window a grant can be lost in (from a token request leaving to the new pair's first durable write), and the
rule that no part of the broker ends a worker inside it: the Smartsheet call's timeouts, the lease, the sweep's
margin and the functions' timeouts agree (refresh_window.py)."""

from __future__ import annotations

from typing import Any

import pytest
from smartsheet_oauth.config import get_config, load_config
from smartsheet_oauth.domain.errors import ConfigError
from smartsheet_oauth.flows import on_demand, refresh_window
from smartsheet_oauth.flows.deps import API_MARGIN_SECONDS, API_TIMEOUT_SECONDS
from smartsheet_oauth.platform import aws
from smartsheet_oauth.smartsheet.client import REFRESH_RETRY_PAUSE_SECONDS, Timeouts, _refresh_retry

from infra.scripts.sam_translate import TEMPLATE, load_template

BASE = {
    "STATE_TABLE_NAME": "states",
    "CONNECTIONS_TABLE_NAME": "connections",
    "APP_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf",
    "TOKEN_SECRET_PREFIX": "broker/connections/",
    "OAUTH_SCOPES": "READ_SHEETS",
    "SMARTSHEET_CLIENT_ID": "app",
}
DEFAULT = Timeouts()


def shortest_timeout(function: str) -> float:
    """A function's timeout in template.yaml; for a parameter, the least it accepts."""
    template: dict[str, Any] = load_template(TEMPLATE)
    value = template["Resources"][function]["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
    if isinstance(value, dict):
        return float(template["Parameters"][value["Ref"]]["MinValue"])
    return float(value)


def test_the_window_is_one_attempts_answer_and_one_save() -> None:
    assert DEFAULT.attempt_seconds == DEFAULT.connect + DEFAULT.read
    # One attempt of the AWS clients' calls, as botocore's configuration has them.
    config = aws._BOTO_CONFIG
    assert getattr(config, "connect_timeout") + getattr(config, "read_timeout") == refresh_window.SAVE_SECONDS  # noqa: B009
    assert refresh_window.window_seconds(DEFAULT) == DEFAULT.attempt_seconds + refresh_window.SAVE_SECONDS


def test_a_lease_outlasts_its_margin_the_work_before_the_send_and_the_window() -> None:
    needed = (
        refresh_window.LEASE_MARGIN_SECONDS
        + refresh_window.BEFORE_SEND_SECONDS
        + refresh_window.window_seconds(DEFAULT)
    )
    assert needed <= refresh_window.MIN_LEASE_SECONDS
    assert load_config(BASE).lease_seconds >= refresh_window.MIN_LEASE_SECONDS  # the default
    assert load_config({**BASE, "REFRESH_LEASE_SECONDS": str(refresh_window.MIN_LEASE_SECONDS)}).lease_seconds > 0
    with pytest.raises(ConfigError, match="REFRESH_LEASE_SECONDS"):
        load_config({**BASE, "REFRESH_LEASE_SECONDS": str(refresh_window.MIN_LEASE_SECONDS - 1)})


def test_the_sweep_stops_dispatching_early_enough_for_the_last_refresh_to_send_and_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in BASE.items():  # the handler reads its configuration at import
        monkeypatch.setenv(name, value)
    get_config.cache_clear()
    from refresh.app import SAFETY_MARGIN_SECONDS

    get_config.cache_clear()

    assert SAFETY_MARGIN_SECONDS == refresh_window.SWEEP_MARGIN_SECONDS
    assert refresh_window.FINAL_MARGIN_SECONDS + refresh_window.window_seconds(DEFAULT) <= SAFETY_MARGIN_SECONDS
    # The refresh function lives long enough to dispatch at all, past its margin.
    assert shortest_timeout("RefreshFunction") > 2 * SAFETY_MARGIN_SECONDS


def test_an_on_demand_refresh_can_send_inside_the_management_functions_time() -> None:
    """API Gateway gives 30 s, the function 29: a request that starts at once has time, after its margins and the
    work before the send, for the window; the pace is waited for only as long as that still holds."""
    request_seconds = min(API_TIMEOUT_SECONDS, shortest_timeout("ManagementFunction")) - API_MARGIN_SECONDS
    spare = refresh_window.seconds_to_spare(request_seconds, DEFAULT, before_send=on_demand.BEFORE_SEND_SECONDS)
    assert spare >= 0
    # A request that waited that long has nothing left to spare, and one that waited longer cannot send.
    waited = refresh_window.seconds_to_spare(
        request_seconds - spare, DEFAULT, before_send=on_demand.BEFORE_SEND_SECONDS
    )
    assert waited == pytest.approx(0.0)


def test_the_refresh_retries_fit_the_pause_the_window_counts_with() -> None:
    retry = _refresh_retry()
    assert retry.backoff_max + retry.backoff_jitter <= REFRESH_RETRY_PAUSE_SECONDS
    assert retry.retry_after_max is not None
    assert retry.retry_after_max <= REFRESH_RETRY_PAUSE_SECONDS
    # Only what Smartsheet cannot have carried out is retried: never a read (an answer that did not come).
    assert retry.read == 0
    assert set(retry.status_forcelist or ()) == {429}


def test_the_answer_must_come_with_a_save_to_spare() -> None:
    assert refresh_window.answer_within(60.0) == 60.0 - refresh_window.SAVE_SECONDS
