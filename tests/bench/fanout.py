"""The refresh fan-out's figures: capacity at 1M and 10M connections (from the template's defaults and the pace's
own arithmetic), the dispatcher's and the pace's own cost per connection (the broker's CPU, AWS calls stubbed:
moto on a shared 2-core machine would measure moto), and the shared pace's accuracy with 8 workers taking slots
at once. `python -m tests.bench.fanout` prints them alone; `make bench` adds them to its table."""

from __future__ import annotations

import argparse
import math
import threading
import time
from typing import Any

from smartsheet_oauth.config import load_config
from smartsheet_oauth.domain.errors import ConditionFailed
from smartsheet_oauth.flows import fanout
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.stores.connections import DueConnection
from smartsheet_oauth.stores.pace import PaceWindows, SharedPace, Windows

from tests.bench.report import Row, check, render

SECTION = "11. refresh fan-out"
TOKEN_LIFETIME_SECONDS = 7 * 86_400
TARGET_HEADROOM = 2.0
DEFAULTS = {"pace": 300, "window": 172_800, "interval_minutes": 30}


def capacity(pace_per_minute: int, window_seconds: int) -> float:
    """Connections the fan-out keeps alive: each needs a refresh every (lifetime - window); the workers refresh at
    the scheduled share of the pace around the clock (a dispatch queues what the pace refreshes until the next)."""
    shape = Windows(pace_per_minute)
    per_minute = shape.sweep_budget * 60.0 / shape.seconds
    return per_minute * (TOKEN_LIFETIME_SECONDS - window_seconds) / 60.0


def pace_needed(connections: int, window_seconds: int, headroom: float) -> int:
    """The RefreshRatePerMinute at which `connections` have `headroom`."""
    pace = 1
    while capacity(pace, window_seconds) < connections * headroom:
        pace = max(pace + 1, math.ceil(pace * 1.01))
    return pace


class _Windows(PaceWindows):
    """The state table's per-window counts in memory, each claim atomic as DynamoDB's conditional ADD is."""

    def __init__(self) -> None:
        self.used: dict[int, int] = {}
        self.calls = 0
        self._lock = threading.Lock()

    def _add(self, window: int, count: int, limit: int, expires_at: int) -> int:
        with self._lock:
            self.calls += 1
            used = self.used.get(window, 0)
            if used > limit - count:
                raise ConditionFailed(
                    "pace.claim", "ConditionalCheckFailedException", transient=False, item={"used": {"N": str(used)}}
                )
            self.used[window] = used + count
            return count


def pace_accuracy(per_minute: int, workers: int, seconds: float) -> dict[str, Any]:
    """`workers` threads, each with its own view of the shared pace (as each worker container has), take slots as
    fast as it gives them for `seconds` of wall time: how many they got against the scheduled share of the pace."""
    windows = _Windows()
    taken = [0] * workers
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        pace = SharedPace(windows, per_minute)
        while pace.take(lambda: deadline - time.monotonic()):
            taken[index] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shape = Windows(per_minute)
    # Whole windows only: the first and last are partly outside the measured time.
    expected = shape.sweep_budget * seconds / shape.seconds
    return {"taken": sum(taken), "expected": expected, "claims": windows.calls}


class _Store:
    """The due index in memory, already in due order: what the dispatcher's own work costs without AWS."""

    def __init__(self, count: int) -> None:
        self.due = [DueConnection(f"c{n}", n, n + 600_000, 1) for n in range(count)]

    def due_everywhere(self, *, now: int, page_size: int, read: Any = None) -> Any:
        return iter(self.due)

    def count_due(self, **_: Any) -> tuple[int, bool]:
        return 0, True


class _Queue:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, batch: list[DueConnection]) -> int:
        from smartsheet_oauth.stores.refresh_queue import message_of

        for due in batch:
            message_of(due)
        self.sent += len(batch)
        return len(batch)

    def waiting(self) -> int:
        return 0


def dispatch_cpu(count: int) -> float:
    """CPU seconds per connection the dispatcher spends reading, batching and encoding `count` due connections."""
    base = {
        "STATE_TABLE_NAME": "s",
        "CONNECTIONS_TABLE_NAME": "c",
        "SMARTSHEET_CLIENT_ID": "bench",
        "APP_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
        "TOKEN_SECRET_PREFIX": "bench/connections/",
        "OAUTH_SCOPES": "READ_SHEETS",
        # A budget above the count: the figure is the dispatcher's work, not the pace's limit.
        "REFRESH_RATE_PER_MINUTE": "100000",
        "REFRESH_SCHEDULE": "rate(60 minutes)",
    }
    deps = RefreshDeps(config=load_config(base), connections=_Store(count), vault=None, smartsheet=None)  # type: ignore[arg-type]
    queue = _Queue()
    started = time.process_time()
    report, _ = fanout.dispatch(deps, queue, time_left=lambda: 900.0, safety_margin_seconds=30.0)
    spent = time.process_time() - started
    assert queue.sent == report.dispatched == count, (queue.sent, report.dispatched)
    return spent / count


def measure(*, pace_seconds: float = 300.0, dispatch_count: int = 100_000) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    pace, window = DEFAULTS["pace"], DEFAULTS["window"]
    keeps = capacity(pace, window)
    figures["capacity_default"] = keeps
    for connections in (1_000_000, 10_000_000):
        headroom = keeps / connections
        needed = pace_needed(connections, window, TARGET_HEADROOM)
        rows.append(
            Row(
                SECTION,
                f"capacity at {connections:,} connections, defaults (pace {pace}/min)",
                f"{keeps:,.0f} kept alive: {headroom:.2f}x",
                f">= {TARGET_HEADROOM:.0f}x",
                check(headroom >= TARGET_HEADROOM),
            )
        )
        rows.append(
            Row(
                SECTION,
                f"RefreshRatePerMinute for {TARGET_HEADROOM:.0f}x at {connections:,}",
                f"{needed:,}/min",
                "<= 600 (the parameter's maximum)",
                check(needed <= 600),
            )
        )
    cpu = dispatch_cpu(dispatch_count)
    figures["dispatch_cpu_per_connection"] = cpu
    rate = 1 / cpu
    rows.append(
        Row(
            SECTION,
            f"dispatch: broker CPU per connection ({dispatch_count:,} due, AWS stubbed)",
            f"{cpu * 1e6:.1f} us ({rate:,.0f}/s)",
            "100,000 due queued in < 60 s of CPU",
            check(cpu * dispatch_count < 60),
        )
    )
    found_by: dict[int, dict[str, Any]] = {}
    runs = [
        threading.Thread(target=lambda p=p: found_by.__setitem__(p, pace_accuracy(p, 8, pace_seconds)))
        for p in (300, 600)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    for per_minute in (300, 600):
        found = found_by[per_minute]
        figures[f"pace_{per_minute}"] = found
        error = found["taken"] / found["expected"] - 1
        rows.append(
            Row(
                SECTION,
                f"shared pace, 8 workers, {per_minute}/min over {pace_seconds:.0f} s (claims {found['claims']})",
                f"{found['taken']} of {found['expected']:.0f} ({error:+.1%})",
                "within +-5%",
                check(abs(error) <= 0.05),
            )
        )
    return rows, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.fanout", description=__doc__)
    parser.add_argument("--pace-seconds", type=float, default=300.0, help="the issue's 5-minute window")
    parser.add_argument("--due", type=int, default=100_000)
    args = parser.parse_args(argv)
    rows, _ = measure(pace_seconds=args.pace_seconds, dispatch_count=args.due)
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
