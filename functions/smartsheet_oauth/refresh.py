"""Refreshing one connection under its lease, rotating the refresh token: the steps the sweep, on-demand refreshes and
the admin CLI share (the sweep itself, over the due index, is sweep.py)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from smartsheet_oauth import connection_store, events
from smartsheet_oauth.config import Config
from smartsheet_oauth.connection_store import Connection, ConnectionStore, DueConnection, PendingPair
from smartsheet_oauth.errors import (
    ConditionFailed,
    InvalidClient,
    InvalidGrant,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.observability import logger
from smartsheet_oauth.smartsheet import SmartsheetClient
from smartsheet_oauth.token_vault import TokenSet, TokenVault, pending_binding

REFRESHED = "ok"
TRANSIENT = "transient"
NEEDS_REAUTH = "needs_reauth"
LEASE_BUSY = "lease_busy"
RACED = "raced"
# Smartsheet rotated the pair but its secret could not be written in time: the pair waits, sealed, on the record.
KEPT = "kept"
# A kept pair was written to its secret (after a save that kept failing, or a worker that died).
RESUMED = "resumed"
# A rotated pair could be neither written nor kept: the grant is gone and the user must sign in again.
LOST = "lost"
OUTCOMES = (REFRESHED, TRANSIENT, NEEDS_REAUTH, LEASE_BUSY, RACED, KEPT, RESUMED, LOST)

BACKOFF_BASE_SECONDS = 300
BACKOFF_CAP_SECONDS = 3600
SAVE_RETRY_BASE_SECONDS = 0.2
SAVE_RETRY_CAP_SECONDS = 5.0
# Writes of a new pair stop this long before the lease runs out (after it, another worker may hold the
# connection) and this long before the invocation ends.
LEASE_MARGIN_SECONDS = 15.0
FINAL_MARGIN_SECONDS = 5.0
# invalid_grant ends one user's grant. The same answer for connection after connection, with few or no refreshes
# working, points at a cause that is not the users' (an app credential Smartsheet refuses as 1071, an incident
# at Smartsheet): past this many in one sweep, more are not made final while refusals outnumber refreshes.
INVALID_GRANT_GUARD = 5


@dataclass(frozen=True, slots=True)
class RefreshDeps:
    """What a refresh works with: configuration, stores, Smartsheet, events, and the clocks (tests set them)."""

    config: Config
    connections: ConnectionStore
    vault: TokenVault
    smartsheet: SmartsheetClient
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    events: events.EventPublisher | None = None
    # Measures waits and deadlines; `sleep` must advance it.
    monotonic: Callable[[], float] = time.monotonic


class GrantGuard:
    """Counts one sweep's refusals (invalid_grant) and refreshes, and says whether one more refusal may mark its
    connection needs_reauth. A refusal it holds back is retried later with backoff: a false alarm costs a delay,
    while marking every user of a healthy app needs_reauth would cost every grant."""

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


def backoff_seconds(failures: int, retry_after: float | None, rng: random.Random) -> int:
    """Exponential backoff with full jitter over the upper half, never sooner than Smartsheet's Retry-After,
    so a fleet of failed connections spreads out instead of returning together."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(failures, 10))
    delay = rng.uniform(ceiling / 2, ceiling)
    return int(max(delay, retry_after or 0))


def refresh_connection(
    due: DueConnection,
    deps: RefreshDeps,
    *,
    rng: random.Random | None = None,
    time_left: Callable[[], float] | None = None,
    guard: GrantGuard | None = None,
) -> str:
    """Refresh one connection under its lease. Returns the outcome; never raises for a per-connection problem.

    A pair kept on the record by an earlier attempt is written to its secret first, instead of refreshing."""
    rng = rng or random.Random()  # noqa: S311 (jitter, not security)
    owner = uuid.uuid4().hex
    now = int(deps.clock())
    started = deps.monotonic()
    try:
        leased = deps.connections.acquire_lease(
            due.connection_id,
            generation=due.generation,
            owner=owner,
            now=now,
            lease_seconds=deps.config.lease_seconds,
        )
    except ConditionFailed:
        return LEASE_BUSY
    except StorageError as exc:
        logger.warning(
            "lease failed",
            extra={"connection_id": due.connection_id, "outcome": TRANSIENT, "reason": exc.code},
        )
        return TRANSIENT

    write_deadline = started + deps.config.lease_seconds - LEASE_MARGIN_SECONDS
    if time_left is not None:
        write_deadline = min(write_deadline, deps.monotonic() + time_left() - FINAL_MARGIN_SECONDS)
    if leased.pending is not None and leased.pending.generation == leased.generation:
        return _resume_kept_pair(leased, leased.pending, owner, deps, rng=rng, deadline=write_deadline)
    return _refresh_leased(leased, owner, deps, rng=rng, deadline=write_deadline, guard=guard)


def _refresh_leased(
    leased: Connection,
    owner: str,
    deps: RefreshDeps,
    *,
    rng: random.Random,
    deadline: float,
    guard: GrantGuard | None = None,
) -> str:
    try:
        current = deps.vault.load(leased.secret_arn)
    except StorageError as exc:
        return _transient(leased, owner, deps, rng, reason=f"vault:{exc.code}", retry_after=None)

    if deps.vault.sealer is not None:
        try:
            deps.vault.sealer.prepare()
        except StorageError as exc:
            # Without a data key the new pair could not be kept if its save failed: do not rotate it now.
            return _transient(leased, owner, deps, rng, reason=f"kms:{exc.code}", retry_after=None)

    try:
        grant = deps.smartsheet.refresh(current.refresh_token)
    except InvalidGrant as exc:
        return _invalid_grant(leased, owner, current, deps, exc, rng=rng, guard=guard)
    except TransientSmartsheetError as exc:
        return _transient(leased, owner, deps, rng, reason=exc.reason, retry_after=exc.retry_after)
    except SmartsheetError as exc:
        # invalid_client, malformed answers, other 4xx: not the user's fault, so the grant is not given up.
        # invalid_client (incl. 1072, a hash made with the wrong secret) needs an operator: log it as an error.
        level = logger.error if isinstance(exc, InvalidClient) or exc.status in (401, 403) else logger.warning
        level("refresh refused", extra={"connection_id": leased.connection_id, "reason": exc.reason})
        return _transient(leased, owner, deps, rng, reason=exc.reason, retry_after=None)

    refreshed_at = int(deps.clock())
    new_tokens = TokenSet(
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        token_type=grant.token_type,
        expires_at=refreshed_at + grant.expires_in,
        scope=current.scope,
        region=current.region,
        user_id=current.user_id,
        email=current.email,
        obtained_at=refreshed_at,
    )
    # The old refresh token is dead now: the new pair must be durable before anything else. It goes to its
    # secret; if that write fails, the pair is kept (sealed) on the record at once, and the write is retried
    # until the deadline. The happy path is one write, as the design's budget has it (see _write_pair).
    version_id = str(uuid.uuid4())
    saved, kept, reason = _write_pair(
        leased, owner, new_tokens, deps, version_id=version_id, rng=rng, deadline=deadline, keep=True
    )
    if not saved:
        if kept:
            return _transient(leased, owner, deps, rng, reason=reason, retry_after=None, outcome=KEPT)
        logger.critical(
            "new token pair could be neither stored nor kept: the grant is lost",
            extra={"connection_id": leased.connection_id, "outcome": LOST, "reason": reason},
        )
        return _transient(leased, owner, deps, rng, reason=f"lost:{reason}", retry_after=None, outcome=LOST)
    _commit(leased, owner, new_tokens, deps)
    if guard is not None:
        guard.refreshed()
    if leased.failures:
        events.emit(deps.events, events.about(events.RECOVERED, leased, status=connection_store.ACTIVE))
    logger.info("connection refreshed", extra={"connection_id": leased.connection_id, "outcome": REFRESHED})
    return REFRESHED


def _write_pair(
    leased: Connection,
    owner: str,
    tokens: TokenSet,
    deps: RefreshDeps,
    *,
    version_id: str,
    rng: random.Random,
    deadline: float,
    keep: bool,
) -> tuple[bool, bool, str]:
    """Write the pair to its secret as version `version_id`, retrying with backoff until the deadline; with
    keep=True, a failed write first keeps the pair sealed on the record (retried with each attempt), so a pair
    that cannot be stored now is not lost with this worker. Returns (saved, kept, last failure).

    Keeping only after a failure costs the happy path no write. What it gives up: a worker killed (not timed
    out: the deadline ends retries well before that) between Smartsheet's answer and its first write landing
    loses the pair. Keeping first would move that window, not close it (it is then the keep's write instead)."""
    kept = not keep
    reason = ""
    attempt = 0
    while True:
        try:
            deps.vault.save(leased.connection_id, tokens, known_arn=leased.secret_arn, version_id=version_id)
            return True, kept, ""
        except StorageError as exc:
            reason = f"vault:{exc.code}"
        if not kept and deps.vault.sealer is not None:
            try:
                sealed = deps.vault.sealer.seal(
                    tokens, binding=pending_binding(leased.connection_id, leased.generation, version_id)
                )
                deps.connections.keep_pending(
                    leased.connection_id,
                    generation=leased.generation,
                    owner=owner,
                    sealed=sealed,
                    version_id=version_id,
                    now=int(deps.clock()),
                )
                kept = True
            except StorageError as exc:
                logger.warning(
                    "could not keep the new pair on the record",
                    extra={"connection_id": leased.connection_id, "reason": f"keep:{exc.code}"},
                )
        delay = min(SAVE_RETRY_CAP_SECONDS, SAVE_RETRY_BASE_SECONDS * 2**attempt) * rng.uniform(0.5, 1.0)
        if deps.monotonic() + delay >= deadline:
            logger.error(
                "new token pair not stored before the deadline",
                extra={"connection_id": leased.connection_id, "reason": reason, "attempts": attempt + 1, "kept": kept},
            )
            return False, kept, reason
        deps.sleep(delay)
        attempt += 1


def _commit(leased: Connection, owner: str, tokens: TokenSet, deps: RefreshDeps) -> None:
    try:
        deps.connections.commit_refresh(
            leased.connection_id,
            generation=leased.generation,
            owner=owner,
            access_expires_at=tokens.expires_at,
            refresh_due_at=tokens.expires_at - deps.config.refresh_window_seconds,
            now=int(deps.clock()),
        )
    except StorageError as exc:
        # The pair is in its secret. If it is also kept on the record, whoever leases the connection next
        # writes the same version again (a no-op) and commits; if not, the next refresh starts from the
        # stored new pair. Nothing is lost either way.
        logger.warning("commit failed after save", extra={"connection_id": leased.connection_id, "reason": exc.code})


def _resume_kept_pair(
    leased: Connection, pending: PendingPair, owner: str, deps: RefreshDeps, *, rng: random.Random, deadline: float
) -> str:
    """A pair kept on the record (its save failed, or its worker died) goes to its secret before anything else:
    the secret's own refresh token is dead since Smartsheet issued the kept one."""
    if deps.vault.sealer is None:
        logger.error("a kept token pair waits but no key is configured", extra={"connection_id": leased.connection_id})
        return _transient(leased, owner, deps, rng, reason="kept:no_key", retry_after=None, outcome=KEPT)
    try:
        tokens = deps.vault.sealer.open(
            pending.sealed, binding=pending_binding(leased.connection_id, pending.generation, pending.version_id)
        )
    except StorageError as exc:
        return _transient(leased, owner, deps, rng, reason=f"kms:{exc.code}", retry_after=None, outcome=KEPT)
    saved, _, reason = _write_pair(
        leased, owner, tokens, deps, version_id=pending.version_id, rng=rng, deadline=deadline, keep=False
    )
    if not saved:
        return _transient(leased, owner, deps, rng, reason=reason, retry_after=None, outcome=KEPT)
    _commit(leased, owner, tokens, deps)
    events.emit(deps.events, events.about(events.RECOVERED, leased, status=connection_store.ACTIVE))
    logger.info("kept token pair stored", extra={"connection_id": leased.connection_id, "outcome": RESUMED})
    return RESUMED


def _transient(
    leased: Connection,
    owner: str,
    deps: RefreshDeps,
    rng: random.Random,
    *,
    reason: str,
    retry_after: float | None,
    outcome: str = TRANSIENT,
) -> str:
    now = int(deps.clock())
    retry_at = now + backoff_seconds(leased.failures, retry_after, rng)
    try:
        failures = deps.connections.record_transient_failure(
            leased.connection_id,
            generation=leased.generation,
            owner=owner,
            retry_at=retry_at,
            reason=reason,
            now=now,
        )
    except StorageError as exc:
        # The lease runs out by itself; the connection comes back in a later sweep.
        logger.warning("could not record failure", extra={"connection_id": leased.connection_id, "reason": exc.code})
        failures = leased.failures + 1
    logger.warning(
        "refresh failed, will retry",
        extra={
            "connection_id": leased.connection_id,
            "outcome": outcome,
            "reason": reason,
            "failures": failures,
        },
    )
    events.emit(
        deps.events,
        events.about(events.REFRESH_FAILED, leased, status=connection_store.ACTIVE, reason=reason, attempt=failures),
    )
    return outcome


def _invalid_grant(
    leased: Connection,
    owner: str,
    used: TokenSet,
    deps: RefreshDeps,
    exc: InvalidGrant,
    *,
    rng: random.Random,
    guard: GrantGuard | None = None,
) -> str:
    """invalid_grant is final only if nobody else refreshed meanwhile: a moved generation, a pair kept on the
    record, or a stored refresh token other than the one we sent, means we raced another worker and the grant
    is alive. (Revoked tokens, 1132, arrive here too: revoked is as final as expired.)"""
    try:
        latest = deps.connections.get(leased.connection_id)
        stored = deps.vault.load(leased.secret_arn)
    except StorageError as storage_exc:
        logger.warning(
            "could not re-check after invalid_grant",
            extra={"connection_id": leased.connection_id, "reason": storage_exc.code},
        )
        return TRANSIENT
    if (
        latest is None
        or latest.generation != leased.generation
        or latest.pending is not None
        or stored.refresh_token != used.refresh_token
    ):
        logger.info(
            "invalid_grant after a concurrent refresh; grant is alive",
            extra={"connection_id": leased.connection_id, "outcome": RACED},
        )
        return RACED
    if guard is not None and not guard.may_mark():
        logger.critical(
            "Smartsheet refuses grant after grant in this sweep: not marking users needs_reauth; check the app's"
            " credentials and Smartsheet's status",
            extra={"connection_id": leased.connection_id, "outcome": TRANSIENT, "reason": exc.reason},
        )
        return _transient(leased, owner, deps, rng, reason=exc.reason, retry_after=None)
    try:
        deps.connections.mark_needs_reauth(
            leased.connection_id,
            generation=leased.generation,
            owner=owner,
            reason=exc.reason,
            now=int(deps.clock()),
        )
    except ConditionFailed:
        return RACED
    except StorageError as storage_exc:
        logger.warning(
            "could not mark needs_reauth",
            extra={"connection_id": leased.connection_id, "reason": storage_exc.code},
        )
        return TRANSIENT
    logger.warning(
        "grant revoked or expired at Smartsheet; user must sign in again",
        extra={"connection_id": leased.connection_id, "outcome": NEEDS_REAUTH, "reason": exc.reason},
    )
    events.emit(
        deps.events, events.about(events.NEEDS_REAUTH, leased, status=connection_store.NEEDS_REAUTH, reason=exc.reason)
    )
    return NEEDS_REAUTH
