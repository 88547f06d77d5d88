"""The refresh fan-out's figures: capacity at 1M and 10M connections (from the template's defaults and the pace's
own arithmetic), the dispatcher's and the pace's own cost per connection (the broker's CPU, AWS calls stubbed:
moto on a shared 2-core machine would measure moto), and the shared pace's accuracy with 8 workers taking slots
at once. `python -m tests.bench.fanout` prints them alone; `make bench` adds them to its table."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from smartsheet_oauth.config import (
    MAX_REFRESH_RATE_PER_MINUTE,
    SECRETS_MANAGER_MAX_REFRESH_RATE_PER_MINUTE,
    load_config,
)
from smartsheet_oauth.domain.errors import ConditionFailed
from smartsheet_oauth.flows import fanout
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.stores.connections import DueConnection
from smartsheet_oauth.stores.pace import PaceWindows, SharedPace, Windows

from infra.scripts.sam_translate import load_template
from tests.bench import store_calls as store_calls_module
from tests.bench import sweep, world
from tests.bench.report import INFO, Row, check, render

SECTION = "11. refresh fan-out"
TOKEN_LIFETIME_SECONDS = 7 * 86_400
TARGET_HEADROOM = 2.0
_PARAMETERS = load_template()["Parameters"]
DEFAULTS = {
    "pace": int(_PARAMETERS["RefreshRatePerMinute"]["Default"]),
    "window": int(_PARAMETERS["RefreshWindowSeconds"]["Default"]),
    "interval_minutes": 30,
}
# Ten million connections by raising documented parameters (docs/operations.md, "Scaling to 10 million"): the
# dynamodb store (no secret write per refresh, so the pace may pass Secrets Manager's ceiling of 600), the pace,
# the workers, the due index's partitions.
TEN_MILLION: dict[str, Any] = {
    "TokenStore": "dynamodb",
    "RefreshRatePerMinute": 3600,
    "RefreshWorkerConcurrency": 20,
    "DueShards": 4,
}
# What one refresh holds a worker's slot for: Smartsheet's token answer plus the store's calls. An assumption, not a
# measurement here (moto on a shared 2-core machine measures moto): a generous second.
SECONDS_PER_REFRESH = 1.0
# make cost's SQS requests a refresh costs (infra/scripts/cost.py): the bench checks the fan-out keeps to it.
SQS_PER_REFRESH_BUDGET = 0.3
# One partition of a DynamoDB index takes about 1,000 writes a second; a refresh rewrites one due-index entry.
WRITES_PER_PARTITION = 1000


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


def worker_rows(worker_rate: float | None, figures: dict[str, Any]) -> tuple[list[Row], float, str]:
    """One worker instance's refreshes a second: section 4's measured rate with Smartsheet answering in 100 ms (the
    worker runs the sweep's loop, RefreshConcurrency at once; its AWS calls at Lambda's usual answer times, its CPU
    at 256 MB), or, run alone, RefreshConcurrency at SECONDS_PER_REFRESH a refresh (assumed). Target: the default
    RefreshWorkerConcurrency keeps up with twice the default pace's scheduled share."""
    concurrency = load_config(_BENCH_ENV).refresh_concurrency
    source = "measured, section 4" if worker_rate is not None else f"assumed {SECONDS_PER_REFRESH:g} s a refresh"
    rate = worker_rate if worker_rate is not None else concurrency / SECONDS_PER_REFRESH
    shape = Windows(DEFAULTS["pace"])
    share = shape.sweep_budget / shape.seconds
    workers = int(_PARAMETERS["RefreshWorkerConcurrency"]["Default"])
    figures["worker_rate"] = {"rate": rate, "source": source}
    row = Row(
        SECTION,
        f"worker throughput per instance, Smartsheet at 100 ms ({source}; {workers} workers by default)",
        f"{rate:.1f}/s each, {workers * rate:.1f}/s together",
        f">= 2 x the default pace's share ({TARGET_HEADROOM * share:.1f}/s)",
        check(workers * rate >= TARGET_HEADROOM * share),
    )
    return [row], rate, source


def ten_million(window: int, figures: dict[str, Any], worker_rate: float, source: str) -> list[Row]:
    """10,000,000 connections with TEN_MILLION's parameters: the pace's headroom, the workers' share of their
    capacity, the due index's partitions, and the pace within the ceiling the template sets for the store."""
    connections = 10_000_000
    p = TEN_MILLION
    pace = int(p["RefreshRatePerMinute"])
    label = ", ".join(f"{k}={v}" for k, v in p.items())
    keeps = capacity(pace, window)
    shape = Windows(pace)
    per_second = shape.sweep_budget / shape.seconds  # the workers' scheduled share of the pace
    workers_can = int(p["RefreshWorkerConcurrency"]) * worker_rate
    partitions_can = int(p["DueShards"]) * WRITES_PER_PARTITION
    ceiling = (
        MAX_REFRESH_RATE_PER_MINUTE if p["TokenStore"] == "dynamodb" else SECRETS_MANAGER_MAX_REFRESH_RATE_PER_MINUTE
    )
    figures["ten_million"] = {"keeps": keeps, "per_second": per_second, "workers_can": workers_can}
    return [
        Row(
            SECTION,
            f"capacity at 10,000,000 ({label})",
            f"{keeps:,.0f} kept alive: {keeps / connections:.2f}x",
            f">= {TARGET_HEADROOM:.0f}x",
            check(keeps / connections >= TARGET_HEADROOM),
        ),
        Row(
            SECTION,
            f"10M: pace within the {p['TokenStore']} store's ceiling",
            f"{pace:,}/min",
            f"<= {ceiling:,}/min",
            check(pace <= ceiling),
        ),
        Row(
            SECTION,
            f"10M: workers' load ({p['RefreshWorkerConcurrency']} workers at {worker_rate:.1f}/s each, {source})",
            f"{per_second:.1f}/s of {workers_can:,.0f}/s",
            "<= 50% (2x)",
            check(per_second <= workers_can / TARGET_HEADROOM),
        ),
        Row(
            SECTION,
            f"10M: due-index writes ({p['DueShards']} partitions, ~{WRITES_PER_PARTITION:,}/s each)",
            f"{per_second:.1f}/s of {partitions_can:,}/s",
            "<= 50% (2x)",
            check(per_second <= partitions_can / TARGET_HEADROOM),
        ),
    ]


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


def emulator_pace(per_minute: int, workers: int, seconds: float, warm_up: float = 10.0) -> dict[str, Any]:
    """`workers` refresh workers (tests/bench/pace_run.py) refresh twice as many due connections as the pace allows,
    seeded on moto server with live grants at the emulator (tests/bench/sweep_server.py): the token requests the
    emulator received over `seconds` against the workers' scheduled share of the pace for that time."""
    connections = math.ceil(2 * per_minute * (seconds + warm_up + 2 * Windows(per_minute).seconds) / 60)
    server = sweep.start(connections)
    try:
        info = server.ready()
        env = {
            **info["env"],
            "REFRESH_RATE_PER_MINUTE": str(per_minute),
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": f"{world.FUNCTIONS_DIR}{os.pathsep}{world.ROOT}",
        }
        with tempfile.TemporaryDirectory(prefix="bench-pace-") as workdir:
            result_path = Path(workdir) / "result.json"
            arguments = ["--workers", str(workers), "--seconds", str(seconds), "--warm-up", str(warm_up)]
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.pace_run",
                    str(result_path),
                    "--emulator",
                    info["emulator"],
                    *arguments,
                ],
                cwd=world.ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                check=True,
                timeout=seconds + warm_up + 600,
            )
            result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    finally:
        server.stop()
    return result | {"seeded": connections}


def emulator_pace_row(found: dict[str, Any]) -> Row:
    error = found["requests"] / found["expected"] - 1
    dry = " RAN DRY" if found["ran_dry"] else ""
    return Row(
        SECTION,
        f"shared pace at the emulator, {found['workers']} refresh workers on moto server, {found['per_minute']}/min"
        f" over {found['seconds']:.0f} s ({found['seeded']:,} due{dry})",
        f"{found['requests']:,} token requests of {found['expected']:,.0f} ({error:+.1%})",
        "within +-5%",
        check(abs(error) <= 0.05 and not found["ran_dry"]),
    )


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
        self.calls = 0  # SQS requests: SendMessageBatch and GetQueueAttributes

    def send(self, batch: list[DueConnection]) -> int:
        self.calls += 1
        from smartsheet_oauth.stores.refresh_queue import message_of

        for due in batch:
            message_of(due)
        self.sent += len(batch)
        return len(batch)

    def waiting(self) -> int:
        return 0


_BENCH_ENV = {
    "STATE_TABLE_NAME": "s",
    "CONNECTIONS_TABLE_NAME": "c",
    "SMARTSHEET_CLIENT_ID": "bench",
    "APP_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
    "TOKEN_SECRET_PREFIX": "bench/connections/",
    "OAUTH_SCOPES": "READ_SHEETS",
}


def dispatch_cpu(count: int) -> tuple[float, float]:
    """CPU seconds per connection the dispatcher spends reading, batching and encoding `count` due connections, and
    the SQS requests per connection it makes."""
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
    return spent / count, queue.calls / count


def sqs_rows(dispatch_calls: float, store_calls: dict[str, Any] | None) -> list[Row]:
    """SQS requests per refreshed connection (the dispatcher's, counted above, and the mapping's ReceiveMessage and
    DeleteMessageBatch, one each per batch of the template's BatchSize), and each store's AWS calls per refreshed
    connection through the queue: section 10's count (this run's, or docs/measured-calls.json's) plus that share.
    Targets: make cost's assumption, and the design's minimum plus the same share."""
    mapping = load_template()["Resources"]["RefreshWorkerQueueMapping"]["Properties"]
    per_refresh = dispatch_calls + 2 / int(mapping["BatchSize"])  # the dispatch's one GetQueueAttributes is shared
    if store_calls is None:
        store_calls = json.loads(store_calls_module.MEASURED.read_text(encoding="utf-8"))
        where = f"docs/measured-calls.json, {store_calls.get('measured_at')}"
    else:
        where = "section 10"
    rows = [
        Row(
            SECTION,
            "SQS requests per refreshed connection (dispatch counted; receive and delete per batch of BatchSize)",
            f"{per_refresh:.3f}",
            f"<= {SQS_PER_REFRESH_BUDGET} (make cost's figure)",
            check(round(per_refresh, 3) <= SQS_PER_REFRESH_BUDGET),  # one GetQueueAttributes a dispatch
        )
    ]
    for store, figures in sorted(store_calls["stores"].items()):
        refresh = figures["refresh"]
        own = sum(v for k, v in refresh.items() if k.split(".")[0] in ("dynamodb", "secrets-manager"))
        total = own + per_refresh
        target = store_calls_module.MINIMUM_PER_REFRESH + SQS_PER_REFRESH_BUDGET
        rows.append(
            Row(
                SECTION,
                f"{store}: AWS calls per refreshed connection through the queue ({where} + SQS)",
                f"{own:.2f} + {per_refresh:.3f} = {total:.2f}",
                f"<= {target:g} (the design's {store_calls_module.MINIMUM_PER_REFRESH} + SQS)",
                check(round(total, 3) <= target),
            )
        )
    return rows


def measure(
    *,
    pace_seconds: float = 300.0,
    dispatch_count: int = 100_000,
    worker_rate: float | None = None,
    store_calls: dict[str, Any] | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """`worker_rate`: one worker instance's refreshes a second as section 4 measured it (None: assumed);
    `store_calls`: section 10's figures (None: docs/measured-calls.json's)."""
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
                f">= {TARGET_HEADROOM:.0f}x" if connections == 1_000_000 else "information (10M: next rows)",
                check(headroom >= TARGET_HEADROOM) if connections == 1_000_000 else INFO,
            )
        )
        rows.append(
            Row(
                SECTION,
                f"RefreshRatePerMinute for {TARGET_HEADROOM:.0f}x at {connections:,}",
                f"{needed:,}/min",
                f"<= {SECRETS_MANAGER_MAX_REFRESH_RATE_PER_MINUTE} (secretsmanager), <= {MAX_REFRESH_RATE_PER_MINUTE}"
                " (dynamodb)",
                check(needed <= MAX_REFRESH_RATE_PER_MINUTE),
            )
        )
    speed, rate, source = worker_rows(worker_rate, figures)
    rows.extend(speed)
    rows.extend(ten_million(window, figures, rate, source))
    cpu, dispatch_calls = dispatch_cpu(dispatch_count)
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
    figures["dispatch_sqs_calls_per_connection"] = dispatch_calls
    rows.extend(sqs_rows(dispatch_calls, store_calls))
    found_by: dict[int, dict[str, Any]] = {}
    at_emulator: dict[str, Any] = {}
    runs = [
        threading.Thread(target=lambda p=p: found_by.__setitem__(p, pace_accuracy(p, 8, pace_seconds)))
        for p in (DEFAULTS["pace"], 600)
    ]
    # The same 5 minutes, the default pace, counted where Smartsheet would see it (moto and the emulator in their own
    # process, the workers in another: their CPU is not this one's).
    runs.append(threading.Thread(target=lambda: at_emulator.update(emulator_pace(DEFAULTS["pace"], 8, pace_seconds))))
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    for per_minute in (DEFAULTS["pace"], 600):
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
    figures["pace_at_emulator"] = at_emulator
    rows.append(emulator_pace_row(at_emulator))
    return rows, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.fanout", description=__doc__)
    parser.add_argument("--pace-seconds", type=float, default=300.0, help="the issue's 5-minute window")
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument(
        "--emulator-only", action="store_true", help="only the pace counted at the emulator (8 workers, moto server)"
    )
    args = parser.parse_args(argv)
    if args.emulator_only:
        print(render([emulator_pace_row(emulator_pace(DEFAULTS["pace"], 8, args.pace_seconds))]))
        return 0
    rows, _ = measure(pace_seconds=args.pace_seconds, dispatch_count=args.due)
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
