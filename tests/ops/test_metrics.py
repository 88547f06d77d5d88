"""The EMF metrics each outcome emits, read from what Powertools prints, through the real handlers."""

from __future__ import annotations

import pytest
from smartsheet_oauth.observability import metrics

from tests.ops.conftest import Recorded
from tests.ops.support import metric_names, metric_totals

QUIET = {"refresh_ok": 0, "refresh_transient": 0, "refresh_needs_reauth": 0, "refresh_lease_busy": 0}

CASES = [
    ("login_started", {"login_started": 1}),
    ("callback_success", {"callback_success": 1}),
    ("callback_denied", {"callback_denied": 1}),
    ("callback_bad_state", {"callback_bad_state": 1}),
    ("callback_smartsheet_error", {"callback_smartsheet_error": 1, "callback_success": 1}),
    ("callback_smartsheet_unavailable", {"callback_smartsheet_unavailable": 1}),
    ("callback_storage_error", {"callback_storage_error": 1}),
    ("callback_internal_error", {"callback_internal_error": 1}),
    ("events_publish_failed", {"events_publish_failed": 1}),
    ("refresh_ok", QUIET | {"refresh_ok": 1}),
    ("refresh_transient", QUIET | {"refresh_transient": 1}),
    ("refresh_needs_reauth", QUIET | {"refresh_needs_reauth": 1}),
    ("refresh_lease_busy", QUIET | {"refresh_lease_busy": 1}),
    ("refresh_raced", QUIET | {"refresh_raced": 1}),
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
