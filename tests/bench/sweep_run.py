"""One scheduled refresh invocation, as Lambda would run it, in its own process: the real handler, its AWS calls
counted by botocore hooks, the time its workers spend waiting on moto and on the emulator (socket reads, by peer
port), and its CPU time. Writes a JSON result to the file named by argv[1] (stdout carries the function's logs).
Run by tests/bench/sweep.py with the refresh function's environment."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import socket
import sys
import threading
import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

from tests.bench.counting import AwsCalls
from tests.bench.world import LambdaContext, scheduled_event

_waits: dict[int, float] = defaultdict(float)
_lock = threading.Lock()
_local = threading.local()
_recv_into = socket.socket.recv_into


def _thread_waits() -> dict[int, float]:
    if not hasattr(_local, "waits"):
        _local.waits = defaultdict(float)
    waits: dict[int, float] = _local.waits
    return waits


def _timed_recv_into(self: socket.socket, *args: Any, **kwargs: Any) -> int:
    began = time.perf_counter()
    try:
        return _recv_into(self, *args, **kwargs)
    finally:
        waited = time.perf_counter() - began
        try:
            port = self.getpeername()[1]
        except OSError:
            port = 0
        _thread_waits()[port] += waited
        with _lock:
            _waits[port] += waited


def main(result_path: str) -> int:
    counter = AwsCalls()
    counter.install()
    socket.socket.recv_into = _timed_recv_into  # type: ignore[method-assign,assignment]
    import refresh.app
    import smartsheet_oauth.flows.scheduled_sweep as scheduled_module
    import smartsheet_oauth.flows.sweep as sweep_module
    from smartsheet_oauth.flows import steps

    moto_port = urlsplit(os.environ["AWS_ENDPOINT_URL"]).port
    emulator_port = urlsplit(os.environ["SMARTSHEET_API_BASE_URL"]).port
    at_sweep_end: dict[str, Any] = {}
    handler_module = vars(refresh.app)
    real_sweep = vars(scheduled_module)["sweep"]

    def sweep(*args: Any, **kwargs: Any) -> Any:
        """The sweep loop itself, apart from what the handler does after it (operators' counts)."""
        started, cpu = time.monotonic(), time.process_time()
        report = real_sweep(*args, **kwargs)
        with _lock:
            at_sweep_end.update(
                seconds=time.monotonic() - started,
                cpu=time.process_time() - cpu,
                aws_wait=_waits[moto_port or 0],
                smartsheet_wait=_waits[emulator_port or 0],
                calls=dict(counter.snapshot()),
                busy=dict(busy),
            )
        return report

    vars(scheduled_module)["sweep"] = sweep
    # The invocation's timeout is the measurement window plus the handler's own margin (tests/bench/sweep.py): the
    # sweep dispatches for the whole window, and each refresh it dispatches has the time the window rule asks for.
    real_margin = float(getattr(refresh.app, "SAFETY_MARGIN_SECONDS", 30.0))
    handler_module["SAFETY_MARGIN_SECONDS"] = float(os.environ.get("BENCH_SAFETY_MARGIN", str(real_margin)))

    # The window a grant can be lost in, per refresh: from its token request leaving to its new pair's first durable
    # write (refresh_window.py), timed by the refresh's own step watcher (steps.py) in its worker thread.
    window_seconds: list[float] = []
    sent_at: dict[tuple[int, str], float] = {}

    def watch(step: str, connection_id: str) -> None:
        key = (threading.get_ident(), connection_id)
        if step == steps.REFRESH_SENDING:
            sent_at[key] = time.perf_counter()
        elif step == steps.REFRESH_STORED and key in sent_at:
            width = time.perf_counter() - sent_at.pop(key)
            with _lock:
                window_seconds.append(width)

    real_deps = handler_module["refresh_deps"]
    handler_module["refresh_deps"] = lambda: dataclasses.replace(real_deps(), steps=watch)
    page_size = inspect.signature(sweep_module.sweep).parameters["page_size"].default

    # Each connection's refresh, timed inside its worker thread: busy time and what of it was spent waiting.
    real_refresh = vars(sweep_module)["refresh_connection"]
    busy = {"count": 0, "seconds": 0.0, "aws": 0.0, "smartsheet": 0.0}

    def refresh_connection(*args: Any, **kwargs: Any) -> Any:
        waits = _thread_waits()
        aws_before, smartsheet_before = waits[moto_port or 0], waits[emulator_port or 0]
        started = time.perf_counter()
        try:
            return real_refresh(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            with _lock:
                busy["count"] += 1
                busy["seconds"] += elapsed
                busy["aws"] += waits[moto_port or 0] - aws_before
                busy["smartsheet"] += waits[emulator_port or 0] - smartsheet_before

    vars(sweep_module)["refresh_connection"] = refresh_connection  # the name the sweep calls it by
    timeout = float(os.environ["BENCH_TIMEOUT"])
    started = time.monotonic()
    answer = refresh.app.lambda_handler(scheduled_event(), LambdaContext(timeout_seconds=timeout))
    result = {
        "seconds": time.monotonic() - started,
        "answer": answer,
        "calls": dict(counter.snapshot()),
        "sweep": at_sweep_end,
        "safety_margin": real_margin,
        "page_size": page_size,
        "window_seconds": sorted(window_seconds),
    }
    with open(result_path, "w", encoding="utf-8") as out:
        json.dump(result, out, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
