"""The shared pace at the emulator: `--workers` refresh workers (threads of this process, each batch with its own
view of the shared pace, as each worker container's invocation has) refresh the due connections seeded on moto
server, a batch of the queue's size at a time, through the worker's own path (flows.fanout.work with the refresh
function's real deps). After a warm-up, the token requests the Smartsheet emulator received are counted over
`--seconds` starting on a window of the pace. Writes a JSON result to the file named by the first argument.
Run by tests/bench/fanout.py with the refresh function's environment (tests/bench/sweep_server.py's)."""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The refresh queue's batch size (template.yaml, RefreshWorkerQueueMapping).
BATCH_SIZE = 10
# A worker invocation's time; what it does not reach stays due (the measured time is what counts).
BATCH_SECONDS = 60.0


def token_requests(emulator: str) -> int:
    with urllib.request.urlopen(f"{emulator}/_emulator/stats", timeout=30) as answer:  # noqa: S310 (loopback)
        return int(json.load(answer)["counts"].get("token.refresh", 0))


def run(emulator: str, workers: int, seconds: float, warm_up: float) -> dict[str, Any]:
    import refresh.app
    from smartsheet_oauth import services
    from smartsheet_oauth.config import get_config
    from smartsheet_oauth.flows import fanout
    from smartsheet_oauth.flows.sweep import Breaker
    from smartsheet_oauth.stores.pace import Windows
    from smartsheet_oauth.stores.refresh_queue import message_of

    per_minute = get_config().refresh_rate_per_minute
    due: Iterator[Any] = services.connection_store().due_everywhere(now=int(time.time()), page_size=100)
    lock = threading.Lock()
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    ran_dry = threading.Event()

    def worker() -> None:
        breaker = Breaker()  # each worker container keeps its own
        pace = services.shared_pace()  # and its own view of the pace, across its batches (services.worker_pace)
        while not stop.is_set():
            with lock:
                batch = list(itertools.islice(due, BATCH_SIZE))
            if not batch:
                ran_dry.set()
                return
            records = [{"messageId": str(n), "body": message_of(item)} for n, item in enumerate(batch)]
            deadline = time.monotonic() + refresh.app.SAFETY_MARGIN_SECONDS + BATCH_SECONDS

            def time_left(deadline: float = deadline) -> float:
                return 0.0 if stop.is_set() else deadline - time.monotonic()

            report, _ = fanout.work(
                refresh.app.refresh_deps(),
                records,
                pace=pace,
                time_left=time_left,
                safety_margin_seconds=refresh.app.SAFETY_MARGIN_SECONDS,
                breaker=breaker,
            )
            with lock:
                outcomes.update(dict(report.outcomes))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    # Start counting on a window's edge once the workers are under way: whole windows of the pace are measured.
    shape = Windows(per_minute)
    time.sleep(warm_up)
    time.sleep(max(0.0, shape.end(shape.index(time.time())) - time.time()))
    began, before = time.time(), token_requests(emulator)
    time.sleep(max(0.0, began + seconds - time.time()))
    after, ended = token_requests(emulator), time.time()
    stop.set()
    for thread in threads:
        thread.join(timeout=BATCH_SECONDS)
    return {
        "per_minute": per_minute,
        "workers": workers,
        "seconds": ended - began,
        "requests": after - before,
        "expected": shape.sweep_budget * seconds / shape.seconds,
        "ran_dry": ran_dry.is_set(),
        "outcomes": dict(outcomes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("result")
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--warm-up", type=float, default=10.0)
    args = parser.parse_args()
    result = run(args.emulator, args.workers, args.seconds, args.warm_up)
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
