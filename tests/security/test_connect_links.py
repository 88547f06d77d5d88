"""Connect links as an attacker uses them (issue 16, items 1-3): a forwarded link, a binding that outlives its
disconnect or is revived by a plain sign-in, and links used up by scanners or posted from another site.

RFC 9700 4.7 (CSRF) and 4.5 (code injection) in spirit: a sign-in counts for the integrator's user only when the
integrator itself confirms, inside its own authenticated session, that its user is the browser that finished."""

from __future__ import annotations

import pytest
from smartsheet_oauth_client import ConnectionUnavailable

from tests.management.conftest import (
    EventSink,
    call_management,
    complete,
    connect,
    integrator_tokens,
    new_session,
)
from tests.security.support import Capture, assert_security_headers, page_problems
from tests.support.broker import CONNECT_COOKIE, NONCE_COOKIE, Answer, Broker, completion_code, connect_form

ADA, GRACE = "4583173393803140", "6812335718217604"


def mark_needs_reauth(broker: Broker, connection_id: str) -> None:
    broker.dynamodb.update_item(
        TableName=broker.connections_table,
        Key={"connection_id": {"S": connection_id}},
        UpdateExpression="SET #s = :s REMOVE due_shard, refresh_due_at",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "needs_reauth"}},
    )


def sessions_left(broker: Broker) -> int:
    items = broker.dynamodb.scan(TableName=broker.state_table)["Items"]
    return sum(1 for item in items if item["state"]["S"].startswith("connect-session:"))


# -- 1. a forwarded connect link ---------------------------------------------------------------------------------
def test_a_forwarded_connect_link_never_gives_the_victims_account_to_the_sender(
    broker: Broker, event_sink: EventSink
) -> None:
    mallory_link = new_session("mallory")  # Mallory asks the integrator for her own link...
    grants = broker.emulator.stats()["live_grants"]

    # ...and sends it to Grace, who opens it, clicks Connect, and allows with her own Smartsheet account.
    landed = broker.connect_through(mallory_link, user_id=GRACE)

    # Nothing is bound yet: Mallory's code finds nothing, however it asks.
    assert call_management("GET", "/connections", query={"end_user_id": "mallory"}).body["connections"] == []
    with pytest.raises(ConnectionUnavailable):
        integrator_tokens(broker).token(end_user_id="mallory")
    # Grace's browser lands on the integrator's page, where Grace (not Mallory) is signed in: it redeems for her.
    refused = complete(completion_code(landed), "grace")
    assert refused.status == 409
    assert refused.error == "end_user_mismatch"
    # Even a code that later leaks to Mallory binds nothing: it is void.
    assert complete(completion_code(landed), "mallory").error == "completion_code_used"
    assert call_management("GET", "/connections", query={"end_user_id": "mallory"}).body["connections"] == []
    with pytest.raises(ConnectionUnavailable):
        integrator_tokens(broker).token(end_user_id="mallory")
    assert broker.connection(GRACE) is None
    assert broker.emulator.stats()["live_grants"] == grants  # Grace's grant from this sign-in was revoked
    [event] = event_sink.drain()
    assert event["detail"]["reason"] == "completed_by_another_end_user"


# -- 2. a binding that outlives its disconnect, or is revived without its end user ------------------------------
def test_disconnecting_ends_the_binding_and_a_plain_sign_in_later_does_not_restore_it(broker: Broker) -> None:
    connect(broker, "user-1", ADA)
    disconnected = call_management("DELETE", f"/connections/{ADA}")
    assert disconnected.body["connection"]["end_user_id"] is None

    assert broker.sign_in(user_id=int(ADA)).status == 200  # the same Smartsheet user, through a plain /login

    record = broker.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert "end_user_id" not in record
    assert call_management("GET", "/connections", query={"end_user_id": "user-1"}).body["connections"] == []
    with pytest.raises(ConnectionUnavailable):
        integrator_tokens(broker).token(end_user_id="user-1")


@pytest.mark.parametrize("status", ["active", "needs_reauth"])
def test_a_plain_sign_in_never_revives_or_rebinds_a_bound_connection(
    broker: Broker, event_sink: EventSink, status: str
) -> None:
    connect(broker, "user-1", ADA)
    if status == "needs_reauth":
        mark_needs_reauth(broker, ADA)
    event_sink.drain()
    before = broker.connection(ADA)

    answer = broker.sign_in(user_id=int(ADA))

    assert answer.status == 409
    assert "Reconnect from the app" in answer.body
    after = broker.connection(ADA)
    assert after is not None
    assert before is not None
    assert (after["status"], after["end_user_id"], after["generation"]) == (status, "user-1", before["generation"])
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Binding Conflict"
    assert event["detail"]["reason"] == "account_bound_to_an_end_user"
    assert event["detail"]["end_user_id"] == "user-1"
    # Only a confirmed connect session of that end user brings it back.
    assert connect(broker, "user-1", ADA).body["connection"]["status"] == "active"


def test_a_record_revoked_before_disconnect_cleared_bindings_loses_its_binding_on_a_plain_sign_in(
    broker: Broker,
) -> None:
    assert broker.sign_in(user_id=int(ADA)).status == 200
    broker.dynamodb.update_item(  # as the previous version left a disconnected connection
        TableName=broker.connections_table,
        Key={"connection_id": {"S": ADA}},
        UpdateExpression="SET #s = :revoked, end_user_id = :old REMOVE due_shard, refresh_due_at",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":revoked": {"S": "revoked"}, ":old": {"S": "user-1"}},
    )

    assert broker.sign_in(user_id=int(ADA)).status == 200

    record = broker.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert "end_user_id" not in record


# -- 3. link scanners, and forms posted from elsewhere -----------------------------------------------------------
def test_a_link_scanner_fetching_the_link_leaves_it_usable(broker: Broker) -> None:
    session = new_session("user-1")

    scans = [broker.login({"session": session}) for _ in range(3)]  # plain GETs without cookies, as scanners do

    assert [scan.status for scan in scans] == [200, 200, 200]
    assert all("Connect your Smartsheet account to app.example.com" in scan.body for scan in scans)
    assert sessions_left(broker) == 1
    assert broker.emulator.counts["authorize"] == 0
    # The user's own click afterwards works.
    assert complete(completion_code(broker.connect_through(session, user_id=ADA)), "user-1").status == 200


def forged(page: Answer, **changes: str) -> dict[str, str]:
    return {**connect_form(page.body), **changes}


def test_the_connect_button_is_refused_without_the_pages_own_binding(broker: Broker) -> None:
    session = new_session("user-1")
    other = new_session("user-2")
    page = broker.login({"session": session})
    other_page = broker.login({"session": other})
    key = page.cookie(CONNECT_COOKIE)
    assert key

    attempts = {
        # A cross-site form: SameSite=Strict keeps the browser key cookie off it, whatever the form holds.
        "cross-site form, no cookie": broker.post_login(connect_form(page.body)),
        "cookie, no form token": broker.post_login({"session": session}, {CONNECT_COOKIE: key}),
        "form token of another browser": broker.post_login(connect_form(page.body), {CONNECT_COOKIE: "B" * 43}),
        "form token of another session": broker.post_login(
            forged(page, form_token=connect_form(other_page.body)["form_token"]), {CONNECT_COOKIE: key}
        ),
        "malformed cookie": broker.post_login(connect_form(page.body), {CONNECT_COOKIE: "x"}),
    }

    for name, answer in attempts.items():
        assert answer.status == 403, name
        assert "did not come from the connect page" in answer.body, name
        assert answer.cookies == [], name
        assert_security_headers(answer.headers, name)
    assert sessions_left(broker) == 2  # nothing was used up
    assert broker.emulator.counts["authorize"] == 0
    assert broker.press_connect(page).status == 303  # the real click still works


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("session=a&session=b&form_token=c", "form"), ('{"session": "x"}', "json"), ("session=\u00e9", "form")],
    ids=["repeated-field", "json", "not-ascii"],
)
def test_a_malformed_connect_form_is_a_400(broker: Broker, body: str, content_type: str) -> None:
    from authorize.app import lambda_handler

    from tests.support.broker import answer_of
    from tests.support.events import LambdaContext, http_event

    types = {"form": "application/x-www-form-urlencoded", "json": "application/json"}
    event = http_event("/login", method="POST", headers={"content-type": types[content_type]})
    event["body"] = body
    answer = answer_of(lambda_handler(event, LambdaContext()))

    assert answer.status == 400
    assert page_problems(answer.body) == []


def test_the_connect_page_binds_its_form_and_cannot_be_framed(broker: Broker) -> None:
    page = broker.login({"session": new_session("user-1")})

    assert_security_headers(page.headers, "connect page", form_action=[broker.emulator.base_url])
    csp = page.headers["Content-Security-Policy"]
    assert f"form-action 'self' {broker.emulator.base_url};" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    [cookie] = page.cookies
    assert cookie.startswith(f"{CONNECT_COOKIE}=")
    attributes = {part.strip().split("=")[0] for part in cookie.split(";")[1:]}
    assert attributes == {"Path", "Max-Age", "HttpOnly", "Secure", "SameSite"}
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    key = page.cookie(CONNECT_COOKIE)
    assert key
    assert key not in page.body  # the page holds a token derived from the key, never the key
    assert page_problems(page.body) == []
    # A second connect page in the same browser keeps its key, so the buttons of both pages work.
    second = broker.login({"session": new_session("user-2")}, cookies={CONNECT_COOKIE: key})
    assert second.cookie(CONNECT_COOKIE) == key
    assert broker.post_login(connect_form(page.body), {CONNECT_COOKIE: key}).status == 303
    assert broker.post_login(connect_form(second.body), {CONNECT_COOKIE: key}).status == 303


def test_connect_links_and_completion_codes_never_reach_the_logs(broker: Broker, captured: Capture) -> None:
    session = new_session("user-1")
    page = broker.login({"session": session})
    started = broker.press_connect(page)
    query = broker.consent(started.location, user_id=int(ADA))
    landed = broker.callback(query, started.cookie(NONCE_COOKIE))
    code = completion_code(landed)
    foreign_code = completion_code(broker.connect_through(new_session("user-2"), user_id=GRACE))
    assert complete(code, "user-1").status == 200
    assert complete(foreign_code, "user-1").error == "end_user_mismatch"
    assert complete(code, "user-1").error == "completion_code_used"
    assert broker.press_connect(page).status == 400  # the used session, pressed again
    stored = broker.tokens(ADA)

    values = {
        "session": session,
        "browser key": page.cookie(CONNECT_COOKIE),
        "form token": connect_form(page.body)["form_token"],
        "oauth code": query["code"],
        "state": query["state"],
        "completion code": code,
        "foreign completion code": foreign_code,
        "access token": stored["access_token"],
        "refresh token": stored["refresh_token"],
    }
    everything = captured.everything()
    assert {"connect_page", "awaiting_confirmation", "end_user_mismatch"} <= {
        line.get("outcome") for line in captured.broker_lines()
    }
    leaks = sorted(name for name, value in values.items() if value and value in everything)
    assert not leaks, f"in the logs or metrics: {leaks}"
    # The completion code travels in one place only: the redirect to return_to.
    assert code not in landed.body + "".join(landed.cookies)
