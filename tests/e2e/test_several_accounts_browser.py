"""Several Smartsheet accounts per end user (issue 20 item 2) in the system's headless Chromium, on a local stack
started with AccountsPerEndUser=many: a consultant connects two Smartsheet accounts one after the other in one browser
(the emulator's consent page signs in as whichever user is picked), both are bound and listed, the token client gives
each one's token or all of them, and the same account is still refused to another end user."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth_client import AmbiguousEndUser

from infra.local.stack import LocalStack
from tests.e2e.test_connect_browser import connect_link, integrator_backend, open_connect_link_and_allow
from tests.management.test_over_http import signed

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ADA, GRACE = "4583173393803140", "6812335718217604"


@pytest.fixture(scope="module")
def many_stack(integrator_app: str) -> Iterator[LocalStack]:
    parameters = {"AllowedReturnTo": integrator_app, "AccountsPerEndUser": "many"}
    with LocalStack(stack_name=f"e2e-many-{os.getpid()}", parameters=parameters) as stack:
        yield stack


def test_a_consultant_connects_two_smartsheet_accounts_in_one_browser(
    many_stack: LocalStack, browser: Any, integrator_app: str
) -> None:
    return_to = f"{integrator_app}/connected"
    backend = integrator_backend(many_stack)
    environment = many_stack.function_environment(many_stack.functions["CallbackFunction"].spec)
    assert environment["ACCOUNTS_PER_END_USER"] == "many"
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        for account in (GRACE, ADA):  # one browser: the second sign-in picks another Smartsheet user
            code = open_connect_link_and_allow(
                page, many_stack, connect_link(many_stack, "consultant", return_to), account, return_to
            )
            assert backend.complete_connect_session(code, end_user_id="consultant") == account

        listed = signed("GET", f"{many_stack.url}/connections?end_user_id=consultant&limit=1")
        found = [c["connection_id"] for c in listed.json()["connections"]]
        following = listed.json()["next"]
        while following:
            more = signed("GET", f"{many_stack.url}/connections?end_user_id=consultant&limit=1&next={following}")
            found += [c["connection_id"] for c in more.json()["connections"]]
            following = more.json()["next"]
        assert sorted(found) == sorted([ADA, GRACE])
        tokens = backend.tokens_of("consultant")
        assert sorted(tokens) == sorted([ADA, GRACE])
        assert all(many_stack.emulator.access_token_is_live(t.access_token) for t in tokens.values())
        assert backend.token(GRACE).access_token == tokens[GRACE].access_token
        with pytest.raises(AmbiguousEndUser):
            backend.token(end_user_id="consultant")

        # Grace's account is the consultant's: an agency's connect link signed in with it is refused, nothing changes.
        page.goto(connect_link(many_stack, "agency", return_to))
        page.click("#connect")
        page.wait_for_url(f"{many_stack.emulator.authorize_url}?*")
        page.select_option("#user", GRACE)
        page.click("#allow")
        page.wait_for_url(f"{return_to}?*")
        assert parse_qs(urlsplit(page.url).query) == {
            "outcome": ["failed"],
            "error": ["binding_conflict"],
            "error_detail": ["smartsheet_account_bound_to_another_end_user"],
        }
        assert signed("GET", f"{many_stack.url}/connections/{GRACE}").json()["end_user_id"] == "consultant"
        assert signed("GET", f"{many_stack.url}/connections?end_user_id=agency").json()["connections"] == []
    finally:
        context.close()
