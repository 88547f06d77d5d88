"""Importing existing grants (flows/import_grant.py) against the in-process broker and the emulator: one refresh makes
each grant ours and its new pair is durable before anything else; re-runs skip what is done and finish what a crash
left; refusals are final and clear; the binding rules of connect sessions hold; no token is stored in clear."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.errors import (
    Conflict,
    GrantRefused,
    LineRefused,
    TransientSmartsheetError,
)
from smartsheet_oauth.domain.shards import JITTER_SHARE, due_jitter
from smartsheet_oauth.domain.tokens import refresh_due_at
from smartsheet_oauth.flows import import_grant as flow
from smartsheet_oauth.flows.deps import ManagementDeps
from smartsheet_oauth.flows.import_grant import GrantLine, checked_grant, import_grant
from smartsheet_oauth.smartsheet.client import SmartsheetClient, Timeouts
from smartsheet_oauth.stores.imports import grant_key

from infra.local.smartsheet_emulator import DEFAULT_APP
from tests.support.broker import Broker
from tests.support.fixtures import BOTH_STORES

pytestmark = BOTH_STORES

FIRST = 7_300_000_000_000_001
USERS = [FIRST + n for n in range(4)]


class Crash(BaseException):
    """A worker dying at a step boundary (a BaseException, as a SIGKILL is nothing the flow may catch)."""


@pytest.fixture(autouse=True)
def _users(broker: Broker) -> None:
    known = {user.id for user in broker.emulator.users}
    if not set(USERS) <= known:
        broker.emulator.add_users(len(USERS), first_id=FIRST)


def deps(
    smartsheet: Callable[[], SmartsheetClient] = services.smartsheet_client, clock: Callable[[], float] = time.time
) -> ManagementDeps:
    return ManagementDeps(
        config=get_config(),
        connections=services.connection_store(),
        vault=services.token_vault(),
        sessions=services.connect_sessions(),
        smartsheet=smartsheet,
        events=services.event_publisher(),
        pace=services.shared_pace(),
        tags=services.connection_tags(),
        clock=clock,
    )


def grant_of(broker: Broker, user: int, **extra: Any) -> GrantLine:
    issued = broker.emulator.issue_grant(user_id=user)
    body = {"refresh_token": issued["refresh_token"], "access_token": issued["access_token"], **extra}
    return checked_grant(body, config=get_config(), now=0)


def run(grant: GrantLine, smartsheet: SmartsheetClient | None = None, **kwargs: Any) -> flow.Imported:
    current = deps(lambda: smartsheet) if smartsheet is not None else deps()
    return import_grant(current, services.import_ledger(), grant, **kwargs)


def impatient(broker: Broker) -> SmartsheetClient:
    """A client that gives up waiting for an answer after half a second."""
    return SmartsheetClient(
        api_base_url=broker.emulator.api_base_url,
        client_id=DEFAULT_APP.client_id,
        client_secret=DEFAULT_APP.client_secret,
        timeouts=Timeouts(connect=1.0, read=0.5),
    )


def token_requests(broker: Broker) -> int:
    return len(broker.emulator.token_requests)


def state_items(broker: Broker) -> str:
    return json.dumps(broker.dynamodb.scan(TableName=broker.state_table)["Items"], default=str)


def test_a_grant_becomes_a_connection_with_one_refresh_and_its_new_pair_stored(broker: Broker) -> None:
    grant = grant_of(broker, USERS[0])

    result = run(grant)

    assert result.is_new
    assert not result.already
    assert result.connection.connection_id == str(USERS[0])
    assert result.connection.status == "active"
    assert token_requests(broker) == 1
    stored = broker.tokens(USERS[0])
    assert broker.emulator.refresh_token_is_live(stored["refresh_token"])
    assert not broker.emulator.refresh_token_is_live(grant.refresh_token)  # rotated: the file's token is dead now
    assert stored["user_id"] == str(USERS[0])
    record = broker.connection(USERS[0])
    assert record is not None
    assert record["due_shard"] == "due"
    # The ledger holds a hash, never a token in clear (nor the new pair, once imported).
    items = state_items(broker)
    assert grant.refresh_token not in items
    assert stored["refresh_token"] not in items
    assert grant_key(grant.refresh_token) in items


def test_a_rerun_skips_an_imported_grant_without_sending_its_dead_token(broker: Broker) -> None:
    grant = grant_of(broker, USERS[0])
    run(grant)
    stored = broker.tokens(USERS[0])

    again = run(grant)

    assert again.already
    assert not again.is_new
    assert again.connection.connection_id == str(USERS[0])
    assert token_requests(broker) == 1
    assert broker.tokens(USERS[0]) == stored


def test_a_dead_grant_is_refused_and_a_rerun_asks_again_in_case_the_app_credentials_were_wrong(
    broker: Broker,
) -> None:
    grant = grant_of(broker, USERS[1])
    broker.emulator.revoke_user(USERS[1])

    with pytest.raises(GrantRefused) as first:
        run(grant)
    with pytest.raises(GrantRefused) as second:
        run(grant)

    assert first.value.code == second.value.code == "grant_refused"
    assert first.value.status == 422
    assert token_requests(broker) == 2  # not final: a dead token sent again changes nothing
    assert broker.connection(USERS[1]) is None


def test_a_grant_refused_while_the_client_secret_was_wrong_imports_once_it_is_fixed(broker: Broker) -> None:
    grant = grant_of(broker, USERS[1])
    wrong = SmartsheetClient(
        api_base_url=broker.emulator.api_base_url, client_id=DEFAULT_APP.client_id, client_secret="not-the-secret"
    )
    broker.emulator.update_settings(hash_mismatch_error_code=1071)

    try:
        with pytest.raises(GrantRefused):
            run(grant, wrong)
    finally:
        broker.emulator.update_settings(hash_mismatch_error_code=1072)
    result = run(grant)

    assert result.is_new
    assert broker.emulator.refresh_token_is_live(broker.tokens(USERS[1])["refresh_token"])


def test_a_lost_in_flight_refusal_is_final(broker: Broker) -> None:
    grant = grant_of(broker, USERS[2])
    broker.emulator.set_faults(next_outcomes=["timeout"], timeout_processes=True)
    with pytest.raises(TransientSmartsheetError):
        run(grant, impatient(broker))
    broker.emulator.reset_faults()
    with pytest.raises(GrantRefused):
        run(grant)
    sent = token_requests(broker)

    with pytest.raises(GrantRefused) as again:
        run(grant)

    assert again.value.code == "lost_in_flight"
    assert token_requests(broker) == sent


def test_a_crash_after_the_pair_is_kept_resumes_without_a_second_refresh(broker: Broker) -> None:
    grant = grant_of(broker, USERS[0])

    def die(step: str, _connection_id: str) -> None:
        if step == flow.IMPORT_KEPT:
            raise Crash

    with pytest.raises(Crash):
        run(grant, watcher=die)
    assert broker.connection(USERS[0]) is None
    # The claim of the dead worker lapses (its lease time); a re-run then goes on from the kept pair.
    expire_claims(broker)
    resumed = run(grant)

    assert resumed.is_new
    assert not resumed.already
    assert token_requests(broker) == 1  # the kept pair was used: no second refresh
    assert broker.emulator.refresh_token_is_live(broker.tokens(USERS[0])["refresh_token"])


@pytest.mark.parametrize("step", [flow.IMPORT_STORED, flow.IMPORT_RECORDED])
def test_a_crash_after_the_secret_write_finishes_on_the_rerun(broker: Broker, step: str) -> None:
    grant = grant_of(broker, USERS[0])

    def die(at: str, _connection_id: str) -> None:
        if at == step:
            raise Crash

    with pytest.raises(Crash):
        run(grant, watcher=die)
    expire_claims(broker)
    resumed = run(grant)

    assert not resumed.already
    assert token_requests(broker) == 1
    assert broker.emulator.refresh_token_is_live(broker.tokens(USERS[0])["refresh_token"])
    assert run(grant).already


def test_a_refresh_whose_answer_was_lost_is_reported_lost_in_flight_on_the_rerun(broker: Broker) -> None:
    grant = grant_of(broker, USERS[2])
    # Smartsheet rotates the grant, and its answer never arrives.
    broker.emulator.set_faults(next_outcomes=["timeout"], timeout_processes=True)

    with pytest.raises(TransientSmartsheetError) as lost:
        run(grant, impatient(broker))
    assert lost.value.outcome_unknown
    broker.emulator.reset_faults()
    with pytest.raises(GrantRefused) as rerun:
        run(grant)

    assert rerun.value.code == "lost_in_flight"
    assert broker.connection(USERS[2]) is None


def test_smartsheet_down_fails_transiently_and_a_rerun_imports(broker: Broker) -> None:
    grant = grant_of(broker, USERS[0])
    broker.emulator.set_faults(error_rate=1.0, token_only=True, server_error_codes=[4001])

    with pytest.raises(TransientSmartsheetError):
        run(grant)
    broker.emulator.reset_faults()
    result = run(grant)

    assert result.is_new
    assert broker.emulator.refresh_token_is_live(broker.tokens(USERS[0])["refresh_token"])


def test_users_me_down_after_the_refresh_keeps_the_pair_and_a_rerun_uses_it(broker: Broker) -> None:
    grant = grant_of(broker, USERS[0])
    broker.emulator.set_faults(next_outcomes=["ok", 4001, 4001, 4001, 4001, 4001])

    with pytest.raises(TransientSmartsheetError):
        run(grant)
    broker.emulator.reset_faults()
    result = run(grant)

    assert result.is_new
    assert token_requests(broker) == 1


def test_end_user_id_binds_like_a_confirmed_connect_session(broker: Broker) -> None:
    result = run(grant_of(broker, USERS[0], end_user_id="user-7"))

    assert result.connection.end_user_id == "user-7"


def test_a_second_end_user_for_one_account_is_refused_and_the_new_grant_revoked(broker: Broker) -> None:
    run(grant_of(broker, USERS[0], end_user_id="user-7"))
    kept = broker.tokens(USERS[0])
    other = grant_of(broker, USERS[0], end_user_id="user-8")

    with pytest.raises(GrantRefused) as refused:
        run(other)

    assert refused.value.code == "binding_conflict"
    assert refused.value.status == 409
    record = broker.connection(USERS[0])
    assert record is not None
    assert record["end_user_id"] == "user-7"
    assert broker.tokens(USERS[0]) == kept  # the bound connection keeps its own pair
    assert broker.emulator.refresh_token_is_live(kept["refresh_token"])
    # The grant this import made ours was revoked: no token outlives the refusal.
    assert broker.emulator.counts["revoke"] == 1
    assert not broker.emulator.refresh_token_is_live(other.refresh_token)


def test_an_unbound_import_cannot_take_an_account_bound_to_an_end_user(broker: Broker) -> None:
    run(grant_of(broker, USERS[0], end_user_id="user-7"))

    with pytest.raises(GrantRefused) as refused:
        run(grant_of(broker, USERS[0]))

    assert refused.value.code == "binding_conflict"
    assert "end_user_id" in str(refused.value)


def test_a_connection_held_by_a_refresh_waits_and_the_pair_is_kept(broker: Broker) -> None:
    assert broker.sign_in(user_id=USERS[3]).status == 200
    # A worker holds the connection's lease (a sweep refreshing it, a disconnect).
    services.connection_store().hold(str(USERS[3]), owner="sweep", now=int(time.time()), lease_seconds=600)
    grant = grant_of(broker, USERS[3])
    before = token_requests(broker)

    with pytest.raises(Conflict) as busy:
        run(grant)
    assert busy.value.code == "connection_busy"
    services.connection_store().release(str(USERS[3]), owner="sweep")
    result = run(grant)

    assert not result.is_new
    assert not result.already
    assert token_requests(broker) == before + 1  # the kept pair was used
    assert broker.tokens(USERS[3])["refresh_token"] != grant.refresh_token


# ------------------------------------------------------------------------------- recorded as a sign-in records
SPREAD = [FIRST + 100 + n for n in range(12)]


def test_grants_imported_at_one_moment_come_due_spread_out_as_sign_ins_do(broker: Broker) -> None:
    if SPREAD[0] not in {user.id for user in broker.emulator.users}:
        broker.emulator.add_users(len(SPREAD), first_id=SPREAD[0])
    config = get_config()
    now = int(time.time())
    at_once = deps(clock=lambda: now)  # every import of the batch happens at the same second

    for user in SPREAD:
        assert import_grant(at_once, services.import_ledger(), grant_of(broker, user)).is_new

    records = [broker.connection(user) for user in SPREAD]
    due = {record["connection_id"]: record["refresh_due_at"] for record in records if record}
    window = config.refresh_window_seconds
    for connection_id, due_at in due.items():
        expires_at = broker.connection(connection_id)["access_expires_at"]  # type: ignore[index]
        # The due time a sign-in of the same pair gets: the window's start, less this connection's jitter.
        assert due_at == refresh_due_at(
            expires_at, window_seconds=window, now=now, jitter_seconds=due_jitter(connection_id, window)
        )
        assert expires_at - window - window // JITTER_SHARE <= due_at <= expires_at - window
    assert len(set(due.values())) == len(SPREAD)  # not one herd at the same second


def test_an_import_racing_another_regions_sign_in_of_the_same_id_is_refused_as_a_sign_in_is(broker: Broker) -> None:
    grant = grant_of(broker, USERS[0])
    store = services.connection_store()

    def other_region_signs_in(step: str, connection_id: str) -> None:
        # After the import looked (no connection yet) and stored its pair, an EU sign-in of the same id is recorded.
        if step == flow.IMPORT_STORED:
            store.record_sign_in(
                connection_id=connection_id,
                secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:eu-sign-in",
                email="ada@example.eu",
                scopes="READ_SHEETS",
                region="eu",
                access_expires_at=int(time.time()) + 3600,
                refresh_due_at=int(time.time()) + 60,
                now=int(time.time()),
            )

    with pytest.raises(GrantRefused) as refused:
        run(grant, watcher=other_region_signs_in)

    assert (refused.value.code, refused.value.status) == ("region_conflict", 409)
    record = broker.connection(USERS[0])
    assert record is not None
    assert record["region"] == "eu"  # the live connection of the other region keeps its region
    # The grant the import made ours is revoked (no token outlives the refusal), and the refusal is final.
    assert broker.emulator.counts["revoke"] == 1
    with pytest.raises(GrantRefused) as again:
        run(grant)
    assert again.value.code == "region_conflict"


def test_a_refusal_at_the_record_step_releases_the_known_connections_lease(broker: Broker) -> None:
    run(grant_of(broker, USERS[0]))  # a known, unbound connection: a second import of it holds its lease
    again = grant_of(broker, USERS[0])

    def bound_meanwhile(step: str, connection_id: str) -> None:
        # After the import looked (unbound) and stored its pair under the lease, a connect session binds the account.
        if step == flow.IMPORT_STORED:
            broker.dynamodb.update_item(
                TableName=broker.connections_table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression="SET end_user_id = :who",
                ExpressionAttributeValues={":who": {"S": "user-9"}},
            )

    with pytest.raises(GrantRefused) as refused:
        run(again, watcher=bound_meanwhile)

    assert (refused.value.code, refused.value.status) == ("binding_conflict", 409)
    record = broker.connection(USERS[0])
    assert record is not None
    assert record["end_user_id"] == "user-9"
    # The lease is released at once: the connection's next refresh need not wait for it to run out.
    assert "lease_owner" not in record
    assert "lease_until" not in record


# ------------------------------------------------------------------------------------------------------- tags
def tagged(key: str, value: str) -> list[str]:
    connections, _ = services.connection_tags().page(key, value, limit=100)
    return [connection.connection_id for connection in connections]


def test_an_imported_grants_tags_are_set_on_its_connection_and_its_tag_index(broker: Broker) -> None:
    tags = {"workspace": "acme", "plan": "pro"}

    result = run(grant_of(broker, USERS[0], tags=tags))

    assert result.connection.tags == tags
    assert services.connection_store().get(str(USERS[0])).tags == tags  # type: ignore[union-attr]
    assert tagged("workspace", "acme") == tagged("plan", "pro") == [str(USERS[0])]


def test_an_import_with_tags_replaces_a_known_connections_tags_and_one_without_keeps_them(broker: Broker) -> None:
    assert broker.sign_in(user_id=USERS[1]).status == 200
    services.connection_tags().replace(str(USERS[1]), {"old": "1"}, now=int(time.time()))

    untagged = run(grant_of(broker, USERS[1]))
    assert untagged.connection.tags == {"old": "1"}
    retagged = run(grant_of(broker, USERS[1], tags={"new": "2"}))

    assert not retagged.is_new
    assert retagged.connection.tags == {"new": "2"}
    assert tagged("old", "1") == []
    assert tagged("new", "2") == [str(USERS[1])]


@pytest.mark.parametrize(
    ("tags", "names"),
    [
        ({"KEY-AS-TOKEN": "a value\n"}, "the value of a tag is not allowed"),
        ({"KEY AS TOKEN": "v"}, "a tag key is not allowed"),
        ({"KEY-AS-TOKEN": "VALUE-AS-TOKEN", **{f"k{n}": "v" for n in range(10)}}, "11 tags: at most 10"),
    ],
)
def test_a_tag_refusal_names_the_field_quotes_nothing_and_sends_nothing(
    broker: Broker, tags: dict[str, str], names: str
) -> None:
    issued = broker.emulator.issue_grant(user_id=USERS[2])
    body = {"refresh_token": issued["refresh_token"], "tags": tags}

    with pytest.raises(LineRefused) as refused:
        checked_grant(body, config=get_config(), now=0)

    message = str(refused.value)
    assert refused.value.code == "invalid_tags"
    assert names in message
    assert "tags must be a JSON object" in message
    assert "AS-TOKEN" not in message
    assert "AS TOKEN" not in message
    assert issued["refresh_token"] not in message
    assert token_requests(broker) == 0


def expire_claims(broker: Broker) -> None:
    """Time passing past a dead worker's claim on its ledger items."""
    for item in broker.dynamodb.scan(TableName=broker.state_table)["Items"]:
        if item.get("kind", {}).get("S") == "grant_import" and "claim_until" in item:
            broker.dynamodb.update_item(
                TableName=broker.state_table,
                Key={"state": item["state"]},
                UpdateExpression="SET claim_until = :past",
                ExpressionAttributeValues={":past": {"N": "0"}},
            )


# ------------------------------------------------------------------------------------------------ checked lines
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "not_an_object"),
        ({}, "missing_refresh_token"),
        ({"refresh_token": ""}, "missing_refresh_token"),
        ({"refresh_token": 42}, "invalid_refresh_token"),
        ({"refresh_token": "has space"}, "invalid_refresh_token"),
        ({"refresh_token": "x" * 3000}, "invalid_refresh_token"),
        ({"refresh_token": "rt", "access_token": ["a"]}, "invalid_access_token"),
        ({"refresh_token": "rt", "expires_at": 1, "expires_in": 2}, "invalid_expiry"),
        ({"refresh_token": "rt", "expires_in": -1}, "invalid_expiry"),
        ({"refresh_token": "rt", "expires_at": True}, "invalid_expiry"),
        ({"refresh_token": "rt", "region": "mars"}, "invalid_region"),
        ({"refresh_token": "rt", "region": "eu"}, "region_not_served"),
        ({"refresh_token": "rt", "end_user_id": "no spaces allowed"}, "invalid_end_user_id"),
        ({"refresh_token": "rt", "tags": "a"}, "invalid_tags"),
        ({"refresh_token": "rt", "tags": ["a"]}, "invalid_tags"),
        ({"refresh_token": "rt", "tags": []}, "invalid_tags"),
        ({"refresh_token": "rt", "tags": {"bad key": "x"}}, "invalid_tags"),
        ({"refresh_token": "rt", "tags": {"plan": 3}}, "invalid_tags"),
        ({"refresh_token": "rt", "tags": {f"k{n}": "v" for n in range(11)}}, "invalid_tags"),
        ({"refresh_token": "rt", "password": "x"}, "unknown_field"),
    ],
)
def test_a_bad_line_is_refused_with_a_code_and_never_quotes_a_token(broker: Broker, body: object, code: str) -> None:
    with pytest.raises(LineRefused) as refused:
        checked_grant(body, config=get_config(), now=0)

    assert refused.value.code == code
    assert "rt" not in str(refused.value).split()
    assert "has space" not in str(refused.value)


def test_a_good_line_keeps_its_fields(broker: Broker) -> None:
    line = checked_grant(
        {"refresh_token": "rt", "region": "US", "expires_in": 60, "end_user_id": "u-1", "tags": {"plan": "pro"}},
        config=get_config(),
        now=100,
    )

    assert (line.region, line.expires_at, line.end_user_id, line.tags) == ("us", 160, "u-1", {"plan": "pro"})
    assert checked_grant({"refresh_token": "rt"}, config=get_config(), now=0).tags is None
    assert "rt" not in repr(line)


# ------------------------------------------------------------------------------------- the admin CLI's file run
def test_a_file_run_stops_at_once_when_smartsheet_refuses_the_app_and_spends_no_grant(broker: Broker) -> None:
    from infra.admin import importing

    grants = [broker.emulator.issue_grant(user_id=user) for user in USERS[:3]]
    lines = [(n, json.dumps({"refresh_token": g["refresh_token"]}).encode()) for n, g in enumerate(grants, start=1)]
    wrong = SmartsheetClient(
        api_base_url=broker.emulator.api_base_url, client_id=DEFAULT_APP.client_id, client_secret="not-the-secret"
    )

    report = importing.run_import(
        deps(lambda: wrong), services.import_ledger(), lines, progress=importing.Progress(io.StringIO(), 3)
    )

    assert "Smartsheet refuses the app's credentials" in report.stopped
    assert report.results == []
    assert not report.complete
    assert all(broker.emulator.refresh_token_is_live(g["refresh_token"]) for g in grants)  # none spent
    again = importing.run_import(deps(), services.import_ledger(), lines, progress=importing.Progress(io.StringIO(), 3))
    assert again.complete
    assert [r.outcome for r in again.results] == ["imported"] * 3


def test_no_log_line_of_any_outcome_carries_a_token(broker: Broker) -> None:
    from tests.ops.support import captured_logs

    grants = [grant_of(broker, USERS[0], end_user_id="user-8"), grant_of(broker, USERS[1]), grant_of(broker, USERS[2])]
    bound = grant_of(broker, USERS[0], end_user_id="user-9")
    broker.emulator.revoke_user(USERS[2])
    with captured_logs() as sink:
        run(grants[0])  # imported
        run(grants[0])  # already present
        for refused in (grants[2], bound):  # a dead grant; a binding refused (the new grant revoked)
            with pytest.raises(GrantRefused):
                run(refused)
        broker.emulator.set_faults(error_rate=1.0, token_only=True, server_error_codes=[4004])
        with pytest.raises(TransientSmartsheetError):
            run(grants[1])
    logged = sink.getvalue()

    assert "grant imported" in logged  # the sink saw the flow's lines
    secrets = [g.refresh_token for g in (*grants, bound)] + [g.access_token or "" for g in (*grants, bound)]
    secrets += [broker.tokens(USERS[0])["refresh_token"], broker.tokens(USERS[0])["access_token"]]
    assert not [secret for secret in secrets if secret and secret in logged]


def test_a_grant_revoked_at_smartsheet_after_a_lost_answer_is_refused_not_lost_in_flight(broker: Broker) -> None:
    grant = grant_of(broker, USERS[2])
    broker.emulator.set_faults(next_outcomes=["timeout"], timeout_processes=False)  # the request never arrives
    with pytest.raises(TransientSmartsheetError):
        run(grant, impatient(broker))
    broker.emulator.reset_faults()
    broker.emulator.revoke_user(USERS[2])  # 1132: a live token revoked, not one an attempt of ours spent

    with pytest.raises(GrantRefused) as refused:
        run(grant)

    assert refused.value.code == "grant_refused"
