"""End-user binding through connect sessions: a one-time, short-lived login link that opens a connect page; the
sign-in it starts is held until the integrator redeems its completion code for its own signed-in user, and only then
is the connection bound and announced; a different Smartsheet account for the same end user is reported, never
merged; a bound connection changes only through a confirmed session of its end user; anonymous /login can be turned
off."""

from __future__ import annotations

import pytest
from smartsheet_oauth import services
from smartsheet_oauth_client import ConnectionUnavailable

from tests.management.conftest import (
    RETURN_TO,
    EventSink,
    call_management,
    complete,
    connect,
    integrator_tokens,
    new_session,
)
from tests.support.broker import Broker, completion_code

ADA, GRACE = "4583173393803140", "6812335718217604"


def live_grants(broker: Broker) -> int:
    return int(broker.emulator.stats()["live_grants"])


def listed_for(end_user_id: str) -> list[str]:
    answer = call_management("GET", "/connections", query={"end_user_id": end_user_id})
    assert answer.status == 200, answer.body
    return [c["connection_id"] for c in answer.body["connections"]]


def test_a_connect_link_is_bound_only_once_the_integrator_redeems_its_completion_code(
    broker: Broker, event_sink: EventSink
) -> None:
    session = new_session("user-1", return_to=f"{RETURN_TO}?tab=sheets")

    answer = broker.connect_through(session, user_id=ADA)

    assert answer.location.startswith(f"{RETURN_TO}?tab=sheets&outcome=connected&completion_code=")
    code = completion_code(answer)
    assert len(code) == 43
    # Held, not bound: nothing the integrator's code could read yet, nothing announced.
    assert broker.connection(ADA) is None
    assert listed_for("user-1") == []
    with pytest.raises(ConnectionUnavailable):
        integrator_tokens(broker).token(end_user_id="user-1")
    assert event_sink.drain() == []
    assert code not in str(broker.dynamodb.scan(TableName=broker.state_table)["Items"])  # only its hash is kept

    redeemed = complete(code, "user-1")

    assert redeemed.status == 200, redeemed.body
    assert redeemed.body["outcome"] == "created"
    assert redeemed.body["connection"]["connection_id"] == ADA
    assert redeemed.body["connection"]["end_user_id"] == "user-1"
    assert redeemed.body["connection"]["status"] == "active"
    assert listed_for("user-1") == [ADA]
    token = integrator_tokens(broker).token(end_user_id="user-1")
    assert broker.emulator.access_token_is_live(token.access_token)
    [created] = event_sink.drain()
    assert created["detail-type"] == "Connection Created"
    assert created["detail"]["end_user_id"] == "user-1"
    reused = broker.login({"session": session})
    assert reused.status == 400
    assert "expired or was already used" in reused.body
    assert reused.cookies == []


def test_an_expired_or_unknown_link_is_refused_before_smartsheet(broker: Broker) -> None:
    token = new_session("user-1")
    page = broker.login({"session": token})
    [item] = broker.dynamodb.scan(TableName=broker.state_table)["Items"]
    broker.dynamodb.update_item(
        TableName=broker.state_table,
        Key={"state": item["state"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},  # DynamoDB's TTL deletes lazily: it is still there
    )

    expired = broker.login({"session": token})
    pressed_late = broker.press_connect(page)
    unknown = broker.login({"session": "A" * 43})
    malformed = broker.login({"session": "not a token"})

    for answer in (expired, pressed_late, unknown, malformed):
        assert answer.status == 400
        assert "connect link has expired" in answer.body
    assert broker.emulator.counts["authorize"] == 0


def test_the_same_end_user_reconnecting_updates_their_connection(broker: Broker, event_sink: EventSink) -> None:
    assert connect(broker, "user-1", ADA).body["outcome"] == "created"
    assert connect(broker, "user-1", ADA).body["outcome"] == "reconnected"

    record = broker.connection(ADA)
    assert record is not None
    assert record["generation"] == 2
    assert record["end_user_id"] == "user-1"
    types = [e["detail-type"] for e in event_sink.drain()]
    assert types == ["Connection Created", "Connection Reconnected"]


def test_a_pending_binding_leaves_the_accounts_confirmed_connection_as_it_is(broker: Broker) -> None:
    connect(broker, "user-1", ADA)
    tokens_before = broker.tokens(ADA)
    record_before = broker.connection(ADA)

    code = completion_code(broker.connect_through(new_session("user-1"), user_id=ADA))

    assert broker.tokens(ADA) == tokens_before  # the secret's current pair is untouched while the new one waits
    assert broker.connection(ADA) == record_before
    assert broker.emulator.access_token_is_live(tokens_before["access_token"])
    assert complete(code, "user-1").status == 200
    assert broker.tokens(ADA)["access_token"] != tokens_before["access_token"]
    assert broker.tokens(ADA, stage="AWSPREVIOUS") == tokens_before
    assert broker.connection(ADA)["generation"] == record_before["generation"] + 1  # type: ignore[index]


def test_another_smartsheet_account_for_the_same_end_user_is_reported_not_merged(
    broker: Broker, event_sink: EventSink
) -> None:
    connect(broker, "user-1", ADA)
    event_sink.drain()
    grants_before = live_grants(broker)

    answer = broker.connect_through(new_session("user-1"), user_id=GRACE)

    # Back to the integrator's app, which learns which case it was (and can tell its user).
    assert answer.status == 303
    assert answer.location == (
        f"{RETURN_TO}?outcome=failed&error=binding_conflict&error_detail=end_user_has_another_smartsheet_account"
    )
    assert broker.connection(GRACE) is None
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
    assert live_grants(broker) == grants_before  # GRACE's new grant was revoked, ADA's untouched
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Binding Conflict"
    assert event["detail"]["end_user_id"] == "user-1"
    assert event["detail"]["connection_id"] == ADA
    assert event["detail"]["attempted_smartsheet_user_id"] == GRACE
    assert event["detail"]["reason"] == "end_user_has_another_smartsheet_account"


def test_a_conflict_that_arises_while_the_code_waits_is_refused_at_redemption(
    broker: Broker, event_sink: EventSink
) -> None:
    code = completion_code(broker.connect_through(new_session("user-1"), user_id=GRACE))
    connect(broker, "user-1", ADA)  # meanwhile, user-1 connected another account
    event_sink.drain()
    grants_before = live_grants(broker)

    answer = complete(code, "user-1")

    assert answer.status == 409
    assert answer.error == "binding_conflict"
    assert "end_user_has_another_smartsheet_account" in answer.body["message"]
    assert broker.connection(GRACE) is None
    assert live_grants(broker) == grants_before - 1  # the held grant was revoked
    [event] = event_sink.drain()
    assert event["detail"]["reason"] == "end_user_has_another_smartsheet_account"
    assert complete(code, "user-1").error == "completion_code_used"


def test_an_account_bound_to_one_end_user_is_not_taken_over_by_another(broker: Broker, event_sink: EventSink) -> None:
    connect(broker, "user-1", ADA)
    event_sink.drain()

    answer = broker.connect_through(new_session("user-2"), user_id=ADA)

    assert answer.status == 303
    assert answer.location.endswith("error=binding_conflict&error_detail=smartsheet_account_bound_to_another_end_user")
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
    [event] = event_sink.drain()
    assert event["detail"]["reason"] == "smartsheet_account_bound_to_another_end_user"
    # Once user-1's connection is disconnected, the account is free for user-2.
    assert call_management("DELETE", f"/connections/{ADA}").status == 200
    assert connect(broker, "user-2", ADA).body["connection"]["end_user_id"] == "user-2"
    assert broker.connection(ADA)["status"] == "active"  # type: ignore[index]


def test_anonymous_login_can_be_turned_off(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANONYMOUS_LOGIN", "disabled")
    services.reset()

    anonymous = broker.login()

    assert anonymous.status == 403
    assert "starts in the app" in anonymous.body
    assert broker.dynamodb.scan(TableName=broker.state_table)["Items"] == []
    bound = connect(broker, "user-1", ADA)
    assert bound.body["connection"]["end_user_id"] == "user-1"
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
