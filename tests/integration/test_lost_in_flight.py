"""A refresh that may have reached Smartsheet and never came to an end (its worker died, its answer never arrived)
is known as such: the lease marks it in flight on the record, and the first refusal after it is the grant lost by us,
not a user's ended grant: outcome lost_in_flight, refresh_lost, the needs-reauth event with that reason, the
connection needs_reauth at once, and nothing counted by the grant guard. Against mock_aws and the emulator."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.flows import refusals
from smartsheet_oauth.flows.refresh import refresh_connection
from smartsheet_oauth.flows.sweep_metrics import SweepFigures
from smartsheet_oauth.smartsheet.client import SmartsheetClient, Timeouts

from infra.local.smartsheet_emulator import DEFAULT_APP
from tests.integration.test_refresh import FailingVault, FakeTime, deps, due_now, refreshes, signed_in_and_due
from tests.management.conftest import EventSink, make_sink
from tests.ops.support import emf_blobs, metric_totals
from tests.support.broker import Broker, pending_tokens_key_arn
from tests.support.fixtures import BOTH_STORES

# Every test here runs against each token store (TokenStore=secretsmanager and dynamodb).
pytestmark = BOTH_STORES

ADA, GRACE, ALAN = 4583173393803140, 6812335718217604, 9007199254740993


@pytest.fixture
def refresher(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    monkeypatch.setenv("PENDING_TOKENS_KEY_ID", pending_tokens_key_arn())
    services.reset()
    yield broker
    services.reset()


@pytest.fixture
def sink(refresher: Broker) -> EventSink:
    import boto3

    return make_sink(boto3.session.Session(region_name="us-east-1"))


def impatient(broker: Broker) -> SmartsheetClient:
    """A client that gives up waiting for an answer after half a second (the default waits 10 s)."""
    return SmartsheetClient(
        api_base_url=broker.emulator.api_base_url,
        client_id=DEFAULT_APP.client_id,
        client_secret=DEFAULT_APP.client_secret,
        timeouts=Timeouts(connect=1.0, read=0.5),
    )


def answer_lost(broker: Broker, connection_id: int) -> str:
    """One refresh whose request Smartsheet carries out (it rotates the pair) and whose answer never arrives."""
    broker.emulator.set_faults(next_outcomes=["timeout"], timeout_processes=True)
    try:
        return refresh_connection(due_now(broker, connection_id), deps(smartsheet=impatient(broker)))
    finally:
        broker.emulator.reset_faults()


def died_in_flight(broker: Broker, connection_id: int, *, rotated: bool = True) -> None:
    """A worker took the lease and died: the lease runs out, its in-flight marker stays. With `rotated`, its token
    request had reached Smartsheet, which rotated the pair (the new one died with the worker)."""
    store = services.connection_store()
    due = due_now(broker, connection_id)
    now = int(time.time())
    store.acquire_lease(
        str(connection_id), generation=due.generation, owner="dead-worker", now=now - 200, lease_seconds=60
    )
    if rotated:
        impatient(broker).refresh(broker.tokens(connection_id)["refresh_token"])


def sweep_printing(broker: Broker) -> tuple[dict[str, Any], str]:
    printed = io.StringIO()
    with redirect_stdout(printed):
        report = broker.sweep()
    return report, printed.getvalue()


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """What the broker logged: level, message and the extra fields (outcome, reason, ...)."""
    return [{**record.__dict__, "level": record.levelname, "message": record.getMessage()} for record in caplog.records]


# -- a token answer that never arrives ---------------------------------------------------------------------------


def test_a_timed_out_refresh_stays_in_flight_and_the_next_refusal_is_a_grant_lost_by_us(
    refresher: Broker, sink: EventSink, caplog: pytest.LogCaptureFixture
) -> None:
    signed_in_and_due(refresher, ADA)
    sink.drain()

    first = answer_lost(refresher, ADA)

    record = refresher.connection(ADA)
    assert record is not None
    assert first == RefreshOutcome.TRANSIENT
    assert (record["status"], record["last_error"]) == ("active", "no_answer")
    assert record["in_flight_attempt"]  # Smartsheet may have rotated: the record says an attempt is in flight
    assert refresher.emulator.counts["token.refresh.ok"] == 1  # and it did
    sink.drain()

    refresher.make_due(ADA)
    report, printed = sweep_printing(refresher)

    assert report["outcomes"][RefreshOutcome.LOST_IN_FLIGHT] == 1
    assert report["outcomes"][RefreshOutcome.NEEDS_REAUTH] == 0
    record = refresher.connection(ADA)
    assert record is not None
    assert (record["status"], record["last_error"]) == ("needs_reauth", "lost_in_flight")
    assert "in_flight_attempt" not in record
    assert "refresh_due_at" not in record
    [event] = sink.drain()
    assert (event["detail-type"], event["detail"]["reason"]) == ("Connection Needs Reauth", "lost_in_flight")
    assert metric_totals(emf_blobs(printed))["refresh_lost"] == 1
    [critical] = [line for line in log_lines(caplog) if line["level"] == "CRITICAL"]
    assert (critical["outcome"], critical["connection_id"]) == (RefreshOutcome.LOST_IN_FLIGHT, str(ADA))


def test_a_timed_out_refresh_smartsheet_never_carried_out_is_refreshed_next_time_and_the_mark_goes(
    refresher: Broker,
) -> None:
    signed_in_and_due(refresher, ADA)
    refresher.emulator.set_faults(next_outcomes=["timeout"], timeout_processes=False)
    try:
        assert (
            refresh_connection(due_now(refresher, ADA), deps(smartsheet=impatient(refresher)))
            == RefreshOutcome.TRANSIENT
        )
    finally:
        refresher.emulator.reset_faults()
    assert (refresher.connection(ADA) or {}).get("in_flight_attempt")

    refresher.make_due(ADA)
    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.REFRESHED] == 1
    record = refresher.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert "in_flight_attempt" not in record
    assert "in_flight_since" not in record
    assert refresher.emulator.refresh_token_is_live(refresher.tokens(ADA)["refresh_token"])


# -- a worker that died ------------------------------------------------------------------------------------------


def test_a_worker_that_died_after_smartsheet_rotated_is_found_out_by_the_first_refusal(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    died_in_flight(refresher, ADA)

    outcome = refresh_connection(due_now(refresher, ADA), deps())

    assert outcome == RefreshOutcome.LOST_IN_FLIGHT
    record = refresher.connection(ADA)
    assert record is not None
    assert (record["status"], record["last_error"]) == ("needs_reauth", "lost_in_flight")


def test_a_worker_that_died_before_its_request_left_loses_nothing(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    died_in_flight(refresher, ADA, rotated=False)

    outcome = refresh_connection(due_now(refresher, ADA), deps())

    assert outcome == RefreshOutcome.REFRESHED
    record = refresher.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert "in_flight_attempt" not in record


def test_a_revoked_grant_after_a_dead_worker_is_the_users_doing_not_ours(refresher: Broker) -> None:
    """1132 names a live token: no attempt of ours spent it, so the refusal is a plain needs_reauth."""
    signed_in_and_due(refresher, ADA)
    died_in_flight(refresher, ADA, rotated=False)
    refresher.emulator.revoke_user(ADA)

    assert refresh_connection(due_now(refresher, ADA), deps()) == RefreshOutcome.NEEDS_REAUTH
    assert (refresher.connection(ADA) or {}).get("last_error") == "invalid_grant:1132"


def test_losses_in_flight_never_count_toward_the_grant_guard(
    refresher: Broker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Three grants lost by dead workers in one sweep, with the guard's threshold at 1 and nothing refreshed: all
    three are marked at their first refusal, none held back, and no line blames the app's credentials."""
    monkeypatch.setattr(refusals, "INVALID_GRANT_GUARD", 1)
    signed_in_and_due(refresher, ADA, GRACE, ALAN)
    for user in (ADA, GRACE, ALAN):
        died_in_flight(refresher, user)

    report, printed = sweep_printing(refresher)

    assert report["outcomes"][RefreshOutcome.LOST_IN_FLIGHT] == 3
    assert report["outcomes"][RefreshOutcome.TRANSIENT] == 0
    assert [(refresher.connection(u) or {}).get("status") for u in (ADA, GRACE, ALAN)] == ["needs_reauth"] * 3
    assert not [line for line in log_lines(caplog) if "held back" in line["message"]]
    assert metric_totals(emf_blobs(printed))["refresh_lost"] == 3


def test_the_guard_says_what_it_counted(
    refresher: Broker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(refusals, "INVALID_GRANT_GUARD", 1)
    signed_in_and_due(refresher, ADA, GRACE)
    refresher.emulator.expire_tokens(refresh=True)

    refresher.sweep()

    [held] = [line for line in log_lines(caplog) if line["level"] == "CRITICAL"]
    assert (held["refused"], held["refreshed"], held["reason"]) == (2, 0, "invalid_grant:1071")
    assert "check the app's credentials" not in held["message"]  # a guess it cannot make
    assert "1071" in held["message"]
    assert "in flight" in held["message"]


# -- the marker's own life ---------------------------------------------------------------------------------------


def test_a_failure_before_the_request_left_takes_its_own_marker_away_but_never_an_earlier_one(
    refresher: Broker,
) -> None:
    signed_in_and_due(refresher, ADA, GRACE)
    died_in_flight(refresher, GRACE, rotated=False)
    vault = FailingVault(services.token_vault())
    reads = vault.load

    def failing_load(secret_id: str) -> Any:
        from smartsheet_oauth.domain.errors import StorageError

        raise StorageError("vault.load", "ThrottlingException", transient=True)

    vault.load = failing_load  # type: ignore[method-assign]
    assert refresh_connection(due_now(refresher, ADA), deps(vault=vault)) == RefreshOutcome.TRANSIENT
    assert refresh_connection(due_now(refresher, GRACE), deps(vault=vault)) == RefreshOutcome.TRANSIENT
    vault.load = reads  # type: ignore[method-assign]

    assert "in_flight_attempt" not in (refresher.connection(ADA) or {})
    assert (refresher.connection(GRACE) or {}).get("in_flight_attempt") == "dead-worker"
    assert refreshes(refresher) == 0  # neither attempt reached Smartsheet


def test_a_pair_lost_when_the_record_refuses_its_needs_reauth_too_is_found_out_next_time(
    refresher: Broker,
) -> None:
    """Neither secret nor record can be written: the grant is lost and the record cannot say so yet. Its in-flight
    marker does: the next refresh finds the grant lost, and says so, once."""
    signed_in_and_due(refresher, ADA)
    vault = FailingVault(services.token_vault())
    store = services.connection_store()
    fake = FakeTime()

    def refused(*args: Any, **kwargs: Any) -> Any:
        from smartsheet_oauth.domain.errors import StorageError

        raise StorageError("connections", "ThrottlingException", transient=True)

    saved = store.keep_pending, store.mark_needs_reauth, store.record_transient_failure
    store.keep_pending = store.mark_needs_reauth = store.record_transient_failure = refused  # type: ignore[method-assign]
    try:
        outcome = refresh_connection(
            due_now(refresher, ADA), deps(vault=vault, monotonic=fake.monotonic, sleep=fake.sleep)
        )
    finally:
        store.keep_pending, store.mark_needs_reauth, store.record_transient_failure = saved  # type: ignore[method-assign]
    assert outcome == RefreshOutcome.LOST
    assert (refresher.connection(ADA) or {}).get("status") == "active"

    # Its lease runs out; the next sweep finds the grant lost.
    refresher.dynamodb.update_item(
        TableName=refresher.connections_table,
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": {"N": "0"}},
    )
    assert refresher.sweep()["outcomes"][RefreshOutcome.LOST_IN_FLIGHT] == 1
    assert (refresher.connection(ADA) or {}).get("status") == "needs_reauth"


# -- the window: no request without time for its answer and its save --------------------------------------------


def test_a_refresh_with_too_little_time_left_sends_nothing_and_stays_due(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    window = refresher.emulator  # only to count what reached Smartsheet

    outcome = refresh_connection(due_now(refresher, ADA), deps(), time_left=lambda: 20.0)

    assert outcome == RefreshOutcome.DEFERRED
    assert window.counts["token.refresh"] == 0
    record = refresher.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert record["refresh_due_at"] <= time.time()
    assert not {"lease_until", "lease_owner", "in_flight_attempt"} & set(record)


def test_a_refresh_with_just_enough_time_is_sent_once_without_retries(refresher: Broker) -> None:
    """Time for one attempt's answer and the save, not for a retry after a 429: Smartsheet is asked once."""
    signed_in_and_due(refresher, ADA)
    refresher.emulator.set_faults(next_outcomes=[4003])

    outcome = refresh_connection(due_now(refresher, ADA), deps(), time_left=lambda: 27.0)

    assert outcome == RefreshOutcome.TRANSIENT
    assert refresher.emulator.counts["token.refresh"] == 1
    assert "in_flight_attempt" not in (refresher.connection(ADA) or {})  # a 429 was refused unprocessed


def test_with_time_for_it_a_rate_limited_refresh_is_retried_within_the_call(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    refresher.emulator.set_faults(next_outcomes=[4003])

    assert refresh_connection(due_now(refresher, ADA), deps(), time_left=lambda: 300.0) == RefreshOutcome.REFRESHED
    assert refresher.emulator.counts["token.refresh"] == 2


def test_the_sweep_counts_a_lost_in_flight_grant_under_refresh_lost_and_a_deferred_refresh_apart() -> None:
    from smartsheet_oauth.flows.sweep import SweepReport

    report = SweepReport()
    report.outcomes.update({RefreshOutcome.LOST: 1, RefreshOutcome.LOST_IN_FLIGHT: 2, RefreshOutcome.DEFERRED: 3})
    printed = io.StringIO()
    with redirect_stdout(printed):
        SweepFigures(started_at=0).progress(report)

    totals = metric_totals(emf_blobs(printed.getvalue()))
    assert (totals["refresh_lost"], totals["refresh_deferred"]) == (3, 3)
    assert "refresh_lost_in_flight" not in totals
