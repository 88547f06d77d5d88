"""On-demand refresh (POST /connections/{id}/refresh): through the sweep's own lease and steps, at the pace every
refresher shares, at most once per cooldown per connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smartsheet_oauth.domain.errors import (
    BadRequest,
    ConditionFailed,
    Conflict,
    RefreshCooldown,
    RefreshFailed,
    RefreshLost,
)
from smartsheet_oauth.domain.vocabulary import ConnectionStatus, RefreshOutcome
from smartsheet_oauth.flows.deps import ManagementDeps
from smartsheet_oauth.flows.management import existing, view
from smartsheet_oauth.flows.refresh import refresh_connection
from smartsheet_oauth.flows.refresh_window import seconds_to_spare
from smartsheet_oauth.stores.connections import Connection, DueConnection

DEFAULT_MIN_VALID_SECONDS = 300
MAX_MIN_VALID_SECONDS = 7 * 24 * 3600
# How long an on-demand refresh waits for another worker's refresh of the same connection to land: well inside
# API Gateway's 30 s integration timeout.
WAIT_FOR_OTHER_WORKER_SECONDS = 10.0
POLL_SECONDS = 0.2
# A new pair kept on the record is stored by the next attempt (asking again does it): worth retrying soon.
KEPT_RETRY_AFTER_SECONDS = 30
# Each refresh writes a new version of the connection's secret. AWS asks for no more than one PutSecretValue per
# secret every 10 minutes, sustained (versions younger than 24 h are never cleaned up): after a refresh, an on-demand
# one waits this long, and a caller that needs more than the current pair gives is told when to ask again.
ON_DEMAND_COOLDOWN_SECONDS = 600
# How long an on-demand refresh waits for a slot of the pace every refresher shares (one window is 6 s at most
# paces) before it answers 429; never so long that its token request could no longer be sent (refresh_window.py).
PACE_WAIT_SECONDS = 10.0
# What an on-demand refresh does between the pace and the token request: expedite, lease, read the secret.
BEFORE_SEND_SECONDS = 2.0


# ------------------------------------------------------------------------------------------- on-demand refresh
def min_valid_seconds(body: dict[str, Any]) -> int:
    unknown = sorted(set(body) - {"min_valid_seconds"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; the body may hold min_valid_seconds")
    value = body.get("min_valid_seconds", DEFAULT_MIN_VALID_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MIN_VALID_SECONDS:
        raise BadRequest(f"min_valid_seconds must be a whole number from 0 to {MAX_MIN_VALID_SECONDS}")
    return value


def _unusable(connection: Connection) -> Conflict:
    if connection.status == ConnectionStatus.REVOKED:
        return Conflict("revoked", "The connection was disconnected; its user must connect again.")
    return Conflict(
        "needs_reauth", "Smartsheet no longer honours this connection's grant; its user must sign in again."
    )


def refresh_on_demand(
    deps: ManagementDeps, connection_id: str, *, min_valid: int, time_left: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Refresh now through the sweep's own lease and steps, so a refresh racing the sweep (or another caller)
    reaches Smartsheet once: the loser waits for the winner's result instead of refreshing again. Nothing is
    refreshed while the access token stays valid for at least `min_valid` seconds, unless a new pair kept on the
    record waits to be stored: that is stored first ("resumed"). `time_left` bounds a failing save's retries."""
    result = _refresh_on_demand(deps, existing(deps, connection_id), min_valid=min_valid, time_left=time_left)
    if (
        result["outcome"] == RefreshOutcome.RESUMED
        and result["connection"]["access_expires_at"] - deps.clock() < min_valid
    ):
        # The stored kept pair waited too long to satisfy the caller: refresh it like any other.
        return _refresh_on_demand(deps, existing(deps, connection_id), min_valid=min_valid, time_left=time_left)
    return result


def _kept_waiting(connection: Connection) -> bool:
    return connection.pending is not None and connection.pending.generation == connection.generation


def _refresh_on_demand(
    deps: ManagementDeps, before: Connection, *, min_valid: int, time_left: Callable[[], float] | None
) -> dict[str, Any]:
    connection_id = before.connection_id
    if before.status != ConnectionStatus.ACTIVE:
        raise _unusable(before)
    now = int(deps.clock())
    if before.access_expires_at - now >= min_valid and not _kept_waiting(before):
        return {"outcome": "fresh", "connection": view(before)}
    if not _kept_waiting(before):  # storing a kept pair sends nothing to Smartsheet
        _check_cooldown(before, now=now)
        if deps.pace is not None:
            deps.pace.take_one(max_wait=_pace_wait(deps, time_left))
    try:
        deps.connections.expedite(before.connection_id, generation=before.generation, now=now)
    except ConditionFailed:
        return _outcome_of_other_worker(deps, before)
    due = DueConnection(
        connection_id=before.connection_id,
        refresh_due_at=now,
        access_expires_at=before.access_expires_at,
        generation=before.generation,
    )
    outcome = refresh_connection(due, deps.refresh_deps(), time_left=time_left)
    if outcome == RefreshOutcome.REFRESHED:
        return {"outcome": RefreshOutcome.REFRESHED, "connection": view(existing(deps, connection_id))}
    if outcome == RefreshOutcome.RESUMED:
        return {"outcome": RefreshOutcome.RESUMED, "connection": view(existing(deps, connection_id))}
    if outcome in (RefreshOutcome.LEASE_BUSY, RefreshOutcome.RACED):
        return _outcome_of_other_worker(deps, before)
    if outcome == RefreshOutcome.KEPT:
        raise _kept()
    if outcome == RefreshOutcome.LOST:
        raise _lost()
    if outcome == RefreshOutcome.LOST_IN_FLIGHT:
        raise _lost_in_flight()
    after = existing(deps, connection_id)
    if outcome in (RefreshOutcome.TRANSIENT, RefreshOutcome.DEFERRED):
        raise _transient(after, now)
    raise _unusable(after)


def _pace_wait(deps: ManagementDeps, time_left: Callable[[], float] | None) -> float:
    """How long this request may wait for the pace and still send its token request in time."""
    if time_left is None:
        return PACE_WAIT_SECONDS
    spare = seconds_to_spare(time_left(), deps.smartsheet().timeouts, before_send=BEFORE_SEND_SECONDS)
    return max(0.0, min(PACE_WAIT_SECONDS, spare))


def _check_cooldown(connection: Connection, *, now: int) -> None:
    cooled_at = (connection.refreshed_at or 0) + ON_DEMAND_COOLDOWN_SECONDS
    if now < cooled_at:
        raise RefreshCooldown(
            f"This connection was refreshed less than {ON_DEMAND_COOLDOWN_SECONDS} s ago and each refresh writes a new"
            " version of its secret; its access token expires at access_expires_at. Ask again after Retry-After.",
            retry_after=cooled_at - now,
        )


def _leased(connection: Connection, now: int) -> bool:
    return (connection.lease_until or 0) > now


def _transient(connection: Connection, now: int) -> RefreshFailed:
    retry_after = max(1, min(3600, (connection.refresh_due_at or now) - now))
    return RefreshFailed(
        "refresh_failed",
        f"Smartsheet did not refresh the token ({connection.last_error or 'unavailable'}); the sweep retries it."
        " The stored token stays valid until access_expires_at.",
        retry_after=retry_after,
    )


def _kept() -> RefreshFailed:
    return RefreshFailed(
        "refresh_kept",
        "Smartsheet issued a new token pair but AWS storage did not take it in time; it is kept safely (encrypted)"
        " on the connection and the next attempt stores it. The connection stays active: ask again.",
        retry_after=KEPT_RETRY_AFTER_SECONDS,
    )


def _lost() -> RefreshLost:
    return RefreshLost(
        "Smartsheet rotated this connection's tokens but the new pair could be neither stored nor kept (AWS storage"
        " failed). Its user must sign in again; the connection is marked needs_reauth (or will be by its next"
        " refresh, if AWS refused that too). The incident is logged: quote the reference to support."
    )


def _lost_in_flight() -> RefreshLost:
    return RefreshLost(
        "An earlier refresh of this connection reached Smartsheet, which rotated its tokens, and ended before the new"
        " pair was stored (its worker stopped, or Smartsheet's answer never arrived). The grant is gone: its user must"
        " sign in again. The connection is marked needs_reauth; the incident is logged: quote the reference to support."
    )


def _outcome_of_other_worker(deps: ManagementDeps, before: Connection) -> dict[str, Any]:
    """Someone else (the sweep, another caller) holds or just used the lease: wait for what they achieved."""
    deadline = deps.monotonic() + WAIT_FOR_OTHER_WORKER_SECONDS
    while True:
        now = int(deps.clock())
        current = existing(deps, before.connection_id)
        if current.generation != before.generation:
            if current.status == ConnectionStatus.ACTIVE:
                return {"outcome": RefreshOutcome.REFRESHED, "connection": view(current)}
            raise _unusable(current)
        if current.status != ConnectionStatus.ACTIVE:
            raise _unusable(current)
        if not _leased(current, now):
            if current.updated_at > before.updated_at and current.failures > before.failures:
                raise _kept() if _kept_waiting(current) else _transient(current, now)
            # The lease was let go without a refresh (a sweep that stopped, a commit that failed): nothing to wait
            # for; the caller may simply ask again.
            raise Conflict(
                "refresh_in_progress", "Another refresh of this connection just ended; ask again.", retry_after=1
            )
        if deps.monotonic() >= deadline:
            wait = max(1, (current.lease_until or now) - now)
            raise Conflict("refresh_in_progress", "Another refresh of this connection is under way.", retry_after=wait)
        deps.sleep(POLL_SECONDS)
