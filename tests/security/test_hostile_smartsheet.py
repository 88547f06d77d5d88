"""Malformed or hostile Smartsheet answers (HTML, huge or endless bodies, lies about length or encoding, missing
fields, wrong types, redirects) end as error pages or sweep outcomes: no crash, nothing stored, nothing echoed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from smartsheet_oauth import services

from tests.security.hostile_smartsheet import (
    TOKEN_PATH,
    USERS_ME_PATH,
    VALID_GRANT,
    HostileSmartsheet,
    Reply,
    gzip_bomb,
    html_reply,
    json_reply,
    repeated,
)
from tests.security.support import Capture, assert_security_headers, state_of
from tests.support.broker import Broker

MARKER = "HOSTILE-MARKER-7d1e"
ADA = 4583173393803140


def grant(**changes: object) -> dict[str, object]:
    body: dict[str, object] = dict(VALID_GRANT)
    for name, value in changes.items():
        if value is ...:
            body.pop(name)
        else:
            body[name] = value
    return body


TOKEN_ANSWERS: dict[str, Reply] = {
    "html 200": html_reply(200, f"<html><body>{MARKER}<script>x()</script></body></html>"),
    "html 502 from a proxy": html_reply(502, f"<html><h1>Bad Gateway</h1>{MARKER}</html>"),
    "html 403 from a firewall": html_reply(403, f"<html>Request blocked {MARKER}</html>"),
    "empty 200": Reply(200, b""),
    "json null": Reply(200, b"null"),
    "json list": json_reply([VALID_GRANT]),
    "json string": json_reply(MARKER),
    "not utf-8": Reply(200, b"\xff\xfe\x00{" + MARKER.encode()),
    "error body with 200": json_reply({"errorCode": 1071, "message": MARKER, "error": "invalid_grant"}),
    "access_token missing": json_reply(grant(access_token=...)),
    "access_token a number": json_reply(grant(access_token=12345678901234567890)),
    "access_token empty": json_reply(grant(access_token="")),
    "access_token an object": json_reply(grant(access_token={"value": MARKER})),
    "refresh_token missing": json_reply(grant(refresh_token=...)),
    "refresh_token null": json_reply(grant(refresh_token=None)),
    "access_token too long": json_reply(grant(access_token="a" * 5000)),
    "expires_in missing": json_reply(grant(expires_in=...)),
    "expires_in a string": json_reply(grant(expires_in="604799")),
    "expires_in negative": json_reply(grant(expires_in=-1)),
    "expires_in zero": json_reply(grant(expires_in=0)),
    "expires_in true": json_reply(grant(expires_in=True)),
    "expires_in infinite": Reply(200, b'{"access_token":"a1","refresh_token":"r1","expires_in":1e999}'),
    "expires_in NaN": Reply(200, b'{"access_token":"a1","refresh_token":"r1","expires_in":NaN}'),
    "wrapped token not an object": json_reply({"token": MARKER}),
    "wrapped token with wrong types": json_reply({"token": {"access_token": 1, "refresh_token": 2}}),
    "huge valid json": json_reply(grant(padding="x" * 2_000_000)),
    "endless body": Reply(200, repeated(b"x" * 65536, 4096), chunked=True),
    "gzip bomb": gzip_bomb(64),
    "broken gzip": Reply(200, b"not gzip at all", (("Content-Type", "application/json"), ("Content-Encoding", "gzip"))),
    "content-length lies": Reply(200, b'{"access_token": "a', content_length=4096),
    "bad chunk framing": Reply(200, [b'{"access_token"'], chunked=True, headers=(("Content-Length", "3"),)),
    "redirect elsewhere": Reply(307, b"", (("Location", "/2.0/elsewhere"),)),
}

USERS_ME_ANSWERS: dict[str, Reply] = {
    "html 200": html_reply(200, f"<html>{MARKER}</html>"),
    "id missing": json_reply({"email": "x@example.com"}),
    "id null": json_reply({"id": None, "email": "x@example.com"}),
    "id a float": json_reply({"id": 4.5, "email": "x@example.com"}),
    "id true": json_reply({"id": True, "email": "x@example.com"}),
    "id negative": json_reply({"id": -4583173393803140, "email": "x@example.com"}),
    "id with letters": json_reply({"id": "4583x", "email": "x@example.com"}),
    "id of other digits": json_reply({"id": "\u0664\u0665\u0668\u0663", "email": "x@example.com"}),
    "id superscript": json_reply({"id": "\u00b2\u00b3", "email": "x@example.com"}),
    "id a path": json_reply({"id": "../../app-credentials", "email": "x@example.com"}),
    "email missing": json_reply({"id": ADA}),
    "email a number": json_reply({"id": ADA, "email": 5}),
    "json list": json_reply([{"id": ADA, "email": "x@example.com"}]),
    "token refused": json_reply({"errorCode": 1002, "message": MARKER}, 401),
    "endless body": Reply(200, repeated(b" " * 65536, 4096), chunked=True),
    "redirect elsewhere": Reply(302, b"", (("Location", "/2.0/elsewhere"),)),
}


@pytest.fixture
def hostile(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileSmartsheet]:
    """The broker's API base points at the hostile server (the authorize page stays the emulator's)."""
    with HostileSmartsheet() as server:
        monkeypatch.setenv("SMARTSHEET_API_BASE_URL", server.api_base_url)
        services.reset()
        yield server


def nothing_stored(broker: Broker) -> None:
    assert broker.connections() == []
    prefix = broker.env["TOKEN_SECRET_PREFIX"]
    assert broker.secrets.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}])["SecretList"] == []


def check_error_page(name: str, status: int, body: str, headers: dict[str, str]) -> None:
    assert status in (502, 503), f"{name}: {status}"
    assert "Reference:" in body
    assert MARKER not in body
    for internal in ("Traceback", "errorCode", "Exception", "hostile-"):
        assert internal not in body, f"{name}: {internal}"
    assert_security_headers(headers, name)


def test_hostile_token_answers_at_the_callback_are_errors_and_store_nothing(
    broker: Broker, hostile: HostileSmartsheet, subtests: pytest.Subtests
) -> None:
    for name, reply in TOKEN_ANSWERS.items():
        with subtests.test(token_answer=name):
            hostile.script(token=reply)
            location, nonce = broker.start()
            answer = broker.callback({"code": "any-code", "state": state_of(location)}, nonce)

            check_error_page(name, answer.status, answer.body, answer.headers)
            assert hostile.seen[0] == f"POST {TOKEN_PATH}"
            assert f"GET {USERS_ME_PATH}" not in hostile.seen
            assert not any("elsewhere" in request for request in hostile.seen), "followed Smartsheet's redirect"
            nothing_stored(broker)
    assert broker.dynamodb.scan(TableName=broker.state_table)["Count"] == 0  # every state spent once


def refusal(status: int, error_code: int | None, oauth_error: str | None) -> Reply:
    body: dict[str, object] = {"message": MARKER, "refId": "ref-1"}
    if error_code is not None:
        body["errorCode"] = error_code
    if oauth_error is not None:
        body["error"] = oauth_error
    return json_reply(body, status)


# SMARTSHEET.md's token-endpoint errors, as a code exchange can meet them: (answer, the callback's status, its metric).
# Only a refusal of the code itself (expired, used, never issued, revoked) is the caller's: anyone can bring a
# state of their own and code=abc. A refusal of the app (client id, secret, hash, request, redirect_uri) is the
# operator's, and Smartsheet failing is Smartsheet's: both count toward the callback-errors alarm.
CODE_EXCHANGE_REFUSALS: dict[str, tuple[Reply, int, str]] = {
    "1069 code expired": (refusal(400, 1069, "invalid_grant"), 400, "callback_invalid_code"),
    "1071 invalid grant": (refusal(400, 1071, "invalid_grant"), 400, "callback_invalid_code"),
    "1132 revoked": (refusal(400, 1132, "invalid_grant"), 400, "callback_invalid_code"),
    "invalid_grant without a code": (refusal(400, None, "invalid_grant"), 400, "callback_invalid_code"),
    "1067 invalid client_id": (refusal(401, 1067, "invalid_client"), 502, "callback_smartsheet_error"),
    "1068 unsupported grant type": (refusal(400, 1068, "unsupported_grant_type"), 502, "callback_smartsheet_error"),
    "1070 parameter missing": (refusal(400, 1070, "invalid_request"), 502, "callback_smartsheet_error"),
    "1072 hash mismatch": (refusal(400, 1072, "invalid_grant"), 502, "callback_smartsheet_error"),
    "1073 redirect_uri mismatch": (refusal(400, 1073, "invalid_request"), 502, "callback_smartsheet_error"),
    "1236 no client auth": (refusal(400, 1236, "invalid_client"), 502, "callback_smartsheet_error"),
    "1237 redundant client auth": (refusal(400, 1237, "invalid_client"), 502, "callback_smartsheet_error"),
    "1238 invalid secret": (refusal(400, 1238, "invalid_client"), 502, "callback_smartsheet_error"),
    "invalid_client without a code": (refusal(401, None, "invalid_client"), 502, "callback_smartsheet_error"),
    "1004 not authorized": (refusal(403, 1004, None), 502, "callback_smartsheet_error"),
    "4004 unexpected error": (refusal(500, 4004, None), 503, "callback_smartsheet_unavailable"),
    "4001 maintenance": (refusal(503, 4001, None), 503, "callback_smartsheet_unavailable"),
}


@pytest.mark.parametrize("name", CODE_EXCHANGE_REFUSALS)
def test_only_a_refusal_of_the_code_is_the_callers_error_every_refusal_of_the_app_is_the_brokers(
    broker: Broker, hostile: HostileSmartsheet, captured: Capture, name: str
) -> None:
    reply, status, metric = CODE_EXCHANGE_REFUSALS[name]
    hostile.script(token=reply)
    location, nonce = broker.start()
    before = len(captured.metric_documents())  # what /login emitted, set aside

    answer = broker.callback({"code": "abc", "state": state_of(location)}, nonce)

    documents = captured.metric_documents()[before:]
    emitted = {m["Name"] for doc in documents for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert answer.status == status
    assert emitted == {metric}
    assert MARKER not in answer.body
    assert "Reference:" in answer.body
    assert_security_headers(answer.headers, name)
    assert f"GET {USERS_ME_PATH}" not in hostile.seen
    nothing_stored(broker)


def test_hostile_users_me_answers_are_errors_that_store_nothing_and_a_hostile_email_is_escaped(
    broker: Broker, hostile: HostileSmartsheet, subtests: pytest.Subtests
) -> None:
    for name, reply in USERS_ME_ANSWERS.items():
        with subtests.test(users_me_answer=name):
            hostile.script(users_me=reply)
            location, nonce = broker.start()
            answer = broker.callback({"code": "any-code", "state": state_of(location)}, nonce)

            check_error_page(name, answer.status, answer.body, answer.headers)
            assert hostile.seen[:2] == [f"POST {TOKEN_PATH}", f"GET {USERS_ME_PATH}"]
            assert not any("elsewhere" in request for request in hostile.seen), "followed Smartsheet's redirect"
            nothing_stored(broker)

    # A well-formed answer with a hostile email: stored as data, shown escaped.
    email = "<img src=x onerror=alert(1)>\"'&@example.com"
    hostile.script(users_me=json_reply({"id": ADA, "email": email}))
    location, nonce = broker.start()
    answer = broker.callback({"code": "any-code", "state": state_of(location)}, nonce)
    assert answer.status == 200
    assert "<img" not in answer.body
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;@example.com" in answer.body


def test_hostile_refresh_answers_keep_the_stored_pair_and_the_record(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, subtests: pytest.Subtests
) -> None:
    assert broker.sign_in(user_id=ADA).status == 200  # a real grant, from the emulator
    stored = broker.tokens(ADA)
    record = broker.connection(ADA)
    assert record is not None
    with HostileSmartsheet() as server:
        monkeypatch.setenv("SMARTSHEET_API_BASE_URL", server.api_base_url)
        services.reset()
        for name in (
            "html 200",
            "json list",
            "access_token missing",
            "expires_in a string",
            "endless body",
            "content-length lies",
            "broken gzip",
            "redirect elsewhere",
            "html 502 from a proxy",
        ):
            with subtests.test(refresh_answer=name):
                server.script(token=TOKEN_ANSWERS[name])
                broker.make_due(ADA)
                report = broker.sweep()

                assert report["dispatched"] == 1, report
                assert server.seen[0] == f"POST {TOKEN_PATH}"
                assert broker.tokens(ADA) == stored
                after = broker.connection(ADA)
                assert after is not None
                assert after["generation"] == record["generation"]
                assert after["secret_arn"] == record["secret_arn"]
                assert after["status"] in ("active", "needs_reauth")
