"""Refreshing one connection under its lease, rotating the refresh token: the steps the sweep, on-demand refreshes and
the admin CLI share (the sweep itself, over the due index, is sweep.py; what a refusal means, refusals.py; when a token
request may be sent, refresh_window.py)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from smartsheet_oauth.domain.errors import (
    ConditionFailed,
    InvalidClient,
    InvalidGrant,
    NoTimeToRefresh,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.domain.lifecycle import outcome_of
from smartsheet_oauth.domain.tokens import TokenGrant, TokenSet, refresh_due_at
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.flows import refusals, steps
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.flows.refresh_window import FINAL_MARGIN_SECONDS, LEASE_MARGIN_SECONDS, answer_within
from smartsheet_oauth.flows.refusals import GrantGuard
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores import events
from smartsheet_oauth.stores.connections import Connection, DueConnection, PendingPair
from smartsheet_oauth.stores.token_vault import pending_binding

__all__ = ["GrantGuard", "backoff_seconds", "refresh_connection"]

BACKOFF_BASE_SECONDS = 300
BACKOFF_CAP_SECONDS = 3600
SAVE_RETRY_BASE_SECONDS = 0.2
SAVE_RETRY_CAP_SECONDS = 5.0


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
) -> RefreshOutcome:
    """Refresh one connection under its lease. Returns the outcome; never raises for a per-connection problem.

    A pair kept on the record by an earlier attempt is written to its secret first, instead of refreshing."""
    rng = rng or random.Random()  # noqa: S311 (jitter, not security)
    owner = uuid.uuid4().hex
    now = int(deps.clock())
    started = deps.monotonic()
    steps.passed(deps.steps, steps.REFRESH_LEASING, due.connection_id)
    try:
        leased = deps.connections.acquire_lease(
            due.connection_id,
            generation=due.generation,
            owner=owner,
            now=now,
            lease_seconds=deps.config.lease_seconds,
        )
    except ConditionFailed:
        return RefreshOutcome.LEASE_BUSY
    except StorageError as exc:
        logger.warning(
            "lease failed",
            extra={"connection_id": due.connection_id, "outcome": RefreshOutcome.TRANSIENT, "reason": exc.code},
        )
        return RefreshOutcome.TRANSIENT
    steps.passed(deps.steps, steps.REFRESH_LEASED, due.connection_id)

    # refresh_window.py: the new pair's writes, and every token request's answer and save, fit before this.
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
) -> RefreshOutcome:
    # The in-flight marker the lease set is this attempt's own unless an earlier attempt left one: then only this
    # attempt's answer can tell what became of the grant, and the marker stays until it does.
    own_marker = leased.in_flight_attempt == owner
    try:
        current = deps.vault.load(leased.secret_arn)
    except StorageError as exc:
        return _transient(leased, owner, deps, rng, reason=f"vault:{exc.code}", retry_after=None, settled=own_marker)

    if deps.vault.sealer is not None:
        try:
            deps.vault.sealer.prepare()
        except StorageError as exc:
            # Without a data key the new pair could not be kept if its save failed: do not rotate it now.
            return _transient(leased, owner, deps, rng, reason=f"kms:{exc.code}", retry_after=None, settled=own_marker)

    grant = _rotate(leased, owner, current, deps, rng=rng, deadline=deadline, guard=guard)
    if isinstance(grant, RefreshOutcome):
        return grant
    steps.passed(deps.steps, steps.REFRESH_ANSWERED, leased.connection_id)

    new_tokens = current.rotated(grant, obtained_at=int(deps.clock()))
    # The old refresh token is dead now: the new pair must be durable before anything else. It goes to its
    # secret; if that write fails, the pair is kept (sealed) on the record at once, and the write is retried
    # until the deadline. The happy path is one write, as the design's budget has it (see _write_pair).
    version_id = str(uuid.uuid4())
    saved, kept, reason = _write_pair(
        leased, owner, new_tokens, deps, version_id=version_id, rng=rng, deadline=deadline, keep=True
    )
    if not saved:
        if kept:
            return _transient(leased, owner, deps, rng, reason=reason, retry_after=None, transition="kept")
        logger.critical(
            "new token pair could be neither stored nor kept: the grant is lost",
            extra={"connection_id": leased.connection_id, "outcome": RefreshOutcome.LOST, "reason": reason},
        )
        # Never left active with a dead token: marked needs_reauth now if the record takes it, else the in-flight
        # marker makes the next refresh of this connection find the grant lost.
        if (
            refusals.end_grant(leased, owner, deps, outcome=RefreshOutcome.LOST, reason=f"lost:{reason}")
            == RefreshOutcome.LOST
        ):
            return RefreshOutcome.LOST
        return _transient(
            leased, owner, deps, rng, reason=f"lost:{reason}", retry_after=None, transition="lost_unmarked"
        )
    if _commit(leased, owner, new_tokens, deps):
        steps.passed(deps.steps, steps.REFRESH_COMMITTED, leased.connection_id)
    if guard is not None:
        guard.refreshed()
    events.announce(deps.events, "refreshed", leased, had_failed=leased.failures > 0)
    logger.info(
        "connection refreshed", extra={"connection_id": leased.connection_id, "outcome": RefreshOutcome.REFRESHED}
    )
    return RefreshOutcome.REFRESHED


def _rotate(
    leased: Connection,
    owner: str,
    current: TokenSet,
    deps: RefreshDeps,
    *,
    rng: random.Random,
    deadline: float,
    guard: GrantGuard | None,
) -> TokenGrant | RefreshOutcome:
    """Send the refresh, if its answer and the new pair's save fit before the deadline (refresh_window.py). Returns
    Smartsheet's new pair, or the outcome of a refresh that got none."""
    own_marker = leased.in_flight_attempt == owner
    within = answer_within(deadline - deps.monotonic())
    if within < deps.smartsheet.timeouts.attempt_seconds:
        return _defer(leased, owner, deps, settled=own_marker, seconds_left=deadline - deps.monotonic())
    steps.passed(deps.steps, steps.REFRESH_SENDING, leased.connection_id)
    try:
        # The connection's own region: its tokens work nowhere else (a record without one is the stack's default).
        region = deps.config.region_of(leased.region)
        return deps.smartsheet.refresh(current.refresh_token, answer_within=within, region=region)
    except NoTimeToRefresh:
        return _defer(leased, owner, deps, settled=own_marker, seconds_left=deadline - deps.monotonic())
    except InvalidGrant as exc:
        return _refused(leased, owner, current, deps, exc, rng=rng, guard=guard)
    except TransientSmartsheetError as exc:
        if exc.outcome_unknown:
            # Smartsheet may have rotated the pair: the attempt stays in flight, and the next refresh of this
            # connection learns what became of the grant (refusals.py).
            logger.warning(
                "refresh answer lost: Smartsheet may have rotated the pair; the next refresh finds out",
                extra={"connection_id": leased.connection_id, "reason": exc.reason},
            )
        settled = own_marker and not exc.outcome_unknown
        return _transient(leased, owner, deps, rng, reason=exc.reason, retry_after=exc.retry_after, settled=settled)
    except SmartsheetError as exc:
        # invalid_client, malformed answers, other 4xx: not the user's fault, so the grant is not given up.
        # invalid_client (incl. 1072, a hash made with the wrong secret) needs an operator: log it as an error.
        level = logger.error if isinstance(exc, InvalidClient) or exc.status in (401, 403) else logger.warning
        level("refresh refused", extra={"connection_id": leased.connection_id, "reason": exc.reason})
        # A malformed 2xx answer may carry a rotation we cannot read: that attempt stays in flight.
        settled = own_marker and exc.status is not None and exc.status >= 400
        return _transient(leased, owner, deps, rng, reason=exc.reason, retry_after=None, settled=settled)


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
            deps.vault.save(
                leased.connection_id,
                tokens,
                known_arn=leased.secret_arn,
                version_id=version_id,
                generation=leased.generation,
            )
            if keep and not kept:  # a fresh pair's first durable write: the window closes here
                steps.passed(deps.steps, steps.REFRESH_STORED, leased.connection_id)
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
                steps.passed(deps.steps, steps.REFRESH_STORED, leased.connection_id)
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


def _commit(leased: Connection, owner: str, tokens: TokenSet, deps: RefreshDeps) -> bool:
    now = int(deps.clock())
    try:
        deps.connections.commit_refresh(
            leased.connection_id,
            generation=leased.generation,
            owner=owner,
            access_expires_at=tokens.expires_at,
            refresh_due_at=refresh_due_at(
                tokens.expires_at, window_seconds=deps.config.refresh_window_seconds, now=now
            ),
            now=now,
        )
    except StorageError as exc:
        # The pair is in its secret. If it is also kept on the record, whoever leases the connection next
        # writes the same version again (a no-op) and commits; if not, the next refresh starts from the
        # stored new pair. Nothing is lost either way.
        logger.warning("commit failed after save", extra={"connection_id": leased.connection_id, "reason": exc.code})
        return False
    return True


def _resume_kept_pair(
    leased: Connection, pending: PendingPair, owner: str, deps: RefreshDeps, *, rng: random.Random, deadline: float
) -> RefreshOutcome:
    """A pair kept on the record (its save failed, or its worker died) goes to its secret before anything else:
    the secret's own refresh token is dead since Smartsheet issued the kept one."""
    if deps.vault.sealer is None:
        logger.error("a kept token pair waits but no key is configured", extra={"connection_id": leased.connection_id})
        return _transient(leased, owner, deps, rng, reason="kept:no_key", retry_after=None, transition="kept")
    try:
        tokens = deps.vault.sealer.open(
            pending.sealed, binding=pending_binding(leased.connection_id, pending.generation, pending.version_id)
        )
    except StorageError as exc:
        return _transient(leased, owner, deps, rng, reason=f"kms:{exc.code}", retry_after=None, transition="kept")
    saved, _, reason = _write_pair(
        leased, owner, tokens, deps, version_id=pending.version_id, rng=rng, deadline=deadline, keep=False
    )
    if not saved:
        return _transient(leased, owner, deps, rng, reason=reason, retry_after=None, transition="kept")
    _commit(leased, owner, tokens, deps)
    events.announce(deps.events, "resumed", leased)
    logger.info(
        "kept token pair stored", extra={"connection_id": leased.connection_id, "outcome": RefreshOutcome.RESUMED}
    )
    return RefreshOutcome.RESUMED


def _transient(
    leased: Connection,
    owner: str,
    deps: RefreshDeps,
    rng: random.Random,
    *,
    reason: str,
    retry_after: float | None,
    transition: str = "transient",
    settled: bool = False,
) -> RefreshOutcome:
    """Keep the connection active and come back to it later: `transition` (lifecycle.TRANSITIONS) says which
    outcome this is. `settled`: this attempt's in-flight marker goes (it is its own, and the request never reached
    Smartsheet or was refused unprocessed)."""
    outcome = outcome_of(transition)
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
            settled=settled,
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
    events.announce(deps.events, transition, leased, reason=reason, attempt=failures)
    return outcome


def _defer(leased: Connection, owner: str, deps: RefreshDeps, *, settled: bool, seconds_left: float) -> RefreshOutcome:
    """Too little time is left for a token request's answer and the new pair's save (refresh_window.py): send
    nothing, give the lease back, leave the connection due."""
    logger.info(
        "refresh not sent: too little time left for the answer and the save",
        extra={
            "connection_id": leased.connection_id,
            "outcome": RefreshOutcome.DEFERRED,
            "seconds_left": round(seconds_left, 1),
        },
    )
    try:
        deps.connections.release(leased.connection_id, owner=owner, settled=settled)
    except StorageError as exc:  # the lease runs out by itself
        logger.warning(
            "could not give the lease back", extra={"connection_id": leased.connection_id, "reason": exc.code}
        )
    return RefreshOutcome.DEFERRED


def _refused(
    leased: Connection,
    owner: str,
    used: TokenSet,
    deps: RefreshDeps,
    exc: InvalidGrant,
    *,
    rng: random.Random,
    guard: GrantGuard | None,
) -> RefreshOutcome:
    """Smartsheet refused the stored refresh token: refusals.py says what that means; act on it."""
    verdict = refusals.judge(leased, owner, used, deps, exc, guard=guard)
    if verdict == refusals.HELD_BACK:
        own_marker = leased.in_flight_attempt == owner  # a refusal is an answer: this attempt rotated nothing
        return _transient(leased, owner, deps, rng, reason=exc.reason, retry_after=None, settled=own_marker)
    if verdict == RefreshOutcome.NEEDS_REAUTH:
        return refusals.end_grant(leased, owner, deps, outcome=RefreshOutcome.NEEDS_REAUTH, reason=exc.reason)
    if verdict == RefreshOutcome.LOST_IN_FLIGHT:
        return refusals.end_grant(
            leased, owner, deps, outcome=RefreshOutcome.LOST_IN_FLIGHT, reason=RefreshOutcome.LOST_IN_FLIGHT
        )
    return RefreshOutcome(verdict)
