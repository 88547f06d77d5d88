"""The management API in-process (moto + emulator): views without tokens, pages, validation, on-demand refresh
through the sweep's lease, disconnect that really revokes, connect sessions."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.flows.deps import API_MARGIN_SECONDS, API_TIMEOUT_SECONDS
from smartsheet_oauth.stores.pace import PaceWindows, Windows

from tests.integration.test_refresh import FailingVault, FakeTime
from tests.management.conftest import EventSink, call_management
from tests.support.broker import Broker

ADA, GRACE, ALAN = "4583173393803140", "6812335718217604", "9007199254740993"


def refresh_calls(broker: Broker) -> int:
    return sum(1 for r in broker.emulator.token_requests if r["grant_type"] == "refresh_token")


def signed_in(broker: Broker, *users: str) -> None:
    for user in users:
        assert broker.sign_in(user_id=int(user)).status == 200


# ------------------------------------------------------------------------------------------------- reading
def test_a_connection_shows_status_and_metadata_never_a_token_and_pages_cover_them_all(broker: Broker) -> None:
    signed_in(broker, ADA, GRACE, ALAN)
    broker.emulator.revoke_user(GRACE)
    broker.make_due(GRACE)
    broker.sweep()  # GRACE -> needs_reauth; ADA and ALAN are not due

    seen: list[str] = []
    query: dict[str, str] = {"limit": "2"}
    pages = 0
    while True:
        answer = call_management("GET", "/connections", query=query)
        assert answer.status == 200
        assert len(answer.body["connections"]) <= 2
        seen += [c["connection_id"] for c in answer.body["connections"]]
        pages += 1
        if answer.body["next"] is None:
            break
        query = {"limit": "2", "next": answer.body["next"]}
    reauth = call_management("GET", "/connections", query={"status": "needs_reauth"})

    assert sorted(seen) == sorted([ADA, GRACE, ALAN])
    assert pages >= 2
    assert [c["connection_id"] for c in reauth.body["connections"]] == [GRACE]

    answer = call_management("GET", f"/connections/{ALAN}")

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"
    view = answer.body
    assert view["connection_id"] == view["smartsheet_user_id"] == ALAN  # every digit, past 2^53
    assert view["status"] == "active"
    assert view["email"] == "alan@example.com"
    assert view["scopes"] == ["READ_SHEETS", "WRITE_SHEETS"]
    assert view["end_user_id"] is None
    assert view["generation"] == 1
    assert view["secret_arn"].split(":secret:")[1].startswith(f"test-stack/connections/{ALAN}")
    tokens = broker.tokens(ALAN)
    raw = json.dumps(view)
    assert tokens["access_token"] not in raw
    assert tokens["refresh_token"] not in raw


BAD_READS: list[tuple[str, dict[str, str] | None, int, str]] = [
    ("/connections/not-a-number", None, 400, "digits"),
    ("/connections/123456789012345678901", None, 400, "digits"),
    ("/connections/42", None, 404, "No connection 42"),
    ("/connections", {"limit": "0"}, 400, "limit"),
    ("/connections", {"limit": "many"}, 400, "limit"),
    ("/connections", {"status": "gone"}, 400, "status"),
    ("/connections", {"next": "bm90LWpzb24"}, 400, "next"),
    ("/connections", {"next": "eyJjb25uZWN0aW9uX2lkIjoieCJ9"}, 400, "digits"),
    ("/connections", {"end_user_id": "a b"}, 400, "end_user_id"),
    ("/connections", {"colour": "red"}, 400, "unknown query parameter"),
    ("/nowhere", None, 404, "no such route"),
]


def test_bad_reads_get_a_json_error_with_a_clear_message_and_no_caller_gets_nothing(broker: Broker) -> None:
    signed_in(broker, ADA)
    unsigned = call_management("GET", f"/connections/{ADA}", signed=False)
    assert unsigned.status == 403
    assert unsigned.body["error"] == "forbidden"
    assert ADA not in json.dumps(unsigned.body)
    # The refusal is shaped like every other answer (API Gateway reads the same payload 2.0 keys).
    assert unsigned.result_keys == call_management("GET", f"/connections/{ADA}").result_keys
    assert unsigned.headers["Content-Type"] == "application/json"

    # One broker for every case: the cases only read.
    for path, query, status, message_part in BAD_READS:
        answer = call_management("GET", path, query=query)

        assert answer.status == status, (path, query)
        assert answer.headers["Content-Type"] == "application/json"
        assert message_part.lower() in answer.body["message"].lower(), (path, query)
        assert answer.body["error"]
        assert answer.body["reference"]


BAD_REFRESH_BODIES = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"min_valid_seconds": -1}', "min_valid_seconds"),
    ('{"min_valid_seconds": "soon"}', "min_valid_seconds"),
    ('{"force": true}', "unknown field"),
    ("x" * 20000, "larger than"),
]


def test_on_demand_refresh_refreshes_only_when_asked_right_and_rotates_through_the_sweeps_steps(
    broker: Broker,
) -> None:
    signed_in(broker, ADA)
    before = broker.tokens(ADA)
    for raw_body, message_part in BAD_REFRESH_BODIES:
        bad = call_management("POST", f"/connections/{ADA}/refresh", raw_body=raw_body)
        assert bad.status == 400, raw_body[:40]
        assert message_part in bad.body["message"], raw_body[:40]
    fresh = call_management("POST", f"/connections/{ADA}/refresh")  # the token is valid for days
    assert fresh.status == 200
    assert fresh.body["outcome"] == "fresh"
    assert refresh_calls(broker) == 0

    answer = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})

    assert answer.status == 200
    assert answer.body["outcome"] == "refreshed"
    assert answer.body["connection"]["generation"] == 2
    after = broker.tokens(ADA)
    assert after["refresh_token"] != before["refresh_token"]
    assert broker.tokens(ADA, "AWSPREVIOUS")["refresh_token"] == before["refresh_token"]
    assert broker.emulator.refresh_token_is_live(after["refresh_token"])
    assert refresh_calls(broker) == 1
    record = broker.connection(ADA)
    assert record is not None
    assert "lease_until" not in record
    assert record["refresh_due_at"] > record["updated_at"]  # back in the future: the sweep will not redo it


def test_an_on_demand_refresh_waits_a_cooldown_before_it_writes_the_secret_again(broker: Broker) -> None:
    """A caller asking for more than a fresh pair gives (min_valid_seconds near 7 days) again and again: one refresh,
    then 429 with Retry-After until the cooldown ends, and the current pair whenever it meets the caller's need."""
    signed_in(broker, ADA)
    asks = [
        call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800}) for _ in range(13)
    ]
    modest = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 3600})

    assert [a.status for a in asks] == [200] + [429] * 12
    assert refresh_calls(broker) == 1
    assert len(broker.secrets.list_secret_version_ids(SecretId=_name(broker))["Versions"]) == 2  # sign-in, refresh
    held_back = asks[-1]
    assert held_back.body["error"] == "refresh_cooldown"
    assert set(held_back.body) == {"error", "message", "reference", "retry_after"}
    assert 590 <= held_back.body["retry_after"] == int(held_back.headers["Retry-After"]) <= 600
    assert modest.status == 200
    assert modest.body["outcome"] == "fresh"

    # The cooldown ends: the next ask refreshes again.
    broker.dynamodb.update_item(
        TableName=broker.connections_table,
        Key={"connection_id": {"S": ADA}},
        UpdateExpression="SET refreshed_at = refreshed_at - :cooldown",
        ExpressionAttributeValues={":cooldown": {"N": "600"}},
    )
    again = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})
    assert again.status == 200
    assert again.body["outcome"] == "refreshed"
    assert refresh_calls(broker) == 2


def test_an_on_demand_refresh_takes_its_slot_from_the_sweeps_pace(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every slot of the current and the next window taken (by sweeps): 429 with Retry-After, nothing changed."""
    monkeypatch.setenv("REFRESH_RATE_PER_MINUTE", "60")
    services.reset()
    signed_in(broker, ADA)
    before = broker.connection(ADA)
    windows = Windows(60)
    now = time.time()
    for window in (windows.index(now), windows.index(now) + 1, windows.index(now) + 2):
        PaceWindows(broker.dynamodb, broker.state_table).claim(
            window=window, wanted=windows.budget, limit=windows.budget, expires_at=int(now) + 60
        )

    answer = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})

    assert answer.status == 429
    assert answer.body["error"] == "refresh_rate_limited"
    assert 1 <= answer.body["retry_after"] == int(answer.headers["Retry-After"]) <= 6
    assert refresh_calls(broker) == 0
    assert broker.connection(ADA) == before


def _name(broker: Broker) -> str:
    return f"{broker.env['TOKEN_SECRET_PREFIX']}{ADA}"


def test_on_demand_refresh_racing_the_sweep_calls_smartsheet_once(broker: Broker) -> None:
    signed_in(broker, ADA)
    broker.make_due(ADA)
    broker.emulator.set_faults(latency_ms=400, latency_token_only=True)
    results: dict[str, Any] = {}

    def sweep() -> None:
        results["sweep"] = broker.sweep()

    def on_demand() -> None:
        results["api"] = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})

    threads = [threading.Thread(target=sweep), threading.Thread(target=on_demand)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert refresh_calls(broker) == 1
    assert results["api"].status == 200
    assert results["api"].body["outcome"] == "refreshed"
    assert results["api"].body["connection"]["generation"] == 2
    record = broker.connection(ADA)
    assert record is not None
    assert record["generation"] == 2
    assert broker.emulator.refresh_token_is_live(broker.tokens(ADA)["refresh_token"])


def test_a_dead_grant_cannot_be_refreshed_on_demand_but_can_be_disconnected(broker: Broker) -> None:
    signed_in(broker, ADA)
    broker.emulator.revoke_user(ADA)
    broker.make_due(ADA)
    broker.sweep()

    refresh = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})
    disconnect = call_management("DELETE", f"/connections/{ADA}")

    assert refresh.status == 409
    assert refresh.body["error"] == "needs_reauth"
    assert disconnect.status == 200
    assert disconnect.body["smartsheet"] == "already_invalid"
    assert broker.connection(ADA)["status"] == "revoked"  # type: ignore[index]


@pytest.fixture
def failing_saves(sealing: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FailingVault, FakeTime]]:
    """The management function's vault fails every secret write while `failing` (a Secrets Manager outage), and
    its retries' sleeps pass at once on a clock that they move."""
    import management.app  # here: importing it reads the configuration the broker fixture sets

    vault = FailingVault(services.token_vault())
    vault.failing = False
    fake = FakeTime()
    real_deps = management.app.deps
    with monkeypatch.context() as patch:  # undone before `sealing` resets the services
        patch.setattr(services, "token_vault", lambda: vault)
        patch.setattr(
            management.app, "deps", lambda: dataclasses.replace(real_deps(), sleep=fake.sleep, monotonic=fake.monotonic)
        )
        yield vault, fake


def test_a_new_pair_that_cannot_be_stored_in_time_is_kept_503_and_stored_by_the_next_ask(
    sealing: Broker, failing_saves: tuple[FailingVault, FakeTime]
) -> None:
    broker = sealing
    signed_in(broker, ADA)
    old = broker.tokens(ADA)
    vault, fake = failing_saves
    vault.failing = True

    kept = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})

    assert kept.status == 503
    assert kept.body["error"] == "refresh_kept"
    assert "ask again" in kept.body["message"]
    assert int(kept.headers["Retry-After"]) == kept.body["retry_after"] == 30
    assert old["refresh_token"] not in json.dumps(kept.body)
    # Retried within API Gateway's 30 s (the sweep's lease would allow ~105 s), then kept on the record.
    assert vault.attempts > 5
    assert sum(fake.slept) <= API_TIMEOUT_SECONDS - API_MARGIN_SECONDS
    record = broker.connection(ADA)
    assert record is not None
    assert (record["status"], record["generation"]) == ("active", 1)
    assert (
        "pending_pair"
        in broker.dynamodb.get_item(
            TableName=broker.connections_table, Key={"connection_id": {"S": ADA}}, ConsistentRead=True
        )["Item"]
    )
    assert broker.tokens(ADA) == old
    assert not broker.emulator.refresh_token_is_live(old["refresh_token"])  # the kept pair is the grant now

    # A function with 8 s left retries for less than that: the context's time bounds the retries too.
    attempts, slept = vault.attempts, len(fake.slept)
    short = call_management("POST", f"/connections/{ADA}/refresh", timeout_seconds=8)
    assert short.status == 503
    assert short.body["error"] == "refresh_kept"
    assert vault.attempts > attempts
    assert sum(fake.slept[slept:]) <= 8 - API_MARGIN_SECONDS

    vault.failing = False
    # No min_valid: the stored access token is valid for days, but a kept pair waits, so it is stored first.
    resumed = call_management("POST", f"/connections/{ADA}/refresh")

    assert resumed.status == 200
    assert resumed.body["outcome"] == "resumed"
    assert resumed.body["connection"]["status"] == "active"
    assert resumed.body["connection"]["generation"] == 2
    assert resumed.body["connection"]["failures"] == 0
    stored = broker.tokens(ADA)
    assert broker.emulator.refresh_token_is_live(stored["refresh_token"])
    assert broker.emulator.access_token_is_live(stored["access_token"])
    assert refresh_calls(broker) == 1  # stored, not refreshed again
    assert stored["refresh_token"] not in json.dumps(resumed.body)
    assert (
        "pending_pair"
        not in broker.dynamodb.get_item(
            TableName=broker.connections_table, Key={"connection_id": {"S": ADA}}, ConsistentRead=True
        )["Item"]
    )


def test_a_new_pair_that_can_be_neither_stored_nor_kept_is_a_500_incident_that_leaks_nothing(
    sealing: Broker, failing_saves: tuple[FailingVault, FakeTime], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = sealing
    signed_in(broker, ADA)
    old = broker.tokens(ADA)
    vault, _ = failing_saves
    vault.failing = True

    def failing_keep(*args: Any, **kwargs: Any) -> None:
        raise StorageError("connections.keep_pending", "ThrottlingException", transient=True)

    monkeypatch.setattr(services.connection_store(), "keep_pending", failing_keep)

    lost = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})

    assert lost.status == 500
    assert lost.headers["Content-Type"] == "application/json"
    assert set(lost.body) == {"error", "message", "reference"}
    assert lost.body["error"] == "refresh_lost"
    assert "sign in again" in lost.body["message"]
    assert lost.body["reference"]
    raw = json.dumps(lost.body)
    for leak in (old["access_token"], old["refresh_token"], "ThrottlingException", "ServiceUnavailable", "vault:"):
        assert leak not in raw
    assert refresh_calls(broker) == 1

    # Honest afterwards: the stored refresh token is dead, so the next refresh finds the grant gone.
    vault.failing = False
    again = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})
    assert again.status == 409
    assert again.body["error"] == "needs_reauth"


# -------------------------------------------------------------------------------------------------- disconnect
def test_disconnect_revokes_at_smartsheet_marks_revoked_and_schedules_the_secrets_deletion(
    broker: Broker, event_sink: EventSink
) -> None:
    signed_in(broker, ADA)
    event_sink.drain()
    tokens = broker.tokens(ADA)

    answer = call_management("DELETE", f"/connections/{ADA}")

    assert answer.status == 200, answer.body
    assert answer.body["outcome"] == "revoked"
    assert answer.body["smartsheet"] == "revoked"
    assert answer.body["stored_tokens"] == "deletion_scheduled"
    assert answer.body["connection"]["status"] == "revoked"
    assert not broker.emulator.access_token_is_live(tokens["access_token"])
    assert not broker.emulator.refresh_token_is_live(tokens["refresh_token"])
    secret = broker.secrets.describe_secret(SecretId=broker.connection(ADA)["secret_arn"])  # type: ignore[index]
    assert "DeletedDate" in secret
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Revoked"
    assert event["detail"]["status"] == "revoked"
    assert event["detail"]["smartsheet"] == "revoked"
    assert tokens["access_token"] not in json.dumps(event)

    again = call_management("DELETE", f"/connections/{ADA}")
    assert again.status == 200
    assert again.body["smartsheet"] == "no_tokens"
    assert event_sink.drain() == []  # already revoked: no second event
    unknown = call_management("DELETE", "/connections/42")
    assert unknown.status == 404
    assert unknown.body["error"] == "not_found"


def test_when_smartsheet_fails_refresh_and_revoke_are_reported_and_change_nothing(broker: Broker) -> None:
    signed_in(broker, ADA)
    tokens = broker.tokens(ADA)
    broker.emulator.set_faults(next_outcomes=[4004, 4004])

    refresh = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})
    answer = call_management("DELETE", f"/connections/{ADA}")

    assert refresh.status == 503
    assert refresh.body["error"] == "refresh_failed"
    assert int(refresh.headers["Retry-After"]) >= 1
    assert broker.tokens(ADA) == tokens

    assert answer.status == 503
    assert answer.body["error"] == "smartsheet_unavailable"
    assert "nothing was changed" in answer.body["message"]
    record = broker.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert "lease_until" not in record
    assert broker.emulator.access_token_is_live(tokens["access_token"])
    assert "DeletedDate" not in broker.secrets.describe_secret(SecretId=record["secret_arn"])


# -------------------------------------------------------------------------------------------- connect sessions
BAD_SESSIONS: list[tuple[dict[str, Any], str]] = [
    ({}, "end_user_id is required"),
    ({"end_user_id": ""}, "end_user_id must be"),
    ({"end_user_id": "x" * 129}, "end_user_id must be"),
    ({"end_user_id": "has space"}, "end_user_id must be"),
    ({"end_user_id": 42}, "end_user_id must be"),
    ({"end_user_id": "u", "return_to": "https://evil.example.net/"}, "return_to"),
    ({"end_user_id": "u", "extra": 1}, "unknown field"),
]


def test_a_connect_session_answers_a_one_time_login_link_and_bad_requests_store_nothing(broker: Broker) -> None:
    for body, message_part in BAD_SESSIONS:
        answer = call_management("POST", "/connect-sessions", body=body)

        assert answer.status == 400, body
        assert message_part in answer.body["message"], body
    assert broker.dynamodb.scan(TableName=broker.state_table)["Items"] == []

    answer = call_management(
        "POST", "/connect-sessions", body={"end_user_id": "user-42", "return_to": "https://app.example.com/done"}
    )

    assert answer.status == 201
    assert answer.body["end_user_id"] == "user-42"
    assert answer.body["login_url"].startswith("https://broker.example.com/login?session=")
    assert answer.body["return_to"] == "https://app.example.com/done"
    token = answer.body["login_url"].split("session=")[1]
    assert len(token) == 43
    items = broker.dynamodb.scan(TableName=broker.state_table)["Items"]
    assert len(items) == 1
    assert token not in json.dumps(items)  # only its hash is stored


def test_a_connect_session_link_is_on_the_custom_domain_whatever_host_the_backend_called(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CustomDomainName sets PUBLIC_BASE_URL: a backend that signs its request for the execute-api host still hands
    its user a link on the custom domain (the one whose /callback is registered at Smartsheet)."""
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://signin.example.com")
    services.reset()
    try:
        answer = call_management(
            "POST", "/connect-sessions", body={"end_user_id": "user-42", "return_to": "https://app.example.com/done"}
        )
    finally:
        services.reset()

    assert answer.status == 201
    assert answer.body["login_url"].startswith("https://signin.example.com/login?session=")


# ----------------------------------------------------------------------------------- a grant lost in flight
def test_an_on_demand_refresh_that_finds_a_grant_lost_in_flight_is_a_500_incident_and_marks_it(
    sealing: Broker,
) -> None:
    """An earlier refresh reached Smartsheet (which rotated the pair) and its worker died before storing the answer:
    the on-demand caller is told the grant is gone, and the connection says so."""
    broker = sealing
    signed_in(broker, ADA)
    store = services.connection_store()
    record = broker.connection(ADA)
    assert record is not None
    broker.make_due(ADA)
    store.acquire_lease(
        ADA, generation=record["generation"], owner="dead-worker", now=int(time.time()) - 600, lease_seconds=60
    )
    services.smartsheet_client().refresh(broker.tokens(ADA)["refresh_token"])  # the dead worker's rotation

    lost = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 604800})

    assert lost.status == 500
    assert lost.body["error"] == "refresh_lost"
    assert "sign in again" in lost.body["message"]
    assert (broker.connection(ADA) or {}).get("status") == "needs_reauth"
    assert (broker.connection(ADA) or {}).get("last_error") == "lost_in_flight"


def test_an_on_demand_refresh_waits_for_the_pace_only_as_long_as_it_can_still_send() -> None:
    from smartsheet_oauth.flows import on_demand
    from smartsheet_oauth.smartsheet.client import Timeouts

    class Deps:
        @staticmethod
        def smartsheet() -> Any:
            return type("Client", (), {"timeouts": Timeouts()})()

    def left(seconds: float) -> Callable[[], float]:
        return lambda: seconds

    full_request = API_TIMEOUT_SECONDS - API_MARGIN_SECONDS
    waits = [on_demand._pace_wait(Deps(), left(seconds)) for seconds in (full_request, 24.0, 10.0)]  # type: ignore[arg-type]

    assert 0 < waits[0] < on_demand.PACE_WAIT_SECONDS  # a whole request: a few seconds, not the 10 s it would like
    assert waits[1:] == [0.0, 0.0]  # later in the request: no wait at all (a 429 with Retry-After instead)
