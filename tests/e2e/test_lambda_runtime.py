"""The local Lambda runtime tells a crashed environment from a timed-out one, with real kills of real workers.

A killed worker's response pipe reaches end-of-file before the process can be reaped (the kernel closes a dying
process's files first), so a runtime that asks "is it still running?" at that moment hears "yes" and reports a
timeout. These tests kill workers for real and wait on events, never on sleeps."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from infra.local.gateway import Gateway
from infra.local.lambda_runtime import LOGGED_MARKER, Invocation, LocalFunction
from infra.local.template_model import FunctionSpec, HttpRoute

pytestmark = pytest.mark.e2e

# The worker's argv is [runtime, code dir, handler, request fd, response fd] (see infra/local/lambda_bootstrap.py).
HANDLER = """
import os
import signal
import sys
import threading
import time


def lambda_handler(event, context):
    mode = event.get("mode") or (event.get("queryStringParameters") or {}).get("mode")
    if mode == "busy":  # wait to be killed from outside
        print(f"busy {os.getpid()}", flush=True)
        threading.Event().wait()
    if mode == "hang_up_then_die":  # a dying process: its pipe closes first, its exit status comes later
        os.close(int(sys.argv[4]))
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "exit":
        os._exit(3)
    if mode == "sleep":
        time.sleep(60)
    if mode == "chatty":  # its last line is what the caller reads (the refresh worker's "batch finished")
        for n in range(200):
            print(f"line {n} of {context.aws_request_id}", file=sys.stderr if n % 2 else sys.stdout)
    return {"statusCode": 200, "body": "ok"}
"""

ROUTE = HttpRoute("GET", "/work", "Worker", "Work", "Api", timeout_ms=1_000)


def _function(
    code: Path,
    *,
    timeout: int,
    lines: list[str] | None = None,
    busy: threading.Event | None = None,
    module: str = "worker.app",
) -> LocalFunction:
    spec = FunctionSpec(
        logical_id="Worker",
        name="worker-function",
        handler=f"{module}.lambda_handler",
        code_dir=code,
        runtime="python3.13",
        timeout=timeout,
        memory_size=128,
        architectures=("arm64",),
        environment={},
        routes=(ROUTE,),
    )

    def sink(_function: str, line: str) -> None:
        if lines is not None:
            lines.append(line)
        if busy is not None and line.startswith("busy "):
            busy.set()

    return LocalFunction(spec, {"PATH": os.environ["PATH"]}, max_concurrency=2, log_sink=sink)


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("code")
    (root / "worker").mkdir()
    (root / "worker" / "__init__.py").write_text("", encoding="utf-8")
    (root / "worker" / "app.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
    (root / "worker" / "dies_at_import.py").write_text("import os\n\nos._exit(5)\n", encoding="utf-8")
    return root


def _invoke_in_thread(function: LocalFunction, event: dict[str, str]) -> tuple[threading.Thread, list[Invocation]]:
    result: list[Invocation] = []
    thread = threading.Thread(target=lambda: result.append(function.invoke(event)), daemon=True)
    thread.start()
    return thread, result


def test_a_worker_killed_mid_invocation_is_a_crash_not_a_timeout(code: Path) -> None:
    lines: list[str] = []
    busy = threading.Event()
    function = _function(code, timeout=120, lines=lines, busy=busy)
    try:
        thread, result = _invoke_in_thread(function, {"mode": "busy"})
        assert busy.wait(60), "the handler never started"
        (pid,) = [int(line.split()[1]) for line in lines if line.startswith("busy ")]
        os.kill(pid, signal.SIGKILL)
        thread.join(60)

        (invocation,) = result
        assert (invocation.error_type, invocation.error_message) == (
            "Runtime.ExitError",
            "Runtime exited with error: signal: SIGKILL",
        )
        assert invocation.duration_ms < 60_000  # it was not waited out to the function's timeout
        # The dead environment is gone; the next invocation gets a fresh one.
        assert function.invoke({"mode": "ok"}).payload == {"statusCode": 200, "body": "ok"}
        assert function.cold_starts == 2
    finally:
        function.close()


def test_a_worker_whose_pipe_closes_before_it_can_be_reaped_is_still_a_crash(code: Path) -> None:
    """The kernel's order made slow: the pipe closes a second before the process dies of SIGKILL. A runtime that
    judged before reaping called this a timeout every time."""
    function = _function(code, timeout=120)
    try:
        invocation = function.invoke({"mode": "hang_up_then_die"})

        assert (invocation.error_type, invocation.error_message) == (
            "Runtime.ExitError",
            "Runtime exited with error: signal: SIGKILL",
        )
    finally:
        function.close()


def test_a_worker_that_exits_reports_its_exit_status(code: Path) -> None:
    function = _function(code, timeout=120)
    try:
        invocation = function.invoke({"mode": "exit"})

        assert (invocation.error_type, invocation.error_message) == (
            "Runtime.ExitError",
            "Runtime exited with error: exit status 3",
        )
    finally:
        function.close()


def test_an_invocation_returns_with_all_its_output_in_the_logs(code: Path) -> None:
    function = _function(code, timeout=120)
    try:
        for _ in range(20):
            invocation = function.invoke({"mode": "chatty"})

            assert invocation.ok
            mine = [line for line in function.logs if invocation.request_id in line]
            assert (len(mine), mine[-1]) == (200, f"line 199 of {invocation.request_id}")
        assert not any(LOGGED_MARKER.strip() in line for line in function.logs)  # the end marker is not a log line
    finally:
        function.close()


def test_a_worker_that_dies_during_init_is_an_exit_not_an_init_timeout(code: Path) -> None:
    function = _function(code, timeout=120, module="worker.dies_at_import")
    try:
        invocation = function.invoke({"mode": "ok"})

        assert (invocation.error_type, invocation.error_message) == (
            "Runtime.ExitError",
            "Runtime exited during init with error: exit status 5",
        )
    finally:
        function.close()


def test_a_worker_still_running_at_its_deadline_timed_out(code: Path) -> None:
    function = _function(code, timeout=1)
    try:
        invocation = function.invoke({"mode": "sleep"})

        assert (invocation.error_type, invocation.error_message) == (
            "Sandbox.Timedout",
            "Task timed out after 1.00 seconds",
        )
    finally:
        function.close()


@pytest.fixture
def gateway(code: Path) -> Iterator[Gateway]:
    # The function may run longer than the route waits (120 s against 1 s): API Gateway answers 503 when the route
    # times out, 500 when the function fails.
    function = _function(code, timeout=120)
    local = Gateway([ROUTE])
    local.start({"Worker": function})
    yield local
    local.stop()
    function.close()


def test_over_http_a_crash_is_a_500_and_not_the_timeout_503(gateway: Gateway) -> None:
    answer = requests.get(f"{gateway.url}/work?mode=hang_up_then_die", timeout=60)

    assert (answer.status_code, answer.json()) == (500, {"message": "Internal Server Error"})


def test_over_http_a_route_that_times_out_is_a_503(gateway: Gateway) -> None:
    answer = requests.get(f"{gateway.url}/work?mode=sleep", timeout=60)

    assert (answer.status_code, answer.json()) == (503, {"message": "Service Unavailable"})
