"""Refresh sweep throughput: N due connections on moto server (seeded by direct moto calls), the emulator's token
endpoint answering after 100 ms, one scheduled invocation of the real handler in its own process.

The invocation gets a short Lambda timeout (a measurement window): the sweep stops dispatching at its safety
margin, as it would at the real timeout, and what it did not reach stays due. The rate it kept is compared with
the ideal, concurrency / 100 ms. Where each worker's time went (Smartsheet, AWS, the rest) is measured too, since
moto answers far slower than DynamoDB (~30 ms of CPU per UpdateItem here), and the capacity of one scheduled
function is projected from it, its CPU time and the sweep's pace limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartsheet_oauth.domain.shards import MAX_DUE_SHARDS
from smartsheet_oauth.flows.refresh_window import SWEEP_MARGIN_SECONDS, window_seconds
from smartsheet_oauth.smartsheet.client import Timeouts

from tests.bench import world
from tests.bench.capacity import Settings, capacity
from tests.bench.counting import describe
from tests.bench.report import Row, check

SECTION = "4. refresh sweep throughput (moto server + emulator, 100 ms token latency)"
TARGET_EFFICIENCY = 0.70
# Four calls per connection (lease, read, write, commit), plus what a sweep makes once (its lease taken and given back)
# and once per pace claim (a share of a window's budget), spread over the sweep's connections: a few per thousand.
PER_CONNECTION_AT_SCALE = 4.02
PER_SWEEP_OPS = ("dynamodb.Query", "dynamodb.Scan")
# Once per container and 5 minutes, whatever the number of connections: the data key a kept pair would be sealed with.
PER_CONTAINER_OPS = ("kms.GenerateDataKey",)
ONE_VCPU_MB = 1769  # Lambda gives a function one vCPU at 1,769 MB, in proportion below
ASSUMED_AWS_CALL_SECONDS = 0.010  # a DynamoDB / Secrets Manager call from Lambda, for the projection only


@dataclass
class Server:
    process: subprocess.Popen[str]
    connections: int
    latency_ms: float
    info: dict[str, Any] | None = None

    def ready(self) -> dict[str, Any]:
        if self.info is None:
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
            if not line:
                self.process.kill()
                raise RuntimeError("the sweep's moto/emulator process did not start")
            self.info = json.loads(line)
        return self.info

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(connections: int = 10_000, latency_ms: float = 100.0) -> Server:
    """Start moto + the emulator and seed them in the background; `measure` waits for them."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.bench.sweep_server",
            "--connections",
            str(connections),
            "--latency-ms",
            str(latency_ms),
        ],
        cwd=world.ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{world.FUNCTIONS_DIR}{os.pathsep}{world.ROOT}"},
    )
    return Server(process, connections, latency_ms)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _emulator_counts(base_url: str) -> Counter[str]:
    with urllib.request.urlopen(f"{base_url}/_emulator/stats", timeout=30) as answer:  # noqa: S310 (loopback)
        stats = json.load(answer)
    return Counter({k: v for k, v in stats["counts"].items() if k in ("token.refresh", "token.code", "users_me")})


def measure(server: Server, window_seconds: float = 45.0) -> tuple[list[Row], dict[str, Any]]:
    try:
        info = server.ready()
        function_env = info["env"]
        # The window is the Lambda timeout less the safety margin (5 s here). The pace limit towards
        # Smartsheet (REFRESH_RATE_PER_MINUTE) is lifted to see the sweep's own rate; its cap is projected below.
        env = {
            **function_env,
            # The sweep dispatches for the window, then stops at its own margin: every refresh it sends has the time
            # its answer and save need (refresh_window.py), as on Lambda.
            "BENCH_TIMEOUT": str(window_seconds + SWEEP_MARGIN_SECONDS),
            "REFRESH_RATE_PER_MINUTE": "100000",
            "REFRESH_RATE_CEILING": "100000",  # the template's ceiling for its store, lifted with the pace
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": f"{world.FUNCTIONS_DIR}{os.pathsep}{world.ROOT}",
        }
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as workdir:
            result_path = Path(workdir) / "result.json"
            server_cpu_before = _process_cpu(server.process.pid)
            subprocess.run(
                [sys.executable, "-m", "tests.bench.sweep_run", str(result_path)],
                cwd=world.ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                check=True,
                timeout=window_seconds + 300,
            )
            result = json.loads(result_path.read_text(encoding="utf-8"))
            result["server_cpu"] = _process_cpu(server.process.pid) - server_cpu_before
        smartsheet = _emulator_counts(info["emulator"])
    finally:
        server.stop()
    return _rows(server, info, function_env, result, smartsheet)


def _rows(
    server: Server, info: dict[str, Any], env: dict[str, str], result: dict[str, Any], smartsheet: Counter[str]
) -> tuple[list[Row], dict[str, Any]]:
    answer, sweep = result["answer"], result["sweep"]
    outcomes = answer["outcomes"]
    refreshed = max(int(outcomes.get("refreshed", 0)), 1)
    concurrency = int(env.get("REFRESH_CONCURRENCY") or 8)
    latency = server.latency_ms / 1000
    seconds = float(sweep["seconds"])
    rate = refreshed / seconds
    ideal_rate = concurrency / latency
    efficiency = rate / ideal_rate

    # Inside each connection's refresh (worker threads): its time, and how much of it waited on a socket.
    busy = sweep["busy"]
    handled = max(int(busy["count"]), 1)
    worker = float(busy["seconds"]) / handled
    aws_wait = float(busy["aws"]) / handled
    smartsheet_wait = float(busy["smartsheet"]) / handled
    other = max(worker - aws_wait - smartsheet_wait, 0.0)
    utilization = float(busy["seconds"]) / (seconds * concurrency)
    net_efficiency = latency / (latency + other)
    cpu = float(sweep["cpu"]) / refreshed
    # moto and the emulator run on this machine too: with the sweep's own CPU they bound the local rate.
    server_cpu = float(result.get("server_cpu") or 0.0) / refreshed
    cores = os.cpu_count() or 1
    machine_rate = cores / (cpu + server_cpu) if cpu + server_cpu > 0 else float("inf")
    # moto and the emulator are one Python process (one GIL) and moto answers one request at a time (DynamoDB's
    # per-item atomicity, infra/local/aws.py): whatever the cores, it serves at most 1 / its CPU per connection.
    server_rate = 1 / server_cpu if server_cpu > 0 else float("inf")

    calls = Counter(sweep["calls"])
    per_sweep = Counter({k: v for k, v in calls.items() if k in PER_SWEEP_OPS})
    per_container = Counter({k: v for k, v in calls.items() if k in PER_CONTAINER_OPS})
    per_connection = Counter({k: v for k, v in calls.items() if k not in PER_SWEEP_OPS + PER_CONTAINER_OPS})
    # The container's one read of the app credentials (cached) is a GetSecretValue too: not a connection's.
    app_credentials_reads = min(1, max(0, per_connection["secrets-manager.GetSecretValue"] - refreshed))
    per_connection_calls = (sum(per_connection.values()) - app_credentials_reads) / refreshed
    page_size = int(result.get("page_size") or 100)
    # A page per page_size dispatched, + 1 to learn the end; and the dispatcher reads every partition of the due index
    # (MAX_DUE_SHARDS, whatever DueShards is now), each at least once: the other partitions' first pages.
    pages = -(-int(answer.get("dispatched") or refreshed) // page_size) + 1 + (MAX_DUE_SHARDS - 1)
    token_calls = sum(smartsheet.values()) / refreshed

    # Projection for one scheduled function on Lambda, from what was measured here and the template's values
    # (its timeout, schedule, window and pace: the measured run lifted the pace to see the sweep's own rate).
    memory = int(info.get("memory") or 256)
    margin = float(result.get("safety_margin") or 30.0)
    settings = Settings.of()
    timeout = settings.timeout_seconds
    rates = {
        "concurrency": concurrency / (latency + round(per_connection_calls) * ASSUMED_AWS_CALL_SECONDS + other),
        "CPU": (memory / ONE_VCPU_MB) / cpu,
        "pace": settings.sweep_pace_per_second,
    }
    binding = min(rates, key=lambda k: rates[k])
    projected = capacity(settings, rates[binding], margin)
    busiest = capacity(Settings.of(RefreshTimeoutSeconds="900", RefreshSchedule="rate(15 minutes)"), rates[binding])
    per_invocation, steady, burst = projected.per_invocation, projected.steady, projected.all_due_at_once

    figures = {
        "connections": server.connections,
        "refreshed": refreshed,
        "concurrency": concurrency,
        "sweep_seconds": seconds,
        "rate": rate,
        "ideal_rate": ideal_rate,
        "efficiency": efficiency,
        "net_efficiency": net_efficiency,
        "worker_ms": worker * 1000,
        "aws_wait_ms": aws_wait * 1000,
        "smartsheet_wait_ms": smartsheet_wait * 1000,
        "other_ms": other * 1000,
        "utilization": utilization,
        "cpu_ms": cpu * 1000,
        "server_cpu_ms": server_cpu * 1000,
        "machine_rate": machine_rate,
        "server_rate": server_rate,
        "rates": rates,
        "binding": binding,
        "per_invocation": per_invocation,
        "steady_every_15_min_timeout_900": busiest.steady,
        "steady": steady,
        "burst": burst,
        "seed_seconds": info["seed_seconds"],
        "outcomes": outcomes,
        "stopped_early": answer.get("stopped_early"),
    }
    widths = [float(width) for width in result.get("window_seconds") or []]
    window_p50, window_p99 = _percentile(widths, 0.50), _percentile(widths, 0.99)
    window_bound = window_seconds(Timeouts())
    figures["window_ms"] = {"p50": window_p50 * 1000, "p99": window_p99 * 1000, "refreshes": len(widths)}
    rate_text = ", ".join(f"{k} {v:.1f}/s" for k, v in rates.items())
    rows = [
        Row(
            SECTION,
            "due connections (seeded by direct moto calls) / refreshed in the window",
            f"{server.connections:,} in {info['seed_seconds']:.0f} s / {refreshed:,} in {seconds:.1f} s"
            f" (stopped at the margin: {answer.get('stopped_early')})",
        ),
        Row(
            SECTION,
            f"sweep rate vs ideal (concurrency {concurrency} / {server.latency_ms:.0f} ms = {ideal_rate:.0f}/s)",
            f"{rate:.1f}/s = {efficiency:.0%} of ideal",
            f">= {TARGET_EFFICIENCY:.0%}",
            check(efficiency >= TARGET_EFFICIENCY),
        ),
        Row(
            SECTION,
            "a worker's time per connection: Smartsheet + AWS (moto) + the rest",
            f"{worker * 1000:.0f} ms = {smartsheet_wait * 1000:.0f} + {aws_wait * 1000:.0f} + {other * 1000:.0f} ms",
        ),
        Row(
            SECTION,
            f"this machine's ceiling: {cores} cores / CPU per connection (the sweep + moto and the emulator)",
            f"{cores} / ({cpu * 1000:.1f} + {server_cpu * 1000:.1f} ms) = {machine_rate:.0f}/s"
            f" = {machine_rate / ideal_rate:.0%} of ideal",
        ),
        Row(
            SECTION,
            "moto's ceiling: one process answering one request at a time / its CPU per connection",
            f"1 / {server_cpu * 1000:.1f} ms = {server_rate:.0f}/s = {server_rate / ideal_rate:.0%} of ideal",
        ),
        Row(
            SECTION,
            "workers busy (idle: dispatch, due-index pages from moto)",
            f"{utilization:.0%} of {concurrency} x {seconds:.1f} s",
        ),
        Row(
            SECTION,
            "same, if AWS answered at once: 100 ms / (100 ms + the rest)",
            f"{net_efficiency:.0%} of ideal",
            f">= {TARGET_EFFICIENCY:.0%}",
            check(net_efficiency >= TARGET_EFFICIENCY),
        ),
        Row(
            SECTION,
            "AWS calls per refreshed connection (at scale)",
            f"{per_connection_calls:.2f} ({describe(per_connection)}"
            + (", less 1 app credentials read per container)" if app_credentials_reads else ")"),
            f"<= {PER_CONNECTION_AT_SCALE} (lease, read, write, commit; + a sweep's lease and pace claims, amortized)",
            check(per_connection_calls <= PER_CONNECTION_AT_SCALE),
            gating=True,
        ),
        Row(
            SECTION,
            "AWS reads per sweep (due index pages)",
            describe(per_sweep),
            f"<= {pages} (a page per {page_size} dispatched, + 1, + the other {MAX_DUE_SHARDS - 1} partitions' first)",
            check(sum(per_sweep.values()) <= pages),
            gating=True,
        ),
        Row(
            SECTION,
            "KMS data keys per sweep (made before Smartsheet is called, reused for 5 minutes)",
            describe(per_container),
            "<= 1",
            check(sum(per_container.values()) <= 1),
            gating=True,
        ),
        Row(
            SECTION,
            "Smartsheet token calls per refreshed connection",
            f"{token_calls:.2f} ({describe(smartsheet, services=True)})",
            "<= 1",
            check(token_calls <= 1.0),
            gating=True,
        ),
        Row(
            SECTION,
            "the window: token request sent -> new pair's first durable write (p50 / p99)",
            f"{window_p50 * 1000:.0f} / {window_p99 * 1000:.0f} ms over {len(widths):,} refreshes"
            f" ({server.latency_ms:.0f} ms of it Smartsheet's)",
            f"<= {window_bound:.2f} s (connect + read timeout + one save)",
            check(bool(widths) and window_p99 <= window_bound),
        ),
        Row(SECTION, "CPU time per connection in the function", f"{cpu * 1000:.1f} ms"),
        Row(
            SECTION,
            f"rate limits of one invocation on Lambda ({memory} MB, AWS calls at 10 ms)",
            f"{rate_text}: {binding} binds",
        ),
        Row(
            SECTION,
            f"projected capacity per invocation (timeout {timeout} s less the {margin:.0f} s margin)",
            f"{per_invocation:,.0f} connections ({binding}-bound)",
        ),
        Row(
            SECTION,
            f"one scheduled function keeps up to (a sweep every {settings.interval_seconds // 60} min)",
            f"{steady:,.0f} connections steady, {burst:,.0f} if all come due at once",
        ),
        Row(
            SECTION,
            "the same with a sweep every 15 min, timeout 900 s (the sweep runs nearly all the time)",
            f"{busiest.steady:,.0f} connections steady, {busiest.all_due_at_once:,.0f} if all come due at once",
        ),
    ]
    return rows, figures


def _percentile(values: list[float], share: float) -> float:
    """The value `share` of the sorted values are at or below (nearest rank); 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(share * len(ordered) + 0.5) - 1))]


if __name__ == "__main__":
    from tests.bench.report import render

    found, figs = measure(start(int(os.environ.get("BENCH_CONNECTIONS", "10000"))))
    print(render(found))
    print(json.dumps(figs, default=str))
