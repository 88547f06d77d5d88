"""End-user binding through connect sessions: a one-time, short-lived login link; the connection records the end
user; a different Smartsheet account for the same end user is reported, never merged; anonymous /login can be
turned off."""

from __future__ import annotations

import pytest
from smartsheet_oauth import services

from tests.management.conftest import EventSink, call_management
from tests.support.broker import Answer, Broker

ADA, GRACE = "4583173393803140", "6812335718217604"


def new_session(end_user_id: str, **extra: str) -> str:
    answer = call_management("POST", "/connect-sessions", body={"end_user_id": end_user_id, **extra})
    assert answer.status == 201, answer.body
    token: str = answer.body["login_url"].split("session=")[1]
    return token


def sign_in_through(broker: Broker, token: str, user_id: str) -> Answer:
    login = broker.login({"session": token})
    assert login.status == 302, login.body
    nonce = login.cookie("__Host-smartsheet-oauth-nonce")
    return broker.callback(broker.consent(login.location, user_id=int(user_id)), nonce)


def live_grants(broker: Broker) -> int:
    return int(broker.emulator.stats()["live_grants"])


def test_a_session_link_binds_the_connection_to_the_end_user_and_works_once(
    broker: Broker, event_sink: EventSink
) -> None:
    token = new_session("user-1", return_to="https://app.example.com/connected")

    answer = sign_in_through(broker, token, ADA)
    reused = broker.login({"session": token})

    assert answer.status == 303
    assert answer.location == "https://app.example.com/connected"
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
    [created] = event_sink.drain()
    assert created["detail-type"] == "Connection Created"
    assert created["detail"]["end_user_id"] == "user-1"
    listed = call_management("GET", "/connections", query={"end_user_id": "user-1"})
    assert [c["connection_id"] for c in listed.body["connections"]] == [ADA]
    assert reused.status == 400
    assert "expired or was already used" in reused.body
    assert reused.cookies == []


def test_an_expired_or_unknown_link_is_refused_before_smartsheet(broker: Broker) -> None:
    token = new_session("user-1")
    [item] = broker.dynamodb.scan(TableName=broker.state_table)["Items"]
    broker.dynamodb.update_item(
        TableName=broker.state_table,
        Key={"state": item["state"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},  # DynamoDB's TTL deletes lazily: it is still there
    )

    expired = broker.login({"session": token})
    unknown = broker.login({"session": "A" * 43})
    malformed = broker.login({"session": "not a token"})

    for answer in (expired, unknown, malformed):
        assert answer.status == 400
        assert "connect link has expired" in answer.body
    assert broker.emulator.counts["authorize"] == 0


def test_the_same_end_user_reconnecting_updates_their_connection_and_anonymous_sign_in_keeps_the_binding(
    broker: Broker, event_sink: EventSink
) -> None:
    assert sign_in_through(broker, new_session("user-1"), ADA).status == 200
    assert sign_in_through(broker, new_session("user-1"), ADA).status == 200
    assert broker.sign_in(user_id=int(ADA)).status == 200  # anonymous, same Smartsheet user

    record = broker.connection(ADA)
    assert record is not None
    assert record["generation"] == 3
    assert record["end_user_id"] == "user-1"
    types = [e["detail-type"] for e in event_sink.drain()]
    assert types == ["Connection Created", "Connection Reconnected", "Connection Reconnected"]


def test_another_smartsheet_account_for_the_same_end_user_is_reported_not_merged(
    broker: Broker, event_sink: EventSink
) -> None:
    assert sign_in_through(broker, new_session("user-1"), ADA).status == 200
    event_sink.drain()
    grants_before = live_grants(broker)

    answer = sign_in_through(broker, new_session("user-1"), GRACE)

    assert answer.status == 409
    assert "can&#x27;t be connected here" in answer.body  # escaped by the page
    assert broker.connection(GRACE) is None
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
    assert live_grants(broker) == grants_before  # GRACE's new grant was revoked, ADA's untouched
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Binding Conflict"
    assert event["detail"]["end_user_id"] == "user-1"
    assert event["detail"]["connection_id"] == ADA
    assert event["detail"]["attempted_smartsheet_user_id"] == GRACE
    assert event["detail"]["reason"] == "end_user_has_another_smartsheet_account"


def test_an_account_bound_to_one_end_user_is_not_taken_over_by_another(broker: Broker, event_sink: EventSink) -> None:
    assert sign_in_through(broker, new_session("user-1"), ADA).status == 200
    event_sink.drain()

    answer = sign_in_through(broker, new_session("user-2"), ADA)

    assert answer.status == 409
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
    [event] = event_sink.drain()
    assert event["detail"]["reason"] == "smartsheet_account_bound_to_another_end_user"
    # Once user-1's connection is disconnected, the account is free for user-2.
    assert call_management("DELETE", f"/connections/{ADA}").status == 200
    assert sign_in_through(broker, new_session("user-2"), ADA).status == 200
    assert broker.connection(ADA)["end_user_id"] == "user-2"  # type: ignore[index]
    assert broker.connection(ADA)["status"] == "active"  # type: ignore[index]


def test_anonymous_login_can_be_turned_off(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANONYMOUS_LOGIN", "disabled")
    services.reset()

    anonymous = broker.login()
    bound = sign_in_through(broker, new_session("user-1"), ADA)

    assert anonymous.status == 403
    assert "starts in the app" in anonymous.body
    assert broker.dynamodb.scan(TableName=broker.state_table)["Items"] == []
    assert bound.status == 200
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
