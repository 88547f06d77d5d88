"""The token client and an end user with several connections (AccountsPerEndUser=many): the lookup walks every page of
GET /connections?end_user_id=, is cached like one connection's, `token(end_user_id=...)` refuses to pick one of
several (AmbiguousEndUser), and `tokens_of` answers them all."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import smartsheet_oauth_client
from smartsheet_oauth_client import (
    AmbiguousEndUser,
    ConnectionUnavailable,
    ManagementClient,
    TokenError,
    TokenProvider,
)

from tests.management.test_token_client import NOW, PREFIX, Clock, FakeSecrets

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
ADA, GRACE = "4583173393803140", "6812335718217604"


class Listing:
    """GET /connections?end_user_id=... in pages of `per_page` over `pages` (a page may be empty and still have a next
    one: the status filter applies after DynamoDB's Limit); GET /connections/{id} answers `statuses`."""

    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = pages
        self.lookups: list[dict[str, list[str]]] = []
        self.statuses: dict[str, str] = {}

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
        parts = urlsplit(url)
        if method == "GET" and parts.path == "/connections":
            query = parse_qs(parts.query)
            self.lookups.append(query)
            index = int(query.get("next", ["0"])[0])
            following = str(index + 1) if index + 1 < len(self.pages) else None
            connections = [{"connection_id": c, "status": "active"} for c in self.pages[index]]
            return 200, json.dumps({"connections": connections, "next": following}).encode()
        if method == "GET" and parts.path.startswith("/connections/"):
            connection_id = parts.path.split("/")[2]
            return 200, json.dumps({"connection_id": connection_id, "status": self.statuses[connection_id]}).encode()
        raise AssertionError(f"unexpected {method} {url}")


def provider(listing: Listing, secrets: FakeSecrets, clock: Clock) -> TokenProvider:
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    return TokenProvider(
        api_url=API, secret_prefix=PREFIX, session=session, secrets_client=secrets, send=listing.send, clock=clock
    )


@pytest.fixture
def secrets() -> FakeSecrets:
    store = FakeSecrets()
    store.put(ADA, "ada-token", NOW + 3 * 86400)
    store.put(GRACE, "grace-token", NOW + 3 * 86400)
    return store


def test_the_lookup_walks_every_page_even_past_an_empty_one(secrets: FakeSecrets) -> None:
    listing = Listing([[], [ADA]])
    tokens = provider(listing, secrets, Clock())

    assert tokens.token(end_user_id="user-42").connection_id == ADA

    assert len(listing.lookups) == 2
    assert listing.lookups[0]["status"] == ["active"]
    assert listing.lookups[1]["next"] == ["1"]


def test_several_active_connections_are_never_guessed_and_the_error_says_what_to_do(secrets: FakeSecrets) -> None:
    listing = Listing([[ADA], [GRACE]])
    tokens = provider(listing, secrets, Clock())

    with pytest.raises(AmbiguousEndUser) as ambiguous:
        tokens.token(end_user_id="user-42")
    with pytest.raises(AmbiguousEndUser):
        tokens.access_token(end_user_id="user-42")

    error = ambiguous.value
    assert (error.end_user_id, error.count, error.connection_ids) == ("user-42", 2, (ADA, GRACE))
    assert str(error) == (
        "end user user-42 has 2 active connections: ask for one by its connection id (token(connection_id)), or for"
        " all of them (tokens_of(end_user_id))"
    )
    assert len(listing.lookups) == 2  # the answer is cached like a single connection's: both pages, once
    assert "AmbiguousEndUser" in smartsheet_oauth_client.__all__


def test_tokens_of_answers_every_active_connection_in_the_listed_order_and_caches_the_lookup(
    secrets: FakeSecrets,
) -> None:
    listing = Listing([[GRACE], [ADA]])
    clock = Clock()
    tokens = provider(listing, secrets, clock)

    first = tokens.tokens_of("user-42")
    again = tokens.tokens_of("user-42")

    assert list(first) == [GRACE, ADA]
    assert {cid: t.access_token for cid, t in first.items()} == {GRACE: "grace-token", ADA: "ada-token"}
    assert again == first
    assert len(listing.lookups) == 2  # one lookup (two pages), then the cache
    assert secrets.reads == 2  # and one read of each secret
    clock.now += 301  # past cache_seconds: asked again
    listing.pages = [[ADA]]
    assert list(tokens.tokens_of("user-42")) == [ADA]
    assert len(listing.lookups) == 3


def test_a_connection_that_died_since_the_lookup_leaves_tokens_of_and_the_lookup_is_forgotten(
    secrets: FakeSecrets,
) -> None:
    listing = Listing([[ADA, GRACE]])
    tokens = provider(listing, secrets, Clock())
    assert sorted(tokens.tokens_of("user-42")) == sorted([ADA, GRACE])

    tokens.invalidate(GRACE)  # Smartsheet answered 401 with Grace's token; the broker says she must reconnect
    listing.statuses[GRACE] = "needs_reauth"
    listing.pages = [[ADA]]

    assert list(tokens.tokens_of("user-42")) == [ADA]
    assert len(listing.lookups) == 1
    assert tokens.token(end_user_id="user-42").connection_id == ADA  # no longer ambiguous: looked up again
    assert len(listing.lookups) == 2


def test_an_end_user_without_connections_has_no_tokens_and_no_token(secrets: FakeSecrets) -> None:
    listing = Listing([[]])
    tokens = provider(listing, secrets, Clock())

    assert tokens.tokens_of("nobody") == {}
    with pytest.raises(ConnectionUnavailable) as none:
        tokens.token(end_user_id="nobody")
    assert (none.value.status, none.value.end_user_id) == ("not_found", "nobody")
    assert len(listing.lookups) == 2  # no connection is not cached: they may connect any moment


def test_the_management_client_refuses_to_guess_too_and_lists_them_all() -> None:
    listing = Listing([[ADA], [], [GRACE]])
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    broker = ManagementClient(api_url=API, session=session, send=listing.send)

    assert [c.connection_id for c in broker.connections_of("user-42")] == [ADA, GRACE]
    with pytest.raises(AmbiguousEndUser) as ambiguous:
        broker.connection_of("user-42")
    assert ambiguous.value.count == 2
    assert "connections_of(end_user_id)" in str(ambiguous.value)
    listing.pages = [[GRACE]]
    found = broker.connection_of("user-42")
    assert found is not None
    assert found.connection_id == GRACE
    listing.pages = [[]]
    assert broker.connection_of("user-42") is None
    assert all(query["status"] == ["active"] for query in listing.lookups)


def test_a_malformed_id_in_the_listing_is_refused(secrets: FakeSecrets) -> None:
    listing = Listing([["../other"]])
    tokens = provider(listing, secrets, Clock())

    with pytest.raises(TokenError, match="malformed connection id"):
        tokens.tokens_of("user-42")
    with pytest.raises(TokenError, match="malformed connection id"):
        tokens.token(end_user_id="user-42")
    assert secrets.reads == 0
