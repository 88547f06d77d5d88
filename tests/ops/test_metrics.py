"""The EMF metrics each outcome emits, read from what Powertools prints, through the real handlers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from smartsheet_oauth.platform.observability import metrics

from infra.local.template_model import Template
from tests.ops.conftest import Recorded
from tests.ops.metric_math import NoDataPoint, alarm_value, evaluate
from tests.ops.support import FLOOD, metric_names, metric_totals

QUIET = {"refresh_ok": 0, "refresh_transient": 0, "refresh_needs_reauth": 0, "refresh_lease_busy": 0}

CASES = [
    ("login_started", {"login_started": 1}),
    ("callback_success", {"callback_success": 1}),
    ("callback_denied", {"callback_denied": 1}),
    ("callback_bad_state", {"callback_bad_state": 1}),
    ("callback_invalid_code", {"callback_invalid_code": 1, "callback_success": 1}),
    ("callback_smartsheet_error", {"callback_smartsheet_error": 1}),
    ("callback_smartsheet_unavailable", {"callback_smartsheet_unavailable": 1}),
    ("callback_storage_error", {"callback_storage_error": 1}),
    ("callback_internal_error", {"callback_internal_error": 1}),
    ("events_publish_failed", {"events_publish_failed": 1}),
    ("refresh_ok", QUIET | {"refresh_ok": 1}),
    ("refresh_transient", QUIET | {"refresh_transient": 1}),
    ("refresh_needs_reauth", QUIET | {"refresh_needs_reauth": 1}),
    ("refresh_lease_busy", QUIET | {"refresh_lease_busy": 1}),
    ("refresh_raced", QUIET | {"refresh_raced": 1}),
    ("refresh_lost_in_flight", QUIET | {"refresh_lost": 1}),
    ("refresh_error", QUIET | {"refresh_error": 1}),
]


@pytest.mark.parametrize(("scenario", "expected"), CASES, ids=[case[0] for case in CASES])
def test_each_outcome_is_counted_under_its_own_name(
    recorded: Recorded, scenario: str, expected: dict[str, int]
) -> None:
    totals = metric_totals(recorded[scenario])

    family = scenario.split("_", maxsplit=1)[0] + "_"  # login_, callback_, events_ or refresh_
    counted = {name: value for name, value in totals.items() if name.startswith(family) and value}
    assert counted == {name: value for name, value in expected.items() if value}
    for name, value in expected.items():
        assert totals[name] == value, name  # zeros too: the refresh outcomes are emitted on every sweep


def test_every_metric_has_one_low_cardinality_dimension(recorded: Recorded) -> None:
    blobs = [blob for scenario in recorded.values() for blob in scenario]

    assert len(blobs) > 20
    for blob in blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == metrics.namespace
        assert directive["Dimensions"] == [["service"]]
        assert blob["service"] == metrics.service
        # Nothing but the metrics themselves: no connection id or other per-user value rides along.
        assert set(blob) - {"_aws", "service"} == {metric["Name"] for metric in directive["Metrics"]}


def test_a_sweep_that_runs_out_of_time_reports_what_it_left_behind(recorded: Recorded) -> None:
    totals = metric_totals(recorded["sweep_backlog"])  # two due, no time to reach either

    assert totals["sweep_backlog"] == 2
    assert totals["sweep_dispatched"] == 0
    assert "sweep_duration" in totals


def test_a_full_sweep_leaves_no_backlog_and_reports_how_late_the_most_overdue_connection_was(
    recorded: Recorded,
) -> None:
    totals = metric_totals(recorded["full_sweep"])

    assert totals["sweep_backlog"] == 0
    assert totals["sweep_dispatched"] == 2
    assert 3600 <= totals["sweep_lag"] <= 3660  # ADA waited an hour past its refresh time
    # No step of the sweep reads the whole table: no count by status (the admin CLI's health counts, when asked).
    assert not [name for name in totals if name.startswith("connections_")]


def test_a_sweep_out_of_time_still_reports_its_backlog(recorded: Recorded) -> None:
    totals = metric_totals(recorded["sweep_out_of_time"])

    assert totals["sweep_backlog"] == 1
    assert totals["sweep_dispatched"] == 0


def test_every_sweep_emits_its_heartbeat_first_thing(recorded: Recorded) -> None:
    """The "sweep did not run" alarm waits for sweep_dispatched: it is the first document every sweep prints,
    flushed before anything else happens, whatever happens next."""
    for scenario in ("refresh_ok", "sweep_backlog", "sweep_out_of_time", "refresh_error", "sweep_skipped"):
        sweeps = [blob for blob in recorded[scenario] if metric_names([blob]) & {"sweep_dispatched", "sweep_skipped"}]
        first = sweeps[0]  # the scenario's sign-ins printed their own documents before
        assert metric_totals([first]) == {"sweep_dispatched": 0}, scenario


def test_a_sweep_that_finds_another_running_does_nothing_and_says_so(recorded: Recorded) -> None:
    totals = metric_totals(recorded["sweep_skipped"])

    assert totals["sweep_skipped"] == 1
    assert totals["sweep_dispatched"] == 0
    assert "sweep_duration" in totals
    assert not [name for name in totals if name.startswith("refresh_")]


def callback_errors_alarm() -> dict[str, Any]:
    """template.yaml's callback-errors alarm: the one alarm reading callback_success."""
    alarm: dict[str, Any]
    (alarm,) = [
        resource["Properties"]
        for resource in Template.load().resources_of_type("AWS::CloudWatch::Alarm").values()
        if any(
            query.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "callback_success"
            for query in resource["Properties"].get("Metrics", [])
        )
    ]
    return alarm


def test_a_flood_of_made_up_codes_neither_trips_nor_masks_the_callback_errors_alarm(recorded: Recorded) -> None:
    """Anyone can start sign-ins of their own and bring each back with code=abc: those callbacks are counted, but
    the alarm's ratio is what the other callbacks of the period make it, flood or not."""
    alarm = callback_errors_alarm()
    period: Counter[str] = Counter()  # one five-minute period: every other callback outcome, errors among them
    for scenario, blobs in recorded.items():
        if scenario.startswith("callback_"):
            period.update(metric_totals(blobs))
    flood = metric_totals(recorded["code_flood"])

    before = alarm_value(alarm, period)
    after = alarm_value(alarm, period + flood)

    assert 0 < before < 1  # the period has errors and successes, so the ratio could move either way
    assert after == before, f"the flood moved the alarm's ratio from {before:.2f} to {after:.2f}"
    assert {name: value for name, value in flood.items() if name.startswith("callback_") and value} == {
        "callback_invalid_code": FLOOD
    }


def test_the_metric_math_evaluator_fills_missing_data_and_refuses_what_it_does_not_know() -> None:
    assert evaluate("IF(FILL(a, 0) > 0, FILL(a, 0) / (FILL(a, 0) + b), 0)", {"a": 1, "b": 3}) == 0.25
    assert evaluate("IF(FILL(a, 0) > 0, FILL(a, 0) / (FILL(a, 0) + b), 0)", {"b": 3}) == 0
    with pytest.raises(NoDataPoint):
        evaluate("a + 1", {})
    with pytest.raises(ValueError, match="does not know"):
        evaluate("RATE(a)", {"a": 1})
