"""The refresh sweep in-process: the real handler and library against mock_aws and the Smartsheet emulator.

Rotation, the failure taxonomy, leases, the time budget and the kept-pair path (a new pair that could not be
written to its secret waits sealed on the record and is finished first by the next sweep)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.errors import StorageError, TransientSmartsheetError
from smartsheet_oauth.domain.tokens import TokenGrant, TokenSet
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.flows import refusals
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.flows.refresh import GrantGuard, refresh_connection
from smartsheet_oauth.flows.sweep import BREAKER_THRESHOLD, sweep
from smartsheet_oauth.platform import aws
from smartsheet_oauth.smartsheet.client import SmartsheetClient
from smartsheet_oauth.stores.connections import DueConnection
from smartsheet_oauth.stores.token_stores import TokenStore
from smartsheet_oauth.stores.token_vault import pending_binding

from tests.support.broker import Broker, pending_tokens_key_arn
from tests.support.fixtures import BOTH_STORES

# Every test here runs against each token store (TokenStore=secretsmanager and dynamodb).
pytestmark = BOTH_STORES

ADA = 4583173393803140
GRACE = 6812335718217604
ALAN = 9007199254740993


class FakeTime:
    """A monotonic clock that sleeping moves: minutes of retries pass in no time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def refresher(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """The broker with the refresh function's whole environment: the template's pending-tokens KMS key too."""
    monkeypatch.setenv("PENDING_TOKENS_KEY_ID", pending_tokens_key_arn())
    services.reset()
    yield broker
    services.reset()


def deps(**overrides: Any) -> RefreshDeps:
    fields: dict[str, Any] = {
        "config": get_config(),
        "connections": services.connection_store(),
        "vault": services.token_vault(),
        "smartsheet": services.smartsheet_client(),
    }
    return RefreshDeps(**(fields | overrides))


def due_now(broker: Broker, connection_id: int | str) -> DueConnection:
    record = broker.connection(connection_id)
    assert record is not None
    return DueConnection(
        connection_id=str(connection_id),
        refresh_due_at=record["refresh_due_at"],
        access_expires_at=record["access_expires_at"],
        generation=record["generation"],
    )


def refreshes(broker: Broker) -> int:
    return broker.emulator.counts["token.refresh"]


def signed_in_and_due(broker: Broker, *user_ids: int) -> None:
    for user_id in user_ids:
        assert broker.sign_in(user_id=user_id).status == 200
        broker.make_due(user_id)


def due_ids(broker: Broker) -> list[str]:
    page, _ = services.connection_store().due(now=int(time.time()), limit=100)
    return [due.connection_id for due in page]


class FailingVault:
    """The real token store whose pair writes fail (a Secrets Manager or DynamoDB outage) while `failing` is true."""

    def __init__(self, real: TokenStore, code: str = "ServiceUnavailable") -> None:
        self.real = real
        self.sealer = real.sealer
        self.failing = True
        self.code = code
        self.attempts = 0

    def save(self, connection_id: str, tokens: TokenSet, **kwargs: Any) -> str:
        if self.failing:
            self.attempts += 1
            raise StorageError("vault.put", self.code, transient=True)
        return self.real.save(connection_id, tokens, **kwargs)

    def secret_name(self, connection_id: str) -> str:
        return self.real.secret_name(connection_id)

    def load(self, secret_id: str) -> TokenSet:
        return self.real.load(secret_id)

    def schedule_deletion(self, secret_id: str, *, recovery_days: int = 7) -> None:
        self.real.schedule_deletion(secret_id, recovery_days=recovery_days)


def throttle(operation: str) -> Callable[[], None]:
    """Make one AWS operation of the broker's own clients answer ThrottlingException (past botocore's retries)."""

    def hook(model: Any, **_: Any) -> Any:
        if model.name != operation:
            return None
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        return _Http(400), error | {"ResponseMetadata": {"HTTPStatusCode": 400}}

    clients = (aws.dynamodb(), aws.secretsmanager(), aws.kms())
    for client in clients:
        client.meta.events.register_first("before-call", hook, unique_id=f"throttle-{operation}")

    def undo() -> None:
        for client in clients:
            client.meta.events.unregister("before-call", unique_id=f"throttle-{operation}")

    return undo


@dataclasses.dataclass
class _Http:
    status_code: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


# -- rotation ---------------------------------------------------------------------------------------


def test_rotation_stores_the_new_pair_and_the_next_refresh_uses_it(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    first = refresher.tokens(ADA)

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.REFRESHED] == 1
    second = refresher.tokens(ADA)
    assert second["refresh_token"] != first["refresh_token"]
    assert refresher.tokens(ADA, "AWSPREVIOUS") == first
    assert not refresher.emulator.refresh_token_is_live(first["refresh_token"])
    assert refresher.emulator.refresh_token_is_live(second["refresh_token"])
    assert refresher.emulator.access_token_is_live(second["access_token"])
    record = refresher.connection(ADA)
    assert record is not None
    assert record["generation"] == 2
    assert record["access_expires_at"] == second["expires_at"]
    assert record["refresh_due_at"] == second["expires_at"] - 172800
    assert not {"lease_until", "lease_owner", "pending_pair", "pending_version"} & set(record)
    assert second["user_id"] == str(ADA)
    assert second["email"] == first["email"]

    refresher.make_due(ADA)
    report = refresher.sweep()

    # The second refresh was made with the second pair: with the first it would have been refused (1071).
    assert report["outcomes"][RefreshOutcome.REFRESHED] == 1
    assert [r["outcome"] for r in refresher.emulator.token_requests if r["grant_type"] == "refresh_token"] == [
        "ok",
        "ok",
    ]
    assert refresher.tokens(ADA, "AWSPREVIOUS") == second
    assert refresher.emulator.refresh_token_is_live(refresher.tokens(ADA)["refresh_token"])


def test_a_pair_that_lives_less_than_the_window_comes_due_now_at_sign_in_and_at_refresh(refresher: Broker) -> None:
    """One rule for every pair (domain/tokens.refresh_due_at): a lifetime shorter than the window is due at once,
    never at a time in the past that would jump the due index's queue and read as a late sweep (sweep_lag)."""
    lifetime = refresher.emulator.settings.access_lifetime
    refresher.emulator.update_settings(access_lifetime=3600)
    try:
        before = int(time.time())
        assert refresher.sign_in(user_id=ADA).status == 200
        signed_in = refresher.connection(ADA)
        assert signed_in is not None
        assert before <= signed_in["refresh_due_at"] <= int(time.time()) < signed_in["access_expires_at"]

        before = int(time.time())
        assert refresh_connection(due_now(refresher, ADA), deps()) == RefreshOutcome.REFRESHED
    finally:
        refresher.emulator.update_settings(access_lifetime=lifetime)
    refreshed = refresher.connection(ADA)
    assert refreshed is not None
    assert refreshed["generation"] == signed_in["generation"] + 1
    assert before <= refreshed["refresh_due_at"] <= int(time.time()) < refreshed["access_expires_at"]


def test_the_sweep_reports_every_outcome_even_when_zero(refresher: Broker) -> None:
    report = refresher.sweep()

    assert report["dispatched"] == 0
    assert report["outcomes"] == dict.fromkeys(RefreshOutcome, 0)


def test_a_connection_that_is_not_due_is_untouched(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    assert refresher.sign_in(user_id=GRACE).status == 200
    grace_before = (refresher.connection(GRACE), refresher.tokens(GRACE))

    report = refresher.sweep()

    assert report["dispatched"] == 1
    assert (refresher.connection(GRACE), refresher.tokens(GRACE)) == grace_before
    assert refreshes(refresher) == 1


# -- permanent failures -----------------------------------------------------------------------------


def test_invalid_grant_marks_needs_reauth_and_leaves_the_due_index(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    refresher.emulator.expire_tokens(ADA, refresh=True)

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.NEEDS_REAUTH] == 1
    record = refresher.connection(ADA)
    assert record is not None
    assert record["status"] == "needs_reauth"
    assert record["last_error"] == "invalid_grant:1071"
    assert "due_shard" not in record
    assert "refresh_due_at" not in record
    assert due_ids(refresher) == []
    assert refresher.sweep()["dispatched"] == 0
    assert refreshes(refresher) == 1


def test_a_revoked_token_1132_marks_needs_reauth(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA, GRACE)
    refresher.emulator.revoke_user(ADA)

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.NEEDS_REAUTH] == 1
    assert report["outcomes"][RefreshOutcome.REFRESHED] == 1
    ada, grace = refresher.connection(ADA), refresher.connection(GRACE)
    assert ada is not None
    assert grace is not None
    assert (ada["status"], ada["last_error"]) == ("needs_reauth", "invalid_grant:1132")
    assert grace["status"] == "active"


def test_an_organisations_token_lifetime_policy_marks_needs_reauth_before_expires_in(refresher: Broker) -> None:
    """Smartsheet revokes the tokens of an organisation whose admin set a lifetime policy, days before their
    expires_in: the sweep's refresh is refused (1132) and only that organisation's connection needs the user again."""
    signed_in_and_due(refresher, ADA, GRACE)
    assert refresher.emulator.enforce_token_lifetime(0, user_id=ADA) == 1

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.NEEDS_REAUTH] == 1
    assert report["outcomes"][RefreshOutcome.REFRESHED] == 1
    ada, grace = refresher.connection(ADA), refresher.connection(GRACE)
    assert ada is not None
    assert grace is not None
    assert (ada["status"], ada["last_error"]) == ("needs_reauth", "invalid_grant:1132")
    assert grace["status"] == "active"


def test_a_wrong_client_secret_never_marks_a_user_needs_reauth(refresher: Broker) -> None:
    """A bad secret rotation makes Smartsheet answer 1072 (hash mismatch) for every refresh: the grants are
    alive, the credentials are wrong, so every connection stays active and its pair untouched."""
    signed_in_and_due(refresher, ADA, GRACE)
    before = {user: refresher.tokens(user) for user in (ADA, GRACE)}
    credentials = {"client_id": refresher.emulator.apps[0].client_id, "client_secret": "not-the-app-secret"}
    refresher.secrets.put_secret_value(
        SecretId=refresher.env["APP_CREDENTIALS_SECRET_ARN"], SecretString=json.dumps(credentials)
    )
    services.reset()

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.NEEDS_REAUTH] == 0
    assert report["outcomes"][RefreshOutcome.TRANSIENT] == 2
    for user in (ADA, GRACE):
        record = refresher.connection(user)
        assert record is not None
        assert (record["status"], record["last_error"]) == ("active", "invalid_grant:1072")
        assert refresher.tokens(user) == before[user]
    assert refreshes(refresher) == 2


def test_a_sweep_where_grant_after_grant_is_refused_stops_marking_users_needs_reauth(
    refresher: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refresh refused as invalid_grant (1071) with none working: past the guard's threshold (1 here, 5 by
    default) the refusals are held back as transient, the users stay active, a critical line says what is known."""
    monkeypatch.setattr(refusals, "INVALID_GRANT_GUARD", 1)
    signed_in_and_due(refresher, ADA, GRACE, ALAN)
    refresher.emulator.expire_tokens(refresh=True)

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.NEEDS_REAUTH] == 1
    assert report["outcomes"][RefreshOutcome.TRANSIENT] == 2
    records = [refresher.connection(user) for user in (ADA, GRACE, ALAN)]
    statuses = sorted((record or {}).get("status", "missing") for record in records)
    assert statuses == ["active", "active", "needs_reauth"]
    for record in records:
        assert record is not None
        assert record["last_error"] == "invalid_grant:1071"
    held_back = [record for record in records if record and record["status"] == "active"]
    assert all(record["due_shard"] == "due" for record in held_back)  # retried by a later sweep


def test_the_grant_guard_marks_refusals_final_while_refreshes_keep_pace() -> None:
    guard = GrantGuard(threshold=2)
    assert [guard.may_mark(), guard.may_mark()] == [True, True]  # a few revoked users: final
    assert guard.may_mark() is False  # a third refusal and nothing refreshed: held back
    for _ in range(4):
        guard.refreshed()
    assert guard.may_mark() is True  # 4 refused, 4 refreshed: refusals no longer outnumber refreshes
    assert guard.may_mark() is False  # 5 refused, 4 refreshed


def test_signing_in_again_after_needs_reauth_makes_the_connection_active_and_refreshable(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    refresher.emulator.revoke_user(ADA)
    refresher.sweep()

    assert refresher.sign_in(user_id=ADA).status == 200

    record = refresher.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert record["due_shard"] == "due"
    assert record["failures"] == 0
    assert "last_error" not in record
    refresher.make_due(ADA)
    assert refresher.sweep()["outcomes"][RefreshOutcome.REFRESHED] == 1
    assert refresher.emulator.refresh_token_is_live(refresher.tokens(ADA)["refresh_token"])


# -- transient failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("error_code", [4004, 4001, 4002])
def test_a_server_error_keeps_the_connection_active_with_a_backoff(refresher: Broker, error_code: int) -> None:
    signed_in_and_due(refresher, ADA)
    before = refresher.tokens(ADA)
    refresher.emulator.set_faults(next_outcomes=[error_code])
    started = int(time.time())

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.TRANSIENT] == 1
    record = refresher.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert record["failures"] == 1
    assert record["last_error"] == f"error:{error_code}"
    # base 300 s, jittered over the upper half, so a fleet does not come back at once
    assert started + 150 <= record["refresh_due_at"] <= int(time.time()) + 300
    assert record["generation"] == 1
    assert "lease_until" not in record
    assert refresher.tokens(ADA) == before
    assert refresher.emulator.refresh_token_is_live(before["refresh_token"])


def test_a_rate_limit_honours_retry_after(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    refresher.emulator.update_settings(retry_after=1)
    # The client retries one 429 itself (after Retry-After); the second one reaches the sweep.
    refresher.emulator.set_faults(next_outcomes=[4003, 4003])
    started = int(time.time())

    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.TRANSIENT] == 1
    record = refresher.connection(ADA)
    assert record is not None
    assert (record["status"], record["last_error"]) == ("active", "error:4003")
    assert record["refresh_due_at"] >= started + 150


class Answers(SmartsheetClient):
    """A Smartsheet client whose refresh ends the way a test says, without a network call."""

    def __init__(self, error: Exception) -> None:
        super().__init__(api_base_url="https://api.smartsheet.com/2.0", client_id="id", client_secret="secret")
        self.error = error

    def refresh(
        self, refresh_token: str, *, answer_within: float | None = None, region: str | None = None
    ) -> TokenGrant:
        raise self.error


def test_retry_after_beyond_the_backoff_wins(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    limited = TransientSmartsheetError("Smartsheet answered 429", retry_after=7200, status=429, error_code=4003)
    now = int(time.time())

    outcome = refresh_connection(due_now(refresher, ADA), deps(smartsheet=Answers(limited)))

    assert outcome == RefreshOutcome.TRANSIENT
    record = refresher.connection(ADA)
    assert record is not None
    assert now + 7200 <= record["refresh_due_at"] <= int(time.time()) + 7200


# The call that reads a stored pair, in each token store.
LOAD_CALL = {"secretsmanager": "GetSecretValue", "dynamodb": "GetItem"}


def test_aws_throttling_is_transient(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    undo = throttle(LOAD_CALL[refresher.env["TOKEN_STORE"]])
    try:
        report = refresher.sweep()
    finally:
        undo()

    assert report["outcomes"][RefreshOutcome.TRANSIENT] == 1
    record = refresher.connection(ADA)
    assert record is not None
    assert (record["status"], record["last_error"], record["failures"]) == (
        "active",
        "vault:ThrottlingException",
        1,
    )
    assert refreshes(refresher) == 0  # nothing was rotated while the pair could not be read


def test_a_throttled_lease_is_transient_and_touches_nothing(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    before = refresher.connection(ADA)
    undo = throttle("UpdateItem")
    try:
        outcome = refresh_connection(due_now(refresher, ADA), deps())
    finally:
        undo()

    assert outcome == RefreshOutcome.TRANSIENT
    assert refresher.connection(ADA) == before
    assert refreshes(refresher) == 0


def test_a_throttled_kms_holds_the_refresh_back(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    undo = throttle("GenerateDataKey")
    try:
        outcome = refresh_connection(due_now(refresher, ADA), deps())
    finally:
        undo()

    # Without a data key a new pair could not be kept if its save failed: Smartsheet is not asked at all.
    assert outcome == RefreshOutcome.TRANSIENT
    assert refreshes(refresher) == 0
    record = refresher.connection(ADA)
    assert record is not None
    assert record["last_error"] == "kms:ThrottlingException"


# -- races and leases -------------------------------------------------------------------------------


def test_invalid_grant_after_a_concurrent_refresh_is_not_marked(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    real = services.smartsheet_client()
    stale = refresher.tokens(ADA)

    class OtherWorkerFirst(SmartsheetClient):
        """Another worker (whose lease this one took over after it expired) rotates and commits first."""

        def refresh(
            self, refresh_token: str, *, answer_within: float | None = None, region: str | None = None
        ) -> TokenGrant:
            newer = real.refresh(refresh_token)
            stored = dataclasses.replace(
                TokenSet.from_json(json.dumps(stale)),
                access_token=newer.access_token,
                refresh_token=newer.refresh_token,
            )
            services.token_vault().save(str(ADA), stored, known_arn=_arn(refresher))
            refresher.dynamodb.update_item(
                TableName=refresher.connections_table,
                Key={"connection_id": {"S": str(ADA)}},
                UpdateExpression="SET generation = generation + :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
            return real.refresh(refresh_token)  # the stale token: invalid_grant

    client = OtherWorkerFirst(api_base_url=get_config().api_base_url, client_id=real.client_id, client_secret="x")

    outcome = refresh_connection(due_now(refresher, ADA), deps(smartsheet=client))

    assert outcome == RefreshOutcome.RACED
    record = refresher.connection(ADA)
    assert record is not None
    assert record["status"] == "active"
    assert refresher.emulator.refresh_token_is_live(refresher.tokens(ADA)["refresh_token"])


def test_a_held_lease_keeps_other_refreshers_away_until_it_expires(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    due = due_now(refresher, ADA)
    store = services.connection_store()
    now = int(time.time())
    store.acquire_lease(str(ADA), generation=due.generation, owner="crashed-worker", now=now, lease_seconds=600)

    assert refresh_connection(due, deps()) == RefreshOutcome.LEASE_BUSY
    assert refresher.sweep()["dispatched"] == 0  # the due index skips leased connections
    assert refreshes(refresher) == 0

    # The worker died; its lease runs out and the next sweep takes over.
    refresher.dynamodb.update_item(
        TableName=refresher.connections_table,
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": {"N": str(now - 1)}},
    )
    assert refresher.sweep()["outcomes"][RefreshOutcome.REFRESHED] == 1
    assert refreshes(refresher) == 1


def test_a_refreshed_connection_is_not_refreshed_again_from_a_stale_due_entry(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    stale = due_now(refresher, ADA)
    assert refresh_connection(stale, deps()) == RefreshOutcome.REFRESHED

    assert refresh_connection(stale, deps()) == RefreshOutcome.LEASE_BUSY
    assert refreshes(refresher) == 1


# -- the time budget and the pace --------------------------------------------------------------------


def test_no_time_left_means_nothing_is_dispatched(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)

    report = refresher.sweep(timeout_seconds=30)  # the handler keeps a 30 s safety margin

    assert report["dispatched"] == 0
    assert report["stopped_early"] is True
    assert due_ids(refresher) == [str(ADA)]
    assert refreshes(refresher) == 0


def test_the_time_budget_stops_dispatching_and_the_next_sweep_finishes(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA, GRACE)
    budget = iter([100.0, 100.0, 100.0])
    config = dataclasses.replace(get_config(), refresh_concurrency=1)

    report = sweep(deps(config=config), time_left=lambda: next(budget, 0.0), safety_margin_seconds=30)

    assert report.stopped_early is True
    assert report.dispatched == 1
    assert len(due_ids(refresher)) == 1
    second = sweep(deps(config=config), time_left=lambda: 100.0, safety_margin_seconds=30)
    assert second.dispatched == 1
    assert refreshes(refresher) == 2  # each connection exactly once
    assert due_ids(refresher) == []


def seed_fake_connections(count: int) -> list[str]:
    """Records and secrets for connections Smartsheet never issued (the emulator is set to fail them anyway)."""
    vault, store = services.token_vault(), services.connection_store()
    now = int(time.time())
    ids = [f"{9_100_000_000 + n}" for n in range(count)]
    for n, connection_id in enumerate(ids):
        tokens = TokenSet("a", "r", "bearer", now + 3600, "READ_SHEETS", "us", connection_id, "x@example.com", now)
        arn = vault.save(connection_id, tokens)
        store.record_sign_in(
            connection_id=connection_id,
            secret_arn=arn,
            email="x@example.com",
            scopes="READ_SHEETS",
            region="us",
            access_expires_at=now + 3600,
            refresh_due_at=now - 1000 + n,
            now=now,
        )
    return ids


def test_the_sweep_paces_its_calls_to_smartsheet(refresher: Broker) -> None:
    seed_fake_connections(12)
    refresher.emulator.set_faults(error_rate=1.0, server_error_codes=[4001])
    fake = FakeTime()
    config = dataclasses.replace(get_config(), refresh_rate_per_minute=60, refresh_concurrency=2)

    report = sweep(deps(config=config, monotonic=fake.monotonic, sleep=fake.sleep), time_left=lambda: 600.0)

    # A burst of a tenth of the minute's budget (6), then one a second.
    assert report.dispatched == 12
    assert sum(fake.slept) == pytest.approx(6.0, abs=0.01)
    assert refreshes(refresher) == 12


def test_the_pace_never_waits_past_the_time_budget(refresher: Broker) -> None:
    seed_fake_connections(4)
    refresher.emulator.set_faults(error_rate=1.0, server_error_codes=[4001])
    fake = FakeTime()
    config = dataclasses.replace(get_config(), refresh_rate_per_minute=1, refresh_concurrency=1)

    report = sweep(deps(config=config, monotonic=fake.monotonic, sleep=fake.sleep), time_left=lambda: 40.0)

    assert report.dispatched == 1  # the next slot is a minute away, beyond the 10 s left after the margin
    assert report.stopped_early is True
    assert fake.slept == []


def test_a_run_of_failures_opens_the_breaker(refresher: Broker) -> None:
    seed_fake_connections(BREAKER_THRESHOLD + 5)
    refresher.emulator.set_faults(error_rate=1.0, server_error_codes=[4004])
    config = dataclasses.replace(get_config(), refresh_concurrency=1)

    report = sweep(deps(config=config), time_left=lambda: 600.0)

    assert report.breaker_open is True
    assert report.dispatched == BREAKER_THRESHOLD
    assert report.outcomes[RefreshOutcome.TRANSIENT] == BREAKER_THRESHOLD
    assert refreshes(refresher) == BREAKER_THRESHOLD


# -- a new pair that cannot be saved ----------------------------------------------------------------


def test_a_pair_that_cannot_be_saved_is_kept_sealed_and_the_next_sweep_stores_it_first(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    old = refresher.tokens(ADA)
    vault = FailingVault(services.token_vault())
    fake = FakeTime()

    outcome = refresh_connection(due_now(refresher, ADA), deps(vault=vault, monotonic=fake.monotonic, sleep=fake.sleep))

    # Retried with backoff for the lease's length (120 s) less its margin, then kept for later.
    assert outcome == RefreshOutcome.KEPT
    assert vault.attempts > 10
    assert 90 <= sum(fake.slept) <= 105
    assert refresher.tokens(ADA) == old
    assert not refresher.emulator.refresh_token_is_live(old["refresh_token"])  # the grant is the kept pair now
    raw = refresher.dynamodb.get_item(
        TableName=refresher.connections_table, Key={"connection_id": {"S": str(ADA)}}, ConsistentRead=True
    )["Item"]
    sealed = bytes(raw["pending_pair"]["B"])
    assert b"refresh_token" not in sealed
    assert raw["pending_generation"]["N"] == "1"
    record = refresher.connection(ADA)
    assert record is not None
    assert (record["status"], record["failures"], record["last_error"]) == ("active", 1, "vault:ServiceUnavailable")
    assert "lease_until" not in record

    refresher.make_due(ADA)
    report = refresher.sweep()

    assert report["outcomes"][RefreshOutcome.RESUMED] == 1
    assert refreshes(refresher) == 1  # the kept pair was stored, not refreshed again
    stored = refresher.tokens(ADA)
    assert refresher.emulator.refresh_token_is_live(stored["refresh_token"])
    assert refresher.emulator.access_token_is_live(stored["access_token"])
    assert refresher.tokens(ADA, "AWSPREVIOUS") == old
    record = refresher.connection(ADA)
    assert record is not None
    assert record["generation"] == 2
    assert record["failures"] == 0
    assert record["access_expires_at"] == stored["expires_at"]
    assert not {"pending_pair", "pending_version", "pending_generation"} & set(record)

    refresher.make_due(ADA)
    assert refresher.sweep()["outcomes"][RefreshOutcome.REFRESHED] == 1  # and the stored pair works


def test_a_late_write_of_a_kept_pair_changes_nothing(refresher: Broker) -> None:
    """A slow worker's retry of its pair after the pair was stored and superseded: the same secret version."""
    signed_in_and_due(refresher, ADA)
    vault = FailingVault(services.token_vault())
    fake = FakeTime()
    assert (
        refresh_connection(due_now(refresher, ADA), deps(vault=vault, monotonic=fake.monotonic, sleep=fake.sleep))
        == RefreshOutcome.KEPT
    )
    raw = refresher.dynamodb.get_item(
        TableName=refresher.connections_table, Key={"connection_id": {"S": str(ADA)}}, ConsistentRead=True
    )["Item"]
    version, sealed = raw["pending_version"]["S"], bytes(raw["pending_pair"]["B"])
    refresher.make_due(ADA)
    refresher.sweep()  # resumed
    refresher.make_due(ADA)
    refresher.sweep()  # refreshed again: a newer pair
    newest = refresher.tokens(ADA)

    assert vault.sealer is not None
    kept = vault.sealer.open(sealed, binding=pending_binding(str(ADA), 1, version))
    services.token_vault().save(str(ADA), kept, known_arn=_arn(refresher), version_id=version)

    assert refresher.tokens(ADA) == newest


def test_a_kept_pair_is_bound_to_its_connection(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    vault = FailingVault(services.token_vault())
    fake = FakeTime()
    refresh_connection(due_now(refresher, ADA), deps(vault=vault, monotonic=fake.monotonic, sleep=fake.sleep))
    raw = refresher.dynamodb.get_item(
        TableName=refresher.connections_table, Key={"connection_id": {"S": str(ADA)}}, ConsistentRead=True
    )["Item"]
    assert vault.sealer is not None
    with pytest.raises(StorageError) as refused:
        vault.sealer.open(bytes(raw["pending_pair"]["B"]), binding=pending_binding(str(GRACE), 1, "v"))
    assert refused.value.code == "InvalidTag"


def test_a_pair_that_can_be_neither_saved_nor_kept_is_reported_lost(refresher: Broker) -> None:
    """A grant lost after its answer: no secret write and no keep on the record. Loud, and honest at once:
    needs_reauth."""
    signed_in_and_due(refresher, ADA)
    vault = FailingVault(services.token_vault())
    fake = FakeTime()
    store = services.connection_store()
    real_keep = store.keep_pending

    def failing_keep(*args: Any, **kwargs: Any) -> None:
        raise StorageError("connections.keep_pending", "ThrottlingException", transient=True)

    store.keep_pending = failing_keep  # type: ignore[method-assign]
    try:
        outcome = refresh_connection(
            due_now(refresher, ADA), deps(vault=vault, monotonic=fake.monotonic, sleep=fake.sleep)
        )
    finally:
        store.keep_pending = real_keep  # type: ignore[method-assign]

    assert outcome == RefreshOutcome.LOST
    record = refresher.connection(ADA)
    assert record is not None
    # Never left active with a dead token: the record takes the news at once (only its keep write was failing).
    assert (record["status"], record["last_error"]) == ("needs_reauth", "lost:vault:ServiceUnavailable")
    assert "refresh_due_at" not in record
    assert "in_flight_attempt" not in record


def test_without_a_sealing_key_a_failed_save_is_lost(refresher: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PENDING_TOKENS_KEY_ID")
    services.reset()
    signed_in_and_due(refresher, ADA)
    vault = FailingVault(services.token_vault())
    assert vault.sealer is None
    fake = FakeTime()

    outcome = refresh_connection(due_now(refresher, ADA), deps(vault=vault, monotonic=fake.monotonic, sleep=fake.sleep))

    assert outcome == RefreshOutcome.LOST


def test_a_save_that_recovers_within_the_lease_is_a_plain_refresh(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    vault = FailingVault(services.token_vault())
    fake = FakeTime()

    def sleep_then_recover(seconds: float) -> None:
        fake.sleep(seconds)
        vault.failing = sum(fake.slept) < 20  # Secrets Manager is back after ~20 s

    outcome = refresh_connection(
        due_now(refresher, ADA), deps(vault=vault, monotonic=fake.monotonic, sleep=sleep_then_recover)
    )

    assert outcome == RefreshOutcome.REFRESHED
    record = refresher.connection(ADA)
    assert record is not None
    assert record["generation"] == 2
    assert "pending_pair" not in record
    assert refresher.emulator.refresh_token_is_live(refresher.tokens(ADA)["refresh_token"])


def test_a_failed_commit_after_the_save_loses_nothing_the_next_sweep_refreshes_from_it(refresher: Broker) -> None:
    signed_in_and_due(refresher, ADA)
    store = services.connection_store()
    real_commit = store.commit_refresh
    calls: list[str] = []

    def failing_commit(*args: Any, **kwargs: Any) -> None:
        calls.append("commit")
        raise StorageError("connections.commit", "ProvisionedThroughputExceededException", transient=True)

    store.commit_refresh = failing_commit  # type: ignore[method-assign]
    try:
        assert refresh_connection(due_now(refresher, ADA), deps()) == RefreshOutcome.REFRESHED
    finally:
        store.commit_refresh = real_commit  # type: ignore[method-assign]
    stored = refresher.tokens(ADA)
    assert refresher.emulator.refresh_token_is_live(stored["refresh_token"])

    # Nothing was kept (the save worked): once the lease runs out, the next sweep refreshes from the stored pair.
    refresher.dynamodb.update_item(
        TableName=refresher.connections_table,
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": {"N": "0"}},
    )
    report = refresher.sweep()

    assert calls == ["commit"]
    assert report["outcomes"][RefreshOutcome.REFRESHED] == 1
    assert refreshes(refresher) == 2
    assert refresher.tokens(ADA, "AWSPREVIOUS") == stored
    assert refresher.emulator.refresh_token_is_live(refresher.tokens(ADA)["refresh_token"])
    record = refresher.connection(ADA)
    assert record is not None
    assert record["generation"] == 2
    assert "pending_pair" not in record


def _arn(broker: Broker) -> str:
    record = broker.connection(ADA)
    assert record is not None
    return str(record["secret_arn"])
