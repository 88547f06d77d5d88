"""What the ops tests share: reading Powertools' EMF and JSON log lines, and one scenario per broker outcome."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.tokens import TokenGrant, TokenSet
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.smartsheet.client import SmartsheetClient
from smartsheet_oauth.stores.connections import ConnectionStore
from smartsheet_oauth.stores.sweep_lease import SweepLeases

from infra.local.smartsheet_emulator import DEFAULT_APP
from tests.support.broker import Broker

ADA, GRACE, ALAN = 4583173393803140, 6812335718217604, 9007199254740993
FLOOD = 40


def emf_blobs(stdout: str) -> list[dict[str, Any]]:
    """The EMF documents Powertools printed (one JSON object a line, with an `_aws` key)."""
    blobs = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            if "_aws" in document:
                blobs.append(document)
    return blobs


def metric_totals(blobs: list[dict[str, Any]]) -> Counter[str]:
    """Each metric's values summed over every blob, as CloudWatch's Sum statistic would."""
    totals: Counter[str] = Counter()
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                totals[metric["Name"]] += sum(value) if isinstance(value, list) else value
    return totals


def metric_names(blobs: list[dict[str, Any]]) -> set[str]:
    return {m["Name"] for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """The broker's JSON log lines (Powertools binds its handler's stream at import, so capsys misses them)."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    sink = io.StringIO()
    previous = handler.setStream(sink)
    try:
        yield sink
    finally:
        if previous is not None:
            handler.setStream(previous)


def log_lines(sink: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.getvalue().splitlines() if line.startswith("{")]


# ----------------------------------------------------------------------------------------------- scenarios
# Each provokes one outcome through the real handlers, the way it happens in production.
Scenario = Callable[[Broker, pytest.MonkeyPatch], None]


def _state_of(authorize_url: str) -> str:
    return parse_qs(urlsplit(authorize_url).query)["state"][0]


def login_started(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    broker.start()


def callback_success(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    assert broker.sign_in(user_id=ADA).status == 200


def callback_denied(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    location, nonce = broker.start()
    assert broker.callback(broker.consent(location, allow=False), nonce).status == 400


def callback_bad_state(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    assert broker.callback({"state": "no-such-state", "code": "whatever"}, "some-nonce").status == 400


def callback_invalid_code(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    # A code is single-use: bringing a spent one back with a fresh sign-in gets invalid_grant from Smartsheet.
    location, nonce = broker.start()
    first = broker.consent(location, user_id=GRACE)
    assert broker.callback(first, nonce).status == 200
    again, nonce_again = broker.start()
    answer = broker.callback({"code": first["code"], "state": _state_of(again)}, nonce_again)
    assert answer.status == 400


def code_flood(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """Anyone can start sign-ins of their own and bring each back with a made-up code."""
    for _ in range(FLOOD):
        location, nonce = broker.start()
        assert broker.callback({"code": "abc", "state": _state_of(location)}, nonce).status == 400


def callback_smartsheet_error(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """Smartsheet refuses the app, not the code: the app-credentials secret holds a wrong client secret (1072)."""
    _app_credentials(broker, "a-wrong-client-secret")
    try:
        location, nonce = broker.start()
        assert broker.callback(broker.consent(location), nonce).status == 502
    finally:
        _app_credentials(broker, DEFAULT_APP.client_secret)


def _app_credentials(broker: Broker, client_secret: str) -> None:
    value = {"client_id": DEFAULT_APP.client_id, "client_secret": client_secret}
    broker.secrets.put_secret_value(SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"], SecretString=json.dumps(value))
    services.reset()


def callback_smartsheet_unavailable(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    location, nonce = broker.start()
    query = broker.consent(location)
    broker.emulator.set_faults(error_rate=1.0, token_only=True)
    assert broker.callback(query, nonce).status == 503
    broker.emulator.reset_faults()


def callback_storage_error(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    location, nonce = broker.start()
    query = broker.consent(location)
    broker.dynamodb.delete_table(TableName=broker.state_table)  # DynamoDB gone: the state cannot be consumed
    assert broker.callback(query, nonce).status == 503


def callback_internal_error(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    location, nonce = broker.start()
    query = broker.consent(location)

    def bug(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("callback.app.finish_sign_in", bug)
    assert broker.callback(query, nonce).status == 500


def outcomes(report: dict[str, Any]) -> dict[str, int]:
    """A sweep report's outcomes that happened (the report lists every outcome, zeros included)."""
    return {name: count for name, count in report["outcomes"].items() if count}


def events_publish_failed(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event bus is gone: the sign-in still succeeds, the lost event is counted."""
    monkeypatch.setenv("EVENT_BUS_NAME", "no-such-bus")
    services.reset()
    try:
        assert broker.sign_in(user_id=ADA).status == 200
    finally:
        monkeypatch.undo()
        services.reset()


def _due_connection(broker: Broker, user: int = ADA) -> None:
    assert broker.sign_in(user_id=user).status == 200
    broker.make_due(user)


def refresh_ok(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    _due_connection(broker)
    assert outcomes(broker.sweep()) == {"refreshed": 1}


def refresh_transient(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    _due_connection(broker)
    broker.emulator.set_faults(error_rate=1.0, token_only=True)
    assert outcomes(broker.sweep()) == {"transient": 1}
    broker.emulator.reset_faults()


def refresh_needs_reauth(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    _due_connection(broker)
    broker.emulator.revoke_user(ADA)
    assert outcomes(broker.sweep()) == {"needs_reauth": 1}


def refresh_lease_busy(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker leases the connection between this sweep's query and its lease."""
    _due_connection(broker)
    original = ConnectionStore.due

    def due_then_taken(self: ConnectionStore, **kwargs: Any) -> Any:
        page, start_key = original(self, **kwargs)
        for item in page:
            broker.dynamodb.update_item(
                TableName=broker.connections_table,
                Key={"connection_id": {"S": item.connection_id}},
                UpdateExpression="SET lease_until = :until, lease_owner = :other",
                ExpressionAttributeValues={":until": {"N": str(kwargs["now"] + 120)}, ":other": {"S": "other"}},
            )
        return page, start_key

    monkeypatch.setattr(ConnectionStore, "due", due_then_taken)
    assert outcomes(broker.sweep()) == {"lease_busy": 1}


def refresh_raced(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker rotates the pair (and stores it) just before this one sends the old refresh token."""
    _due_connection(broker)
    original = SmartsheetClient.refresh

    def rotated_first(self: SmartsheetClient, refresh_token: str, **options: Any) -> TokenGrant:
        grant = original(self, refresh_token)  # the other worker's refresh...
        vault = services.token_vault()
        name = vault.secret_name(str(ADA))
        vault.save(str(ADA), _with_pair(vault.load(name), grant), known_arn=name)  # ...and its save
        return original(self, refresh_token, **options)  # ours, with the token that rotation killed: invalid_grant

    monkeypatch.setattr(SmartsheetClient, "refresh", rotated_first)
    assert outcomes(broker.sweep()) == {"raced": 1}


def refresh_lost_in_flight(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """A worker died after its refresh reached Smartsheet (which rotated the pair): the next refresh's refusal is a
    grant lost by us, counted under refresh_lost."""
    _due_connection(broker)
    record = broker.connection(ADA)
    assert record is not None
    services.connection_store().acquire_lease(
        str(ADA), generation=record["generation"], owner="dead-worker", now=int(time.time()) - 600, lease_seconds=60
    )
    services.smartsheet_client().refresh(broker.tokens(ADA)["refresh_token"])
    assert outcomes(broker.sweep()) == {"lost_in_flight": 1}


def _with_pair(tokens: TokenSet, grant: TokenGrant) -> TokenSet:
    return dataclasses.replace(tokens, access_token=grant.access_token, refresh_token=grant.refresh_token)


def refresh_error(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """The connections table is gone: the sweep cannot read what is due."""
    broker.dynamodb.delete_table(TableName=broker.connections_table)
    assert outcomes(broker.sweep()) == {"error": 1}


def sweep_with_backlog(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """Two due connections and no time to reach them (the invocation has no more than the 30 s safety margin)."""
    _due_connection(broker, ADA)
    _due_connection(broker, GRACE)
    report = broker.sweep(timeout_seconds=30)
    assert report["dispatched"] == 0
    assert report["stopped_early"] is True


def sweep_out_of_time(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """Five seconds left: nothing dispatched, and the backlog (its first page) is still counted."""
    _due_connection(broker, ADA)
    report = broker.sweep(timeout_seconds=5)
    assert report["backlog"] == 1
    assert report["dispatched"] == 0


def full_sweep(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """One connection of each status: ADA refreshed, GRACE's grant revoked at Smartsheet, ALAN disconnected. The
    sweep reaches both due ones (no backlog) and reports how late the most overdue one was (ADA's was due an hour
    ago)."""
    for user in (ADA, GRACE, ALAN):
        assert broker.sign_in(user_id=user).status == 200
    broker.make_due(ADA, at=int(time.time()) - 3600)
    broker.make_due(GRACE, at=int(time.time()) - 60)
    broker.emulator.revoke_user(GRACE)
    store = services.connection_store()
    store.hold(str(ALAN), owner="operator", now=0, lease_seconds=60)
    store.mark_revoked(str(ALAN), owner="operator", reason="test", now=1)
    report = broker.sweep()
    assert outcomes(report) == {"refreshed": 1, "needs_reauth": 1}
    assert "connections" not in report  # counting by status would read the whole table: the admin CLI's health does
    assert report["backlog"] == 0


def sweep_skipped(broker: Broker, _mp: pytest.MonkeyPatch) -> None:
    """Another sweep holds the lease (a retried invocation overlapping the next scheduled one): this one does
    nothing and says so."""
    _due_connection(broker, ADA)
    SweepLeases(broker.dynamodb, broker.state_table).take(owner="the-other-sweep", now=int(time.time()), seconds=600)
    report = broker.sweep()
    assert report["skipped"] is True
    assert report["reason"] == "another_sweep_running"


SCENARIOS: dict[str, Scenario] = {
    "login_started": login_started,
    "callback_success": callback_success,
    "callback_denied": callback_denied,
    "callback_bad_state": callback_bad_state,
    "callback_invalid_code": callback_invalid_code,
    "code_flood": code_flood,
    "callback_smartsheet_error": callback_smartsheet_error,
    "callback_smartsheet_unavailable": callback_smartsheet_unavailable,
    "callback_storage_error": callback_storage_error,
    "callback_internal_error": callback_internal_error,
    "events_publish_failed": events_publish_failed,
    "refresh_ok": refresh_ok,
    "refresh_transient": refresh_transient,
    "refresh_needs_reauth": refresh_needs_reauth,
    "refresh_lease_busy": refresh_lease_busy,
    "refresh_raced": refresh_raced,
    "refresh_lost_in_flight": refresh_lost_in_flight,
    "refresh_error": refresh_error,
    "sweep_backlog": sweep_with_backlog,
    "sweep_out_of_time": sweep_out_of_time,
    "full_sweep": full_sweep,
    "sweep_skipped": sweep_skipped,
}
