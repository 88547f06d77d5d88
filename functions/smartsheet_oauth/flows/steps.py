"""The step boundaries of a refresh and of a sign-in's callback, named once, and the seam through which a test or a
benchmark watches a worker pass them. Production passes no watcher: each boundary then costs one `is None` check.

The reliability suite kills a worker process at each boundary (tests/reliability/crashes); `make bench` times the
window between SENDING and STORED (refresh_window.py)."""

from __future__ import annotations

from collections.abc import Callable

# Called with the step and the connection it concerns ("" while a callback does not know its user yet). It runs in
# the worker's thread, at the boundary: whatever it does happens between the two steps.
StepWatcher = Callable[[str, str], None]

# -- a refresh (refresh.py), in order
REFRESH_LEASING = "refresh.leasing"  # about to take the connection's lease
REFRESH_LEASED = "refresh.leased"  # the lease is held (and marks an attempt in flight on the record)
REFRESH_SENDING = "refresh.sending"  # the token request is about to leave: from here Smartsheet may rotate the pair
REFRESH_ANSWERED = "refresh.answered"  # Smartsheet's new pair is in hand, in this process only
REFRESH_STORED = "refresh.stored"  # the new pair is durable: written to its secret, or kept sealed on its record
REFRESH_COMMITTED = "refresh.committed"  # the record says refreshed (generation + 1, lease and marker gone)

# -- a callback (sign_in.py), in order
CALLBACK_STATE_CONSUMED = "callback.state_consumed"  # the state is used up; nothing has reached Smartsheet
CALLBACK_CODE_EXCHANGED = "callback.code_exchanged"  # Smartsheet issued a grant; its pair is in this process only
CALLBACK_STORED = "callback.stored"  # the pair is in the connection's secret; the record is not written yet
CALLBACK_RECORDED = "callback.recorded"  # the connection record is written; the answer is not sent yet

REFRESH_STEPS = (
    REFRESH_LEASING,
    REFRESH_LEASED,
    REFRESH_SENDING,
    REFRESH_ANSWERED,
    REFRESH_STORED,
    REFRESH_COMMITTED,
)
CALLBACK_STEPS = (CALLBACK_STATE_CONSUMED, CALLBACK_CODE_EXCHANGED, CALLBACK_STORED, CALLBACK_RECORDED)


def passed(watcher: StepWatcher | None, step: str, connection_id: str = "") -> None:
    """Tell the watcher, if there is one, that the worker is at `step`."""
    if watcher is not None:
        watcher(step, connection_id)
