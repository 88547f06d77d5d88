"""Faults switchable at run time (latency, 5xx, 429, requests held as timeouts, scripted outcomes), and the seeded
draw that decides, request by request, which one an API request meets."""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from infra.local.smartsheet_emulator.errors import SERVER_ERROR_CODES
from infra.local.smartsheet_emulator.validation import check_bool, check_number, update_in_place

_SCRIPTED_OUTCOMES: frozenset[int | str] = frozenset({"ok", "timeout", 4001, 4002, 4003, 4004})


@dataclass
class Faults:
    """Faults switchable at run time; `reset_faults()` restores these defaults (no faults)."""

    latency_ms: float = 0.0
    latency_token_only: bool = False
    # Shares (0..1) of API requests answered with a 5xx, a forced 429, or held as a timeout.
    error_rate: float = 0.0
    server_error_codes: tuple[int, ...] = (4004, 4001, 4002)
    rate_limit_rate: float = 0.0
    timeout_rate: float = 0.0
    # How long a timed-out request is held; None holds it until the client gives up (or the server stops).
    timeout_ms: float | None = None
    # True: the request is carried out before the hold, so a refresh rotates although the client never
    # sees the answer (the nastiest real-world case: a lost response).
    timeout_processes: bool = False
    # Errors, 429s and timeouts hit only the token endpoint, not /users/me or revoke.
    token_only: bool = False
    # Scripted outcomes for the next API requests, consumed one per request before any random draw:
    # "ok", "timeout", or an errorCode 4001/4002/4003/4004.
    next_outcomes: list[int | str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_number("latency_ms", self.latency_ms)
        check_bool("latency_token_only", self.latency_token_only)
        for name in ("error_rate", "rate_limit_rate", "timeout_rate"):
            check_number(name, getattr(self, name), high=1.0)
        if self.error_rate + self.rate_limit_rate + self.timeout_rate > 1.0:
            raise ValueError("error_rate + rate_limit_rate + timeout_rate must not exceed 1")
        codes = tuple(self.server_error_codes)
        if not codes or any(code not in SERVER_ERROR_CODES for code in codes):
            raise ValueError(f"server_error_codes must be a non-empty list of {sorted(SERVER_ERROR_CODES)}")
        self.server_error_codes = codes
        if self.timeout_ms is not None:
            check_number("timeout_ms", self.timeout_ms)
        check_bool("timeout_processes", self.timeout_processes)
        check_bool("token_only", self.token_only)
        outcomes = list(self.next_outcomes)
        for outcome in outcomes:
            if isinstance(outcome, bool) or outcome not in _SCRIPTED_OUTCOMES:
                raise ValueError(f"next_outcomes entries must be one of {sorted(map(str, _SCRIPTED_OUTCOMES))}")
        self.next_outcomes = outcomes


class FaultInjector:
    """The live Faults, the seeded random sequence they draw from, and the waits they impose (which end at once when
    the emulator stops: `stopping`)."""

    def __init__(self, faults: Faults, *, seed: int | None, lock: threading.RLock) -> None:
        self.faults = faults
        self._seed = seed
        self._rng = random.Random(seed)
        self._lock = lock
        self.stopping = threading.Event()

    def change(self, **changes: Any) -> Faults:
        """Change some fault fields at once (validated); the object stays the same one. Returns a copy."""
        with self._lock:
            update_in_place(self.faults, changes)
            return dataclasses.replace(self.faults)

    def reset(self) -> None:
        """No faults, and the random sequence starts again from the seed."""
        with self._lock:
            update_in_place(self.faults, dataclasses.asdict(Faults()))
            self._rng = random.Random(self._seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._seed = seed
            self._rng = random.Random(seed)

    def latency_seconds(self, endpoint: str) -> float:
        faults = self.faults
        if faults.latency_ms <= 0 or (faults.latency_token_only and endpoint != "token"):
            return 0.0
        return faults.latency_ms / 1000.0

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self.stopping.wait(seconds)

    def draw(self, endpoint: str) -> int | str | None:
        """None, "timeout", or the errorCode to answer with; one draw per request keeps seeds reproducible."""
        with self._lock:
            faults = self.faults
            if faults.token_only and endpoint != "token":
                return None
            if faults.next_outcomes:
                outcome = faults.next_outcomes.pop(0)
                return None if outcome == "ok" else outcome
            if faults.timeout_rate <= 0 and faults.error_rate <= 0 and faults.rate_limit_rate <= 0:
                return None
            draw = self._rng.random()
            if draw < faults.timeout_rate:
                return "timeout"
            draw -= faults.timeout_rate
            if draw < faults.error_rate:
                return self._rng.choice(faults.server_error_codes)
            draw -= faults.error_rate
            return 4003 if draw < faults.rate_limit_rate else None
