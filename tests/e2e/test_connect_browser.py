"""Connect links in the system's headless Chromium, with two browsers (two profiles): Mallory forwards her link to
Grace; link scanners fetch links before anyone clicks; another site posts the connect form. The integrator's app,
where the sign-in returns, is a page server on loopback (the `integrator_app` fixture); the test redeems completion
codes as that app's backend would, for the user signed in to it in that browser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from smartsheet_oauth_client import ConnectionUnavailable, ConnectRefused, TokenProvider

from infra.local.aws import LOCAL_CREDENTIALS
from infra.local.stack import LocalStack
from tests.management.test_over_http import signed, unbind

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

GRACE = "6812335718217604"
EVIL_SITE = "http://localhost:9"  # another site than the broker's 127.0.0.1 (Playwright answers it; nothing listens)


def integrator_backend(stack: LocalStack) -> TokenProvider:
    """The integrator's backend: the token client, signing with its role's credentials (the local ones)."""
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=stack.region,
    )
    return TokenProvider(
        api_url=stack.url,
        secret_prefix=stack.token_secret_prefix,
        session=session,
        secrets_client=session.client("secretsmanager", endpoint_url=stack.aws.endpoint_url),
    )


@pytest.fixture
def return_to(integrator_app: str) -> str:
    return f"{integrator_app}/connected"


def connect_link(stack: LocalStack, end_user_id: str, return_to: str) -> str:
    answer = signed("POST", f"{stack.url}/connect-sessions", {"end_user_id": end_user_id, "return_to": return_to})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["login_url"])


@pytest.fixture(autouse=True)
def grace_unbound(local_stack: LocalStack) -> Iterator[None]:
    """Other tests of the session's stack sign Grace in too: her account starts and ends bound to no one."""
    unbind(local_stack, GRACE)
    yield
    unbind(local_stack, GRACE)


@pytest.fixture
def browsers(browser: Any) -> Iterator[dict[str, Any]]:
    """Grace's and Mallory's browsers: separate profiles."""
    contexts = {name: browser.new_context() for name in ("grace", "mallory")}
    for context in contexts.values():
        context.set_default_timeout(15_000)
    yield contexts
    for context in contexts.values():
        context.close()


def open_connect_link_and_allow(page: Any, stack: LocalStack, link: str, user_id: str, return_to: str) -> str:
    """Open a connect link, click Connect, pick the Smartsheet user and Allow; the completion code return_to got."""
    page.goto(link)
    assert page.title() == "Connect your Smartsheet account to 127.0.0.1"
    page.click("#connect")
    page.wait_for_url(f"{stack.emulator.authorize_url}?*")
    page.select_option("#user", user_id)
    page.click("#allow")
    page.wait_for_url(f"{return_to}?*")
    assert page.title() == "Integrator app"
    [code] = parse_qs(urlsplit(page.url).query)["completion_code"]
    return str(code)


def test_a_forwarded_link_never_gives_graces_account_to_mallory(
    local_stack: LocalStack, browsers: dict[str, Any], return_to: str
) -> None:
    backend = integrator_backend(local_stack)
    link = connect_link(local_stack, "mallory", return_to)  # made for Mallory, who forwards it to Grace
    grants = local_stack.emulator.stats()["live_grants"]

    code = open_connect_link_and_allow(browsers["grace"].new_page(), local_stack, link, GRACE, return_to)

    # Grace is back in the integrator's app, signed in there as herself: her request redeems the code for "grace".
    with pytest.raises(ConnectRefused) as refused:
        backend.complete_connect_session(code, end_user_id="grace")
    assert refused.value.error == "end_user_mismatch"
    # Mallory, in her own browser, opens return_to with the code (had it leaked to her): it is void.
    mallory = browsers["mallory"].new_page()
    mallory.goto(f"{return_to}?completion_code={code}")
    with pytest.raises(ConnectRefused) as used:
        backend.complete_connect_session(code, end_user_id="mallory")
    assert used.value.error == "completion_code_used"
    # Whatever Mallory's account asks, it finds nothing of Grace's.
    with pytest.raises(ConnectionUnavailable):
        backend.token(end_user_id="mallory")
    listed = signed("GET", f"{local_stack.url}/connections?end_user_id=mallory").json()
    assert listed["connections"] == []
    assert local_stack.emulator.stats()["live_grants"] == grants  # Grace's grant of this sign-in was revoked


def test_the_connect_flow_binds_the_integrators_own_user(
    local_stack: LocalStack, browsers: dict[str, Any], return_to: str
) -> None:
    backend = integrator_backend(local_stack)
    page = browsers["grace"].new_page()
    link = connect_link(local_stack, "grace", return_to)

    code = open_connect_link_and_allow(page, local_stack, link, GRACE, return_to)

    assert backend.complete_connect_session(code, end_user_id="grace") == GRACE
    token = backend.token(end_user_id="grace")
    assert token.connection_id == GRACE
    assert local_stack.emulator.access_token_is_live(token.access_token)
    cookies = {c["name"]: c for c in page.context.cookies(local_stack.url)}
    connect_cookie = cookies["__Host-smartsheet-oauth-connect"]
    assert (connect_cookie["secure"], connect_cookie["httpOnly"], connect_cookie["sameSite"]) == (True, True, "Strict")
    with pytest.raises(ConnectRefused) as replayed:
        backend.complete_connect_session(code, end_user_id="grace")
    assert replayed.value.error == "completion_code_used"


def test_link_scanners_leave_the_link_usable(local_stack: LocalStack, browsers: dict[str, Any], return_to: str) -> None:
    link = connect_link(local_stack, "scanned-user", return_to)

    scans = [requests.get(link, allow_redirects=False, timeout=30) for _ in range(3)]  # GET only, as scanners do

    assert [scan.status_code for scan in scans] == [200, 200, 200]
    code = open_connect_link_and_allow(browsers["grace"].new_page(), local_stack, link, GRACE, return_to)
    assert integrator_backend(local_stack).complete_connect_session(code, end_user_id="scanned-user") == GRACE


def test_a_connect_form_posted_from_another_site_is_refused(
    local_stack: LocalStack, browsers: dict[str, Any], return_to: str
) -> None:
    link = connect_link(local_stack, "grace", return_to)
    session = parse_qs(urlsplit(link).query)["session"][0]
    context = browsers["grace"]
    page = context.new_page()
    page.goto(link)  # Grace has seen the connect page: her browser holds its key cookie
    forged = (
        f'<!doctype html><html><head><title>Win a prize</title></head><body><form method="post"'
        f' action="{local_stack.url}/login"><input name="session" value="{session}">'
        '<input name="form_token" value="guessed"><button id="go">Claim</button></form></body></html>'
    )
    evil = context.new_page()  # another tab of Grace's browser, on another site
    evil.route(f"{EVIL_SITE}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=forged))
    evil.goto(f"{EVIL_SITE}/prize")
    authorize_pages = local_stack.emulator.counts["authorize"]

    # Locally the gateway refuses a foreign Origin before any function runs (infra/local/request_guard.py), and
    # Chromium will not let a test take the Origin off a form post. API Gateway checks no Origin: the broker's own
    # refusal of such a post (no SameSite=Strict key cookie, a guessed form token) is held by
    # tests/security/test_connect_links.py::test_the_connect_button_is_refused_without_the_pages_own_binding.
    with evil.expect_response(f"{local_stack.url}/login") as posted:
        evil.click("#go")
    assert posted.value.status == 403
    assert local_stack.emulator.counts["authorize"] == authorize_pages  # it went nowhere near Smartsheet
    # The session was not used up: Grace's own click on the connect page still works.
    code = open_connect_link_and_allow(page, local_stack, link, GRACE, return_to)
    assert integrator_backend(local_stack).complete_connect_session(code, end_user_id="grace") == GRACE


def test_declining_returns_the_user_to_the_app_with_the_outcome_and_binds_nothing(
    local_stack: LocalStack, browsers: dict[str, Any], return_to: str
) -> None:
    """Issue 22 item 2: "Try again" on the decline page used to lead to a plain /login, where Allow made a connection
    bound to no one (or, with anonymous sign-in off, a 403 dead end). The user goes back to the app instead."""
    page = browsers["grace"].new_page()
    link = connect_link(local_stack, "grace", return_to)
    page.goto(link)
    page.click("#connect")
    page.wait_for_url(f"{local_stack.emulator.authorize_url}?*")
    page.select_option("#user", GRACE)

    page.click("#deny")
    page.wait_for_url(f"{return_to}?*")

    assert page.title() == "Integrator app"
    assert parse_qs(urlsplit(page.url).query) == {"outcome": ["declined"], "error": ["access_denied"]}
    assert signed("GET", f"{local_stack.url}/connections/{GRACE}").json().get("end_user_id") is None
    listed = signed("GET", f"{local_stack.url}/connections?end_user_id=grace").json()
    assert listed["connections"] == []
    # The app's backend learns the same in one call, and can offer a new link (the old one is used up).
    result = integrator_backend(local_stack).management.finish_connect(urlsplit(page.url).query, end_user_id="grace")
    assert (result.outcome, result.error) == ("declined", "access_denied")
    page.goto(link)
    assert page.title() == "This connect link has expired"


def test_a_reconnect_link_brings_back_only_the_same_account(
    local_stack: LocalStack, browsers: dict[str, Any], return_to: str
) -> None:
    """Issue 20 item 4: Grace removed the app at Smartsheet; the integrator's app sends her a reconnect link. Signed in
    with another Smartsheet account she gets a page saying so and a way back, and nothing changes; with her own
    account the connection is active again."""
    backend = integrator_backend(local_stack)
    page = browsers["grace"].new_page()
    code = open_connect_link_and_allow(
        page, local_stack, connect_link(local_stack, "grace", return_to), GRACE, return_to
    )
    assert backend.complete_connect_session(code, end_user_id="grace") == GRACE
    dead = backend.token(end_user_id="grace")
    local_stack.emulator.revoke_user(GRACE)  # she removes the app in Smartsheet
    backend.invalidate(dead.connection_id)  # the integrator's call got a 401
    with pytest.raises(ConnectionUnavailable) as unavailable:
        backend.token(end_user_id="grace")
    assert unavailable.value.status == "needs_reauth"
    before = signed("GET", f"{local_stack.url}/connections/{GRACE}").json()

    # Another Smartsheet account signs in through the link: a page says so, its button leads back to the app.
    link = backend.management.create_reconnect_session(GRACE, return_to=return_to)
    assert (link.end_user_id, link.connection_id) == ("grace", GRACE)
    page.goto(link.login_url)
    assert page.title() == "Reconnect your Smartsheet account to 127.0.0.1"
    page.click("#connect")
    page.wait_for_url(f"{local_stack.emulator.authorize_url}?*")
    other = next(str(user.id) for user in local_stack.emulator.users if str(user.id) != GRACE)
    page.select_option("#user", other)
    page.click("#allow")
    page.wait_for_load_state()
    assert page.title() == "Sign in with the account you connected before"
    assert "Nothing was changed" in page.inner_text("main")
    assert signed("GET", f"{local_stack.url}/connections/{GRACE}").json() == before
    page.click("a.button")
    page.wait_for_url(f"{return_to}?*")
    failed = backend.management.finish_connect(urlsplit(page.url).query, end_user_id="grace")
    assert (failed.outcome, failed.error) == ("failed", "wrong_account")

    # A new link, and her own account: active again, and the token works.
    link = backend.management.create_reconnect_session(GRACE, return_to=return_to)
    page.goto(link.login_url)
    page.click("#connect")
    page.wait_for_url(f"{local_stack.emulator.authorize_url}?*")
    page.select_option("#user", GRACE)
    page.click("#allow")
    page.wait_for_url(f"{return_to}?*")
    result = backend.management.finish_connect(urlsplit(page.url).query, end_user_id="grace")
    assert (result.outcome, result.message) == ("connected", "reconnected")
    assert result.connection is not None
    assert (result.connection.connection_id, result.connection.status) == (GRACE, "active")
    token = backend.token(end_user_id="grace")
    assert token.access_token != dead.access_token
    assert local_stack.emulator.access_token_is_live(token.access_token)
