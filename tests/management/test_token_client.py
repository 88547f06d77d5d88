"""The integrators' token helper (smartsheet_oauth_client): cached secret reads (and invalidate), the broker asked
(signed) only when the token is expired or close to it, clear errors when the connection is gone, each region's API."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError
from smartsheet_oauth.config import REGIONS
from smartsheet_oauth_client import API_BASE_URLS, AccessToken, BrokerUnavailable, ConnectionUnavailable, TokenProvider

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
PREFIX = "stack/connections/"
ADA = "4583173393803140"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeSecrets:
    """get_secret_value over a dict of secret documents; counts the reads."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.reads = 0

    def put(self, connection_id: str, access_token: str, expires_at: float) -> None:
        self.documents[f"{PREFIX}{connection_id}"] = {
            "access_token": access_token,
            "refresh_token": f"refresh-{access_token}",
            "expires_at": int(expires_at),
            "email": "ada@example.com",
            "region": "eu",
        }

    def get_secret_value(self, *, SecretId: str, VersionStage: str) -> dict[str, Any]:
        self.reads += 1
        if SecretId not in self.documents:
            raise ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "GetSecretValue")
        return {"SecretString": json.dumps(self.documents[SecretId])}


class FakeBroker:
    """The management API as the helper sees it: records signed requests, answers as told."""

    def __init__(self, secrets: FakeSecrets, clock: Clock) -> None:
        self.secrets = secrets
        self.clock = clock
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self.refresh_answer: tuple[int, dict[str, Any]] | None = None
        self.statuses: dict[str, str] = {ADA: "active"}  # GET /connections/{id}'s status, by connection
        self.lock = threading.Lock()

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
        with self.lock:
            self.calls.append((method, url, headers, body))
        path = urlsplit(url).path
        if method == "POST" and path.endswith("/refresh"):
            if self.refresh_answer is not None:
                status, payload = self.refresh_answer
                return status, json.dumps(payload).encode()
            time.sleep(0.05)  # long enough for concurrent askers to pile up behind the lock
            connection_id = path.split("/")[2]
            self.secrets.put(connection_id, f"rotated-{len(self.calls)}", self.clock() + 604799)
            return 200, json.dumps({"outcome": "refreshed"}).encode()
        if method == "GET" and path == "/connections":
            query = parse_qs(urlsplit(url).query)
            found = [{"connection_id": ADA}] if query.get("end_user_id") == ["user-42"] else []
            return 200, json.dumps({"connections": found, "next": None}).encode()
        if method == "GET" and path.startswith("/connections/"):
            connection_id = path.split("/")[2]
            if connection_id not in self.statuses:
                return 404, json.dumps({"error": "not_found", "message": f"No connection {connection_id}."}).encode()
            return 200, json.dumps({"connection_id": connection_id, "status": self.statuses[connection_id]}).encode()
        return 404, b'{"error": "no_such_route"}'

    def refreshes(self) -> int:
        return sum(1 for method, url, _, _ in self.calls if method == "POST")


@pytest.fixture
def world() -> tuple[TokenProvider, FakeSecrets, FakeBroker, Clock]:
    clock, secrets = Clock(), FakeSecrets()
    broker = FakeBroker(secrets, clock)
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    provider = TokenProvider(
        api_url=API, secret_prefix=PREFIX, session=session, secrets_client=secrets, send=broker.send, clock=clock
    )
    return provider, secrets, broker, clock


def test_a_fresh_token_comes_from_the_cached_secret_without_asking_the_broker(world: Any) -> None:
    provider, secrets, broker, clock = world
    secrets.put(ADA, "first", NOW + 3 * 86400)

    first = provider.token(ADA)
    again = provider.access_token(ADA)
    clock.now += 301  # past the cache's 300 s: read again
    third = provider.token(ADA)

    assert first.access_token == again == third.access_token == "first"
    assert first.api_base_url == "https://api.smartsheet.eu/2.0"
    assert "first" not in repr(first)
    assert secrets.reads == 2
    assert broker.calls == []


def test_a_token_close_to_expiry_makes_the_helper_ask_the_broker_once_signed(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "old", NOW + 60)  # valid for one more minute: under the 300 s minimum

    token = provider.token(ADA)

    assert token.access_token.startswith("rotated-")
    [(method, url, headers, body)] = broker.calls
    assert (method, url) == ("POST", f"{API}/connections/{ADA}/refresh")
    assert json.loads(body) == {"min_valid_seconds": 300}
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]  # region read off the URL
    assert "X-Amz-Date" in headers


def test_many_threads_asking_at_once_cause_one_refresh(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "old", NOW + 60)
    seen: list[str] = []

    threads = [threading.Thread(target=lambda: seen.append(provider.access_token(ADA))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert broker.refreshes() == 1
    assert len(set(seen)) == 1
    assert len(seen) == 8


def test_a_connection_that_needs_reauth_is_reported_as_unavailable(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "old", NOW - 10)
    broker.refresh_answer = (409, {"error": "needs_reauth", "message": "its user must sign in again"})

    with pytest.raises(ConnectionUnavailable) as failure:
        provider.token(ADA)

    assert failure.value.status == "needs_reauth"
    with pytest.raises(ConnectionUnavailable, match="no such connection"):
        provider.token("42")


def refreshes(broker: Any) -> list[dict[str, Any]]:
    return [json.loads(body) for method, url, _, body in broker.calls if method == "POST" and url.endswith("/refresh")]


def test_a_token_smartsheet_refused_before_its_expiry_is_refreshed_after_invalidate(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "revoked-early", NOW + 5 * 86400)  # an organisation's token-lifetime policy revoked it
    assert provider.access_token(ADA) == "revoked-early"

    provider.invalidate(ADA)  # the integrator's call got 401 with it
    fresh = provider.access_token(ADA)

    assert fresh != "revoked-early"
    assert refreshes(broker) == [{"min_valid_seconds": 7 * 24 * 3600}]  # a refresh whatever its expiry says
    assert provider.access_token(ADA) == fresh
    assert len(refreshes(broker)) == 1


def test_a_refused_token_whose_grant_is_dead_is_needs_reauth_not_the_same_token_again(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "revoked-early", NOW + 5 * 86400)
    provider.token(ADA)
    broker.refresh_answer = (409, {"error": "needs_reauth", "message": "its user must sign in again"})
    provider.invalidate(ADA)

    with pytest.raises(ConnectionUnavailable) as failure:
        provider.token(ADA)

    assert failure.value.status == "needs_reauth"
    assert "must sign in again" in str(failure.value)


def test_a_refused_token_in_its_cooldown_is_an_error_to_retry_never_the_dead_token(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "revoked-early", NOW + 5 * 86400)
    provider.token(ADA)
    broker.refresh_answer = (429, {"error": "refresh_cooldown", "message": "refreshed minutes ago", "retry_after": 90})
    provider.invalidate(ADA)

    with pytest.raises(BrokerUnavailable) as failure:
        provider.token(ADA)

    assert failure.value.retry_after == 90
    broker.refresh_answer = None
    assert provider.access_token(ADA) != "revoked-early"  # asked again, refreshed


def test_invalidate_after_a_rotation_reads_the_new_token_without_a_refresh(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "old", NOW + 5 * 86400)
    provider.token(ADA)
    secrets.put(ADA, "rotated-by-the-sweep", NOW + 7 * 86400)

    provider.invalidate(ADA)

    assert provider.access_token(ADA) == "rotated-by-the-sweep"
    assert refreshes(broker) == []


def test_a_busy_broker_still_leaves_a_valid_token_usable_but_never_an_expired_one(world: Any) -> None:
    provider, secrets, broker, clock = world
    broker.refresh_answer = (503, {"error": "refresh_failed", "message": "Smartsheet is busy", "retry_after": 120})
    secrets.put(ADA, "still-good", NOW + 60)

    assert provider.access_token(ADA) == "still-good"

    clock.now += 61
    with pytest.raises(BrokerUnavailable) as failure:
        provider.token(ADA)
    assert failure.value.retry_after == 120


def test_an_end_user_is_resolved_to_their_active_connection_once(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "tok", NOW + 3 * 86400)

    assert provider.access_token(end_user_id="user-42") == "tok"
    assert provider.access_token(end_user_id="user-42") == "tok"
    with pytest.raises(ConnectionUnavailable):
        provider.token(end_user_id="nobody")

    lookups = [url for method, url, _, _ in broker.calls if method == "GET"]
    assert len(lookups) == 2  # user-42 once (then cached), nobody once
    assert "end_user_id=user-42" in lookups[0]
    assert "status=active" in lookups[0]


def test_plain_http_is_refused_except_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        TokenProvider(api_url="http://broker.example.com", secret_prefix=PREFIX, region="us-east-1")


def test_a_refresh_cooldown_leaves_the_current_token_in_use_and_the_broker_unasked_until_retry_after(
    world: Any,
) -> None:
    _, secrets, broker, clock = world
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    needs_a_day = TokenProvider(
        api_url=API,
        secret_prefix=PREFIX,
        session=session,
        secrets_client=secrets,
        send=broker.send,
        clock=clock,
        min_valid_seconds=86400,
    )
    cooldown = {"error": "refresh_cooldown", "message": "refreshed minutes ago", "retry_after": 500}
    broker.refresh_answer = (429, cooldown)
    secrets.put(ADA, "valid-for-an-hour", NOW + 3600)

    first = needs_a_day.access_token(ADA)
    clock.now += 10
    second = needs_a_day.access_token(ADA)
    asked_meanwhile = broker.refreshes()
    clock.now += 500
    needs_a_day.access_token(ADA)

    assert first == second == "valid-for-an-hour"
    assert asked_meanwhile == 1  # not asked again before Retry-After
    assert broker.refreshes() == 2
    clock.now += 3600  # expired: a cooldown answer is no token
    with pytest.raises(BrokerUnavailable) as failure:
        needs_a_day.token(ADA)
    assert failure.value.retry_after == 500


def test_invalidate_asks_the_broker_and_hands_out_the_rotated_token(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "first", NOW + 3 * 86400)
    provider.token(ADA)
    secrets.put(ADA, "second", NOW + 3 * 86400)  # rotated meanwhile (Smartsheet answered 401 to "first")

    cached = provider.token(ADA)
    provider.invalidate(ADA)
    after = provider.token(ADA)
    again = provider.token(ADA)
    provider.invalidate("6812335718217604")  # never read: nothing to forget, nothing raised

    assert cached.access_token == "first"
    assert (after.access_token, again.access_token) == ("second", "second")
    assert secrets.reads == 2
    assert [(m, urlsplit(u).path) for m, u, _, _ in broker.calls] == [("GET", f"/connections/{ADA}")]  # once


@pytest.mark.parametrize("status", ["needs_reauth", "revoked"])
def test_after_invalidate_a_dead_connection_raises_instead_of_handing_out_its_token_again(
    world: Any, status: str
) -> None:
    """Issue 22 item 1: the token is six days from expiry, yet Smartsheet refused it and the broker knows the
    connection is dead: the old client handed the same token out again after invalidate()."""
    provider, secrets, broker, _ = world
    secrets.put(ADA, "dead", NOW + 6 * 86400)
    provider.token(ADA)
    broker.statuses[ADA] = status

    provider.invalidate(ADA)
    with pytest.raises(ConnectionUnavailable) as gone:
        provider.token(ADA)

    assert (gone.value.status, gone.value.connection_id) == (status, ADA)
    assert str(gone.value).startswith(f"connection {ADA}: ")
    assert broker.refreshes() == 0


def test_after_invalidate_the_same_stored_token_makes_the_broker_refresh_now(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "refused", NOW + 6 * 86400)
    provider.token(ADA)

    provider.invalidate(ADA)
    after = provider.token(ADA)

    assert after.access_token.startswith("rotated-")
    [refresh] = [c for c in broker.calls if c[0] == "POST"]
    assert json.loads(refresh[3]) == {"min_valid_seconds": 604800}  # whatever the token's expiry


def test_after_invalidate_a_grant_refused_at_smartsheet_raises_needs_reauth(world: Any) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "revoked-at-smartsheet", NOW + 6 * 86400)
    provider.token(ADA)
    broker.refresh_answer = (409, {"error": "needs_reauth", "message": "Smartsheet no longer honours this grant"})

    provider.invalidate(ADA)
    with pytest.raises(ConnectionUnavailable) as gone:
        provider.token(ADA)

    assert gone.value.status == "needs_reauth"


def test_after_invalidate_a_refresh_in_cooldown_gives_no_refused_token_and_the_next_call_checks_again(
    world: Any,
) -> None:
    provider, secrets, broker, _ = world
    secrets.put(ADA, "refused", NOW + 6 * 86400)
    provider.token(ADA)
    broker.refresh_answer = (429, {"error": "refresh_cooldown", "message": "too soon", "retry_after": 120})

    provider.invalidate(ADA)
    with pytest.raises(BrokerUnavailable):
        provider.token(ADA)
    broker.refresh_answer = None
    after = provider.token(ADA)

    assert after.access_token.startswith("rotated-")
    assert broker.refreshes() == 2


def test_an_end_user_without_a_connection_is_named_as_an_end_user(world: Any) -> None:
    provider, _, _, _ = world

    with pytest.raises(ConnectionUnavailable) as gone:
        provider.token(end_user_id="user-7")

    assert (gone.value.connection_id, gone.value.end_user_id, gone.value.status) == (None, "user-7", "not_found")
    assert str(gone.value) == "end user user-7: has no active connection (connect them first)"


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_a_tokens_api_base_url_is_the_brokers_for_its_region(world: Any, region: str) -> None:
    """The client is one file to copy and cannot import the broker: its region table is held to the broker's here."""
    provider, secrets, _, _ = world
    secrets.put(ADA, "tok", NOW + 3 * 86400)
    secrets.documents[f"{PREFIX}{ADA}"]["region"] = region

    assert provider.token(ADA).api_base_url == REGIONS[region][1]


def test_the_clients_regions_are_the_brokers_and_an_unknown_one_is_us() -> None:
    assert {region: api_base_url for region, (_, api_base_url) in REGIONS.items()} == API_BASE_URLS
    unknown = AccessToken(access_token="tok", expires_at=0, connection_id=ADA, email="", region="mars")
    assert unknown.api_base_url == REGIONS["us"][1]
