"""make admin ARGS="migrate-store --to ...": every connection's pair moves to the other store under its lease, verified,
resumable after a crash, idempotent, safe while sweeps and on-demand refreshes run, and it prints no token."""

from __future__ import annotations

import io
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.flows import migrate_store
from smartsheet_oauth.flows.migrate_store import ALREADY, MOVED, migrate
from smartsheet_oauth.stores.token_stores import store_of

from infra.admin import cli
from tests.support.broker import Broker

FIRST = 7_100_000_000_000_001
USERS = [FIRST + n for n in range(8)]


@pytest.fixture(autouse=True)
def _users(broker: Broker) -> None:
    known = {user.id for user in broker.emulator.users}
    if not set(USERS) <= known:  # the emulator server lives for the session; its users stay
        broker.emulator.add_users(len(USERS), first_id=FIRST)


def use_store(monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    """Deploy with TokenStore=<store> (the functions' environment changes; their containers start again)."""
    monkeypatch.setenv("TOKEN_STORE", store)
    services.reset()


def stored_in(broker: Broker, connection_id: int) -> str:
    record = broker.connection(connection_id)
    assert record is not None
    return store_of(str(record["secret_arn"]))


def all_live(broker: Broker) -> list[int]:
    """The connections whose stored refresh token is not the grant's live one (lost): none, always."""
    return [u for u in USERS if not broker.emulator.refresh_token_is_live(broker.tokens(u)["refresh_token"])]


def run(to: str) -> Any:
    return migrate(services.connection_store(), services.token_vault(), to=to)


def test_every_pair_moves_to_dynamodb_and_back_verified_and_a_second_run_changes_nothing(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in USERS:
        assert broker.sign_in(user_id=user).status == 200
    before = {u: broker.tokens(u) for u in USERS}
    use_store(monkeypatch, "dynamodb")

    first = run("dynamodb")
    again = run("dynamodb")

    assert first.outcomes == {MOVED: len(USERS)}
    assert again.outcomes == {ALREADY: len(USERS)}
    assert {stored_in(broker, u) for u in USERS} == {"dynamodb"}
    assert {u: broker.tokens(u) for u in USERS} == before
    # The old copies are retired: each secret waits out its recovery window.
    secret = broker.secrets.describe_secret(SecretId=f"{broker.env['TOKEN_SECRET_PREFIX']}{USERS[0]}")
    assert secret.get("DeletedDate") is not None

    use_store(monkeypatch, "secretsmanager")
    back = run("secretsmanager")

    assert back.outcomes == {MOVED: len(USERS)}
    assert {stored_in(broker, u) for u in USERS} == {"secretsmanager"}
    assert {u: broker.tokens(u) for u in USERS} == before
    assert all_live(broker) == []
    for user in USERS:  # and the sweep refreshes them where they are now
        broker.make_due(user)
    assert broker.sweep()["outcomes"]["refreshed"] == len(USERS)
    assert all_live(broker) == []


def test_a_migration_that_crashes_midway_is_finished_by_running_it_again(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in USERS:
        assert broker.sign_in(user_id=user).status == 200
    use_store(monkeypatch, "dynamodb")
    real_move = services.connection_store().__class__.move_pair
    moves = {"n": 0}

    def crash_on_the_fourth(self: Any, *args: Any, **kwargs: Any) -> None:
        moves["n"] += 1
        if moves["n"] == 4:
            raise KeyboardInterrupt("the operator's laptop went to sleep")  # after the copy, before the record
        real_move(self, *args, **kwargs)

    monkeypatch.setattr(services.connection_store().__class__, "move_pair", crash_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        run("dynamodb")
    monkeypatch.setattr(services.connection_store().__class__, "move_pair", real_move)
    for user in USERS:  # the lease the crash left runs out
        broker.dynamodb.update_item(
            TableName=broker.connections_table,
            Key={"connection_id": {"S": str(user)}},
            UpdateExpression="REMOVE lease_until, lease_owner",
        )
    assert all_live(broker) == []  # every record points at a readable, live pair meanwhile

    finished = run("dynamodb")

    assert finished.outcomes == {ALREADY: 3, MOVED: len(USERS) - 3}
    assert {stored_in(broker, u) for u in USERS} == {"dynamodb"}
    assert all_live(broker) == []


def test_a_migration_racing_sweeps_and_on_demand_refreshes_loses_nothing(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.management.conftest import call_management

    for user in USERS:
        assert broker.sign_in(user_id=user).status == 200
        broker.make_due(user)
    use_store(monkeypatch, "dynamodb")
    failures: list[BaseException] = []

    def refreshing() -> None:
        try:
            broker.sweep()
            for user in USERS[::2]:
                call_management("POST", f"/connections/{user}/refresh", body={"min_valid_seconds": 604800})
            broker.sweep()
        except BaseException as exc:
            failures.append(exc)

    refresher = threading.Thread(target=refreshing)
    refresher.start()
    reports = [run("dynamodb")]
    refresher.join(120)
    deadline = time.monotonic() + 60
    while not reports[-1].complete and time.monotonic() < deadline:
        time.sleep(0.2)
        reports.append(run("dynamodb"))

    assert not failures
    assert reports[-1].complete, reports[-1].problems
    assert {stored_in(broker, u) for u in USERS} == {"dynamodb"}
    assert all_live(broker) == []  # lost = 0
    refreshed = [u for u in USERS if (broker.connection(u) or {}).get("generation", 0) > 1]
    assert refreshed  # the refreshes really ran beside the migration


def test_a_pair_that_does_not_read_back_the_same_is_not_moved(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    assert broker.sign_in(user_id=USERS[0]).status == 200
    use_store(monkeypatch, "dynamodb")
    table = services.token_vault().table
    assert table is not None
    real_load = table.load

    def corrupted(ref: str) -> Any:
        import dataclasses

        return dataclasses.replace(real_load(ref), refresh_token="not-what-was-written")

    monkeypatch.setattr(table, "load", corrupted)
    report = run("dynamodb")

    assert report.outcomes == {migrate_store.FAILED: 1}
    assert stored_in(broker, USERS[0]) == "secretsmanager"
    assert broker.emulator.refresh_token_is_live(broker.tokens(USERS[0])["refresh_token"])


def test_the_command_shows_progress_and_prints_no_token(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    for user in USERS[:3]:
        assert broker.sign_in(user_id=user).status == 200
    use_store(monkeypatch, "dynamodb")
    tokens = [
        value for u in USERS[:3] for value in (broker.tokens(u)["access_token"], broker.tokens(u)["refresh_token"])
    ]
    target: Any = SimpleNamespace(
        config=get_config(),
        connections=services.connection_store(),
        vault=services.token_vault(),
        description="the test stack",
    )
    out = io.StringIO()

    args = cli.build_parser().parse_args(["migrate-store", "--to", "dynamodb"])
    status = cli.cmd_migrate_store(target, args, cli.Output(out, False))

    text = out.getvalue()
    assert status == cli.OK
    assert f"[1] {USERS[0]}: moved" in text
    assert "moved 3" in text
    assert not [token for token in tokens if token in text]


def test_an_unreachable_store_fails_the_connection_and_keeps_it_where_it_was(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert broker.sign_in(user_id=USERS[0]).status == 200
    use_store(monkeypatch, "dynamodb")
    table = services.token_vault().table
    assert table is not None

    def outage(*_: Any, **__: Any) -> Any:
        raise StorageError("tokens.put", "ServiceUnavailable", transient=True)

    monkeypatch.setattr(table, "save_if_vacant", outage)
    report = run("dynamodb")

    assert report.outcomes == {migrate_store.FAILED: 1}
    assert stored_in(broker, USERS[0]) == "secretsmanager"
    record = broker.connection(USERS[0])
    assert record is not None
    assert "lease_owner" not in record  # the lease is given back
