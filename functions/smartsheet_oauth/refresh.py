"""The refresh sweep: due connections, earliest first, each under a lease, rotating the refresh token."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from smartsheet_oauth import connection_store, events
from smartsheet_oauth.config import Config
from smartsheet_oauth.connection_store import Connection, ConnectionStore, DueConnection
from smartsheet_oauth.errors import (
    ConditionFailed,
    InvalidGrant,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.observability import logger
from smartsheet_oauth.smartsheet import SmartsheetClient
from smartsheet_oauth.token_vault import TokenSet, TokenVault

REFRESHED = "ok"
TRANSIENT = "transient"
NEEDS_REAUTH = "needs_reauth"
LEASE_BUSY = "lease_busy"
RACED = "raced"

BACKOFF_BASE_SECONDS = 300
BACKOFF_CAP_SECONDS = 3600
SAVE_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class RefreshDeps:
    config: Config
    connections: ConnectionStore
    vault: TokenVault
    smartsheet: SmartsheetClient
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    events: events.EventPublisher | None = None


@dataclass(slots=True)
class SweepReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    dispatched: int = 0
    stopped_early: bool = False
    duration_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "dispatched": self.dispatched,
            "outcomes": dict(self.outcomes),
            "stopped_early": self.stopped_early,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def backoff_seconds(failures: int, retry_after: float | None, rng: random.Random) -> int:
    """Exponential backoff with full jitter over the upper half, never sooner than Smartsheet's Retry-After,
    so a fleet of failed connections spreads out instead of returning together."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(failures, 10))
    delay = rng.uniform(ceiling / 2, ceiling)
    return int(max(delay, retry_after or 0))


def refresh_connection(due: DueConnection, deps: RefreshDeps, *, rng: random.Random | None = None) -> str:
    """Refresh one connection under its lease. Returns the outcome; never raises for a per-connection problem."""
    rng = rng or random.Random()  # noqa: S311 (jitter, not security)
    owner = uuid.uuid4().hex
    now = int(deps.clock())
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

    try:
        current = deps.vault.load(leased.secret_arn)
    except StorageError as exc:
        return _transient(leased, owner, deps, rng, reason=f"vault:{exc.code}", retry_after=None)

    try:
        grant = deps.smartsheet.refresh(current.refresh_token)
    except InvalidGrant as exc:
        return _invalid_grant(leased, owner, current, deps, exc)
    except TransientSmartsheetError as exc:
        return _transient(leased, owner, deps, rng, reason=exc.reason, retry_after=exc.retry_after)
    except SmartsheetError as exc:
        # invalid_client, malformed answers, other 4xx: not the user's fault, so the grant is not given up.
        level = logger.error if exc.status in (401, 403) else logger.warning
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
    # The old refresh token is dead now: the new pair must be stored before anything else.
    _save_with_retries(leased, new_tokens, deps, rng)
    try:
        deps.connections.commit_refresh(
            leased.connection_id,
            generation=leased.generation,
            owner=owner,
            access_expires_at=new_tokens.expires_at,
            refresh_due_at=new_tokens.expires_at - deps.config.refresh_window_seconds,
            now=refreshed_at,
        )
    except StorageError as exc:
        # The pair is stored; the record still says "due" and its lease expires, so the next sweep refreshes
        # again from the stored (new) pair. Nothing is lost.
        logger.warning("commit failed after save", extra={"connection_id": leased.connection_id, "reason": exc.code})
    if leased.failures:
        events.emit(deps.events, events.about(events.RECOVERED, leased, status=connection_store.ACTIVE))
    logger.info("connection refreshed", extra={"connection_id": leased.connection_id, "outcome": REFRESHED})
    return REFRESHED


def _save_with_retries(leased: Connection, tokens: TokenSet, deps: RefreshDeps, rng: random.Random) -> None:
    for attempt in range(SAVE_ATTEMPTS):
        try:
            deps.vault.save(leased.connection_id, tokens, known_arn=leased.secret_arn)
            return
        except StorageError as exc:
            if attempt == SAVE_ATTEMPTS - 1:
                logger.critical(
                    "new token pair could not be stored",
                    extra={"connection_id": leased.connection_id, "reason": exc.code},
                )
                raise
            deps.sleep(min(2.0, 0.2 * 2**attempt) * rng.uniform(0.5, 1.0))


def _transient(
    leased: Connection,
    owner: str,
    deps: RefreshDeps,
    rng: random.Random,
    *,
    reason: str,
    retry_after: float | None,
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
            "outcome": TRANSIENT,
            "reason": reason,
            "failures": failures,
        },
    )
    events.emit(
        deps.events,
        events.about(events.REFRESH_FAILED, leased, status=connection_store.ACTIVE, reason=reason, attempt=failures),
    )
    return TRANSIENT


def _invalid_grant(leased: Connection, owner: str, used: TokenSet, deps: RefreshDeps, exc: InvalidGrant) -> str:
    """invalid_grant is final only if nobody else refreshed meanwhile: a moved generation, or a stored refresh
    token other than the one we sent, means we raced another worker and the grant is alive."""
    try:
        latest = deps.connections.get(leased.connection_id)
        stored = deps.vault.load(leased.secret_arn)
    except StorageError as storage_exc:
        logger.warning(
            "could not re-check after invalid_grant",
            extra={"connection_id": leased.connection_id, "reason": storage_exc.code},
        )
        return TRANSIENT
    if latest is None or latest.generation != leased.generation or stored.refresh_token != used.refresh_token:
        logger.info(
            "invalid_grant after a concurrent refresh; grant is alive",
            extra={"connection_id": leased.connection_id, "outcome": RACED},
        )
        return RACED
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


def sweep(
    deps: RefreshDeps,
    *,
    time_left: Callable[[], float],
    safety_margin_seconds: float = 30.0,
    page_size: int = 100,
) -> SweepReport:
    """Refresh due connections, earliest first, at most `refresh_concurrency` at once, and stop dispatching
    when less than the safety margin is left: what is not reached waits for the next sweep."""
    started = time.monotonic()
    report = SweepReport()
    concurrency = deps.config.refresh_concurrency
    seen: set[str] = set()
    in_flight: set[Future[str]] = set()

    def collect(done: set[Future[str]]) -> None:
        for future in done:
            try:
                report.outcomes[future.result()] += 1
            except Exception as exc:  # one connection's failure never stops the sweep
                logger.error("refresh crashed", extra={"error_type": type(exc).__name__})
                report.outcomes["error"] += 1

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="refresh") as pool:
        start_key = None
        while True:
            if time_left() <= safety_margin_seconds:
                report.stopped_early = True
                break
            try:
                page, start_key = deps.connections.due(now=int(deps.clock()), limit=page_size, start_key=start_key)
            except StorageError as exc:
                logger.error("could not read due connections", extra={"reason": exc.code})
                report.outcomes["error"] += 1
                break
            for due in page:
                if due.connection_id in seen:
                    continue
                while len(in_flight) >= concurrency:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    in_flight.difference_update(done)
                    collect(done)
                if time_left() <= safety_margin_seconds:
                    report.stopped_early = True
                    break
                seen.add(due.connection_id)
                in_flight.add(pool.submit(refresh_connection, due, deps))
                report.dispatched += 1
            if report.stopped_early or not start_key:
                break
        done, _ = wait(in_flight)
        collect(done)
    report.duration_seconds = time.monotonic() - started
    return report
