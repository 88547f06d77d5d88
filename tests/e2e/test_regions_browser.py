"""A sign-in in a non-default Smartsheet region, in a real browser against the local stack (AllowedRegions=us,eu: one
emulator per region, each on its own loopback port), and the regions' separation: a token of one region is refused by
another, as Smartsheet's regions are separate."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from infra.local.smartsheet_emulator import REGIONAL_USERS, token_hash
from infra.local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

EVE = REGIONAL_USERS["eu"][0]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def _record(stack: LocalStack, connection_id: str) -> dict[str, Any] | None:
    item = stack.aws.dynamodb.get_item(
        TableName=stack.table_name("CONNECTIONS_TABLE_NAME"),
        Key={"connection_id": {"S": connection_id}},
        ConsistentRead=True,
    ).get("Item")
    return {k: v.get("S", v.get("N")) for k, v in item.items()} if item else None


def _call(method: str, url: str, *, token: str | None = None, form: dict[str, str] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if form is not None:
        data = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 (loopback only)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_local_stack_runs_one_emulator_per_allowed_region(local_stack: LocalStack) -> None:
    emulators = local_stack.emulators

    assert list(emulators) == ["us", "eu"]
    assert emulators["eu"].base_url != emulators["us"].base_url
    environment = local_stack.function_environment(next(iter(local_stack.functions.values())).spec)
    assert environment["SMARTSHEET_API_BASE_URL_EU"] == emulators["eu"].api_base_url
    assert environment["SMARTSHEET_AUTHORIZE_URL_EU"] == emulators["eu"].authorize_url
    assert environment["SMARTSHEET_API_BASE_URL"] == emulators["us"].api_base_url


def test_a_sign_in_in_the_eu_in_a_browser_connects_an_eu_account_whose_tokens_work_only_there(
    local_stack: LocalStack, page: Any
) -> None:
    eu, us = local_stack.emulators["eu"], local_stack.emulators["us"]

    page.goto(f"{local_stack.login_url}?region=eu")

    assert page.url.startswith(eu.authorize_url)
    assert page.inner_text("#region") == "Smartsheet region: eu"
    page.select_option("#user", str(EVE.id))
    page.click("#allow")
    page.wait_for_url(f"{local_stack.url}/result")  # the callback's 303 to the result page
    assert page.title() == "Smartsheet connected"
    assert EVE.email in page.inner_text("body")

    record = _record(local_stack, str(EVE.id))
    assert record is not None
    assert (record["region"], record["status"]) == ("eu", "active")
    pair = local_stack.token_pair(str(EVE.id))
    assert pair["region"] == "eu"
    # The emulators are separate regions: the EU token works at the EU's API and is refused by the US's.
    status, me = _call("GET", f"{eu.api_base_url}/users/me", token=pair["access_token"])
    assert (status, me["id"]) == (200, EVE.id)
    status, refused = _call("GET", f"{us.api_base_url}/users/me", token=pair["access_token"])
    assert (status, refused["errorCode"]) == (401, 1002)
    app = us.apps[0]
    status, refused = _call(
        "POST",
        f"{us.api_base_url}/token",
        form={
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "refresh_token": pair["refresh_token"],
            "hash": token_hash(app.client_secret, pair["refresh_token"]),
        },
    )
    assert (status, refused["error"]) == (400, "invalid_grant")
    assert eu.refresh_token_is_live(pair["refresh_token"])  # the US's refusal did nothing to the EU's grant

    # The scheduled sweep refreshes it at its own region.
    local_stack.aws.dynamodb.update_item(
        TableName=local_stack.table_name("CONNECTIONS_TABLE_NAME"),
        Key={"connection_id": {"S": str(EVE.id)}},
        UpdateExpression="SET refresh_due_at = :due",
        ExpressionAttributeValues={":due": {"N": "0"}},
    )
    refreshes_in_the_us = us.counts["token.refresh"]
    refreshes_in_the_eu = eu.counts["token.refresh"]
    (run,) = local_stack.run_schedule()
    assert run.invocation.ok, run.invocation
    assert eu.counts["token.refresh"] == refreshes_in_the_eu + 1
    assert us.counts["token.refresh"] == refreshes_in_the_us
    rotated = local_stack.token_pair(str(EVE.id))
    assert rotated["access_token"] != pair["access_token"]
    assert eu.access_token_is_live(rotated["access_token"])


def test_a_region_the_stack_does_not_offer_gets_the_branded_400_page(local_stack: LocalStack, page: Any) -> None:
    answer = page.goto(f"{local_stack.login_url}?region=au")

    assert answer.status == 400
    assert page.title() == "This Smartsheet region is not available"
    body = page.inner_text("body")
    assert "region=eu" in body
    assert "Traceback" not in body
    assert not page.context.cookies(local_stack.url)
