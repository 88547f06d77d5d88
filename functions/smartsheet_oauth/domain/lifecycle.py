"""A connection's lifecycle, written down once: its states, the conditional writes that move it (WRITES: each one's
guard and update, which stores/connections.py sends as they are), and each transition (TRANSITIONS: from, to, the
write, the event integrators get and the metric the sweep counts), which the flows follow. A new outcome is a row."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from smartsheet_oauth.domain.vocabulary import BINDING_REFUSED, ConnectionStatus, DetailType, RefreshOutcome


class State(StrEnum):
    """Where a connection is. NEEDS_REAUTH and REVOKED are its record's `status`; an active record is KEPT while a
    rotated pair waits sealed on it, else REFRESHING while a lease is held on it, else ACTIVE. PENDING_BINDING is a
    connect-session sign-in whose pair waits (stores/completions.py) for the integrator to confirm it: nothing is
    written on the record until then."""

    ABSENT = "absent"  # no record: never signed in
    PENDING_BINDING = "pending_binding"
    ACTIVE = "active"
    REFRESHING = "refreshing"
    KEPT = "kept"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"


# -- the conditional writes ---------------------------------------------------------------------------------------
# Attribute names and placeholders the writes share. A write's values are the caller's (:owner, :gen, :now, ...).
LEASE_FREE = "(attribute_not_exists(lease_until) OR lease_until <= :now)"
FENCED = "lease_owner = :owner AND generation = :gen"  # only the lease holder, on the generation it leased
IN_FLIGHT = "in_flight_attempt, in_flight_since"  # the record's in-flight marker (see Connection.in_flight_attempt)
LEASE = "lease_until, lease_owner"
PENDING = "pending_pair, pending_version, pending_generation"
OUT_OF_SWEEP = "refresh_due_at, due_shard"


class Write(NamedTuple):
    """One conditional UpdateItem on a connection record: ConditionExpression `guard`, UpdateExpression SET `set`
    REMOVE `remove`, and REMOVE `settled` too when the attempt's own in-flight marker goes with it."""

    guard: str
    set: str = ""
    remove: str = ""
    settled: str = ""

    def update(self, *, settled: bool = False) -> str:
        remove = ", ".join(part for part in (self.remove, settled and self.settled) if part)
        return " ".join(part for part in (self.set and f"SET {self.set}", remove and f"REMOVE {remove}") if part)


_SIGN_IN_SET = (
    "#status = :active, secret_arn = :arn, email = :email, scopes = :scopes, #region = :region,"
    " access_expires_at = :exp, refresh_due_at = :due, due_shard = :shard,"
    " generation = if_not_exists(generation, :zero) + :one, failures = :zero,"
    " created_at = if_not_exists(created_at, :now), updated_at = :now"
)
_FAILED_SET = (
    "refresh_due_at = :retry, failures = if_not_exists(failures, :zero) + :one, last_error = :reason, updated_at = :now"
)

# fmt: off
WRITES: dict[str, Write] = {
    # A sign-in: active again whatever it was. Bound to an end user (a confirmed connect session) unless another one
    # holds it and it is not revoked; a plain sign-in only where no end user holds it (or it is revoked).
    "sign_in_bound": Write(
        "attribute_not_exists(end_user_id) OR end_user_id = :end_user OR #status = :revoked",
        _SIGN_IN_SET + ", end_user_id = :end_user", f"lease_until, lease_owner, last_error, {PENDING}, {IN_FLIGHT}"),
    "sign_in_unbound": Write(
        "attribute_not_exists(end_user_id) OR #status = :revoked",
        _SIGN_IN_SET, f"lease_until, lease_owner, last_error, {PENDING}, {IN_FLIGHT}, end_user_id"),
    # The refresh lease, marking this attempt in flight unless an earlier one still is (its marker stays).
    "lease": Write(
        f"#status = :active AND generation = :gen AND refresh_due_at <= :now AND {LEASE_FREE}",
        "lease_until = :until, lease_owner = :owner, in_flight_attempt = if_not_exists(in_flight_attempt, :owner),"
        " in_flight_since = if_not_exists(in_flight_since, :now)"),
    "keep": Write(
        FENCED, "pending_pair = :sealed, pending_version = :version, pending_generation = :gen, updated_at = :now"),
    "commit": Write(
        FENCED,
        "access_expires_at = :exp, refresh_due_at = :due, generation = :next, failures = :zero, updated_at = :now,"
        " refreshed_at = :now", f"lease_until, lease_owner, last_error, {PENDING}, {IN_FLIGHT}"),
    # A failed attempt: back later; its own in-flight marker goes when it is settled (it never reached Smartsheet, or
    # was refused unprocessed), else it stays for the next refresh to learn what became of the grant.
    "fail": Write(FENCED, _FAILED_SET, LEASE, settled=IN_FLIGHT),
    "needs_reauth": Write(
        FENCED, "#status = :status, last_error = :reason, updated_at = :now", f"{LEASE}, {OUT_OF_SWEEP}, {IN_FLIGHT}"),
    "release": Write("lease_owner = :owner", "", LEASE, settled=IN_FLIGHT),
    # Operators and the management API.
    "hold": Write(f"attribute_exists(connection_id) AND {LEASE_FREE}", "lease_until = :until, lease_owner = :owner"),
    "revoke": Write(
        "lease_owner = :owner", "#status = :revoked, last_error = :reason, updated_at = :now",
        f"{LEASE}, {OUT_OF_SWEEP}, end_user_id, {IN_FLIGHT}"),
    "request_refresh": Write(
        f"attribute_exists(connection_id) AND #status <> :revoked AND {LEASE_FREE}",
        "#status = :active, refresh_due_at = :now, due_shard = :shard, updated_at = :now"),
    "expedite": Write(
        f"#status = :active AND generation = :gen AND {LEASE_FREE}", "refresh_due_at = :now, due_shard = :shard"),
}
# fmt: on


# -- the transitions ----------------------------------------------------------------------------------------------
class Transition(NamedTuple):
    """One way a connection moves: from `source` to `target` through `write` (None: nothing is written), with the
    event integrators receive (when `event_if` holds: "always", or "failed": only after failed refreshes) and, for a
    refresh's end, its outcome and the sweep's metric."""

    name: str
    source: tuple[State, ...]
    target: State | None  # None: unchanged
    write: str | None
    event: DetailType | None = None
    event_if: str = "always"
    outcome: RefreshOutcome | None = None
    metric: str | None = None


SIGNED_IN = (State.ACTIVE, State.REFRESHING, State.KEPT, State.NEEDS_REAUTH, State.REVOKED)  # a record exists

# fmt: off
TRANSITIONS: tuple[Transition, ...] = (
    # name                 from                             to                   write            event
    # -- signing in: a plain sign-in, or a connect session's held for the integrator to confirm
    Transition("created", (State.ABSENT,), State.ACTIVE, "sign_in_unbound", DetailType.CREATED),
    Transition("reconnected", SIGNED_IN, State.ACTIVE, "sign_in_unbound", DetailType.RECONNECTED),
    Transition("held_for_confirmation", (State.ABSENT, *SIGNED_IN), State.PENDING_BINDING, None),
    Transition("confirmed_created", (State.PENDING_BINDING,), State.ACTIVE, "sign_in_bound", DetailType.CREATED),
    Transition("confirmed_reconnected", (State.PENDING_BINDING,), State.ACTIVE, "sign_in_bound",
               DetailType.RECONNECTED),
    # A reconnect link's sign-in (only the connection's own account gets this far), confirmed: it recovers.
    Transition("confirmed_recovered", (State.PENDING_BINDING,), State.ACTIVE, "sign_in_bound", DetailType.RECOVERED),
    # Reported, never merged: nothing is bound or written, whichever state the account was in.
    Transition("binding_refused", (State.PENDING_BINDING, *SIGNED_IN), None, None, DetailType.BINDING_CONFLICT),
    # -- a refresh: under the lease, it ends in exactly one outcome, counted as its metric. A refresh keeps the metric
    # name it had before its outcome was called "refreshed" (refresh_ok, which alarms and dashboards read), and a grant
    # lost in flight is a lost grant like any other to the refresh-lost alarm (the log's `outcome` tells them apart).
    Transition("lease", (State.ACTIVE,), State.REFRESHING, "lease"),
    Transition("lease_kept", (State.KEPT,), State.KEPT, "lease"),
    Transition("lease_busy", (State.REFRESHING, State.KEPT, State.NEEDS_REAUTH, State.REVOKED), None, None,
               outcome=RefreshOutcome.LEASE_BUSY, metric="refresh_lease_busy"),
    Transition("keep", (State.REFRESHING,), State.KEPT, "keep"),
    Transition("refreshed", (State.REFRESHING, State.KEPT), State.ACTIVE, "commit", DetailType.RECOVERED, "failed",
               RefreshOutcome.REFRESHED, "refresh_ok"),
    Transition("resumed", (State.KEPT,), State.ACTIVE, "commit", DetailType.RECOVERED,
               outcome=RefreshOutcome.RESUMED, metric="refresh_resumed"),
    Transition("kept", (State.KEPT,), State.KEPT, "fail", DetailType.REFRESH_FAILED,
               outcome=RefreshOutcome.KEPT, metric="refresh_kept"),
    Transition("transient", (State.REFRESHING,), State.ACTIVE, "fail", DetailType.REFRESH_FAILED,
               outcome=RefreshOutcome.TRANSIENT, metric="refresh_transient"),
    Transition("deferred", (State.REFRESHING,), State.ACTIVE, "release",
               outcome=RefreshOutcome.DEFERRED, metric="refresh_deferred"),
    # Another worker refreshed meanwhile: nothing is written, the lease runs out.
    Transition("raced", (State.REFRESHING,), None, None, outcome=RefreshOutcome.RACED, metric="refresh_raced"),
    Transition("needs_reauth", (State.REFRESHING,), State.NEEDS_REAUTH, "needs_reauth", DetailType.NEEDS_REAUTH,
               outcome=RefreshOutcome.NEEDS_REAUTH, metric="refresh_needs_reauth"),
    Transition("lost", (State.REFRESHING,), State.NEEDS_REAUTH, "needs_reauth", DetailType.NEEDS_REAUTH,
               outcome=RefreshOutcome.LOST, metric="refresh_lost"),
    # Marking it needs_reauth failed too: the in-flight marker stays, and the next refresh finds the grant lost.
    Transition("lost_unmarked", (State.REFRESHING,), State.ACTIVE, "fail", DetailType.REFRESH_FAILED,
               outcome=RefreshOutcome.LOST, metric="refresh_lost"),
    Transition("lost_in_flight", (State.REFRESHING,), State.NEEDS_REAUTH, "needs_reauth", DetailType.NEEDS_REAUTH,
               outcome=RefreshOutcome.LOST_IN_FLIGHT, metric="refresh_lost"),
    # -- operators and the management API
    Transition("expedite", (State.ACTIVE, State.KEPT), None, "expedite"),  # due now; nothing else changes
    Transition("request_refresh", (State.ACTIVE, State.NEEDS_REAUTH), State.ACTIVE, "request_refresh"),
    Transition("hold", (State.ACTIVE,), State.REFRESHING, "hold"),
    Transition("hold_inactive", (State.NEEDS_REAUTH, State.REVOKED), None, "hold"),
    Transition("let_go", (State.REFRESHING,), State.ACTIVE, "release"),
    # The holder's (hold, hold_inactive): a disconnect, whatever the status.
    Transition("revoke", (State.REFRESHING, State.NEEDS_REAUTH, State.REVOKED), State.REVOKED, "revoke",
               DetailType.REVOKED),
)
# fmt: on

BY_NAME: dict[str, Transition] = {transition.name: transition for transition in TRANSITIONS}


def metric_of(outcome: str) -> str:
    """The sweep's metric for a refresh's outcome: its transition's (several outcomes share one: a grant lost in flight
    is a lost grant to the refresh-lost alarm), else refresh_<outcome>."""
    for transition in TRANSITIONS:
        if transition.outcome == outcome and transition.metric:
            return transition.metric
    return f"refresh_{outcome}"


def event_of(name: str, *, had_failed: bool = False) -> DetailType | None:
    """The event transition `name` sends integrators, if any."""
    transition = BY_NAME[name]
    if transition.event is None or (transition.event_if == "failed" and not had_failed):
        return None
    return transition.event


def status_after(name: str) -> str:
    """The record's status once transition `name` is made (an event's `status`): a lease or a kept pair is an active
    record's; a refused binding binds nothing."""
    target = BY_NAME[name].target
    if target is None or target in (State.ABSENT, State.PENDING_BINDING):
        return BINDING_REFUSED
    if target in (State.REFRESHING, State.KEPT):
        return ConnectionStatus.ACTIVE
    return ConnectionStatus(target.value)


def outcome_of(name: str) -> RefreshOutcome:
    """The refresh outcome transition `name` ends in."""
    outcome = BY_NAME[name].outcome
    if outcome is None:
        raise ValueError(f"{name} ends no refresh")
    return outcome


def detail_type(name: str) -> DetailType:
    """The event transition `name` always sends (for events about a connection not read from its record)."""
    transition = BY_NAME[name]
    if transition.event is None or transition.event_if != "always":
        raise ValueError(f"{name} sends no event of its own")
    return transition.event
