"""GET /login and GET /callback through the real handlers, against mock_aws and the Smartsheet emulator."""

from __future__ import annotations

import html
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.shards import due_jitter
from smartsheet_oauth.stores.states import nonce_hash

from tests.support.broker import NONCE_COOKIE, Broker

ADA = 4583173393803140
ALAN = 9007199254740993  # above 2^53: must survive as a string


def token_calls(broker: Broker) -> int:
    return sum(1 for r in broker.emulator.token_requests)


def assert_secure_headers(headers: dict[str, str]) -> None:
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" in headers


def test_login_redirects_to_smartsheet_with_a_stored_state_and_a_bound_cookie(broker: Broker) -> None:
    answer = broker.login()

    assert answer.status == 302
    assert_secure_headers(answer.headers)
    url = urlsplit(answer.location)
    assert f"{url.scheme}://{url.netloc}{url.path}" == broker.emulator.authorize_url
    assert "scope=READ_SHEETS%20WRITE_SHEETS" in url.query
    query = parse_qs(url.query)
    assert query["response_type"] == ["code"]
    assert query["client_id"] == ["local-client-id"]
    assert "redirect_uri" not in query  # not configured: Smartsheet uses the registered one
    state = query["state"][0]
    assert len(state) >= 43  # 256 bits, URL-safe base64

    [cookie] = answer.cookies
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert cookie.startswith(f"{NONCE_COOKIE}=")
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(attributes)
    nonce = answer.cookie(NONCE_COOKIE)
    assert nonce
    assert nonce != state

    item = broker.dynamodb.get_item(TableName=broker.state_table, Key={"state": {"S": state}})["Item"]
    assert item["nonce_hash"]["S"] == nonce_hash(nonce)
    created, expires = int(item["created_at"]["N"]), int(item["expires_at"]["N"])
    assert expires - created == 600
    assert abs(created - time.time()) < 5


def test_full_sign_in_stores_tokens_and_the_connection(broker: Broker) -> None:
    answer = broker.sign_in(user_id=ALAN)

    assert answer.status == 200, answer.body  # the result page the callback's 303 led to
    assert "alan@example.com" in answer.body
    assert_secure_headers(answer.headers)
    assert answer.via is not None
    assert (answer.via.status, answer.via.location) == (303, "/result")
    assert_secure_headers(answer.via.headers)
    assert answer.via.cookie(NONCE_COOKIE) == ""  # the nonce is cleared
    record = broker.connection(ALAN)
    assert record is not None
    assert record["connection_id"] == str(ALAN)
    assert record["status"] == "active"
    assert record["generation"] == 1
    assert record["email"] == "alan@example.com"
    assert record["region"] == "us"
    # The window, and a spread of up to a tenth of it by connection id (domain/shards.due_jitter).
    assert record["access_expires_at"] - record["refresh_due_at"] == 172800 + due_jitter(str(ALAN), 172800)
    assert 0 < due_jitter(str(ALAN), 172800) <= 17280
    tokens = broker.tokens(ALAN)
    assert tokens["user_id"] == str(ALAN)
    assert broker.emulator.access_token_is_live(tokens["access_token"])
    assert broker.emulator.refresh_token_is_live(tokens["refresh_token"])
    assert tokens["expires_at"] == tokens["obtained_at"] + 604799
    assert record["secret_arn"].split(":secret:")[1].startswith(f"test-stack/connections/{ALAN}")
    # the exchange used the form body and the hash, never the secret itself
    [exchange] = broker.emulator.token_requests
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["auth_method"] == "hash"
    assert exchange["transport"] == "form"
    assert exchange["content_type"].startswith("application/x-www-form-urlencoded")


def test_a_returning_user_updates_the_same_connection(broker: Broker) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    first = broker.tokens(ADA)
    broker.dynamodb.update_item(
        TableName=broker.connections_table,
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="SET #s = :s REMOVE due_shard",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "needs_reauth"}},
    )

    assert broker.sign_in(user_id=ADA).status == 200

    assert [c["connection_id"] for c in broker.connections()] == [str(ADA)]
    record = broker.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert record["generation"] == 2
    assert record["due_shard"] == "due"
    assert broker.tokens(ADA)["refresh_token"] != first["refresh_token"]
    assert broker.tokens(ADA, "AWSPREVIOUS")["refresh_token"] == first["refresh_token"]


def test_a_user_signing_in_during_their_secrets_deletion_window_gets_it_restored(broker: Broker) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    record = broker.connection(ADA)
    assert record is not None
    broker.secrets.delete_secret(SecretId=record["secret_arn"], RecoveryWindowInDays=7)  # as a disconnect does
    with pytest.raises(broker.secrets.exceptions.InvalidRequestException):  # AWS refuses writes meanwhile
        broker.secrets.put_secret_value(SecretId=record["secret_arn"], SecretString="{}")

    assert broker.sign_in(user_id=ADA).status == 200

    assert "DeletedDate" not in broker.secrets.describe_secret(SecretId=record["secret_arn"])
    assert broker.connection(ADA)["secret_arn"] == record["secret_arn"]  # type: ignore[index]
    assert broker.emulator.refresh_token_is_live(broker.tokens(ADA)["refresh_token"])


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"code": "abc"}, "This address is where Smartsheet sends you back"),  # a bare /callback: nothing to finish
        ({"code": "abc", "state": "never-issued-state"}, "expired or was already used"),
        ({"code": "abc", "state": "bad state with spaces"}, "expired or was already used"),
        ({"code": "abc", "state": "a" * 200}, "expired or was already used"),
    ],
)
def test_missing_unknown_or_malformed_state_is_refused_before_smartsheet(
    broker: Broker, query: dict[str, str], says: str
) -> None:
    answer = broker.callback(query, nonce="whatever")

    assert answer.status == 400
    assert says in answer.body
    assert 'href="/login"' in answer.body
    assert_secure_headers(answer.headers)
    assert token_calls(broker) == 0
    assert broker.connections() == []


def test_a_state_works_once(broker: Broker) -> None:
    location, nonce = broker.start()
    callback_query = broker.consent(location, user_id=ADA)
    assert broker.callback(callback_query, nonce).status == 200

    replay = broker.callback(callback_query, nonce)

    assert replay.status == 400
    assert "expired or was already used" in replay.body
    assert token_calls(broker) == 1


def test_an_expired_state_still_in_the_table_is_refused(broker: Broker) -> None:
    location, nonce = broker.start()
    state = parse_qs(urlsplit(location).query)["state"][0]
    # TTL deletion is lazy: the item is still there, but its time is up.
    broker.dynamodb.update_item(
        TableName=broker.state_table,
        Key={"state": {"S": state}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )

    answer = broker.callback(broker.consent(location, user_id=ADA), nonce)

    assert answer.status == 400
    assert token_calls(broker) == 0
    assert broker.connections() == []


@pytest.mark.parametrize("cookie", [None, "", "someone-elses-nonce"])
def test_a_missing_or_foreign_nonce_cookie_is_refused_and_spends_the_state(broker: Broker, cookie: str | None) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)

    assert broker.callback(query, cookie).status == 400
    assert broker.callback(query, nonce).status == 400  # one try: the state is gone

    assert token_calls(broker) == 0
    assert broker.connections() == []


def test_declined_consent_gets_a_friendly_page(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, allow=False)
    assert query["error"] == "access_denied"

    answer = broker.callback(query, nonce)

    assert answer.status == 400
    assert "You declined access" in answer.body
    assert 'href="/login"' in answer.body
    assert "Traceback" not in answer.body
    assert token_calls(broker) == 0
    assert broker.callback(query, nonce).status == 400  # state consumed
    assert "expired or was already used" in broker.callback(query, nonce).body


def test_other_authorize_errors_get_a_generic_page(broker: Broker) -> None:
    location, nonce = broker.start()
    state = parse_qs(urlsplit(location).query)["state"][0]

    answer = broker.callback({"error": "invalid_scope", "state": state}, nonce)

    assert answer.status == 400
    assert "could not authorize" in answer.body
    assert token_calls(broker) == 0


def nothing_stored(broker: Broker) -> None:
    assert broker.connections() == []
    assert broker.secrets.list_secrets(Filters=[{"Key": "name", "Values": ["test-stack/"]}])["SecretList"] == []


def start_again_link(body: str) -> str | None:
    found = re.search(r'<a class="button" href="([^"]*)">Start again</a>', body)
    return html.unescape(found.group(1)) if found else None


def test_a_code_smartsheet_never_issued_is_a_400_that_says_start_again_and_stores_nothing(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    query["code"] = "not-a-code-smartsheet-issued"

    answer = broker.callback(query, nonce)

    assert answer.status == 400
    assert "could not be finished" in answer.body
    assert start_again_link(answer.body) == "/login"
    assert "Reference:" in answer.body  # the log line's correlation id, should it keep happening
    assert "errorCode" not in answer.body
    assert "Traceback" not in answer.body
    assert_secure_headers(answer.headers)
    assert answer.cookie(NONCE_COOKIE) == ""  # the nonce is cleared
    assert broker.emulator.counts["token.code.1071"] == 1
    nothing_stored(broker)
    assert broker.callback(query, nonce).status == 400  # the state was spent: one try
    assert token_calls(broker) == 1


def test_an_expired_code_is_the_same_400(broker: Broker) -> None:
    lifetime = broker.emulator.settings.code_lifetime
    broker.emulator.update_settings(code_lifetime=0)  # the code expires as it is issued
    try:
        location, nonce = broker.start()
        answer = broker.callback(broker.consent(location, user_id=ADA), nonce)
    finally:
        broker.emulator.update_settings(code_lifetime=lifetime)

    assert answer.status == 400
    assert start_again_link(answer.body) == "/login"
    assert broker.emulator.counts["token.code.1069"] == 1
    nothing_stored(broker)


def test_starting_again_after_a_refused_code_keeps_where_the_user_was_going(broker: Broker) -> None:
    location, nonce = broker.start(return_to="https://app.example.com/done?tab=2")
    query = broker.consent(location, user_id=ADA)
    query["code"] = "expired-long-ago"
    refused = broker.callback(query, nonce)
    link = start_again_link(refused.body)
    assert link is not None
    assert link.startswith("/login?")

    again = broker.login(link.removeprefix("/login?"))  # the browser follows the link
    finished = broker.callback(broker.consent(again.location, user_id=ADA), again.cookie(NONCE_COOKIE))

    assert refused.status == 400
    assert again.status == 302
    assert finished.status == 303
    assert finished.location == "https://app.example.com/done?tab=2"


def connect_session(end_user_id: str, **extra: str) -> str:
    from tests.management.conftest import call_management

    answer = call_management("POST", "/connect-sessions", body={"end_user_id": end_user_id, **extra})
    assert answer.status == 201, answer.body
    token: str = answer.body["login_url"].split("session=")[1]
    return token


@pytest.mark.parametrize("anonymous_login", ["enabled", "disabled"])
def test_a_connect_session_whose_code_is_refused_sends_the_user_back_to_the_app_never_to_a_plain_login(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, anonymous_login: str
) -> None:
    """A plain /login would connect the user unbound to their end user (or be refused when anonymous sign-in is
    off), and the session's own link was single-use: only the integrator's app can start a new bound sign-in."""
    monkeypatch.setenv("ANONYMOUS_LOGIN", anonymous_login)
    get_config.cache_clear()
    page = broker.login({"session": connect_session("user-1", return_to="https://app.example.com/connected")})
    login = broker.press_connect(page)  # the connect page's button
    assert login.status == 303, login.body
    query = broker.consent(login.location, user_id=ADA)
    query["code"] = "not-a-code-smartsheet-issued"

    answer = broker.callback(query, login.cookie(NONCE_COOKIE))

    assert answer.status == 303
    assert answer.location == "https://app.example.com/connected?outcome=failed&error=code_refused"
    nothing_stored(broker)


def test_an_anonymous_sign_in_whose_code_is_refused_after_anonymous_login_was_turned_off_gets_no_login_link(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    query["code"] = "not-a-code-smartsheet-issued"
    monkeypatch.setenv("ANONYMOUS_LOGIN", "disabled")
    get_config.cache_clear()

    answer = broker.callback(query, nonce)

    assert answer.status == 400
    assert "Go back to the app" in answer.body
    assert "href=" not in answer.body


def test_wrong_client_secret_is_a_502_not_a_crash(broker: Broker) -> None:
    """Smartsheet refuses the app, not the code (1072, invalid hash): the operator's problem, alarmed."""
    broker.secrets.put_secret_value(
        SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"],
        SecretString='{"client_id": "local-client-id", "client_secret": "wrong"}',
    )
    location, nonce = broker.start()

    answer = broker.callback(broker.consent(location, user_id=ADA), nonce)

    assert answer.status == 502
    assert "Smartsheet refused the sign-in" in answer.body
    assert broker.connections() == []


def test_the_app_credentials_are_read_once_then_again_after_their_max_age(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    broker.secrets.put_secret_value(
        SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"],
        SecretString='{"client_id": "local-client-id", "client_secret": "rotated-elsewhere"}',
    )

    # Within APP_CREDENTIALS_MAX_AGE_SECONDS (300) the read is reused: the rotation is not seen yet.
    assert broker.sign_in(user_id=ALAN).status == 200

    monkeypatch.setenv("APP_CREDENTIALS_MAX_AGE_SECONDS", "0")
    get_config.cache_clear()
    assert broker.sign_in(user_id=ALAN).status == 502  # read again: Smartsheet refuses the new secret


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[]",
        '{"client_id": "local-client-id"}',
        '{"client_secret": ""}',
        '{"placeholder": true, "client_secret": "generatedByCloudFormation0123456"}',
    ],
)
def test_a_malformed_app_credentials_secret_is_a_500_page_showing_nothing_of_it(broker: Broker, value: str) -> None:
    broker.secrets.put_secret_value(SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"], SecretString=value)
    location, nonce = broker.start()  # /login never reads the secret: the client id is configuration

    answer = broker.callback(broker.consent(location, user_id=ADA), nonce)

    assert answer.status == 500
    assert value not in answer.body
    assert "Traceback" not in answer.body
    assert "client_secret" not in answer.body
    assert broker.connections() == []
    assert broker.emulator.counts["token.code"] == 0  # nothing was signed with a wrong secret


def test_an_unreadable_app_credentials_secret_is_a_503_and_stores_no_connection(broker: Broker) -> None:
    broker.secrets.delete_secret(SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"], ForceDeleteWithoutRecovery=True)
    location, nonce = broker.start()

    answer = broker.callback(broker.consent(location, user_id=ADA), nonce)

    assert answer.status == 503
    assert answer.headers["Retry-After"] == "30"
    assert "ResourceNotFound" not in answer.body
    assert broker.connections() == []


def test_a_transient_smartsheet_error_is_retried_inside_the_request(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    broker.emulator.set_faults(next_outcomes=[4004])

    answer = broker.callback(query, nonce)

    assert answer.status == 200, answer.body
    assert broker.connection(ADA) is not None


def test_smartsheet_down_at_callback_is_a_503_and_stores_nothing(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    broker.emulator.set_faults(error_rate=1.0, token_only=True)

    answer = broker.callback(query, nonce)

    assert answer.status == 503
    assert "try again" in answer.body
    assert answer.headers.get("Retry-After")
    assert broker.connections() == []


def test_rate_limited_at_callback_is_a_503(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    broker.emulator.set_faults(rate_limit_rate=1.0, token_only=True)

    assert broker.callback(query, nonce).status == 503
    assert broker.connections() == []


def test_concurrent_callbacks_with_one_state_let_exactly_one_through(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(broker.callback(query, nonce).status)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(statuses) == [200, 400, 400, 400]
    assert token_calls(broker) == 1


def test_return_to_on_the_allow_list_is_where_the_user_lands(broker: Broker) -> None:
    location, nonce = broker.start(return_to="https://app.example.com/settings")

    answer = broker.callback(broker.consent(location, user_id=ADA), nonce)

    assert answer.status == 303
    assert answer.location == "https://app.example.com/settings"


@pytest.mark.parametrize("target", ["https://evil.example.com/", "//evil.example.com", "javascript:alert(1)"])
def test_return_to_off_the_allow_list_is_refused_at_login(broker: Broker, target: str) -> None:
    answer = broker.login({"return_to": target})

    assert answer.status == 400
    assert "Location" not in answer.headers
    assert broker.dynamodb.scan(TableName=broker.state_table)["Count"] == 0


def test_oversized_query_is_a_400(broker: Broker) -> None:
    assert broker.login({"return_to": "https://app.example.com/" + "x" * 5000}).status == 400
    assert broker.callback({"state": "s", "code": "c" * 3000}, nonce="n").status == 400
    assert token_calls(broker) == 0


def test_missing_code_with_a_valid_state_is_a_400(broker: Broker) -> None:
    location, nonce = broker.start()
    state = parse_qs(urlsplit(location).query)["state"][0]

    answer = broker.callback({"state": state}, nonce)

    assert answer.status == 400
    assert "This link is not valid" in answer.body  # the log says "Smartsheet did not send an authorization code."
    assert token_calls(broker) == 0


def test_unknown_routes_are_404_pages(broker: Broker) -> None:
    from authorize.app import lambda_handler

    from tests.support.broker import answer_of
    from tests.support.events import LambdaContext, http_event

    answer = answer_of(lambda_handler(http_event("/admin"), LambdaContext()))

    assert answer.status == 404
    assert_secure_headers(answer.headers)
    assert "Page not found" in answer.body


def test_storage_outage_is_a_503_page_without_internals(broker: Broker) -> None:
    broker.dynamodb.delete_table(TableName=broker.state_table)

    answer = broker.login()

    assert answer.status == 503
    assert "ResourceNotFound" not in answer.body
    assert "Traceback" not in answer.body
