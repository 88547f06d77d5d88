"""The pace of token refreshes sent to Smartsheet: one budget shared by every refresher (the sweep, a retried or
overlapping sweep, on-demand refreshes), kept in the state table as a count per short window."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from smartsheet_oauth.domain.errors import ConditionFailed, PaceExhausted
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Window items share the state table with pending sign-ins and connect sessions. Their keys carry a ':' that a
# state never has (the callback refuses such a state before it touches the table).
KEY_PREFIX = "pace:"
# A window item outlives its window this long before DynamoDB's TTL may delete it (it is never read again).
WINDOW_TTL_SECONDS = 3600
# The sweep claims a fifth of a window's budget at a time: about one DynamoDB write per 6 refreshes at 300 a
# minute, and at most a fifth of a window left unused when a sweep ends.
SWEEP_CLAIM_SHARE = 5
# Slots of every window the sweep leaves to on-demand refreshes (a caller waits for those; the sweep does not).
ON_DEMAND_RESERVED_SHARE = 10


class Pace(Protocol):
    """What the sweep asks before each refresh it dispatches."""

    def take(self, seconds_left: Callable[[], float]) -> bool:
        """Wait for the next slot; False when that wait would run past the time left."""
        ...


class LocalPace:
    """A token bucket in one process: `per_minute` refreshes a minute, after a burst of a tenth of that, so a
    backlog (after an outage, or a first sweep over many sign-ins) is spread out instead of fired at once."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, per_minute / 10.0)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._last = monotonic()

    def take(self, seconds_left: Callable[[], float]) -> bool:
        now = self._monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            wait_seconds = (1.0 - self._tokens) / self._rate
            if wait_seconds >= seconds_left():
                return False
            self._sleep(wait_seconds)
            self._tokens, self._last = 1.0, self._monotonic()
        self._tokens -= 1.0
        return True


@dataclass(frozen=True, slots=True)
class Windows:
    """The shared budget's shape: `budget` refreshes per window of `seconds`, a tenth of a minute's pace each. Over
    any 60 s at most 11 windows' budgets are spent: the pace plus a tenth, as LocalPace's burst allows too."""

    per_minute: int

    @property
    def budget(self) -> int:
        return max(1, self.per_minute // 10)

    @property
    def seconds(self) -> float:
        return 60.0 * self.budget / self.per_minute

    @property
    def sweep_budget(self) -> int:
        """What the sweep may take of one window: all but the on-demand reserve (none when a window holds one)."""
        if self.budget == 1:
            return 1
        return self.budget - math.ceil(self.budget / ON_DEMAND_RESERVED_SHARE)

    def index(self, epoch: float) -> int:
        return math.floor(epoch / self.seconds)

    def end(self, index: int) -> float:
        return (index + 1) * self.seconds


class PaceWindows:
    """The per-window counts in the state table: a claim adds to its window's count and fails past a limit."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def claim(self, *, window: int, wanted: int, limit: int, expires_at: int) -> int:
        """Take up to `wanted` slots of `window` while its count stays within `limit`; how many were taken (0: the
        window is full). A window with fewer slots left than wanted gives what it has."""
        try:
            return self._add(window, wanted, limit, expires_at)
        except ConditionFailed as full:
            used = int(full.item["used"]["N"]) if full.item and "used" in full.item else limit
        left = limit - used
        if left <= 0:
            return 0
        try:
            return self._add(window, min(left, wanted), limit, expires_at)
        except ConditionFailed:
            return 0  # another refresher took the rest meanwhile

    def _add(self, window: int, count: int, limit: int, expires_at: int) -> int:
        with storage("pace.claim"):
            self._client.update_item(
                TableName=self._table,
                Key={"state": {"S": f"{KEY_PREFIX}{window}"}},
                UpdateExpression="ADD used :count SET kind = :kind, expires_at = :ttl",
                ConditionExpression="attribute_not_exists(used) OR used <= :room",
                ExpressionAttributeValues={
                    ":count": {"N": str(count)},
                    ":room": {"N": str(limit - count)},
                    ":kind": {"S": "pace"},
                    ":ttl": {"N": str(expires_at)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        return count


class SharedPace:
    """The sweep's pace (LocalPace, spacing its own dispatches) inside the budget every refresher shares: the sweep
    claims slots of the current window a few at a time and, when its share of a window is spent, waits for the
    next one. On-demand refreshes take one slot each, from the whole window. Windows are counted on the wall clock
    (`clock`), which every Lambda shares; `sleep` must move it."""

    def __init__(
        self,
        windows: PaceWindows,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._windows = windows
        self._shape = Windows(per_minute)
        self._local = LocalPace(per_minute, monotonic, sleep)
        self._clock = clock
        self._sleep = sleep
        self._held_window = -1
        self._held = 0

    def take(self, seconds_left: Callable[[], float]) -> bool:
        """A slot for the sweep. Raises StorageError when the shared count cannot be reached."""
        if not self._local.take(seconds_left):
            return False
        while True:
            window = self._shape.index(self._clock())
            if window == self._held_window and self._held > 0:
                self._held -= 1
                return True
            wanted = max(1, self._shape.sweep_budget // SWEEP_CLAIM_SHARE)
            got = self._claim(window, wanted, self._shape.sweep_budget)
            if got:
                self._held_window, self._held = window, got - 1
                return True
            wait_seconds = self._shape.end(window) - self._clock()
            if wait_seconds >= seconds_left():
                return False
            self._sleep(max(wait_seconds, 0.0))

    def take_one(self, *, max_wait: float) -> None:
        """A slot for an on-demand refresh, waiting at most `max_wait` seconds for the next window. Raises
        PaceExhausted (with the seconds until a slot may be free) or StorageError."""
        deadline = self._clock() + max_wait
        while True:
            window = self._shape.index(self._clock())
            if self._claim(window, 1, self._shape.budget):
                return
            next_window = self._shape.end(window)
            if next_window > deadline:
                raise PaceExhausted(max(1, math.ceil(next_window - self._clock())))
            self._sleep(max(next_window - self._clock(), 0.0))

    def _claim(self, window: int, wanted: int, limit: int) -> int:
        expires_at = math.ceil(self._shape.end(window)) + WINDOW_TTL_SECONDS
        return self._windows.claim(window=window, wanted=wanted, limit=limit, expires_at=expires_at)
