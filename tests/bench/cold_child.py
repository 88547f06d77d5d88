"""One cold start in a fresh interpreter: the floor (import boto3, create the clients) or a function (import its
handler module, run its first invocation). Run as a script by tests/bench/cold_start.py; prints one result line.

Both kinds do the same work before the clock starts (read the event, define the context, wrap the socket), so the
ratio compares only what a cold Lambda container pays for: imports, client creation and the first request. Both
CPU time (what the ratio uses: a loaded machine does not inflate it) and wall time are reported; the time spent
blocked on a socket read (moto or the emulator working on the answer) is measured apart: a warm container waits
exactly as long, so it is not part of the cold start."""

import gc
import json
import os
import socket
import sys
import time

KIND = sys.argv[1]
EVENT = json.loads(os.environ.get("BENCH_EVENT") or "{}")
FLOOR_SERVICES = [s for s in os.environ.get("BENCH_FLOOR_SERVICES", "").split(",") if s]


class Context:
    function_name = "bench"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "00000000-0000-4000-8000-000000000000"

    def __init__(self) -> None:
        self._deadline = time.monotonic() + float(os.environ.get("BENCH_TIMEOUT", "600"))

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self._deadline - time.monotonic()) * 1000)


context = Context()
waited = [0.0]
_recv_into = socket.socket.recv_into


def _timed_recv_into(self: socket.socket, *args: object, **kwargs: object) -> int:
    began = time.perf_counter()
    try:
        return _recv_into(self, *args, **kwargs)  # type: ignore[arg-type]
    finally:
        waited[0] += time.perf_counter() - began


socket.socket.recv_into = _timed_recv_into  # type: ignore[method-assign,assignment]
started, cpu_started = time.perf_counter(), time.process_time()
if KIND == "floor":
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)
    clients = [boto3.client(service, config=config) for service in FLOOR_SERVICES]  # type: ignore[call-overload]
    status = None
else:
    import importlib

    handler = importlib.import_module(f"{KIND}.app").lambda_handler
    answer = handler(EVENT, context)
    status = answer.get("statusCode") if isinstance(answer, dict) else None
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started

# After the clock: which boto3 clients this process made, so the floor can make the same ones.
from botocore.client import BaseClient  # noqa: E402

services = sorted({o.meta.service_model.service_name for o in gc.get_objects() if isinstance(o, BaseClient)})
result = {"kind": KIND, "seconds": elapsed, "cpu": cpu, "waited": waited[0], "status": status, "services": services}
if KIND == "refresh":
    result["answer"] = answer
print("BENCH-RESULT " + json.dumps(result, default=str), file=sys.__stdout__, flush=True)
