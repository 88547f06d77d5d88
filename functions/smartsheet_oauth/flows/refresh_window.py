"""The one window in which a refresh can lose a grant, and the rule that keeps the broker itself from ever closing a
worker inside it.

Smartsheet rotates the pair when it carries a refresh out, whether or not its answer reaches us. From the moment the
token request leaves until the new pair's first durable write lands (its secret, or sealed on its record), the pair
exists in one process only: a process that dies then (killed, out of memory, its host lost) loses the grant. That
window cannot be closed. What the broker controls is that nothing of its own ends a worker inside it:

1. The Smartsheet call cannot outlast its timeouts: an attempt under way has its answer, or gives up, within
   `Timeouts.attempt_seconds` (connect + read: 13.05 s by default). Its retries re-send only what Smartsheet refused
   unprocessed (429) or never received (a refused connection), after at most REFRESH_RETRY_PAUSE_SECONDS each.
2. No attempt is sent unless its answer and one save of the new pair fit before the refresh's deadline:
   `attempt_seconds + SAVE_SECONDS` (SAVE_SECONDS: one attempt of the AWS client, connect 2 + read 5). The first
   that does not fit is not sent at all (outcome `deferred`: the connection stays due); retries that do not fit are
   not made (smartsheet/client.py counts them from `answer_within`).
3. The deadline is the earlier of the lease's end less LEASE_MARGIN_SECONDS (after it another worker may take the
   connection and refresh with the token ours just spent; the margin covers clocks that disagree) and the
   invocation's end less FINAL_MARGIN_SECONDS (Lambda ends the process at its timeout).
4. So a lease must outlast the margin, the work before the send and the window: the configuration refuses a
   REFRESH_LEASE_SECONDS below MIN_LEASE_SECONDS. The sweep stops dispatching SWEEP_MARGIN_SECONDS before its
   invocation ends, enough for a refresh dispatched at the last moment to lease, send and save; an on-demand refresh
   waits for the pace only as long as leaves it that much (on_demand.py).

The window's width in practice is Smartsheet's answer time plus one secret write (`make bench` measures it)."""

from __future__ import annotations

import math

from smartsheet_oauth.platform.aws import ATTEMPT_SECONDS
from smartsheet_oauth.smartsheet.client import Timeouts

# One attempt at the first durable write of a new pair (PutSecretValue, or the keep on the record if that fails).
SAVE_SECONDS = ATTEMPT_SECONDS
# Writes of a new pair stop this long before the lease runs out, and this long before the invocation ends. (A pair
# whose first save failed is already kept on its record by then: what the final margin cuts short is a retry.)
LEASE_MARGIN_SECONDS = 15.0
FINAL_MARGIN_SECONDS = 2.0
# What comes before the send (the lease's write, the secret's read, now and then a data key), one attempt each.
BEFORE_SEND_SECONDS = 3 * ATTEMPT_SECONDS
# The shortest lease in which a refresh whose work before the send took its longest can still send and save.
MIN_LEASE_SECONDS = math.ceil(LEASE_MARGIN_SECONDS + BEFORE_SEND_SECONDS + Timeouts().attempt_seconds + SAVE_SECONDS)
# The sweep stops dispatching this long before its invocation ends: a refresh dispatched just before has time for
# its work before the send as it usually goes (its lease and secret read take milliseconds; one attempt's time is
# set aside), the window and the final margin. One whose AWS calls are slower than that is deferred, not sent.
SWEEP_BEFORE_SEND_SECONDS = ATTEMPT_SECONDS
SWEEP_MARGIN_SECONDS = math.ceil(
    FINAL_MARGIN_SECONDS + SWEEP_BEFORE_SEND_SECONDS + Timeouts().attempt_seconds + SAVE_SECONDS
)


def window_seconds(timeouts: Timeouts) -> float:
    """The longest a new pair can exist in this process only: one attempt's answer, then one save."""
    return timeouts.attempt_seconds + SAVE_SECONDS


def answer_within(seconds_to_deadline: float) -> float:
    """How long a token request may wait for its answer and still leave one save before the deadline."""
    return seconds_to_deadline - SAVE_SECONDS


def seconds_to_spare(time_left: float, timeouts: Timeouts, *, before_send: float) -> float:
    """Of `time_left` in an invocation, what a refresh may spend waiting (for the pace) and still send: the final
    margin, the work before the send and the window set aside. Negative: not even a refresh started now fits."""
    return time_left - FINAL_MARGIN_SECONDS - before_send - window_seconds(timeouts)
