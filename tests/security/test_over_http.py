"""The same guarantees where the path is real HTTP: the local gateway (API Gateway's decoding and framing) in front
of the functions in their own processes. Headers as a browser receives them, raw encodings, replays."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
import requests

from infra.local.demo import BrokerClient
from infra.local.stack import LocalStack
from tests.security.support import page_problems, security_header_problems

pytestmark = pytest.mark.e2e

RAW_RETURN_TO = [
    "//evil.example",
    "%2F%2Fevil.example",
    "%252F%252Fevil.example",
    "%5C%5Cevil.example",
    "/%5Cevil.example",
    "https:%2F%2Fevil.example",
    "%68ttps://evil.example",
    "https%3A%2F%2Fevil.example",
    "https://evil.example%2523@app.example.com",
    "javascript%3Aalert(1)",
    "java%09script:alert(1)",
    "https://app.example.com%0D%0ASet-Cookie:%20x=1",
    "https://app.example.com&return_to=https://evil.example",
    "https://%E2%80%AEmoc.elpmaxe",
    "https://evil.example%EF%BC%83@app.example.com",
    "https://[::1",
]


def get(stack: LocalStack, path_and_query: str, cookie: str | None = None) -> requests.Response:
    headers = {"Cookie": cookie} if cookie else {}
    return requests.get(f"{stack.url}{path_and_query}", headers=headers, allow_redirects=False, timeout=30)


def state_count(stack: LocalStack) -> int:
    return int(stack.aws.dynamodb.scan(TableName=stack.table_name("STATE_TABLE_NAME"), Select="COUNT")["Count"])


def assert_protected(answer: requests.Response, what: str) -> None:
    assert answer.status_code < 500, f"{what}: {answer.status_code}"
    assert security_header_problems(dict(answer.headers)) == [], what
    assert page_problems(answer.text) == [], what
    assert "Traceback" not in answer.text


def test_every_answer_a_browser_gets_carries_the_security_headers(
    local_stack: LocalStack, client: BrokerClient
) -> None:
    answers: dict[str, requests.Response] = {"login": get(local_stack, "/login")}
    sign_in = client.login()
    client.consent(sign_in, allow=True)
    answers["success"] = client.callback(sign_in)
    result_cookies = [
        c.split(";")[0]
        for c in answers["success"].raw.headers.getlist("Set-Cookie")
        if c.startswith("__Host-smartsheet-oauth-result=")
    ]
    assert len(result_cookies) == 1
    answers["result"] = client.result(result_cookies[0])
    answers["no result"] = get(local_stack, "/result")
    answers["replay"] = client.callback(sign_in)
    declined = client.login()
    client.consent(declined, allow=False)
    answers["declined"] = client.callback(declined)
    answers["return_to"] = get(local_stack, "/login?return_to=https%3A%2F%2Fevil.example")
    answers["oversized"] = get(local_stack, "/callback?code=" + "c" * 5000)
    refused = client.login()
    client.consent(refused, allow=True)
    refused.callback_url = refused.callback_url.replace("code=", "code=x")
    answers["refused code"] = client.callback(refused)
    down = client.login()
    client.consent(down, allow=True)
    local_stack.emulator.set_faults(error_rate=1.0, token_only=True, server_error_codes=(4004,))
    answers["smartsheet down"] = client.callback(down)

    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "login": 302,
        "success": 303,
        "result": 200,
        "no result": 200,
        "replay": 400,
        "declined": 400,
        "return_to": 400,
        "oversized": 400,
        "refused code": 400,
        "smartsheet down": 503,
    }
    for name, answer in answers.items():
        assert security_header_problems(dict(answer.headers)) == [], name
        assert page_problems(answer.text) == [], name
    [set_cookie] = answers["login"].raw.headers.getlist("Set-Cookie")
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookie)
    [morsel] = jar.values()
    assert morsel.key == "__Host-smartsheet-oauth-nonce"
    assert morsel["secure"]
    assert morsel["httponly"]
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert not morsel["domain"]
    assert answers["success"].raw.headers.getlist("Set-Cookie")[0].split(";")[0].endswith("=")  # nonce cleared


def test_encoded_return_to_tricks_are_refused_without_a_state_or_a_cookie(local_stack: LocalStack) -> None:
    before = state_count(local_stack)
    for raw in RAW_RETURN_TO:
        answer = get(local_stack, f"/login?return_to={raw}")

        assert answer.status_code == 400, raw
        assert "Location" not in answer.headers, raw
        assert "Set-Cookie" not in answer.headers, raw
        assert_protected(answer, raw)
    assert state_count(local_stack) == before


def test_a_callback_from_another_browser_or_replayed_never_reaches_smartsheet(
    local_stack: LocalStack, client: BrokerClient
) -> None:
    victim = client.login()
    attacker = client.login()
    client.consent(victim, allow=True)
    calls = client.token_calls()

    stolen = client.callback(victim, cookie=attacker.nonce_cookie)  # the victim's callback, the attacker's browser
    late = client.callback(victim)  # the owner, after the one try
    planted = client.callback(victim, cookie=f"{victim.nonce_cookie}x")

    assert [stolen.status_code, late.status_code, planted.status_code] == [400, 400, 400]
    assert client.token_calls() == calls


EXPIRED = "This sign-in link can&#x27;t be used again"  # the callback's page for a state it does not hold
NO_STATE = "Nothing to finish here"  # the callback's page when no state came at all


@pytest.mark.parametrize(
    ("path_and_query", "status", "title"),
    [
        ("/callback?state=%zz&code=%", 400, EXPIRED),
        ("/callback?state=%00&code=%00", 400, EXPIRED),
        ("/callback?state=a&state=b&code=c&code=d", 400, EXPIRED),
        ("/callback?" + "&".join(f"p{i}=v" for i in range(300)), 400, NO_STATE),
        ("/callback?state=" + "%E2%80%AE" * 300, 400, EXPIRED),
        ("/login?return_to=" + "%" * 3000, 400, "This link is not valid"),  # logged: "The address is too long."
        ("/login?=&&&=&return_to", 302, None),  # an empty return_to is no return_to: a plain sign-in
        ("/callback?error=%3Cscript%3Ealert(1)%3C/script%3E&state=x", 400, EXPIRED),
    ],
)
def test_hostile_raw_requests_over_http_get_their_exact_answer(
    local_stack: LocalStack, path_and_query: str, status: int, title: str | None
) -> None:
    cookies = "__Host-smartsheet-oauth-nonce=; __Host-smartsheet-oauth-nonce=%00; =; ;;; a"
    answer = get(local_stack, path_and_query, cookie=cookies)

    assert answer.status_code == status
    if title is None:
        assert answer.headers["Location"].startswith(local_stack.emulator.authorize_url + "?")
    else:
        assert f"<title>{title}</title>" in answer.text
        assert "Location" not in answer.headers
    assert_protected(answer, path_and_query)
