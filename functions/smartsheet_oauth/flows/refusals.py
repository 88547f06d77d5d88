"""What Smartsheet refusing a refresh (invalid_grant) means, and the end of a grant it leads to.

A refusal is one of: a race with another worker (the grant is alive: nothing changes); a grant lost in flight (an
earlier attempt of ours that may have reached Smartsheet never came to an end, so it rotated the pair and the new
one was never stored: the grant is gone because of us); a user's grant that ended (revoked, expired); or, when
refusals outnumber refreshes in one sweep, possibly a cause that is not the users' (the grant guard holds it back)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from smartsheet_oauth.domain.errors import ConditionFailed, InvalidGrant, StorageError
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores import events

if TYPE_CHECKING:
    from smartsheet_oauth.domain.tokens import TokenSet
    from smartsheet_oauth.flows.deps import RefreshDeps
    from smartsheet_oauth.stores.connections import Connection

# invalid_grant ends one user's grant. The same answer for connection after connection, with few or no refreshes
# working, points at a cause that is not the users' (an app credential Smartsheet refuses as 1071, an incident
# at Smartsheet): past this many in one sweep, more are not made final while refusals outnumber refreshes.
INVALID_GRANT_GUARD = 5
# Smartsheet's answer for a token that was revoked: it names a live token, so no attempt of ours spent it.
REVOKED_CODE = 1132
# The guard's verdict on a refusal it does not take as final: retried later, like a transient failure.
HELD_BACK = "held_back"


class GrantGuard:
    """Counts one sweep's refusals (invalid_grant) and refreshes, and says whether one more refusal may mark its
    connection needs_reauth. A refusal it holds back is retried later with backoff: a false alarm costs a delay,
    while marking every user of a healthy app needs_reauth would cost every grant. Grants lost in flight are not
    refusals of the users' grants and never pass through it."""

    def __init__(self, threshold: int | None = None) -> None:
        self._threshold = INVALID_GRANT_GUARD if threshold is None else threshold
        self._lock = threading.Lock()
        self._refused = 0
        self._refreshed = 0

    def refreshed(self) -> None:
        with self._lock:
            self._refreshed += 1

    def may_mark(self) -> bool:
        """Count a refusal; True if it may be taken as final."""
        with self._lock:
            self._refused += 1
            return self._refused <= self._threshold or self._refreshed >= self._refused

    @property
    def tally(self) -> tuple[int, int]:
        """(refusals, refreshes) counted so far in this sweep."""
        with self._lock:
            return self._refused, self._refreshed


def lost_in_flight(leased: Connection, owner: str, refusal: InvalidGrant) -> bool:
    """Smartsheet refuses the stored refresh token, and an earlier attempt that may have sent it was never
    concluded (the record's in-flight marker is another attempt's): that attempt rotated the pair. A revoked token
    (1132) is the exception: Smartsheet still knows it as the grant's current one, so nobody spent it."""
    inherited = leased.in_flight_attempt is not None and leased.in_flight_attempt != owner
    return inherited and refusal.error_code != REVOKED_CODE


def judge(
    leased: Connection,
    owner: str,
    used: TokenSet,
    deps: RefreshDeps,
    refusal: InvalidGrant,
    *,
    guard: GrantGuard | None,
) -> str:
    """What a refusal means: raced, lost_in_flight, needs_reauth, HELD_BACK (the guard's), or transient (it could
    not be re-checked: the lease runs out and the connection comes back later).

    invalid_grant is final only if nobody else refreshed meanwhile: a moved generation, a pair kept on the record,
    or a stored refresh token other than the one we sent, means we raced another worker and the grant is alive.
    (Revoked tokens, 1132, arrive here too: revoked is as final as expired.)"""
    try:
        latest = deps.connections.get(leased.connection_id)
        stored = deps.vault.load(leased.secret_arn)
    except StorageError as storage_exc:
        logger.warning(
            "could not re-check after invalid_grant",
            extra={"connection_id": leased.connection_id, "reason": storage_exc.code},
        )
        return RefreshOutcome.TRANSIENT
    if (
        latest is None
        or latest.generation != leased.generation
        or latest.pending is not None
        or stored.refresh_token != used.refresh_token
    ):
        logger.info(
            "invalid_grant after a concurrent refresh; grant is alive",
            extra={"connection_id": leased.connection_id, "outcome": RefreshOutcome.RACED},
        )
        return RefreshOutcome.RACED
    if lost_in_flight(leased, owner, refusal):
        return RefreshOutcome.LOST_IN_FLIGHT
    if guard is not None and not guard.may_mark():
        refused, refreshed = guard.tally
        logger.critical(
            "Smartsheet refused more grants than it refreshed in this sweep: this refusal is held back (the"
            " connection stays active and is retried later). Many users' grants rarely end at once: an app secret"
            " Smartsheet refuses as 1071, or an incident at Smartsheet, is likelier. Grants lost in flight are not"
            " counted here.",
            extra={
                "connection_id": leased.connection_id,
                "outcome": RefreshOutcome.TRANSIENT,
                "reason": refusal.reason,
                "refused": refused,
                "refreshed": refreshed,
            },
        )
        return HELD_BACK
    return RefreshOutcome.NEEDS_REAUTH


def end_grant(
    leased: Connection, owner: str, deps: RefreshDeps, *, outcome: RefreshOutcome, reason: str
) -> RefreshOutcome:
    """Mark the connection needs_reauth (out of the sweep until its user signs in again) and tell the integrator,
    with `reason` on the record and in the event. Returns `outcome`; raced when the lease was lost meanwhile, and
    transient when the record could not be written (the lease runs out, the marker stays, a later refresh decides
    again)."""
    now = int(deps.clock())
    try:
        deps.connections.mark_needs_reauth(
            leased.connection_id, generation=leased.generation, owner=owner, reason=reason, now=now
        )
    except ConditionFailed:
        return RefreshOutcome.RACED
    except StorageError as storage_exc:
        logger.warning(
            "could not mark needs_reauth",
            extra={"connection_id": leased.connection_id, "reason": storage_exc.code, "outcome": outcome},
        )
        return RefreshOutcome.TRANSIENT
    if outcome == RefreshOutcome.NEEDS_REAUTH:
        logger.warning(
            "grant revoked or expired at Smartsheet; user must sign in again",
            extra={"connection_id": leased.connection_id, "outcome": outcome, "reason": reason},
        )
    elif outcome != RefreshOutcome.LOST_IN_FLIGHT:  # its loss is logged where it happened
        logger.error("connection marked needs_reauth", extra={"connection_id": leased.connection_id, "reason": reason})
    else:
        since = leased.in_flight_since
        logger.critical(
            "grant lost by the broker: Smartsheet rotated this connection's pair and the new one was never stored;"
            " the user must sign in again",
            extra={
                "connection_id": leased.connection_id,
                "outcome": outcome,
                "reason": reason,
                "in_flight_for_seconds": None if since is None else max(0, now - since),
            },
        )
    events.announce(deps.events, outcome, leased, reason=reason)  # the outcome names its transition
    return outcome
