"""The broker's words, each named once: a connection's status, how a refresh ends, the events integrators receive."""

from __future__ import annotations

from enum import StrEnum


class ConnectionStatus(StrEnum):
    """A connection record's `status`: what the API shows and filters by, and what the admin CLI counts."""

    ACTIVE = "active"
    # Smartsheet no longer honours the grant (or the broker lost it): out of the sweep until its user signs in again.
    NEEDS_REAUTH = "needs_reauth"
    # Disconnected (its grant revoked at Smartsheet, its secret scheduled for deletion, its binding ended).
    REVOKED = "revoked"


class RefreshOutcome(StrEnum):
    """How one connection's refresh ends: what the sweep counts, the logs and the admin CLI say, and what decides the
    management API's answer (domain/lifecycle.py: each outcome's transition, event and metric)."""

    REFRESHED = "refreshed"
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
    # Smartsheet refused the grant after an earlier attempt of ours that may have reached it never came to an end (its
    # worker died, or its answer never arrived): that attempt rotated the pair and the new one was never stored. The
    # grant is gone because of us; the user must sign in again.
    LOST_IN_FLIGHT = "lost_in_flight"
    # Not sent: the answer and the new pair's save would not have fitted before the refresh's deadline
    # (flows/refresh_window.py). Nothing changed; the connection stays due.
    DEFERRED = "deferred"


# Not how a refresh ended but the sweep's count of what ended none: a refresh that crashed, or a page of the due index
# or a slot of the pace that could not be had (metric refresh_error).
SWEEP_ERROR = "error"


class DetailType(StrEnum):
    """The `detail-type` of each connection event on EventBridge: one per change integrators may act on."""

    CREATED = "Connection Created"
    RECONNECTED = "Connection Reconnected"
    REFRESH_FAILED = "Connection Refresh Failed"
    NEEDS_REAUTH = "Connection Needs Reauth"
    RECOVERED = "Connection Recovered"
    REVOKED = "Connection Revoked"
    BINDING_CONFLICT = "Connection Binding Conflict"


# The `status` a binding-conflict event carries: nothing was bound, so no connection's status applies.
BINDING_REFUSED = "refused"
