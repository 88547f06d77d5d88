"""What an operator does to one connection or to the whole broker: refresh now, disconnect, health summary."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from smartsheet_oauth import events
from smartsheet_oauth.connection_store import ACTIVE, NEEDS_REAUTH, REVOKED, Connection, DueConnection
from smartsheet_oauth.errors import (
    ConditionFailed,
    InvalidClient,
    InvalidGrant,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.refresh import RefreshDeps, refresh_connection
from smartsheet_oauth.token_vault import TokenSet

from infra.admin.target import Target

DISCONNECT_REASON = "disconnected by an operator"
# Secrets Manager's bounds for a scheduled deletion's recovery window.
MIN_RECOVERY_DAYS, MAX_RECOVERY_DAYS = 7, 30
# Codes Secrets Manager answers for a secret that is gone or scheduled for deletion.
_SECRET_GONE = frozenset({"ResourceNotFoundException", "InvalidRequestException"})


class ActionError(RuntimeError):
    """The action did not happen (or stopped safely): the message says why and what to do."""


def _lease_message(connection: Connection | None, now: int) -> str:
    wait = max(1, (connection.lease_until or now) - now) if connection else 1
    return f"a refresh holds this connection right now; try again in {wait} s"


# ------------------------------------------------------------------------------------------------ refresh now
@dataclass(frozen=True)
class RefreshResult:
    outcome: str  # the sweep's outcome names: ok, transient, needs_reauth, lease_busy, raced
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
        if before.status == REVOKED:
            raise ActionError(f"connection {connection_id} is disconnected (revoked): its user must sign in again")
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


def disconnect(target: Target, connection_id: str, *, recovery_days: int = MIN_RECOVERY_DAYS) -> DisconnectResult:
    """Revoke the grant at Smartsheet, mark the connection revoked, schedule its secret's deletion.

    The connection's lease is held throughout, so no sweep rotates the tokens between the revoke and the mark.
    Nothing changes when Smartsheet cannot be reached: the command can simply be run again, also after a partial
    run (a revoked connection is disconnected again without error)."""
    if not MIN_RECOVERY_DAYS <= recovery_days <= MAX_RECOVERY_DAYS:
        raise ActionError(f"the recovery window must be {MIN_RECOVERY_DAYS} to {MAX_RECOVERY_DAYS} days")
    now = int(time.time())
    owner = f"admin-{uuid.uuid4().hex}"
    try:
        try:
            held = target.connections.hold(
                connection_id, owner=owner, now=now, lease_seconds=target.config.lease_seconds
            )
        except ConditionFailed:
            current = target.connections.get(connection_id)
            if current is None:
                raise ActionError(f"no connection {connection_id}") from None
            raise ActionError(_lease_message(current, now)) from None
        try:
            at_smartsheet = _revoke_at_smartsheet(target, held)
        except BaseException:
            target.connections.release(connection_id, owner=owner)
            raise
        try:
            target.connections.mark_revoked(connection_id, owner=owner, reason=DISCONNECT_REASON, now=int(time.time()))
        except ConditionFailed:
            raise ActionError(
                f"connection {connection_id} changed while disconnecting (its user signed in again?): its grant at "
                "Smartsheet was revoked but the record was left as it is now; run disconnect again"
            ) from None
        try:
            target.vault.schedule_deletion(held.secret_arn, recovery_days=recovery_days)
            stored_tokens = "deletion_scheduled"
        except StorageError as exc:
            if exc.code not in _SECRET_GONE:
                raise
            stored_tokens = "already_deleted"
    except StorageError as exc:
        raise ActionError(f"AWS storage failed ({exc.operation}: {exc.code}); run disconnect again") from None
    if held.status != REVOKED:  # the integrator hears of it once, not on a repeated run
        events.emit(
            target.events(),
            events.about(events.REVOKED, held, status=REVOKED, reason=DISCONNECT_REASON, smartsheet=at_smartsheet),
        )
    return DisconnectResult(connection_id, at_smartsheet, stored_tokens, recovery_days)


def _revoke_at_smartsheet(target: Target, held: Connection) -> str:
    try:
        tokens = target.vault.load(held.secret_arn)
    except StorageError as exc:
        if exc.code in _SECRET_GONE:
            return "no_tokens"
        raise
    client = target.smartsheet()
    try:
        client.revoke(tokens.access_token, all_for_client=True)
        return "revoked"
    except SmartsheetError as exc:
        if not _access_token_unusable(exc):
            raise _smartsheet_failure(exc) from None
    # The access token is expired or already revoked; the grant may still live behind the refresh token.
    try:
        grant = client.refresh(tokens.refresh_token)
    except InvalidGrant:
        return "already_invalid"
    except SmartsheetError as exc:
        raise _smartsheet_failure(exc) from None
    refreshed_at = int(time.time())
    # Rotation killed the stored pair: keep the new one until it is revoked, so a failed revoke loses nothing.
    target.vault.save(
        held.connection_id,
        TokenSet(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            token_type=grant.token_type,
            expires_at=refreshed_at + grant.expires_in,
            scope=tokens.scope,
            region=tokens.region,
            user_id=tokens.user_id,
            email=tokens.email,
            obtained_at=refreshed_at,
        ),
        known_arn=held.secret_arn,
    )
    try:
        client.revoke(grant.access_token, all_for_client=True)
    except SmartsheetError as exc:
        raise _smartsheet_failure(exc) from None
    return "revoked"


def _access_token_unusable(exc: SmartsheetError) -> bool:
    # 1002/1003 (401): invalid or expired access token; invalid_grant codes: a revoked token.
    return isinstance(exc, InvalidGrant) or (exc.status == 401 and not isinstance(exc, InvalidClient))


def _smartsheet_failure(exc: SmartsheetError) -> ActionError:
    if isinstance(exc, TransientSmartsheetError):
        return ActionError(f"Smartsheet is unavailable ({exc.reason}): nothing was changed; try again later")
    if isinstance(exc, InvalidClient):
        return ActionError(
            f"Smartsheet refused the app's credentials ({exc.reason}): fix the client id/secret first "
            "(docs/operations.md); nothing was changed"
        )
    return ActionError(f"Smartsheet refused the revoke ({exc.reason}): nothing was changed")


# ----------------------------------------------------------------------------------------------------- health
@dataclass
class Health:
    """The broker at a glance; `attention` lists what an operator should act on (empty: healthy)."""

    target: str
    checked_at: int
    connections: dict[str, int]
    due_now: int
    dead_letters: int
    alarms_firing: list[str] | None
    failing: list[dict[str, Any]] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def health(target: Target, *, worst: int = 10) -> Health:
    now = int(time.time())
    try:
        counts = asdict(target.connections.count_by_status(now=now))
        due_now = target.connections.count_due(now=now)
        failing = sorted(
            (c for c in target.connections.scan(status=ACTIVE) if c.failures > 0 or c.access_expires_at <= now),
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
    if counts["expired"]:
        report.attention.append(
            f"{counts['expired']} active connection(s) have an expired access token: refreshes keep failing or "
            "the sweep falls behind (see failing below, the dashboard, `sweep`)"
        )
    if counts["failing"]:
        report.attention.append(f"{counts['failing']} connection(s) failed their last refresh and wait for a retry")
    if report.dead_letters:
        report.attention.append(
            f"{report.dead_letters} missed sweep(s) in the refresh dead-letter queue (docs/operations.md)"
        )
    if report.alarms_firing:
        report.attention.append(f"alarms firing: {', '.join(report.alarms_firing)}")
    return report


STATUSES = (ACTIVE, NEEDS_REAUTH, REVOKED)
