"""`make demo`: the whole sign-in and refresh story, headless, over HTTP against the local stack."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from infra.local.gateway import CONTROL_TOKEN_HEADER
from infra.local.stack import LocalStack


class StepFailed(AssertionError):
    """A step of the story did not behave as the design says."""


def mask(token: str) -> str:
    """Enough of a token to tell two apart, never enough to use it."""
    return f"{token[:4]}...({len(token)} chars)" if len(token) > 8 else "****"


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def _cookie(set_cookies: list[str]) -> str:
    """The one cookie an answer set, as "name=value" for the next request's Cookie header. requests (like
    http.cookiejar) never sends a Secure cookie over http://, so it is carried by hand."""
    check(len(set_cookies) == 1, f"expected one cookie, got {len(set_cookies)}")
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookies[0])
    (morsel,) = jar.values()
    return f"{morsel.key}={morsel.value}"


@dataclass
class SignIn:
    """One browser-less sign-in: the redirect, the nonce cookie, and where Smartsheet sent us back."""

    location: str
    state: str
    nonce_cookie: str  # "name=value", as the browser would send it back
    set_cookie: str  # the Set-Cookie header as the broker sent it
    callback_url: str = ""


@dataclass
class BrokerClient:
    """Talks to the local stack the way a browser and the emulator's consent API would."""

    gateway_url: str
    emulator_url: str
    control_token: str = field(repr=False)  # the gateway's /_local/ token (Gateway.control_token)
    http: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def of(cls, stack: LocalStack) -> BrokerClient:
        return cls(stack.url, stack.emulator.base_url, stack.gateway.control_token)

    def login(self) -> SignIn:
        answer = self.http.get(f"{self.gateway_url}/login", allow_redirects=False, timeout=30)
        check(answer.status_code == 302, f"/login answered {answer.status_code}, expected 302")
        location = answer.headers["Location"]
        set_cookies = answer.raw.headers.getlist("Set-Cookie")
        check(len(set_cookies) == 1, f"/login set {len(set_cookies)} cookies, expected the nonce only")
        state = parse_qs(urlsplit(location).query).get("state", [""])[0]
        return SignIn(location, state, _cookie(set_cookies), set_cookies[0])

    def connect(self, login_url: str) -> SignIn:
        """A connect link (POST /connect-sessions' login_url): its connect page, then the page's Connect button."""
        page = self.http.get(login_url, allow_redirects=False, timeout=30)
        check(page.status_code == 200, f"the connect link answered {page.status_code}, expected its connect page")
        key = _cookie(page.raw.headers.getlist("Set-Cookie"))
        form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
        answer = self.http.post(
            f"{self.gateway_url}/login", data=form, headers={"Cookie": key}, allow_redirects=False, timeout=30
        )
        check(answer.status_code == 303, f"the Connect button answered {answer.status_code}, expected 303")
        location = answer.headers["Location"]
        set_cookies = answer.raw.headers.getlist("Set-Cookie")
        state = parse_qs(urlsplit(location).query).get("state", [""])[0]
        return SignIn(location, state, _cookie(set_cookies), set_cookies[0])

    def consent(self, sign_in: SignIn, *, allow: bool, user_id: str | None = None) -> str:
        payload: dict[str, Any] = {"authorize_url": sign_in.location, "allow": allow}
        if user_id is not None:
            payload["user_id"] = user_id
        answer = self.http.post(f"{self.emulator_url}/_emulator/consent", json=payload, timeout=30)
        check(answer.status_code == 200, f"the emulator's consent answered {answer.status_code}: {answer.text}")
        sign_in.callback_url = str(answer.json()["location"])
        return sign_in.callback_url

    def callback(self, sign_in: SignIn, *, cookie: str | None = None) -> requests.Response:
        headers = {"Cookie": sign_in.nonce_cookie if cookie is None else cookie}
        return self.http.get(sign_in.callback_url, headers=headers, allow_redirects=False, timeout=60)

    def result(self, cookie: str) -> requests.Response:
        """GET /result, the page a finished sign-in's 303 leads to, with the result cookie the callback set."""
        return self.http.get(
            f"{self.gateway_url}/result", headers={"Cookie": cookie}, allow_redirects=False, timeout=30
        )

    def emulator_admin(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        if payload is None:
            answer = self.http.get(f"{self.emulator_url}/_emulator/{path}", timeout=30)
        else:
            answer = self.http.post(f"{self.emulator_url}/_emulator/{path}", json=payload, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def token_calls(self) -> int:
        """Requests that reached Smartsheet's token endpoint so far (code exchanges and refreshes)."""
        return len(self.emulator_admin("stats")["token_requests"])

    def run_schedule(self) -> list[dict[str, Any]]:
        headers = {CONTROL_TOKEN_HEADER: self.control_token}
        answer = self.http.post(f"{self.gateway_url}/_local/schedule", headers=headers, timeout=660)
        check(answer.status_code == 200, f"/_local/schedule answered {answer.status_code}")
        runs: list[dict[str, Any]] = answer.json()["runs"]
        return runs


class Story:
    """The demo's steps; each prints what it did and what it saw, and raises StepFailed if that is wrong."""

    def __init__(self, stack: LocalStack, out: Callable[[str], None] = print, user_id: str | None = None) -> None:
        self.stack = stack
        self.client = BrokerClient.of(stack)
        self.out = out
        self.first: SignIn | None = None
        # Smartsheet's user id is the connection id; the emulator's first user unless told otherwise.
        self.connection_id = user_id or str(stack.emulator.users[0].id)
        self.tokens: dict[str, Any] = {}

    # --------------------------------------------------------------------------------- helpers
    def connection(self) -> dict[str, Any]:
        item = self.stack.aws.dynamodb.get_item(
            TableName=self.stack.table_name("CONNECTIONS_TABLE_NAME"),
            Key={"connection_id": {"S": self.connection_id}},
            ConsistentRead=True,
        ).get("Item")
        check(item is not None, f"no connection record for {self.connection_id}")
        assert item is not None
        return {key: next(iter(value.values())) for key, value in item.items()}

    def secret(self) -> dict[str, Any]:
        """The stored pair, wherever the stack's TokenStore keeps it (a secret, or a sealed item of TokenTable)."""
        return self.stack.token_pair(self.connection_id)

    def token_status(self, **tokens: str) -> dict[str, bool]:
        result: dict[str, bool] = self.client.emulator_admin("token-status", dict(tokens))
        return result

    # ----------------------------------------------------------------------------------- steps
    def login_redirect(self) -> None:
        sign_in = self.client.login()
        target = urlsplit(sign_in.location)
        query = parse_qs(target.query)
        check(sign_in.location.startswith(self.stack.emulator.authorize_url), "not sent to the authorize page")
        check(query.get("response_type") == ["code"], "response_type is not code")
        check(len(sign_in.state) >= 43, "state is not 32 random bytes")
        attributes = sign_in.set_cookie.lower()
        for flag in ("secure", "httponly", "samesite=lax", "path=/"):
            check(flag in attributes, f"the nonce cookie lacks {flag}")
        self.first = sign_in
        self.out(f"    302 -> {target.scheme}://{target.netloc}{target.path} (client_id={query['client_id'][0]},")
        self.out(f"           scope={query.get('scope', [''])[0]}, state={sign_in.state[:6]}...)")
        self.out("    nonce cookie: Secure; HttpOnly; SameSite=Lax; Path=/")

    def consent(self) -> None:
        assert self.first is not None
        callback = self.client.consent(self.first, allow=True, user_id=self.connection_id)
        query = parse_qs(urlsplit(callback).query)
        check(callback.startswith(self.stack.callback_url), f"consent did not return to our callback: {callback}")
        check("code" in query and query.get("state") == [self.first.state], "callback lacks code or our state")
        self.out(f"    Allow -> {self.stack.callback_url}?code=...&expires_in={query['expires_in'][0]}&state=...")

    def callback(self) -> None:
        assert self.first is not None
        calls = self.client.token_calls()
        answer = self.client.callback(self.first)
        check(answer.status_code == 303, f"callback answered {answer.status_code}: {answer.text[:200]}")
        check(
            answer.headers.get("Location") == "/result",
            f"callback sent the browser to {answer.headers.get('Location')}",
        )
        check(self.client.token_calls() == calls + 1, "expected exactly one token exchange")
        set_cookies = answer.raw.headers.getlist("Set-Cookie")
        cleared = any(c.startswith("__Host-smartsheet-oauth-nonce=;") for c in set_cookies)
        result = [c for c in set_cookies if c.startswith("__Host-smartsheet-oauth-result=")]
        check(len(result) == 1, "the callback set no result cookie")
        page = self.client.result(_cookie(result))
        check(page.status_code == 200 and "Smartsheet connected" in page.text, "the result page does not say connected")
        self.out(f"    303 /result (one token exchange; nonce cookie cleared: {cleared}) -> 200 'Smartsheet connected'")

    def connection_stored(self) -> None:
        record = self.connection()
        check(record["status"] == "active", f"status is {record['status']}")
        self.tokens = self.secret()
        check(self.tokens["refresh_token"] and self.tokens["access_token"], "the secret lacks a token")
        self.out(
            f"    connection {self.connection_id} ({record['email']}): status={record['status']},"
            f" generation={record['generation']}"
        )
        self.out(
            f"    secret {self.stack.token_secret_prefix}{self.connection_id}:"
            f" access={mask(self.tokens['access_token'])} refresh={mask(self.tokens['refresh_token'])}"
        )

    def forced_expiry(self) -> None:
        expired = self.client.emulator_admin("expire", {"user_id": self.connection_id})["expired"]
        now = int(time.time())
        self.stack.aws.dynamodb.update_item(
            TableName=self.stack.table_name("CONNECTIONS_TABLE_NAME"),
            Key={"connection_id": {"S": self.connection_id}},
            UpdateExpression="SET refresh_due_at = :due, access_expires_at = :expires",
            ExpressionAttributeValues={":due": {"N": str(now - 1)}, ":expires": {"N": str(now + 60)}},
        )
        status = self.token_status(access_token=self.tokens["access_token"])
        check(not status["access_token_live"], "the access token still works after expiry")
        self.out(f"    emulator expired {expired} access token(s); record due now (refresh_due_at={now - 1})")

    def scheduled_refresh(self) -> None:
        before = self.connection()
        runs = self.client.run_schedule()
        check(len(runs) == 1 and runs[0]["ok"], f"the sweep failed: {runs}")
        report = runs[0]["payload"]
        after, tokens = self.connection(), self.secret()
        check(int(after["generation"]) == int(before["generation"]) + 1, "generation did not move on")
        check(tokens["refresh_token"] != self.tokens["refresh_token"], "the refresh token did not rotate")
        status = self.token_status(refresh_token=self.tokens["refresh_token"], access_token=tokens["access_token"])
        check(not status["refresh_token_live"], "the old refresh token still works")
        check(status["access_token_live"], "the new access token does not work")
        check(int(after["refresh_due_at"]) > int(time.time()), "the connection is still due")
        self.out(f"    sweep ({runs[0]['schedule']}, EventBridge Scheduler event): {json.dumps(report['outcomes'])}")
        self.out(f"    refresh {mask(self.tokens['refresh_token'])} -> {mask(tokens['refresh_token'])};")
        self.out("    old refresh token dead in the emulator, new access token live,")
        self.out(f"    generation {before['generation']} -> {after['generation']}, next due {after['refresh_due_at']}")
        self.tokens = tokens

    def denied_consent(self) -> None:
        sign_in = self.client.login()
        callback = self.client.consent(sign_in, allow=False)
        check("error=access_denied" in callback, f"Deny did not come back as access_denied: {callback}")
        calls = self.client.token_calls()
        answer = self.client.callback(sign_in)
        check(answer.status_code in {200, 400}, f"declined callback answered {answer.status_code}")
        check("declined" in answer.text, "the friendly 'declined' page is not shown")
        check(self.client.token_calls() == calls, "a declined sign-in called the token endpoint")
        self.out(f"    Deny -> callback ?error=access_denied -> {answer.status_code} 'You declined access'")

    def replayed_callback(self) -> None:
        assert self.first is not None
        calls = self.client.token_calls()
        answer = self.client.callback(self.first)
        check(answer.status_code == 400, f"replayed callback answered {answer.status_code}")
        check("expired or was already used" in answer.text, "the replay page does not say why")
        check(self.client.token_calls() == calls, "the replay reached Smartsheet's token endpoint")
        self.out("    same code and state again -> 400 'expired or was already used'; no call to Smartsheet")

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("login redirect", self.login_redirect),
            ("consent (Allow) on the emulator", self.consent),
            ("callback", self.callback),
            ("connection stored", self.connection_stored),
            ("forced expiry", self.forced_expiry),
            ("scheduled refresh with rotation", self.scheduled_refresh),
            ("denied consent", self.denied_consent),
            ("replayed callback refused", self.replayed_callback),
        ]


def run(stack: LocalStack, out: Callable[[str], None] = print, user_id: str | None = None) -> bool:
    """Tell the story against a started stack (as `user_id`, an emulator user); True when every step behaved."""
    story = Story(stack, out, user_id)
    ok = True
    for number, (title, step) in enumerate(story.steps(), start=1):
        out(f"{number}. {title}")
        try:
            step()
        except (StepFailed, requests.RequestException, KeyError) as exc:
            out(f"    FAILED: {exc}")
            ok = False
            break
        out("    ok")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.demo",
        description="Run the sign-in and refresh story headless against a fresh local stack and print each step.",
    )
    parser.add_argument("--verbose", action="store_true", help="show the functions' and the gateway's logs")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="template parameter override, e.g. --param TokenStore=dynamodb (repeatable)",
    )
    args = parser.parse_args(argv)
    parameters = dict(p.split("=", 1) for p in args.param if "=" in p)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="      %(name)s %(message)s",
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    quiet = None if args.verbose else (lambda _function, _line: None)
    print("Starting the local stack (embedded AWS from template.yaml, Smartsheet emulator, gateway)...")
    with LocalStack(log_sink=quiet, parameters=parameters) as stack:
        print(f"  gateway {stack.url}, emulator {stack.emulator.base_url}, moto {stack.aws.endpoint_url}")
        print(f"  up in {stack.startup_seconds:.1f}s\n")
        ok = run(stack)
    print("\nThe story behaved as designed." if ok else "\nThe story went wrong: see FAILED above.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
