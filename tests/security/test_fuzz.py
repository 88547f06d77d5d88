"""Property-based: whatever arrives at /login and /callback (query strings, headers, cookies, bodies, oversized
values), the real handlers answer 2xx/3xx/4xx with the security headers and only the broker's own markup, and
Smartsheet hears of nothing unless the right state came with the right browser's cookie.

SECURITY_FUZZ_EXAMPLES sets the examples per property (default keeps `make test` short; `make fuzz` runs more)."""

from __future__ import annotations

import os
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.security.support import page_problems, security_header_problems, smartsheet_api_calls, state_of
from tests.support.broker import NONCE_COOKIE, Broker, answer_of
from tests.support.events import LambdaContext

EXAMPLES = int(os.environ.get("SECURITY_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # One broker (moto + emulator) serves every example: what an example leaves behind is more hostile input.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

PARAM_NAMES = ["state", "code", "error", "error_description", "return_to", "expires_in", "redirect_uri", "scope"]
HOSTILE_VALUES = [
    "",
    " ",
    "%",
    "%zz",
    "%00",
    "%%32%65",
    "\x00",
    "\r\nSet-Cookie: x=1",
    "'\"><script>alert(1)</script>",
    "{{7*7}}${7*7}",
    "../../../../etc/passwd",
    "https://evil.example/",
    "//evil.example",
    "javascript:alert(1)",
    "\ud800",
    "\ufeff",
    "\u202e",
    "A" * 64,
    "access_denied",
    "null",
    "[]",
]
oversized = st.builds(
    lambda char, n: char * n, st.sampled_from(["a", "%", "\u00e9", "\x00", "=", "&", ";"]), st.integers(1500, 12000)
)
values = st.one_of(
    st.text(max_size=80),
    st.text(st.characters(codec="ascii"), max_size=300),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "Mn", "So"]), max_size=20),
    st.sampled_from(HOSTILE_VALUES),
    oversized,
)
names = st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=20), oversized)
params = st.dictionaries(names, values, max_size=6)
queries = st.one_of(params, st.text(st.characters(codec="ascii"), max_size=400), oversized)
header_names = st.one_of(
    st.sampled_from(["cookie", "host", "x-forwarded-for", "x-forwarded-host", "origin", "referer", "content-type"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True),
)
headers = st.dictionaries(header_names, values, max_size=6)
cookie_strings = st.one_of(values, values.map(lambda v: f"{NONCE_COOKIE}={v}"), st.just(f"{NONCE_COOKIE}"))
cookies = st.lists(cookie_strings, max_size=5)


def event_for(
    path: str,
    query: str | dict[str, str],
    *,
    method: str = "GET",
    header_map: dict[str, str] | None = None,
    cookie_list: list[str] | None = None,
    body: str | None = None,
    base64_body: bool = False,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An HTTP API (v2) event as API Gateway would build it: decoded parameters (duplicate keys comma-joined),
    cookies in their own list. A dict query is taken as the decoded parameters themselves, so values the
    event's JSON can carry (lone surrogates, NULs) reach the handler as they are."""
    if isinstance(query, dict):
        raw_query, parameters = urlencode(query, errors="surrogatepass"), dict(query)
    else:
        raw_query, parameters = query, {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {"host": "broker.example.com", **(header_map or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "broker.example.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9"},
            "requestId": uuid.uuid4().hex if request_id is None else request_id,
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": "28/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1795800000000,
        },
        "isBase64Encoded": base64_body,
    }
    if parameters:
        event["queryStringParameters"] = parameters
    if cookie_list:
        event["cookies"] = cookie_list
    if body is not None:
        event["body"] = body
    return event


def invoke(path: str, event: dict[str, Any]) -> Any:
    if path == "/login":
        from authorize.app import lambda_handler as login_handler

        return answer_of(login_handler(event, LambdaContext()))
    from callback.app import lambda_handler as callback_handler

    return answer_of(callback_handler(event, LambdaContext()))


def within_limits(query: dict[str, str]) -> bool:
    """What /callback reads at all (the query size limits of smartsheet_oauth.edge.web)."""
    if len(urlencode(query, errors="surrogatepass")) > 4096:
        return False
    return all(len(name) <= 64 and len(value) <= 2048 for name, value in query.items())


def check_answer(answer: Any, *, smartsheet_asked: bool = False) -> None:
    """2xx/3xx/4xx only; a 502 only where Smartsheet itself refused a code it was asked about (DESIGN.md)."""
    assert 200 <= answer.status < 500 or (smartsheet_asked and answer.status == 502), (
        answer.status,
        answer.body[:300],
    )
    assert security_header_problems(answer.headers) == []
    assert page_problems(answer.body) == []
    assert "Traceback" not in answer.body


@pytest.fixture
def wide_open(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    """A few allowed return_to values, so the fuzzer can reach the allowed branch too."""
    from smartsheet_oauth import services

    monkeypatch.setenv("ALLOWED_RETURN_TO", "https://app.example.com https://evil.example/exact")
    services.reset()
    return broker


requests_ = st.fixed_dictionaries(
    {
        "path": st.sampled_from(["/login", "/callback"]),
        "query": queries,
        "method": st.sampled_from(["GET", "GET", "GET", "POST", "HEAD", "OPTIONS"]),
        "header_map": headers,
        "cookie_list": cookies,
        "body": st.none() | values,
        "base64_body": st.booleans(),
        "request_id": st.none() | values,
    }
)


@FUZZ
@given(request=requests_)
def test_hostile_requests_never_fail_and_never_reach_smartsheet(wide_open: Broker, request: dict[str, Any]) -> None:
    path = request.pop("path")
    event = event_for(path, request.pop("query"), **request)

    check_answer(invoke(path, event))
    assert smartsheet_api_calls(wide_open.emulator) == {}


callbacks = st.fixed_dictionaries(
    {
        "state_choice": st.sampled_from(["own", "other", "random", "missing", "doubled"]),
        "cookie_choice": st.sampled_from(["own", "other", "random", "missing", "own+noise", "own+other"]),
        "code": st.none() | values,
        "error": st.none() | values,
        "extra": params,
        "noise": cookies,
        "random_state": values,
    }
)


@FUZZ
@given(callback=callbacks)
# Always run the one way through: the browser's own state and cookie with a code Smartsheet refuses (502).
@example(
    callback={
        "state_choice": "own",
        "cookie_choice": "own+noise",
        "code": "0",
        "error": None,
        "extra": {},
        "noise": ["theme=dark"],
        "random_state": "",
    }
)
def test_only_the_right_state_with_the_right_cookie_reaches_smartsheet(
    wide_open: Broker, callback: dict[str, Any]
) -> None:
    state_choice, cookie_choice = callback["state_choice"], callback["cookie_choice"]
    code, error, random_state = callback["code"], callback["error"], callback["random_state"]
    extra, noise = callback["extra"], callback["noise"]
    broker = wide_open
    own_location, own_nonce = broker.start()
    other_location, other_nonce = broker.start()
    own_state, other_state = state_of(own_location), state_of(other_location)
    query: dict[str, str] = {k: v for k, v in extra.items() if k not in ("state", "code", "error")}
    state = {"own": own_state, "other": other_state, "random": random_state, "doubled": own_state}.get(state_choice)
    if state is not None:
        query["state"] = state
    if code is not None:
        query["code"] = code
    if error is not None:
        query["error"] = error
    if state_choice == "doubled":
        query["state"] = f"{own_state},{own_state}"  # state=...&state=...: API Gateway joins them with a comma
    noise_without_nonce = [c for c in noise if not c.strip().startswith(NONCE_COOKIE)]
    cookie_list = {
        "own": [f"{NONCE_COOKIE}={own_nonce}"],
        "other": [f"{NONCE_COOKIE}={other_nonce}"],
        "random": [f"{NONCE_COOKIE}={random_state}"],
        "missing": noise_without_nonce,
        "own+noise": [*noise_without_nonce, f"{NONCE_COOKIE}={own_nonce}"],
        "own+other": [f"{NONCE_COOKIE}={other_nonce}", f"{NONCE_COOKIE}={own_nonce}"],
    }[cookie_choice]
    before = smartsheet_api_calls(broker.emulator).get("token", 0)

    answer = invoke("/callback", event_for("/callback", query, cookie_list=cookie_list))

    token_requests = smartsheet_api_calls(broker.emulator).get("token", 0) - before
    check_answer(answer, smartsheet_asked=token_requests > 0)
    # Whose sign-in the state belongs to, and whose browsers' cookies came with it.
    state_owner = {"own": "own", "other": "other"}.get(state_choice)
    cookie_owners = {"own": {"own"}, "own+noise": {"own"}, "own+other": {"own", "other"}, "other": {"other"}}.get(
        cookie_choice, set()
    )
    usable_code = bool(code) and len(code or "") <= 512 and (code or "").isascii() and (code or "").isprintable()
    if token_requests:
        assert state_owner is not None, "a token request without a state /login issued"
        assert state_owner in cookie_owners, "a token request from a browser that did not start this sign-in"
        assert error is None
        assert token_requests == 1
    if state_owner is None or state_owner not in cookie_owners:
        assert token_requests == 0
    if state_owner is not None and cookie_owners == {state_owner} and error is None and usable_code:
        assert token_requests == (1 if within_limits(query) else 0)
