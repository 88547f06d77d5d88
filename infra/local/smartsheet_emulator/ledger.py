"""What the emulator saw, for tests and benchmarks: counts per endpoint and outcome, the requests not yet answered,
and a log of token requests that never holds a secret value."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# The request log is for tests and benchmarks; a cap keeps a long `make dev` session from growing forever.
_TOKEN_LOG_LIMIT = 200_000


class Ledger:
    """Counters and the token-request log, under the emulator's one lock."""

    def __init__(self, *, clock: Callable[[], float], lock: threading.RLock) -> None:
        self._clock = clock
        self._lock = lock
        self._counts: Counter[str] = Counter()
        # API requests received and not yet answered (waiting out latency, being held, being carried out).
        self._in_progress: Counter[str] = Counter()
        self._token_log: deque[dict[str, Any]] = deque(maxlen=_TOKEN_LOG_LIMIT)

    def count(self, endpoint: str, outcome: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1
            self._counts[f"{endpoint}.{outcome}"] += 1

    def count_extra(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def log_token_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry["at"] = self._clock()
            self._token_log.append(entry)

    @contextmanager
    def in_progress(self, operation: str) -> Iterator[None]:
        """Counts `operation` as received and not yet answered while the block runs."""
        with self._lock:
            self._in_progress[operation] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_progress[operation] -= 1

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def unanswered(self) -> Counter[str]:
        with self._lock:
            return +self._in_progress

    def token_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._token_log]

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._token_log.clear()
