"""The pages an end user sees, in the system's headless Chromium at a phone's size (390x844): each case worded for
what it is (a reload of the result page a sign-in lands on, the back button, a declined sign-in reloaded, a bare
/callback, a result past its lifetime, a sign-in finished in another browser, a link that was changed), in the
integrator's name (AppName, SupportUrl, LogoUrl), and free of accessibility violations as axe-core
(tests/support/axe, pinned by its lockfile, installed by `make axe`) finds them: contrast, labels, language, headings,
landmarks. Screenshots land in $PAGE_SCREENSHOTS when it is set."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from smartsheet_oauth.edge import pages

from infra.local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests" / "support" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}
ADA = "4583173393803140"
BRAND = pages.Brand(
    app_name='Acme <Sheets> & "Co"',
    support_url="https://acme.example.com/help?topic=smartsheet&x=<1>",
    logo_url="https://cdn.acme.example.com/logo.png",
)
# A 1x1 PNG for the logo's URL (nothing leaves the machine: Playwright answers it).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2e1d6ec0000000049454e44ae426082"
)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    if not AXE.is_file():
        pytest.fail(f"no axe-core at {AXE}: `make axe` installs it (make test does)", pytrace=False)
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document)).violations.map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' '))}))"
    )
    return found


def fits_the_phone(page: Any) -> bool:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width <= PHONE["width"]


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("PAGE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    # axe is a script the pages' CSP would refuse (they allow none): the check's own context bypasses the CSP.
    context = browser.new_context(viewport=PHONE, bypass_csp=True)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def branded_pages() -> dict[str, Callable[[], str]]:
    return {
        "connected": lambda: pages.signed_in("ada@example.com"),
        "no-result": lambda: pages.no_result(start_again="/login"),
        "no-result-from-the-app": lambda: pages.no_result(start_again=None),
        "nothing-to-finish": lambda: pages.sign_in_rejected("missing_state", start_again="/login"),
        "other-browser": lambda: pages.sign_in_rejected("nonce_mismatch", start_again=None),
        "too-slow": lambda: pages.sign_in_rejected("expired_state", start_again="/login"),
        "already-used": lambda: pages.sign_in_rejected("unknown_or_used_state", start_again="/login"),
        "declined": pages.declined,
        "authorization-failed": pages.authorization_failed,
        "smartsheet-error": lambda: pages.smartsheet_error("Jx2kIgYeoAMEbfQ="),
        "code-refused": lambda: pages.code_refused(None, "Jx2kIgYeoAMEbfQ="),
        "unavailable": lambda: pages.unavailable("Jx2kIgYeoAMEbfQ="),
        "bad-request": lambda: pages.bad_request("return_to is not an allowed address"),
        "not-found": pages.not_found,
        "internal-error": lambda: pages.internal_error("Jx2kIgYeoAMEbfQ="),
        "connect": lambda: pages.connect("app.example.com", session="s" * 43, form_token="f" * 64),
        "connect-link-expired": pages.connect_link_expired,
        "connect-form-rejected": pages.connect_form_rejected,
        "reconnect-from-the-app": pages.bound_through_app,
        "anonymous-login-disabled": pages.anonymous_login_disabled,
        "binding-conflict-end-user": lambda: pages.binding_conflict("end_user_has_another_smartsheet_account"),
        "binding-conflict-account": lambda: pages.binding_conflict("smartsheet_account_bound_to_another_end_user"),
        "reconnect": lambda: pages.connect("app.example.com", session="s" * 43, form_token="f" * 64, reconnect=True),
        "reconnect-wrong-account": lambda: pages.reconnect_wrong_account(
            "https://app.example.com/connected?outcome=failed&error=wrong_account"
        ),
    }


@pytest.mark.parametrize("name", sorted(branded_pages()))
def test_every_page_names_the_app_passes_axe_and_fits_a_phone(
    phone: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(pages, "brand", lambda: BRAND)
    body, headers = branded_pages()[name](), pages.security_headers()
    page = phone.new_page()
    html = "text/html; charset=utf-8"
    page.route(
        "https://broker.example.com/**", lambda route: route.fulfill(body=body, headers=headers, content_type=html)
    )
    page.route(f"{BRAND.logo_url}*", lambda route: route.fulfill(body=PNG, content_type="image/png"))

    page.goto(f"https://broker.example.com/{name}")

    assert page.locator("header.brand span").inner_text() == BRAND.app_name  # escaped: shown as text
    assert page.locator("header.brand img").evaluate("img => img.naturalWidth") == 1  # the CSP admits the logo
    assert page.get_by_role("link", name=f"Contact {BRAND.app_name} support").get_attribute("href") == (
        BRAND.support_url
    )
    assert page.locator("h1").count() == 1
    assert axe_violations(page) == []
    assert fits_the_phone(page)
    screenshot(page, name)


def test_the_result_page_survives_a_reload_and_other_cases_say_what_they_are(
    local_stack: LocalStack, phone: Any, browser: Any
) -> None:
    from tests.management.test_over_http import unbind

    unbind(local_stack, ADA)
    page = phone.new_page()
    page.goto(f"{local_stack.url}/login")
    page.select_option("#user", ADA)
    callbacks: list[tuple[str, int]] = []
    page.on("response", lambda r: callbacks.append((r.url, r.status)) if "/callback" in r.url else None)
    page.click("#allow")
    page.wait_for_url(f"{local_stack.url}/result")  # 303 See Other from /callback: the address holds no code or state
    assert [status for _, status in callbacks] == [303]
    assert page.title() == "Smartsheet connected"
    assert "ada@example.com" in page.locator("main").inner_text()
    assert axe_violations(page) == []
    screenshot(page, "stack-connected")

    page.reload()  # the page reads its signed cookie again: still connected, nothing spent

    assert page.url == f"{local_stack.url}/result"
    assert page.title() == "Smartsheet connected"
    assert "ada@example.com" in page.locator("main").inner_text()
    screenshot(page, "stack-connected-reloaded")

    # Back: the consent page (the 303 replaced /callback in the history); Allow there again brings back this sign-in's
    # spent callback URL, which leads to its result page again. Forward: the result page.
    page.go_back()
    assert page.url.startswith(local_stack.emulator.authorize_url)
    page.go_forward()
    assert page.url == f"{local_stack.url}/result"
    assert page.title() == "Smartsheet connected"
    spent = next(url for url, _ in callbacks)
    page.goto(spent)  # the spent /callback?code&state of this sign-in (a back button, a bookmark)
    assert page.url == f"{local_stack.url}/result"
    assert page.title() == "Smartsheet connected"

    page.goto(f"{local_stack.url}/callback")  # bare
    assert page.title() == "Nothing to finish here"
    assert axe_violations(page) == []
    screenshot(page, "stack-bare-callback")

    # The cookie's 15 minutes are over (the browser drops it at Max-Age): the page says what it knows, and no more.
    phone.clear_cookies(name="__Host-smartsheet-oauth-result")
    page.goto(f"{local_stack.url}/result")
    assert page.title() == "No sign-in result to show"
    assert "ada@example.com" not in page.content()
    assert axe_violations(page) == []
    assert fits_the_phone(page)
    screenshot(page, "stack-result-expired")
    page.goto(spent)  # and the spent callback, without this sign-in's result, says it is used
    assert page.title() == "This sign-in link can't be used again"

    # Started here, finished in another browser (a link copied across): neither "expired" nor "connected".
    page.goto(f"{local_stack.url}/login")  # this browser holds the nonce; Smartsheet's consent, then the other
    callback = local_stack.emulator.consent(page.url, user_id=int(ADA), allow=True)
    other = browser.new_context(viewport=PHONE, bypass_csp=True)
    try:
        elsewhere = other.new_page()
        elsewhere.goto(callback)
        assert elsewhere.title() == "Finish in the browser where you started"
        assert axe_violations(elsewhere) == []
        screenshot(elsewhere, "stack-other-browser")
        elsewhere.goto(f"{local_stack.url}/result")  # the other browser's result page: nothing of the first's
        assert elsewhere.title() == "No sign-in result to show"
    finally:
        other.close()

    page.goto(f"{local_stack.url}/login?return_to=https://elsewhere.example/")  # a changed link
    assert page.title() == "This link is not valid"
    assert "return_to" not in page.content()  # no developer words
    assert fits_the_phone(page)
    screenshot(page, "stack-bad-link")


def test_a_declined_sign_in_keeps_saying_declined_on_a_reload_and_back_and_forward(
    local_stack: LocalStack, phone: Any, browser: Any
) -> None:
    """Deny at Smartsheet: the callback answers 400 "You declined access" where it is (no redirect: its status is the
    contract), and its result cookie keeps that: a reload, back then forward, or /result say "declined" again, never
    "this sign-in link can't be used again". Another browser holding the same URL has no such result: used."""
    page = phone.new_page()
    callbacks: list[tuple[str, int]] = []
    page.on("response", lambda r: callbacks.append((r.url, r.status)) if "/callback" in r.url else None)
    page.goto(f"{local_stack.url}/login")
    page.select_option("#user", ADA)
    page.click("#deny")
    page.wait_for_url(f"{local_stack.url}/callback?*")
    assert page.title() == "You declined access"
    assert "error=access_denied" in page.url
    assert [status for _, status in callbacks] == [400]
    assert axe_violations(page) == []
    screenshot(page, "stack-declined")

    page.reload()  # the state is spent: the result cookie of this sign-in says how it ended

    assert page.title() == "You declined access"
    assert "can't be used again" not in page.locator("main").inner_text()
    assert [status for _, status in callbacks] == [400, 400]

    page.go_back()
    assert page.url.startswith(local_stack.emulator.authorize_url)
    page.go_forward()
    assert "/callback?" in page.url
    assert page.title() == "You declined access"
    assert all(status == 400 for _, status in callbacks)

    spent = callbacks[0][0]
    page.goto(f"{local_stack.url}/result")
    assert page.title() == "You declined access"
    assert "ada@example.com" not in page.content()
    assert axe_violations(page) == []

    other = browser.new_context(viewport=PHONE)
    try:
        elsewhere = other.new_page()
        elsewhere.goto(spent)
        assert elsewhere.title() == "This sign-in link can't be used again"
    finally:
        other.close()


def test_a_result_cookie_past_its_expiry_is_not_believed(local_stack: LocalStack, phone: Any) -> None:
    """A browser that kept the cookie past its Max-Age (or a copy set back by hand) gets the truthful page: the
    expiry is inside the signed value."""
    from smartsheet_oauth.edge import result

    secret = json_secret(local_stack)
    stale = result.seal(
        result.SignInResult(result.CONNECTED, "ada@example.com", int(time.time()) - 1, "0" * 32), client_secret=secret
    )
    page = phone.new_page()
    # Set as the broker sets it, on its origin (the Max-Age still runs: only the signed expiry is past).
    planted = f"{result.RESULT_COOKIE}={stale}; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"
    page.route(f"{local_stack.url}/plant", lambda route: route.fulfill(body="ok", headers={"Set-Cookie": planted}))
    page.goto(f"{local_stack.url}/plant")
    assert [c["name"] for c in phone.cookies(local_stack.url)] == [result.RESULT_COOKIE]

    page.goto(f"{local_stack.url}/result")

    assert page.title() == "No sign-in result to show"
    assert "ada@example.com" not in page.content()


def json_secret(stack: LocalStack) -> str:
    arn = stack.functions["CallbackFunction"].spec.environment["APP_CREDENTIALS_SECRET_ARN"]
    value: str = json.loads(stack.aws.secretsmanager.get_secret_value(SecretId=arn)["SecretString"])["client_secret"]
    return value
