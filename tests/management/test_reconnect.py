"""Reconnect links (issue 20 item 4): POST /connect-sessions with a needs_reauth connection's id makes a connect session
that only that connection's Smartsheet account can finish. The same account signing in (and the integrator confirming
it) makes the connection active again with a new pair and sends Connection Recovered; another account gets a page
that says so, its grant is revoked, and nothing changes. Through the real handlers, moto and the emulator."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.management.conftest import RETURN_TO, ApiAnswer, EventSink, call_management, complete, connect
from tests.support.broker import Broker, completion_code

ADA, GRACE = "4583173393803140", "6812335718217604"


def needs_reauth(broker: Broker, end_user_id: str | None = "user-1", user_id: str = ADA) -> None:
    """A connection whose user revoked the app at Smartsheet, found out by the sweep."""
    if end_user_id is None:
        assert broker.sign_in(user_id=int(user_id)).status == 200
    else:
        connect(broker, end_user_id, user_id)
    broker.emulator.revoke_user(user_id)
    broker.make_due(user_id)
    broker.sweep()
    assert (broker.connection(user_id) or {}).get("status") == "needs_reauth"


def record_of(broker: Broker, connection_id: str) -> dict[str, Any]:
    record = broker.connection(connection_id)
    assert record is not None
    return record


def reconnect_session(body: dict[str, Any]) -> ApiAnswer:
    return call_management("POST", "/connect-sessions", body={"return_to": RETURN_TO, **body})


def reconnect_link(connection_id: str, **body: Any) -> str:
    answer = reconnect_session({"connection_id": connection_id, **body})
    assert answer.status == 201, answer.body
    token: str = answer.body["login_url"].split("session=")[1]
    return token


def test_the_same_account_reconnects_and_the_connection_recovers(broker: Broker, event_sink: EventSink) -> None:
    needs_reauth(broker)
    dead_pair = broker.tokens(ADA)
    event_sink.drain()

    answer = reconnect_session({"connection_id": ADA})
    assert answer.status == 201, answer.body
    assert (answer.body["end_user_id"], answer.body["connection_id"]) == ("user-1", ADA)  # the connection's own user
    session = answer.body["login_url"].split("session=")[1]
    page = broker.login({"session": session})
    assert "<title>Reconnect your Smartsheet account" in page.body
    assert "same account" in page.body
    code = completion_code(broker.connect_through(session, user_id=ADA))
    assert record_of(broker, ADA)["status"] == "needs_reauth"  # nothing changes before the integrator confirms
    assert event_sink.drain() == []

    redeemed = complete(code, "user-1")

    assert redeemed.status == 200, redeemed.body
    assert redeemed.body["outcome"] == "reconnected"
    assert redeemed.body["connection"]["status"] == "active"
    record = record_of(broker, ADA)
    assert record["status"] == "active"
    assert record["end_user_id"] == "user-1"
    assert "last_error" not in record
    pair = broker.tokens(ADA)
    assert pair["refresh_token"] != dead_pair["refresh_token"]
    assert broker.emulator.access_token_is_live(pair["access_token"])
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Recovered"
    assert (event["detail"]["connection_id"], event["detail"]["status"]) == (ADA, "active")
    assert event["detail"]["end_user_id"] == "user-1"


def test_another_account_gets_a_clear_page_and_nothing_changes(broker: Broker, event_sink: EventSink) -> None:
    needs_reauth(broker)
    before = broker.connection(ADA)
    pair = broker.tokens(ADA)
    assert broker.connection(GRACE) is None
    event_sink.drain()
    grants = broker.emulator.stats()["live_grants"]
    session = reconnect_link(ADA)

    answer = broker.connect_through(session, user_id=GRACE)

    assert answer.status == 409
    assert "text/html" in answer.headers["Content-Type"]
    assert "Sign in with the account you connected before" in answer.body
    assert "Nothing was changed" in answer.body
    back = answer.body.split('class="button" href="')[1].split('"')[0].replace("&amp;", "&")
    assert back.startswith(RETURN_TO + "?")
    assert parse_qs(urlsplit(back).query) == {"outcome": ["failed"], "error": ["wrong_account"]}
    assert "completion_code" not in answer.body
    assert broker.connection(ADA) == before
    assert broker.tokens(ADA) == pair
    assert broker.connection(GRACE) is None  # Grace's account was not connected either
    assert broker.emulator.stats()["live_grants"] == grants  # the grant Grace's sign-in got was revoked
    items = broker.dynamodb.scan(TableName=broker.state_table)["Items"]
    assert not [item for item in items if "sealed_pair" in item]  # nothing held for a completion
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Binding Conflict"
    assert event["detail"]["reason"] == "reconnected_with_another_smartsheet_account"
    assert event["detail"]["connection_id"] == ADA
    assert event["detail"]["attempted_smartsheet_user_id"] == GRACE
    assert broker.login({"session": session}).status == 400  # the link is used up


def test_an_unbound_connection_is_reconnected_for_the_end_user_named(broker: Broker, event_sink: EventSink) -> None:
    needs_reauth(broker, end_user_id=None)
    event_sink.drain()

    refused = reconnect_session({"connection_id": ADA})
    code = completion_code(broker.connect_through(reconnect_link(ADA, end_user_id="user-7"), user_id=ADA))
    redeemed = complete(code, "user-7")

    assert refused.status == 400
    assert "end_user_id is required" in refused.body["message"]
    assert redeemed.status == 200, redeemed.body
    assert record_of(broker, ADA)["end_user_id"] == "user-7"
    assert record_of(broker, ADA)["status"] == "active"
    assert [e["detail-type"] for e in event_sink.drain()] == ["Connection Recovered"]


@pytest.mark.parametrize(
    ("state", "body", "refusal"),
    [
        ("active", {"connection_id": ADA}, (409, "reconnect_not_needed", "only a needs_reauth connection")),
        ("revoked", {"connection_id": ADA}, (409, "revoked", "without connection_id")),
        ("needs_reauth", {"connection_id": ADA, "end_user_id": "user-2"}, (409, "end_user_mismatch", "another end")),
        ("absent", {"connection_id": ADA}, (404, "not_found", ADA)),
        ("absent", {"connection_id": "ada"}, (400, "invalid_request", "connection_id must be")),
        ("absent", {"connection_id": 4583173393803140}, (400, "invalid_request", "connection_id must be")),
        ("needs_reauth", {"connection_id": ADA, "end_user_id": "a b"}, (400, "invalid_request", "end_user_id must")),
    ],
)
def test_a_reconnect_link_is_refused_when_there_is_nothing_to_reconnect(
    broker: Broker, state: str, body: dict[str, Any], refusal: tuple[int, str, str]
) -> None:
    status, error, says = refusal
    if state == "active":
        connect(broker, "user-1", ADA)
    elif state == "needs_reauth":
        needs_reauth(broker)
    elif state == "revoked":
        connect(broker, "user-1", ADA)
        assert call_management("DELETE", f"/connections/{ADA}").status == 200
    before = broker.connection(ADA)
    sessions = len(broker.dynamodb.scan(TableName=broker.state_table)["Items"])

    answer = reconnect_session(body)

    assert answer.status == status, answer.body
    assert answer.error == error
    assert says in answer.body["message"]
    assert broker.connection(ADA) == before
    assert len(broker.dynamodb.scan(TableName=broker.state_table)["Items"]) == sessions  # no link was made


def test_a_plain_connect_session_still_needs_its_end_user(broker: Broker) -> None:
    answer = call_management("POST", "/connect-sessions", body={"return_to": RETURN_TO})

    assert answer.status == 400
    assert answer.body["message"] == "end_user_id is required"
