"""The result page (issue 22 item 6): a finished sign-in's callback answers 303 See Other to GET /result with a signed,
short-lived __Host- cookie, and the page says what that cookie says and nothing an address could put in it. A reload
keeps saying connected; the back button to the spent /callback URL of this same sign-in leads there again; a bare
/callback, another sign-in's spent URL, a changed, foreign or expired cookie each get their own truthful page."""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.edge import result

from tests.management.conftest import EventSink
from tests.support.broker import NONCE_COOKIE, RESULT_COOKIE, Answer, Broker

ADA = 4583173393803140
GRACE = 6812335718217604
NO_RESULT = "No sign-in result to show"


def signed_in(broker: Broker, user_id: int = ADA) -> tuple[dict[str, str], str]:
    """A sign-in as a browser makes it, stopping at the callback's own answer: (its query, the result cookie)."""
    location, nonce = broker.start()
    query = broker.consent(location, user_id=user_id)
    from callback.app import lambda_handler

    from tests.support.broker import answer_of
    from tests.support.events import LambdaContext, http_event

    answer = answer_of(lambda_handler(http_event("/callback", query, cookies={NONCE_COOKIE: nonce}), LambdaContext()))
    assert (answer.status, answer.location) == (303, "/result"), answer.body
    cookie = answer.cookie(RESULT_COOKIE)
    assert cookie
    return query, cookie


def test_a_finished_sign_in_is_a_303_to_the_result_page_with_a_host_cookie_and_no_values_in_the_address(
    broker: Broker,
) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)

    answer = broker.callback(query, nonce)

    via = answer.via
    assert via is not None
    assert via.status == 303
    assert via.location == "/result"  # no code, state, email or outcome in the address
    assert via.body == ""
    assert via.headers["Cache-Control"] == "no-store"
    [raw] = [c for c in via.cookies if c.startswith(f"{RESULT_COOKIE}=")]
    attributes = {part.strip().lower() for part in raw.split(";")[1:]}
    assert attributes == {"path=/", "max-age=900", "httponly", "secure", "samesite=lax"}  # __Host-: no Domain
    value = via.cookie(RESULT_COOKIE) or ""
    for secret in (query["code"], query["state"], "ada@example.com"):
        assert secret not in value  # base64 JSON and a MAC: the state only as a hash
    assert answer.status == 200
    assert "Smartsheet connected" in answer.body
    assert "ada@example.com" in answer.body


def test_a_reload_of_the_result_page_keeps_saying_connected(broker: Broker) -> None:
    _, cookie = signed_in(broker)

    for _ in range(3):
        page = broker.result({RESULT_COOKIE: cookie})
        assert page.status == 200
        assert "<title>Smartsheet connected</title>" in page.body
        assert "ada@example.com" in page.body
        assert page.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert len(broker.emulator.token_requests) == 1  # one exchange, at the callback: a reload exchanges nothing


def test_the_back_button_to_this_sign_ins_callback_leads_to_its_result_page(broker: Broker) -> None:
    query, cookie = signed_in(broker)

    again = broker.callback(query, None, cookies={RESULT_COOKIE: cookie})

    assert again.via is not None
    assert (again.via.status, again.via.location) == (303, "/result")
    assert "Smartsheet connected" in again.body
    assert "ada@example.com" in again.body


def test_without_the_cookie_the_spent_callback_says_it_cannot_be_used_again(broker: Broker) -> None:
    query, _ = signed_in(broker)

    again = broker.callback(query, None)

    assert again.status == 400
    assert "can&#x27;t be used again" in again.body or "can't be used again" in again.body


def test_another_sign_ins_result_does_not_vouch_for_this_spent_callback(broker: Broker) -> None:
    """A result cookie says how one sign-in ended: another sign-in's spent URL keeps its own page."""
    first_query, _ = signed_in(broker, ADA)
    _, second_cookie = signed_in(broker, GRACE)

    again = broker.callback(first_query, None, cookies={RESULT_COOKIE: second_cookie})

    assert again.status == 400
    assert again.via is None
    assert "already used" in again.body


def test_a_bare_callback_keeps_its_own_page_even_after_a_sign_in(broker: Broker) -> None:
    _, cookie = signed_in(broker)

    bare = broker.callback(None, None, cookies={RESULT_COOKIE: cookie})

    assert bare.status == 400
    assert "<title>Nothing to finish here</title>" in bare.body


def test_the_result_page_without_a_cookie_claims_nothing(broker: Broker) -> None:
    from callback.app import lambda_handler

    from tests.support.broker import answer_of
    from tests.support.events import LambdaContext, http_event

    # Nothing in the address is read: a crafted link cannot make it say "connected", nor name anyone.
    crafted = {"outcome": "connected", "email": "mallory@evil.example", "state": "x"}
    for event in (http_event("/result"), http_event("/result", crafted)):
        page = answer_of(lambda_handler(event, LambdaContext()))
        assert page.status == 200
        assert f"<title>{NO_RESULT}</title>" in page.body
        assert "mallory" not in page.body
        assert "Smartsheet connected" not in page.body
        assert "is connected to" not in page.body
        assert 'href="/login"' in page.body  # anonymous sign-in is on in these tests: start again here


def test_the_result_page_without_anonymous_login_sends_the_user_back_to_the_app(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANONYMOUS_LOGIN", "false")
    from smartsheet_oauth.config import get_config

    get_config.cache_clear()

    page = broker.result()

    assert f"<title>{NO_RESULT}</title>" in page.body
    assert "/login" not in page.body
    assert "Go back to" in page.body


def _tampered(value: str, **fields: object) -> str:
    import base64
    import json

    payload, mac = value.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(fields)
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{forged}.{mac}"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda v, secret: _tampered(v, e="mallory@evil.example"), id="email-changed"),
        pytest.param(lambda v, secret: _tampered(v, x=int(time.time()) + 86400 * 365), id="lifetime-stretched"),
        pytest.param(lambda v, secret: v[:-2] + ("AA" if not v.endswith("AA") else "BB"), id="mac-changed"),
        pytest.param(
            lambda v, secret: result.seal(
                result.SignInResult("connected", "mallory@evil.example", int(time.time()) + 600, "0" * 32),
                client_secret="another-apps-secret",
            ),
            id="another-key",
        ),
        pytest.param(
            lambda v, secret: result.seal(
                result.SignInResult("connected", "ada@example.com", int(time.time()) - 1, "0" * 32),
                client_secret=secret,
            ),
            id="expired",
        ),
        pytest.param(lambda v, secret: "1", id="the-old-done-flag"),
        pytest.param(lambda v, secret: "x" * 5000, id="oversized"),
        pytest.param(lambda v, secret: "not base64!.also not", id="malformed"),
    ],
)
def test_a_changed_foreign_or_expired_cookie_opens_as_no_result(broker: Broker, change: object) -> None:
    _, cookie = signed_in(broker)
    secret = services.app_credentials().client_secret

    page = broker.result({RESULT_COOKIE: change(cookie, secret)})  # type: ignore[operator]

    assert page.status == 200
    assert f"<title>{NO_RESULT}</title>" in page.body
    assert "mallory" not in page.body
    assert "ada@example.com" not in page.body


def test_a_rotated_client_secret_turns_a_result_into_no_result(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cookie = signed_in(broker)
    broker.secrets.put_secret_value(
        SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"], SecretString='{"client_secret": "rotated-secret-value"}'
    )
    monkeypatch.setenv("APP_CREDENTIALS_MAX_AGE_SECONDS", "0")
    from smartsheet_oauth.config import get_config

    get_config.cache_clear()

    page = broker.result({RESULT_COOKIE: cookie})

    assert f"<title>{NO_RESULT}</title>" in page.body


def test_an_unreadable_key_on_the_result_page_claims_nothing(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cookie = signed_in(broker)
    broker.secrets.delete_secret(SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"], ForceDeleteWithoutRecovery=True)
    monkeypatch.setenv("APP_CREDENTIALS_MAX_AGE_SECONDS", "0")
    from smartsheet_oauth.config import get_config

    get_config.cache_clear()

    page = broker.result({RESULT_COOKIE: cookie})

    # Not the "could not finish connecting" page of a storage failure: the sign-in did finish.
    assert page.status == 200
    assert f"<title>{NO_RESULT}</title>" in page.body
    assert "Traceback" not in page.body
    assert "Smartsheet connected" not in page.body


@pytest.mark.parametrize(
    "value", ['{"placeholder": true, "client_secret": "generatedByCloudFormation0123456"}', "not json"]
)
def test_an_app_credentials_secret_without_a_client_secret_on_the_result_page_claims_nothing(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    _, cookie = signed_in(broker)
    broker.secrets.put_secret_value(SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"], SecretString=value)
    monkeypatch.setenv("APP_CREDENTIALS_MAX_AGE_SECONDS", "0")
    from smartsheet_oauth.config import get_config

    get_config.cache_clear()

    page = broker.result({RESULT_COOKIE: cookie})

    assert page.status == 200
    assert f"<title>{NO_RESULT}</title>" in page.body
    assert "generatedByCloudFormation" not in page.body


def test_a_sign_in_with_return_to_still_goes_to_the_app_and_sets_no_result(broker: Broker) -> None:
    location, nonce = broker.start(return_to="https://app.example.com/done")
    query = broker.consent(location, user_id=ADA)

    answer = broker.callback(query, nonce)

    assert (answer.status, answer.location) == (303, "https://app.example.com/done")
    assert answer.cookie(RESULT_COOKIE) is None
    assert answer.cookie(NONCE_COOKIE) == ""


def test_the_cookie_jar_of_a_browser_reads_the_value_back_unchanged(broker: Broker) -> None:
    """The value is cookie-safe: a browser's parser gives back exactly what was set (no quoting, no padding '=')."""
    _, cookie = signed_in(broker)
    jar: SimpleCookie = SimpleCookie()
    jar.load(f"{RESULT_COOKIE}={cookie}")
    assert jar[RESULT_COOKIE].value == cookie
    assert "=" not in cookie
    assert '"' not in cookie


# -- a sign-in that ended in a final failure: its page stays its page ---------------------------------------------
# The callback keeps answering a final failure (ANSWERS' final rows: no Retry-After, the sign-in cannot go on) with its
# own status, page and reference, and sets this sign-in's result cookie with that outcome: a reload, back/forward to
# the spent URL, or /result show that page again instead of "can't be used again".
USED = "can&#x27;t be used again"


def callback_answer(query: dict[str, str], nonce: str | None, cookies: dict[str, str] | None = None) -> Answer:
    """The callback's own answer (never followed: a failure is no redirect)."""
    from callback.app import lambda_handler

    from tests.support.broker import answer_of
    from tests.support.events import LambdaContext, http_event

    sent = {**({NONCE_COOKIE: nonce} if nonce is not None else {}), **(cookies or {})}
    return answer_of(lambda_handler(http_event("/callback", query, cookies=sent or None), LambdaContext()))


def declined(broker: Broker) -> tuple[dict[str, str], Answer]:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA, allow=False)
    assert query["error"] == "access_denied"
    return query, callback_answer(query, nonce)


def title(answer: Answer) -> str:
    found = re.search(r"<title>(.*?)</title>", answer.body)
    assert found, answer.body
    return found.group(1)


def test_a_declined_sign_in_keeps_its_400_page_and_sets_a_result_cookie_saying_declined(broker: Broker) -> None:
    query, answer = declined(broker)

    assert answer.status == 400
    assert "Location" not in answer.headers  # not turned into a redirect: the status is the contract
    assert title(answer) == "You declined access"
    [raw] = [c for c in answer.cookies if c.startswith(f"{RESULT_COOKIE}=")]
    attributes = {part.strip().lower() for part in raw.split(";")[1:]}
    assert attributes == {"path=/", "max-age=900", "httponly", "secure", "samesite=lax"}
    value = answer.cookie(RESULT_COOKIE) or ""
    assert value
    assert query["state"] not in value
    fields = _fields(value)
    assert fields["o"] == "denied"  # the answer's code, as the metrics name it (callback_denied)
    assert fields["e"] == ""  # no account: nobody signed in
    assert broker.emulator.token_requests == []


def test_a_reload_of_a_declined_callback_shows_the_declined_page_again(broker: Broker) -> None:
    query, answer = declined(broker)
    cookie = answer.cookie(RESULT_COOKIE) or ""

    for _ in range(2):  # the browser cleared the nonce? it holds none on a reload: only the result cookie
        again = callback_answer(query, None, {RESULT_COOKIE: cookie})
        assert again.status == 400
        assert again.body == answer.body
        assert USED not in again.body
        assert "Location" not in again.headers
        assert again.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in again.headers["Content-Security-Policy"]
    assert broker.emulator.token_requests == []


def test_the_result_page_with_a_declined_result_shows_the_declined_page(broker: Broker) -> None:
    _, answer = declined(broker)

    page = broker.result({RESULT_COOKIE: answer.cookie(RESULT_COOKIE) or ""})

    assert page.status == 200  # the page was found and shown; the refusal was the callback's answer, counted there
    assert title(page) == "You declined access"
    assert "You declined access to your Smartsheet account" in page.body
    assert NO_RESULT not in page.body
    assert "Smartsheet connected" not in page.body


def test_a_binding_conflict_keeps_its_409_page_on_a_reload_and_is_announced_once(
    broker: Broker, event_sink: EventSink
) -> None:
    from tests.management.conftest import connect

    connect(broker, "user-1", str(ADA))
    event_sink.drain()
    exchanged = len(broker.emulator.token_requests)
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)

    answer = callback_answer(query, nonce)
    cookie = answer.cookie(RESULT_COOKIE) or ""
    again = callback_answer(query, None, {RESULT_COOKIE: cookie})
    page = broker.result({RESULT_COOKIE: cookie})

    assert answer.status == 409
    assert title(answer) == "Reconnect from the app"
    assert _fields(cookie)["o"] == "binding_conflict"
    assert (again.status, again.body) == (409, answer.body)
    assert (page.status, title(page)) == (200, "Reconnect from the app")
    [event] = event_sink.drain()  # the reload announced nothing again
    assert event["detail"]["reason"] == "account_bound_to_an_end_user"
    assert len(broker.emulator.token_requests) == exchanged + 1  # the reload exchanged nothing


def _code_refused(broker: Broker) -> tuple[dict[str, str], str]:
    location, nonce = broker.start(return_to="https://app.example.com/done?tab=2")
    query = broker.consent(location, user_id=ADA)
    query["code"] = "not-a-code-smartsheet-issued"
    return query, nonce


def _authorize_error(broker: Broker) -> tuple[dict[str, str], str]:
    location, nonce = broker.start()
    return {"error": "invalid_scope", "state": broker.consent(location, user_id=ADA)["state"]}, nonce


def _no_code(broker: Broker) -> tuple[dict[str, str], str]:
    location, nonce = broker.start()
    return {"state": broker.consent(location, user_id=ADA)["state"]}, nonce


def _wrong_client_secret(broker: Broker) -> tuple[dict[str, str], str]:
    broker.secrets.put_secret_value(
        SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"],
        SecretString='{"client_id": "local-client-id", "client_secret": "wrong"}',
    )
    location, nonce = broker.start()
    return broker.consent(location, user_id=ADA), nonce


@pytest.mark.parametrize(
    ("begin", "status", "code"),
    [
        pytest.param(_authorize_error, 400, "authorize_error", id="authorize-error"),
        pytest.param(_no_code, 400, "bad_request", id="no-code"),
        pytest.param(_code_refused, 400, "invalid_code", id="code-refused"),
        pytest.param(_wrong_client_secret, 502, "smartsheet_error", id="smartsheet-refused"),
    ],
)
def test_each_final_failure_is_shown_again_with_its_status_and_its_original_reference(
    broker: Broker, begin: object, status: int, code: str
) -> None:
    query, nonce = begin(broker)  # type: ignore[operator]

    answer = callback_answer(query, nonce)
    cookie = answer.cookie(RESULT_COOKIE) or ""
    again = callback_answer(query, None, {RESULT_COOKIE: cookie})
    page = broker.result({RESULT_COOKIE: cookie})

    assert answer.status == status
    assert _fields(cookie)["o"] == code
    assert "Retry-After" not in answer.headers
    # The same page, byte for byte: its reference is the failed request's (the one its log lines carry), its
    # start-again link the same.
    assert (again.status, again.body) == (status, answer.body)
    assert "Retry-After" not in again.headers
    assert (page.status, page.body) == (200, answer.body)


def test_a_refused_codes_start_again_link_too_long_for_a_cookie_clears_the_result_instead(broker: Broker) -> None:
    location, nonce = broker.start(return_to="https://app.example.com/done?" + "a=%&" * 300)
    query = broker.consent(location, user_id=ADA)
    query["code"] = "not-a-code-smartsheet-issued"

    answer = callback_answer(query, nonce, {RESULT_COOKIE: signed_in(broker, GRACE)[1]})
    again = callback_answer(query, None, {RESULT_COOKIE: answer.cookie(RESULT_COOKIE) or ""})

    assert answer.status == 400
    assert title(answer) == "This sign-in could not be finished"
    [raw] = [c for c in answer.cookies if c.startswith(f"{RESULT_COOKIE}=")]
    assert "Max-Age=0" in raw  # GRACE's earlier result is not this sign-in's: /result says it has none
    assert answer.cookie(RESULT_COOKIE) == ""
    assert again.status == 400
    assert USED in again.body


def test_another_sign_ins_result_does_not_vouch_for_a_declined_callback(broker: Broker) -> None:
    first_query, _ = declined(broker)
    _, second = declined(broker)
    _, connected = signed_in(broker, GRACE)

    for cookie in (second.cookie(RESULT_COOKIE) or "", connected):
        again = callback_answer(first_query, None, {RESULT_COOKIE: cookie})
        assert again.status == 400
        assert USED in again.body
        assert "You declined access" not in again.body


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda v, secret: _tampered(v, o="connected", e="mallory@evil.example"), id="made-connected"),
        pytest.param(lambda v, secret: _tampered(v, o="binding_conflict"), id="outcome-changed"),
        pytest.param(lambda v, secret: _tampered(v, r="call-mallory-0000"), id="reference-changed"),
        pytest.param(lambda v, secret: _tampered(v, f={"start_again": "https://evil.example/"}), id="facts-changed"),
        pytest.param(
            lambda v, secret: result.seal(result.open_result(v, client_secret=secret, now=0), client_secret="other"),  # type: ignore[arg-type]
            id="another-key",
        ),
    ],
)
def test_a_changed_failure_cookie_is_not_believed(broker: Broker, change: object) -> None:
    query, answer = declined(broker)
    secret = services.app_credentials().client_secret
    forged = change(answer.cookie(RESULT_COOKIE) or "", secret)  # type: ignore[operator]

    again = callback_answer(query, None, {RESULT_COOKIE: forged})
    page = broker.result({RESULT_COOKIE: forged})

    assert again.status == 400
    assert USED in again.body
    assert f"<title>{NO_RESULT}</title>" in page.body
    for lie in ("mallory", "evil.example", "You declined access", "Reconnect from"):
        assert lie not in again.body
        assert lie not in page.body


def test_a_transient_failure_sets_no_result_the_user_is_told_to_try_again(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    broker.emulator.set_faults(error_rate=1.0, token_only=True)

    answer = callback_answer(query, nonce)

    assert answer.status == 503
    assert answer.headers["Retry-After"]
    assert answer.cookie(RESULT_COOKIE) is None


def test_a_callback_in_another_browser_sets_no_result_there(broker: Broker) -> None:
    """Not this browser's sign-in (the nonce does not match): it keeps whatever result it had, and a link cannot
    plant one."""
    location, _ = broker.start()
    query = broker.consent(location, user_id=ADA, allow=False)
    _, kept = signed_in(broker, GRACE)

    answer = callback_answer(query, "another-browsers-nonce", {RESULT_COOKIE: kept})

    assert answer.status == 400
    assert title(answer) == "Finish in the browser where you started"
    assert not any(c.startswith(f"{RESULT_COOKIE}=") for c in answer.cookies)


def test_a_declined_connect_session_still_goes_back_to_the_app_without_a_result(broker: Broker) -> None:
    from tests.management.conftest import new_session

    answer = broker.connect_through(new_session("user-1"), user_id=ADA, allow=False)

    assert answer.status == 303
    assert "outcome=declined" in answer.location
    assert answer.cookie(RESULT_COOKIE) is None


def _fields(value: str) -> dict[str, object]:
    import base64
    import json

    payload = value.split(".", maxsplit=1)[0]
    fields: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return fields
