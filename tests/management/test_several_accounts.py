"""Several Smartsheet accounts per end user (issue 20 item 2), through the real handlers: with AccountsPerEndUser=many
an end user connects a second account (connect sessions, imports) and both are bound, listed and announced with the
end user; with the default `one` the second is refused as before; in both modes one Smartsheet account is never bound
to two end users (409 binding_conflict naming why). The token client asks for one connection by id or for all of
an end user's, and refuses to guess which of several `token(end_user_id=...)` means."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth_client import AmbiguousEndUser, TokenError

from tests.management.conftest import (
    RETURN_TO,
    EventSink,
    call_management,
    complete,
    connect,
    integrator_tokens,
    new_session,
)
from tests.management.test_openapi import assert_fits, document
from tests.support.broker import Broker, completion_code

ADA, GRACE, ALAN = "4583173393803140", "6812335718217604", "9007199254740993"


@pytest.fixture
def many(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """The broker of a stack deployed with AccountsPerEndUser=many."""
    monkeypatch.setenv("ACCOUNTS_PER_END_USER", "many")
    services.reset()
    yield broker
    services.reset()


def listed(end_user_id: str, **query: str) -> tuple[list[str], Any]:
    answer = call_management("GET", "/connections", query={"end_user_id": end_user_id, **query})
    assert answer.status == 200, answer.body
    assert_fits(document(), "GET", "/connections", answer)
    return [c["connection_id"] for c in answer.body["connections"]], answer.body["next"]


def all_listed(end_user_id: str, **query: str) -> list[str]:
    """Every page, as an integrator walks them."""
    found, following = listed(end_user_id, **query)
    while following:
        more, following = listed(end_user_id, next=following, **query)
        found += more
    return found


def test_under_many_an_end_user_connects_two_accounts_and_both_are_bound_listed_and_announced(
    many: Broker, event_sink: EventSink
) -> None:
    first = connect(many, "consultant", ADA)
    second = connect(many, "consultant", GRACE)

    assert (first.body["outcome"], second.body["outcome"]) == ("created", "created")
    for connection_id in (ADA, GRACE):
        record = many.connection(connection_id)
        assert record is not None
        assert (record["end_user_id"], record["status"]) == ("consultant", "active")
    assert sorted(all_listed("consultant")) == sorted([ADA, GRACE])
    assert sorted(all_listed("consultant", limit="1")) == sorted([ADA, GRACE])  # page by page, nothing lost
    created = event_sink.drain()
    assert [(e["detail-type"], e["detail"]["connection_id"]) for e in created] == [
        ("Connection Created", ADA),
        ("Connection Created", GRACE),
    ]
    assert {e["detail"]["end_user_id"] for e in created} == {"consultant"}
    # Each reconnects on its own, the other untouched.
    assert connect(many, "consultant", ADA).body["outcome"] == "reconnected"
    assert many.connection(GRACE)["generation"] == 1  # type: ignore[index]


def test_under_one_the_second_account_of_an_end_user_is_still_refused(broker: Broker) -> None:
    connect(broker, "consultant", ADA)
    grants = broker.emulator.stats()["live_grants"]

    answer = broker.connect_through(new_session("consultant"), user_id=GRACE)

    assert answer.location == (
        f"{RETURN_TO}?outcome=failed&error=binding_conflict&error_detail=end_user_has_another_smartsheet_account"
    )
    assert broker.connection(GRACE) is None
    assert broker.emulator.stats()["live_grants"] == grants  # the refused grant was revoked
    assert all_listed("consultant") == [ADA]


def test_under_many_an_account_bound_to_one_end_user_is_refused_to_another_at_the_callback(
    many: Broker, event_sink: EventSink
) -> None:
    connect(many, "consultant", ADA)
    event_sink.drain()

    answer = many.connect_through(new_session("agency"), user_id=ADA)

    assert answer.location == (
        f"{RETURN_TO}?outcome=failed&error=binding_conflict&error_detail=smartsheet_account_bound_to_another_end_user"
    )
    assert many.connection(ADA)["end_user_id"] == "consultant"  # type: ignore[index]
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Binding Conflict"
    assert (event["detail"]["reason"], event["detail"]["end_user_id"]) == (
        "smartsheet_account_bound_to_another_end_user",
        "agency",
    )
    assert all_listed("agency") == []


def test_under_many_a_code_redeemed_after_the_account_went_to_another_end_user_is_a_409_with_the_reason(
    many: Broker,
) -> None:
    code = completion_code(many.connect_through(new_session("agency"), user_id=ADA))
    connect(many, "consultant", ADA)  # meanwhile the account was bound to another end user

    answer = complete(code, "agency")

    assert (answer.status, answer.error) == (409, "binding_conflict")
    assert "smartsheet_account_bound_to_another_end_user" in answer.body["message"]
    assert "connected to another end user" in answer.body["message"]
    assert_fits(document(), "POST", "/connect-sessions/complete", answer)
    assert many.connection(ADA)["end_user_id"] == "consultant"  # type: ignore[index]


def test_under_one_the_refusal_names_the_parameter_that_would_allow_it(broker: Broker) -> None:
    code = completion_code(broker.connect_through(new_session("consultant"), user_id=GRACE))
    connect(broker, "consultant", ADA)

    answer = complete(code, "consultant")

    assert (answer.status, answer.error) == (409, "binding_conflict")
    assert "end_user_has_another_smartsheet_account" in answer.body["message"]
    assert "AccountsPerEndUser" in answer.body["message"]


def test_under_many_a_second_grant_of_an_end_user_is_imported_and_a_foreign_one_refused(
    many: Broker, sealing: Broker
) -> None:
    connect(many, "consultant", ADA)

    graces = many.emulator.issue_grant(user_id=int(GRACE))["refresh_token"]
    adas = many.emulator.issue_grant(user_id=int(ADA))["refresh_token"]

    imported = call_management(
        "POST", "/connections/import", body={"refresh_token": graces, "end_user_id": "consultant"}
    )
    foreign = call_management("POST", "/connections/import", body={"refresh_token": adas, "end_user_id": "agency"})

    assert (imported.status, imported.body["outcome"]) == (201, "created"), imported.body
    assert imported.body["connection"]["end_user_id"] == "consultant"
    assert (foreign.status, foreign.body["error"]) == (409, "binding_conflict")
    assert "smartsheet_account_bound_to_another_end_user" in foreign.body["message"]
    assert sorted(all_listed("consultant")) == sorted([ADA, GRACE])


# ---------------------------------------------------------------------------------------------- the token client
def test_the_token_client_gives_all_of_an_end_users_tokens_and_refuses_to_guess_one(many: Broker) -> None:
    connect(many, "consultant", ADA)
    connect(many, "consultant", GRACE)
    tokens = integrator_tokens(many)

    every = tokens.tokens_of("consultant")

    assert sorted(every) == sorted([ADA, GRACE])
    for connection_id, token in every.items():
        assert token.connection_id == connection_id
        assert many.emulator.access_token_is_live(token.access_token)
        assert tokens.token(connection_id).access_token == token.access_token  # by id: as before
    with pytest.raises(AmbiguousEndUser) as ambiguous:
        tokens.token(end_user_id="consultant")
    assert isinstance(ambiguous.value, TokenError)
    assert (ambiguous.value.end_user_id, ambiguous.value.count) == ("consultant", 2)
    assert sorted(ambiguous.value.connection_ids) == sorted([ADA, GRACE])
    assert "tokens_of" in str(ambiguous.value)
    assert "connection id" in str(ambiguous.value)
    with pytest.raises(AmbiguousEndUser):
        tokens.management.connection_of("consultant")
    assert sorted(c.connection_id for c in tokens.management.connections_of("consultant")) == sorted([ADA, GRACE])


def test_an_end_user_with_one_connection_still_gets_it_by_end_user_id(many: Broker) -> None:
    connect(many, "consultant", ADA)
    connect(many, "consultant", GRACE)
    assert call_management("DELETE", f"/connections/{GRACE}").status == 200  # one of the two disconnected
    tokens = integrator_tokens(many)

    assert tokens.token(end_user_id="consultant").connection_id == ADA
    assert list(tokens.tokens_of("consultant")) == [ADA]
    assert tokens.tokens_of("nobody") == {}
    found = tokens.management.connection_of("consultant")
    assert found is not None
    assert found.connection_id == ADA


def test_a_second_account_redeemed_through_the_token_client_makes_end_user_lookups_ambiguous(many: Broker) -> None:
    """The token client used to remember the connection a redeemed code bound as *the* end user's: with several
    accounts that would hand out the newest account's token for token(end_user_id=...) without a word."""
    connect(many, "consultant", ADA)
    tokens = integrator_tokens(many)
    assert tokens.token(end_user_id="consultant").connection_id == ADA

    code = completion_code(many.connect_through(new_session("consultant"), user_id=GRACE))
    assert tokens.complete_connect_session(code, end_user_id="consultant") == GRACE

    with pytest.raises(AmbiguousEndUser):
        tokens.token(end_user_id="consultant")
    assert sorted(tokens.tokens_of("consultant")) == sorted([ADA, GRACE])


# ---------------------------------------------------------------------------------------------- events of refreshes
def test_refresh_time_events_of_a_bound_connection_carry_its_end_user(many: Broker, event_sink: EventSink) -> None:
    connect(many, "consultant", ADA)
    connect(many, "consultant", GRACE)
    event_sink.drain()

    many.make_due(ADA)
    many.emulator.set_faults(next_outcomes=[4004])
    many.sweep()  # a transient failure: Refresh Failed
    many.make_due(ADA)
    many.sweep()  # then Recovered
    many.emulator.revoke_user(GRACE)
    many.make_due(GRACE)
    many.sweep()  # Needs Reauth
    assert call_management("DELETE", f"/connections/{GRACE}").status == 200  # Revoked

    events = event_sink.drain()
    assert [(e["detail-type"], e["detail"]["connection_id"]) for e in events] == [
        ("Connection Refresh Failed", ADA),
        ("Connection Recovered", ADA),
        ("Connection Needs Reauth", GRACE),
        ("Connection Revoked", GRACE),
    ]
    assert {e["detail"]["end_user_id"] for e in events} == {"consultant"}
