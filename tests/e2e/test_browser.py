"""A real browser (the system's headless Chromium) through sign-in: Allow and Deny on the emulator's page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

GRACE = "6812335718217604"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()  # a fresh profile: no cookie survives from another test
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_allow_connects_the_account(local_stack: LocalStack, page: Any) -> None:
    page.goto(local_stack.login_url)

    assert page.url.startswith(local_stack.emulator.authorize_url)
    cookies = page.context.cookies(local_stack.url)
    assert [(c["name"], c["secure"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("__Host-smartsheet-oauth-nonce", True, True, "Lax")
    ], "Chromium did not keep the Secure nonce cookie from http://127.0.0.1"
    page.select_option("#user", GRACE)
    page.click("#allow")
    page.wait_for_url(f"{local_stack.url}/result")  # the callback's 303: no code or state left in the address

    assert page.title() == "Smartsheet connected"
    assert "grace@example.com" in page.inner_text("body")
    item = local_stack.aws.dynamodb.get_item(
        TableName=local_stack.table_name("CONNECTIONS_TABLE_NAME"),
        Key={"connection_id": {"S": GRACE}},
        ConsistentRead=True,
    ).get("Item")
    assert item is not None
    assert item["status"]["S"] == "active"
    assert item["email"]["S"] == "grace@example.com"


def test_deny_shows_the_declined_page(local_stack: LocalStack, page: Any) -> None:
    page.goto(local_stack.login_url)
    page.click("#deny")
    page.wait_for_url(f"{local_stack.callback_url}?*")

    assert page.title() == "You declined access"
    body = page.inner_text("body")
    assert "declined" in body
    assert "Traceback" not in body
    page.click("text=Try again")
    assert page.url.startswith(local_stack.emulator.authorize_url)
