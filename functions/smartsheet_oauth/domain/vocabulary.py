"""How one connection's refresh can end: the names the sweep counts, its metrics carry (refresh_<outcome>) and the
management API answers from. refresh.py re-exports them."""

from __future__ import annotations

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
# Smartsheet refused the grant after an earlier attempt of ours that may have reached it never came to an end (its
# worker died, or its answer never arrived): that attempt rotated the pair and the new one was never stored. The
# grant is gone because of us; the user must sign in again.
LOST_IN_FLIGHT = "lost_in_flight"
# Not sent: the answer and the new pair's save would not have fitted before the refresh's deadline
# (refresh_window.py). Nothing changed; the connection stays due.
DEFERRED = "deferred"
OUTCOMES = (REFRESHED, TRANSIENT, NEEDS_REAUTH, LEASE_BUSY, RACED, KEPT, RESUMED, LOST, LOST_IN_FLIGHT, DEFERRED)
# Grants the broker lost: each is counted in the refresh_lost metric, whatever the cause, for the alarm on it.
GRANTS_LOST = frozenset({LOST, LOST_IN_FLIGHT})
