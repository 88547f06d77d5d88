"""POST /connections/import through the management function as API Gateway invokes it: one grant imported (201), the
same again (200 already_present, nothing sent), each validation error a 400 naming the field, refusals with their
codes, every answer in the documented schema, and no token in any answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.management.conftest import call_management
from tests.management.test_openapi import assert_fits, document
from tests.support.broker import Broker

FIRST = 7_400_000_000_000_001
USERS = [FIRST + n for n in range(3)]
ROUTE = "/connections/import"


@pytest.fixture(autouse=True)
def _users(sealing: Broker) -> None:
    known = {user.id for user in sealing.emulator.users}
    if not set(USERS) <= known:
        sealing.emulator.add_users(len(USERS), first_id=FIRST)


def issued(broker: Broker, user: int) -> dict[str, Any]:
    return broker.emulator.issue_grant(user_id=user)


def post(body: Any = None, raw_body: str | None = None) -> Any:
    return call_management("POST", ROUTE, body=body, raw_body=raw_body)


def test_a_grant_is_imported_once_and_the_same_grant_again_is_already_present(sealing: Broker) -> None:
    doc = document()
    grant = issued(sealing, USERS[0])
    body = {"refresh_token": grant["refresh_token"], "access_token": grant["access_token"], "expires_in": 600}

    first = post(body)
    again = post(body)

    assert first.status == 201, first.body
    assert first.body["outcome"] == "created"
    assert first.body["connection"]["connection_id"] == str(USERS[0])
    assert first.headers["Cache-Control"] == "no-store"
    assert (again.status, again.body["outcome"]) == (200, "already_present")
    assert len(sealing.emulator.token_requests) == 1  # the second answer sent nothing to Smartsheet
    for answer in (first, again):
        assert_fits(doc, "POST", ROUTE, answer)
        text = json.dumps(answer.body)
        assert grant["refresh_token"] not in text
        assert grant["access_token"] not in text
    stored = sealing.tokens(USERS[0])
    assert sealing.emulator.refresh_token_is_live(stored["refresh_token"])


def test_an_account_already_connected_is_reconnected_with_the_imported_grant(sealing: Broker) -> None:
    assert sealing.sign_in(user_id=USERS[1]).status == 200

    answer = post({"refresh_token": issued(sealing, USERS[1])["refresh_token"]})

    assert (answer.status, answer.body["outcome"]) == (201, "reconnected")
    assert_fits(document(), "POST", ROUTE, answer)


def test_a_grant_imported_with_tags_answers_them_and_is_listed_by_them(sealing: Broker) -> None:
    tags = {"workspace": "acme", "plan": "pro"}

    answer = post({"refresh_token": issued(sealing, USERS[2])["refresh_token"], "tags": tags})
    listed = call_management("GET", "/connections", query={"tag": "workspace=acme"})
    read = call_management("GET", f"/connections/{USERS[2]}")

    assert answer.status == 201, answer.body
    assert answer.body["connection"]["tags"] == tags
    assert_fits(document(), "POST", ROUTE, answer)
    assert [c["connection_id"] for c in listed.body["connections"]] == [str(USERS[2])]
    assert read.body["tags"] == tags


@pytest.mark.parametrize(
    ("body", "raw_body", "names"),
    [
        (None, "", "a JSON object body is required"),
        (None, "{not json", "not valid JSON"),
        ([1], None, "must be a JSON object"),
        ({}, None, "refresh_token is required"),
        ({"refresh_token": "abc", "extra": 1}, None, "unknown field(s): extra"),
        ({"refresh_token": "abc", "expires_at": 1, "expires_in": 1}, None, "expires_at or expires_in"),
        ({"refresh_token": "abc", "region": "eu"}, None, "serves Smartsheet's us region(s)"),
        ({"refresh_token": "abc", "region": "moon"}, None, "region must be one of"),
        ({"refresh_token": "abc", "end_user_id": "a b"}, None, "end_user_id must be"),
        ({"refresh_token": "abc", "tags": ["vip"]}, None, "tags must be a JSON object"),
        ({"refresh_token": "abc", "tags": {"plan": 5}}, None, "the value of a tag is not allowed"),
        ({"refresh_token": "abc", "tags": {f"k{n}": "v" for n in range(11)}}, None, "11 tags: at most 10"),
        ({"refresh_token": "a secret with spaces"}, None, "printable ASCII"),
    ],
)
def test_each_validation_error_is_a_400_naming_the_field_and_nothing_is_sent(
    sealing: Broker, body: Any, raw_body: str | None, names: str
) -> None:
    answer = post(body, raw_body)

    assert (answer.status, answer.error) == (400, "invalid_request"), answer.body
    assert names in answer.body["message"]
    assert "a secret with spaces" not in answer.body["message"]
    assert_fits(document(), "POST", ROUTE, answer)
    assert sealing.emulator.token_requests == []


def test_a_dead_grant_is_a_422(sealing: Broker) -> None:
    grant = issued(sealing, USERS[2])
    sealing.emulator.revoke_user(USERS[2])

    first = post({"refresh_token": grant["refresh_token"]})
    again = post({"refresh_token": grant["refresh_token"]})

    assert (first.status, first.error) == (422, "grant_refused")
    assert (again.status, again.error) == (422, "grant_refused")  # asked again: the token is dead, nothing changes
    assert sealing.connection(USERS[2]) is None
    assert_fits(document(), "POST", ROUTE, first)


def test_binding_an_account_of_another_end_user_is_a_409_and_smartsheet_down_a_503(sealing: Broker) -> None:
    assert post({"refresh_token": issued(sealing, USERS[0])["refresh_token"], "end_user_id": "u-1"}).status == 201

    conflict = post({"refresh_token": issued(sealing, USERS[0])["refresh_token"], "end_user_id": "u-2"})
    sealing.emulator.set_faults(error_rate=1.0, token_only=True, server_error_codes=[4001])
    down = post({"refresh_token": issued(sealing, USERS[1])["refresh_token"]})

    assert (conflict.status, conflict.error) == (409, "binding_conflict")
    assert (down.status, down.error) == (503, "smartsheet_unavailable")
    assert "Retry-After" in down.headers
    assert_fits(document(), "POST", ROUTE, conflict)
    assert_fits(document(), "POST", ROUTE, down)
