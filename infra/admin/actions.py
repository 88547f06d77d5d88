"""What an operator does to one connection or to the whole broker: refresh now, disconnect, health summary."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from smartsheet_oauth.domain.errors import (
    BadRequest,
    ConditionFailed,
    Conflict,
    NotFound,
    PaceExhausted,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.domain.vocabulary import ConnectionStatus, RefreshOutcome
from smartsheet_oauth.flows import management
from smartsheet_oauth.flows.deps import ManagementDeps, RefreshDeps
from smartsheet_oauth.flows.on_demand import PACE_WAIT_SECONDS
from smartsheet_oauth.flows.refresh import refresh_connection
from smartsheet_oauth.stores.connect_sessions import ConnectSessionStore
from smartsheet_oauth.stores.connection_tags import ConnectionTagStore
from smartsheet_oauth.stores.connections import Connection, DueConnection
from smartsheet_oauth.stores.pace import PaceWindows, SharedPace

from infra.admin.counts import count_by_status
from infra.admin.target import Target


class ActionError(RuntimeError):
    """The action did not happen (or stopped safely): the message says why and what to do."""


def _lease_message(connection: Connection | None, now: int) -> str:
    wait = max(1, (connection.lease_until or now) - now) if connection else 1
    return f"a refresh holds this connection right now; try again in {wait} s"


# ------------------------------------------------------------------------------------------------ refresh now
@dataclass(frozen=True)
class RefreshResult:
    outcome: RefreshOutcome  # how the refresh ended, as the sweep counts it
    before: Connection
    after: Connection | None


def refresh_now(target: Target, connection_id: str) -> RefreshResult:
    """Refresh one connection now, exactly as the sweep would (lease, rotation, save before commit). A needs_reauth
    connection gets one more try with its stored refresh token: if Smartsheet still honours it, it is active again."""
    now = int(time.time())
    try:
        before = target.connections.get(connection_id)
        if before is None:
            raise ActionError(f"no connection {connection_id}")
        if before.status == ConnectionStatus.REVOKED:
            raise ActionError(f"connection {connection_id} is disconnected (revoked): its user must sign in again")
        # The pace every refresher shares (the sweep's, the management API's): a loop of these stays within it too.
        pace = SharedPace(
            PaceWindows(target.dynamodb, target.config.state_table_name), target.config.refresh_rate_per_minute
        )
        try:
            pace.take_one(max_wait=PACE_WAIT_SECONDS)
        except PaceExhausted as exhausted:
            raise ActionError(
                f"the pace of refreshes sent to Smartsheet is used up; try again in {exhausted.retry_after} s"
            ) from None
        try:
            requested = target.connections.request_refresh(connection_id, now=now)
        except ConditionFailed:
            raise ActionError(_lease_message(target.connections.get(connection_id), now)) from None
        deps = RefreshDeps(
            config=target.config,
            connections=target.connections,
            vault=target.vault,
            smartsheet=target.smartsheet(),
            events=target.events(),
        )
        due = DueConnection(
            connection_id=connection_id,
            refresh_due_at=requested.refresh_due_at or now,
            access_expires_at=requested.access_expires_at,
            generation=requested.generation,
        )
        outcome = refresh_connection(due, deps)
        return RefreshResult(outcome=outcome, before=before, after=target.connections.get(connection_id))
    except StorageError as exc:
        raise ActionError(f"AWS storage failed ({exc.operation}: {exc.code}); try again") from None


# ------------------------------------------------------------------------------------------------- disconnect
@dataclass(frozen=True)
class DisconnectResult:
    connection_id: str
    smartsheet: str  # "revoked" | "already_invalid" (the grant was dead) | "no_tokens" (nothing stored to revoke)
    stored_tokens: str  # "deletion_scheduled" | "already_deleted"
    recovery_days: int


def disconnect(target: Target, connection_id: str) -> DisconnectResult:
    """The management API's disconnect (the library's one implementation): revoke the grant at Smartsheet, mark the
    connection revoked, schedule its secret's deletion, tell the integrator (Connection Revoked). Nothing changes
    when Smartsheet cannot confirm the revoke; running it again is harmless."""
    deps = ManagementDeps(
        config=target.config,
        connections=target.connections,
        vault=target.vault,
        sessions=ConnectSessionStore(target.dynamodb, target.config.state_table_name, target.config.state_ttl_seconds),
        smartsheet=target.smartsheet,
        events=target.events(),
    )
    try:
        answer = management.disconnect(deps, connection_id)
    except NotFound:
        raise ActionError(f"no connection {connection_id}") from None
    except (BadRequest, Conflict) as exc:
        raise ActionError(str(exc)) from None
    except TransientSmartsheetError as exc:
        raise ActionError(f"Smartsheet is unavailable ({exc.reason}): nothing was changed; try again later") from None
    except SmartsheetError as exc:
        hint = "; fix the app's client id/secret first (docs/operations.md)" if "invalid_client" in exc.reason else ""
        raise ActionError(f"{exc}{hint}") from None
    except StorageError as exc:
        raise ActionError(f"AWS storage failed ({exc.operation}: {exc.code}); run disconnect again") from None
    return DisconnectResult(
        connection_id=connection_id,
        smartsheet=str(answer["smartsheet"]),
        stored_tokens=str(answer["stored_tokens"]),
        recovery_days=int(answer["recovery_window_days"]),
    )


# ------------------------------------------------------------------------------------------------ reconnect link
def reconnect_link(
    target: Target, connection_id: str, *, return_to: str, end_user_id: str | None = None
) -> dict[str, Any]:
    """The management API's POST /connect-sessions with connection_id (the library's one implementation): a one-time
    link that only the connection's own Smartsheet account can finish, for a needs_reauth connection. The answer is
    the API's (login_url: a bearer link, to hand to that user only)."""
    deps = ManagementDeps(
        config=target.config,
        connections=target.connections,
        vault=target.vault,
        sessions=ConnectSessionStore(
            target.dynamodb, target.config.state_table_name, target.config.connect_session_ttl_seconds
        ),
        smartsheet=target.smartsheet,
        events=None,
    )
    body: dict[str, Any] = {"connection_id": connection_id, "return_to": return_to}
    if end_user_id is not None:
        body["end_user_id"] = end_user_id
    login_url = target.stack.outputs.get("LoginUrl", "")
    if not login_url.endswith("/login"):
        raise ActionError(f"{target.description} has no LoginUrl output to build the link on")
    try:
        return management.create_connect_session(deps, body, broker_url=login_url.removesuffix("/login"))
    except NotFound:
        raise ActionError(f"no connection {connection_id}") from None
    except (BadRequest, Conflict) as exc:
        raise ActionError(str(exc)) from None


# ---------------------------------------------------------------------------------------------------------- tags
def set_tags(
    target: Target, connection_id: str, *, put: dict[str, str], remove: list[str], clear: bool
) -> dict[str, Any]:
    """Change a connection's tags as PUT /connections/{id}/tags does (record and tag index in one transaction):
    `clear` drops them all first, then `remove` drops keys and `put` sets keys. Answers the connection's view."""
    deps = ManagementDeps(
        config=target.config,
        connections=target.connections,
        vault=target.vault,
        sessions=ConnectSessionStore(target.dynamodb, target.config.state_table_name, target.config.state_ttl_seconds),
        smartsheet=target.smartsheet,
        tags=ConnectionTagStore(
            target.dynamodb,
            target.config.connections_table_name,
            target.config.connection_tags_table_name,
            default_region=target.config.region,
        ),
    )
    try:
        current = management.get_connection(deps, connection_id)
        tags = {} if clear else dict(current["tags"])
        for key in remove:
            tags.pop(key, None)
        tags.update(put)
        return management.set_tags(deps, connection_id, {"tags": tags})
    except NotFound:
        raise ActionError(f"no connection {connection_id}") from None
    except (BadRequest, Conflict) as exc:
        raise ActionError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------- health
@dataclass
class Health:
    """The broker at a glance; `attention` lists what an operator should act on (empty: healthy)."""

    target: str
    checked_at: int
    connections: dict[str, int]
    due_now: int
    dead_letters: int
    failed_sweeps: int | None
    alarms_firing: list[str] | None
    failing: list[dict[str, Any]] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def health(target: Target, *, worst: int = 10) -> Health:
    now = int(time.time())
    try:
        counts = asdict(count_by_status(target.dynamodb, target.config.connections_table_name, now=now))
        due_now, _ = target.connections.count_due(now=now)
        failing = sorted(
            (
                c
                for c in target.connections.scan(status=ConnectionStatus.ACTIVE)
                if c.failures > 0 or c.access_expires_at <= now
            ),
            key=lambda c: (-c.failures, c.access_expires_at),
        )
    except StorageError as exc:
        raise ActionError(f"AWS storage failed ({exc.operation}: {exc.code}); try again") from None
    report = Health(
        target=target.description,
        checked_at=now,
        connections=counts,
        due_now=due_now,
        dead_letters=target.dead_letters(),
        failed_sweeps=target.failed_sweeps(),
        alarms_firing=target.alarms_firing(),
        failing=[
            {
                "connection_id": c.connection_id,
                "failures": c.failures,
                "last_error": c.last_error,
                "access_expires_at": c.access_expires_at,
                "next_try_at": c.refresh_due_at,
            }
            for c in failing[:worst]
        ],
    )
    if counts["needs_reauth"]:
        report.attention.append(
            f"{counts['needs_reauth']} connection(s) need their user to connect again (Smartsheet no longer honours"
            " the grant): `list --status needs_reauth`; your app gets ConnectionUnavailable for them"
        )
    if counts["expired"]:
        report.attention.append(
            f"{counts['expired']} active connection(s) have an expired access token: refreshes keep failing or "
            "the sweep falls behind (see failing below, the dashboard, `sweep`)"
        )
    if counts["failing"]:
        report.attention.append(f"{counts['failing']} connection(s) failed their last refresh and wait for a retry")
    if report.dead_letters:
        report.attention.append(
            f"{report.dead_letters} tick(s) Scheduler could not deliver in the refresh dead-letter queue "
            "(docs/operations.md, refresh-dlq)"
        )
    if report.failed_sweeps:
        report.attention.append(
            f"{report.failed_sweeps} failed sweep(s) in FailedSweepQueue: crashed, timed out or could not start "
            "(docs/operations.md, refresh-failed-sweeps)"
        )
    if report.alarms_firing:
        report.attention.append(f"alarms firing: {', '.join(report.alarms_firing)}")
    return report
