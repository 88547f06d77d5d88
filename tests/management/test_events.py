"""Connection events on EventBridge: the right detail-type and detail per change, never a token, never a broken
sign-in or refresh when the bus misbehaves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.vocabulary import DetailType
from smartsheet_oauth.stores.events import ConnectionEvent, EventPublisher

from tests.management.conftest import EventSink
from tests.support.broker import Broker

ADA = "4583173393803140"
DETAIL_KEYS = {
    "connection_id",
    "smartsheet_user_id",
    "end_user_id",
    "email",
    "region",
    "status",
    "reason",
    "occurred_at",
    "tags",
}


def outcomes(report: dict[str, Any]) -> dict[str, int]:
    """The sweep's outcomes that happened (the report lists every outcome, zeros included)."""
    return {name: count for name, count in report["outcomes"].items() if count}


def secrets_of(broker: Broker, connection_id: str) -> set[str]:
    """Every token value the connection's secret has held (current and previous pair)."""
    values = set()
    for stage in ("AWSCURRENT", "AWSPREVIOUS"):
        try:
            tokens = broker.tokens(connection_id, stage)
        except broker.secrets.exceptions.ResourceNotFoundException:
            continue
        values.update({tokens["access_token"], tokens["refresh_token"]})
    return values


def assert_no_secret(raw: str, secrets: set[str]) -> None:
    for value in secrets:
        assert value not in raw


def test_first_sign_in_emits_created_then_a_second_one_reconnected(broker: Broker, event_sink: EventSink) -> None:
    assert broker.sign_in().status == 200
    [created] = event_sink.drain()
    assert broker.sign_in().status == 200
    [reconnected] = event_sink.drain()

    assert created["source"] == "smartsheet-oauth-broker"
    assert created["detail-type"] == "Connection Created"
    assert reconnected["detail-type"] == "Connection Reconnected"
    detail = created["detail"]
    assert set(detail) == DETAIL_KEYS
    assert detail["connection_id"] == detail["smartsheet_user_id"] == ADA
    assert detail["email"] is None  # EventsIncludeEmail is off by default (test below)
    assert detail["region"] == "us"
    assert detail["status"] == "active"
    assert detail["end_user_id"] is None
    assert isinstance(detail["occurred_at"], int)
    secrets = secrets_of(broker, ADA)
    assert len(secrets) == 4  # two sign-ins, two pairs
    assert_no_secret(json.dumps([created, reconnected]), secrets)


def test_events_carry_no_email_unless_the_stack_says_so(
    broker: Broker, event_sink: EventSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events fan out to every rule's targets (queues, logs, other accounts): the user's e-mail is personal data that
    code allowed to ask the management API can get there."""
    broker.sign_in()
    [by_default] = event_sink.drain()
    monkeypatch.setenv("EVENTS_INCLUDE_EMAIL", "enabled")  # the EventsIncludeEmail parameter
    services.reset()
    broker.sign_in()
    [included] = event_sink.drain()

    assert "ada@example.com" not in json.dumps(by_default), by_default["detail"]
    assert set(by_default["detail"]) == DETAIL_KEYS  # the field stays, empty
    assert included["detail"]["email"] == "ada@example.com"


def test_a_transient_refresh_failure_emits_failed_with_the_attempt_then_recovered_then_nothing(
    broker: Broker, event_sink: EventSink
) -> None:
    broker.sign_in()
    event_sink.drain()
    broker.make_due(ADA)
    broker.emulator.set_faults(next_outcomes=[4004])

    report = broker.sweep()
    assert outcomes(report) == {"transient": 1}
    [failed] = event_sink.drain()
    broker.make_due(ADA)
    assert outcomes(broker.sweep()) == {"refreshed": 1}
    [recovered] = event_sink.drain()

    assert failed["detail-type"] == "Connection Refresh Failed"
    assert failed["detail"]["status"] == "active"
    assert failed["detail"]["attempt"] == 1
    assert failed["detail"]["reason"] == "error:4004"
    assert failed["detail"]["email"] is None
    assert recovered["detail-type"] == "Connection Recovered"
    assert recovered["detail"]["status"] == "active"
    assert_no_secret(json.dumps([failed, recovered]), secrets_of(broker, ADA))
    broker.make_due(ADA)
    assert outcomes(broker.sweep()) == {"refreshed": 1}
    assert event_sink.drain() == []  # a plain refresh changes nothing worth telling


def test_a_revoked_grant_emits_needs_reauth(broker: Broker, event_sink: EventSink) -> None:
    broker.sign_in()
    event_sink.drain()
    broker.emulator.revoke_user(ADA)
    broker.make_due(ADA)

    assert outcomes(broker.sweep()) == {"needs_reauth": 1}
    [event] = event_sink.drain()

    assert event["detail-type"] == "Connection Needs Reauth"
    assert event["detail"]["status"] == "needs_reauth"
    assert event["detail"]["reason"] == "invalid_grant:1132"
    assert broker.connection(ADA)["status"] == "needs_reauth"  # type: ignore[index]


def test_a_missing_bus_never_breaks_a_sign_in_or_a_refresh_and_is_counted(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENT_BUS_NAME", "no-such-bus")
    services.reset()

    answer = broker.sign_in()

    assert answer.status == 200
    assert broker.connection(ADA)["status"] == "active"  # type: ignore[index]
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("events_publish_failed") == [1.0] for m in metrics)

    broker.emulator.set_faults(next_outcomes=[4004])
    broker.make_due(ADA)
    assert outcomes(broker.sweep()) == {"transient": 1}
    assert broker.connection(ADA)["failures"] == 1  # type: ignore[index]


class FlakyBus:
    """put_events that refuses the entry inside a 200 answer a given number of times, then takes it."""

    def __init__(self, refusals: int, *, raise_instead: Exception | None = None) -> None:
        self.refusals = refusals
        self.raise_instead = raise_instead
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, *, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        if self.raise_instead is not None:
            raise self.raise_instead
        if len(self.calls) <= self.refusals:
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "x"}]}
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}


EVENT = ConnectionEvent(DetailType.CREATED, connection_id="1", status="active", region="us", email="a@example.com")


def test_a_refused_entry_is_retried_until_the_bus_takes_it() -> None:
    bus = FlakyBus(refusals=2)
    publisher = EventPublisher(bus, "default", sleep=lambda _s: None)  # type: ignore[arg-type]

    assert publisher.publish(EVENT) is True
    assert len(bus.calls) == 3
    assert (publisher.published, publisher.failed) == (1, 0)
    entry = bus.calls[-1][0]
    assert entry["Source"] == "smartsheet-oauth-broker"
    assert entry["DetailType"] == "Connection Created"
    assert entry["EventBusName"] == "default"


def test_a_bus_that_keeps_refusing_costs_three_attempts_and_one_count() -> None:
    bus = FlakyBus(refusals=10)
    publisher = EventPublisher(bus, "default", sleep=lambda _s: None)  # type: ignore[arg-type]

    assert publisher.publish(EVENT) is False
    assert len(bus.calls) == 3
    assert (publisher.published, publisher.failed) == (0, 1)


def test_an_unexpected_error_in_publishing_is_swallowed_and_counted() -> None:
    bus = FlakyBus(refusals=0, raise_instead=RuntimeError("boom"))
    publisher = EventPublisher(bus, "default", sleep=lambda _s: None)  # type: ignore[arg-type]

    assert publisher.publish(EVENT) is False
    assert publisher.failed == 1
