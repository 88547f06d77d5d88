"""`make bench` / `python -m tests.bench`: every figure of the performance issue in one table, each with its
target and PASS/FAIL; exits non-zero when a call-count budget fails (ratios are printed, not gating: they
are medians on a shared 2-core machine).

Order: cold starts first, alone (the most noise-sensitive); then the warm part while the sweep's moto is
seeded in another process (warm figures are ratios of interleaved runs, so they share any load fairly);
then package sizes and SnapStart; then the sweep, alone."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import cold_start, fanout, package, store_calls, sweep, warm, world
from tests.bench.report import Row, exit_code, render


def _progress(message: str, started: float) -> None:
    print(f"[bench {time.monotonic() - started:5.0f}s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--cold-runs", type=int, default=21, help="function/floor pairs per figure (median)")
    parser.add_argument("--iterations", type=int, default=200, help="warm requests per latency figure (median)")
    parser.add_argument("--repeats", type=int, default=10, help="warm requests per call-count figure")
    parser.add_argument("--connections", type=int, default=10_000, help="due connections for the sweep")
    parser.add_argument("--window", type=float, default=40.0, help="seconds the measured sweep dispatches")
    parser.add_argument("--pace-seconds", type=float, default=300.0, help="seconds the shared pace is measured over")
    parser.add_argument("--quick", action="store_true", help="small numbers, for trying the bench itself")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.cold_runs, args.iterations, args.repeats, args.connections, args.window = 3, 20, 3, 1000, 15.0
        args.pace_seconds = 30.0

    started = time.monotonic()
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    with world.start_emulator() as emulator, tempfile.TemporaryDirectory(prefix="bench-code-") as workdir:
        _progress(f"1. cold starts ({args.cold_runs} runs)", started)
        found, figures["cold_start"], variants = cold_start.measure(emulator, args.cold_runs, Path(workdir))
        rows += found

        _progress(f"seeding {args.connections:,} due connections in the background", started)
        server = sweep.start(args.connections)
        try:
            _progress(f"2-3. warm calls and latency ({args.iterations} iterations)", started)
            found, figures["warm"] = warm.measure(emulator, repeats=args.repeats, iterations=args.iterations)
            rows += found

            _progress("5-6. package size, import time, SnapStart hooks", started)
            aws = world.local_aws(in_process=False, stack_name="bench-package")
            try:
                specs = world.functions(aws)
                envs = {kind: world.function_env(aws, specs[kind], emulator) for kind in package.FUNCTIONS}
            finally:
                aws.stop()
            compiled = variants[-1].paths if variants else None
            package_rows = package.measure(envs, compiled)
            package_rows += package.snapstart({**envs["callback"], "PATH": os.environ.get("PATH", "")})
        except BaseException:
            server.stop()
            raise

        _progress(f"4. refresh sweep ({args.window:.0f} s window)", started)
        found, figures["sweep"] = sweep.measure(server, args.window)
        rows += found + package_rows

        # Last: its sign-ins take grants of the emulator's first users, which the sweep's seeded connections hold.
        _progress("10. AWS calls per operation for each token store (writes docs/measured-calls.json)", started)
        found, figures["token_stores"] = store_calls.measure(emulator)
        rows += found

    _progress(f"11. refresh fan-out: capacity, dispatch CPU, shared pace over {args.pace_seconds:.0f} s", started)
    # One worker instance refreshes as fast as the sweep's loop did in section 4 (Smartsheet at 100 ms), on Lambda.
    rates = (figures.get("sweep") or {}).get("rates") or {}
    worker_rate = min(rates["concurrency"], rates["CPU"]) if "concurrency" in rates and "CPU" in rates else None
    found, figures["fanout"] = fanout.measure(
        pace_seconds=args.pace_seconds, worker_rate=worker_rate, store_calls=figures.get("token_stores")
    )
    rows += found

    rows.sort(key=lambda row: row.section.split(".")[0])
    print(render(rows))
    total = time.monotonic() - started
    failed = [row.figure for row in rows if row.gating and row.status == "FAIL"]
    print(
        f"\nbench took {total:.0f} s; call-count budgets failed: {len(failed)}"
        + (f" ({'; '.join(failed)})" if failed else "")
    )
    print("* a failed call-count budget: the bench exits non-zero")
    if args.json:
        args.json.write_text(json.dumps({"seconds": total, "figures": figures}, indent=2, default=str) + "\n")
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())
