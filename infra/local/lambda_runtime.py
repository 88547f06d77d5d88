"""Local Lambda: each template function runs in its own worker processes, with exactly its own environment."""

# Like Lambda, a function gets execution environments (processes here): each imports the handler once
# (the cold start, with the function's environment variables) and then serves one invocation at a time;
# more concurrent invocations start more environments. Nothing of the caller's process (sys.modules,
# os.environ, moto's state) leaks into a handler. What runs inside a worker is lambda_bootstrap.py.

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from infra.local.template_model import FunctionSpec

log = logging.getLogger("infra.local.lambda")

# lambda_bootstrap.LOGGED_MARKER (the worker imports nothing of ours): the end of an invocation's output.
LOGGED_MARKER: Final = "\x1elocal-runtime:logged "
# How long an answered invocation waits for the rest of its output to be read (it was written before the answer).
LOGS_GRACE_SECONDS: Final = 2.0
INIT_TIMEOUT_SECONDS: Final = 30.0  # Lambda allows 10 s; a busy 2-core CI box needs more for imports

_BOOTSTRAP: Final = Path(__file__).resolve().with_name("lambda_bootstrap.py")

LogSink = Callable[[str, str], None]  # (function logical id, one line the function printed)


@dataclass(frozen=True)
class Invocation:
    """What one invocation gave back, the way Lambda reports it to its caller."""

    request_id: str
    payload: Any = None  # the handler's return value (JSON-decoded) when ok
    error_type: str | None = None  # e.g. "KeyError", "Runtime.ImportModuleError", "Sandbox.Timedout"
    error_message: str | None = None
    duration_ms: float = 0.0
    cold_start: bool = False

    @property
    def ok(self) -> bool:
        return self.error_type is None


class FunctionError(RuntimeError):
    """An invocation that ended in a function error (unhandled exception, timeout, init failure)."""

    def __init__(self, function: str, invocation: Invocation) -> None:
        super().__init__(f"{function}: {invocation.error_type}: {invocation.error_message}")
        self.invocation = invocation


def _default_sink(function: str, line: str) -> None:
    log.info("[%s] %s", function, line)


class _HungUp(Exception):
    """The worker closed its end of the response pipe: it has exited, or is exiting."""


def _exit_description(returncode: int) -> str:
    """How Lambda words a runtime's end: 'signal: SIGKILL' for a killed worker, 'exit status 3' for an exit."""
    if returncode < 0:
        try:
            return f"signal: {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal: {-returncode}"
    return f"exit status {returncode}"


class _Worker:
    """One execution environment: a Python process that imported the handler and waits for events."""

    def __init__(self, spec: FunctionSpec, env: Mapping[str, str], sink: LogSink, keep: deque[str]) -> None:
        self.spec = spec
        request_read, self._request_write = os.pipe()
        self._response_read, response_write = os.pipe()
        command = [
            sys.executable,
            "-I",  # isolated: no PYTHON* variables, no user site, no script folder on sys.path
            "-u",
            str(_BOOTSTRAP),
            str(spec.code_dir),
            spec.handler,
            str(request_read),
            str(response_write),
        ]
        self.process = subprocess.Popen(
            command,
            cwd=spec.code_dir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(request_read, response_write),
        )
        os.close(request_read)
        os.close(response_write)
        self._requests = os.fdopen(self._request_write, "wb", buffering=0)
        self._responses = os.fdopen(self._response_read, "rb", buffering=0)
        self._buffer = b""
        self._logged = threading.Condition()
        self._last_logged = ""  # the request id of the latest invocation whose output the pump has read
        self._reader = threading.Thread(
            target=self._pump_output,
            args=(self.process.stdout, sink, keep),
            name=f"lambda-log-{spec.logical_id}",
            daemon=True,
        )
        self._reader.start()
        self.initialized = False

    def _pump_output(self, stream: IO[bytes] | None, sink: LogSink, keep: deque[str]) -> None:
        if stream is None:
            return
        with contextlib.suppress(ValueError, OSError):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line.startswith(LOGGED_MARKER):
                    with self._logged:
                        self._last_logged = line.removeprefix(LOGGED_MARKER)
                        self._logged.notify_all()
                    continue
                keep.append(line)
                sink(self.spec.logical_id, line)

    def wait_logged(self, request_id: str, timeout: float) -> bool:
        """Wait until the pump has read all the invocation's output (the bootstrap's marker after it)."""
        with self._logged:
            return self._logged.wait_for(lambda: self._last_logged == request_id, timeout=timeout)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        try:
            message = self._read_message(time.monotonic() + timeout)
        except _HungUp:
            returncode = self.reap()
            description = f"Runtime exited during init with error: {_exit_description(returncode)}"
            return {"type": "init_error", "errorType": "Runtime.ExitError", "errorMessage": description}
        if message is None:
            return {"type": "init_error", "errorType": "Runtime.InitTimeout", "errorMessage": "init timed out"}
        self.initialized = message.get("type") == "ready"
        return message

    def send(self, message: Mapping[str, Any]) -> None:
        self._requests.write(json.dumps(message).encode() + b"\n")

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        """The worker's next message, or None when the deadline passes; _HungUp when the worker closed the pipe.

        A dead worker's pipe reaches end-of-file before the process can be reaped (the kernel closes a dying
        process's files before it becomes a zombie), so "no answer" and "not reapable yet" together do not mean
        "still running": the end-of-file is what tells a crash from a timeout."""
        while b"\n" not in self._buffer:
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._responses], [], [], remaining)
            if not ready:
                return None
            chunk = self._responses.read(65536)
            if not chunk:
                raise _HungUp
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def receive(self, deadline: float) -> dict[str, Any] | None:
        return self._read_message(deadline)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def reap(self, grace: float = 3.0) -> int:
        """Wait for the worker to end (killing it after `grace` seconds) and collect its exit status. A worker
        that hung up gets the grace to finish dying, so its status is the crash's own, not our kill's."""
        with contextlib.suppress(OSError):
            self._requests.close()
        try:
            returncode = self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait(timeout=3)
        with contextlib.suppress(OSError):
            self._responses.close()
        self._reader.join(timeout=3)
        return returncode

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        self.reap()


class LocalFunction:
    """A template function served by a pool of worker processes (Lambda's execution environments)."""

    def __init__(
        self,
        spec: FunctionSpec,
        env: Mapping[str, str],
        *,
        max_concurrency: int = 8,
        log_sink: LogSink | None = None,
        log_lines: int = 5000,
    ) -> None:
        self.spec = spec
        self.env = dict(env)
        self.max_concurrency = max_concurrency
        self._sink = log_sink or _default_sink
        self.logs: deque[str] = deque(maxlen=log_lines)
        self._idle: list[_Worker] = []
        self._count = 0
        self._closed = False
        self._available = threading.Condition()
        self.invocations = 0
        self.cold_starts = 0

    @property
    def name(self) -> str:
        return self.spec.logical_id

    def prewarm(self) -> None:
        """Start one environment ahead of the first request (like provisioned concurrency)."""
        with self._available:
            if self._count >= self.max_concurrency or self._closed:
                return
            self._count += 1
        worker, failure = self._start_worker()
        with self._available:
            if worker is None or self._closed:
                self._count -= 1
            else:
                self._idle.append(worker)
            self._available.notify()
        if failure is not None:
            log.warning("%s failed to start: %s", self.name, failure.error_message)
        if worker is not None and self._closed:
            worker.stop()

    def _start_worker(self) -> tuple[_Worker | None, Invocation | None]:
        worker = _Worker(self.spec, self.env, self._sink, self.logs)
        ready = worker.wait_ready(INIT_TIMEOUT_SECONDS)
        if ready.get("type") == "ready":
            with self._available:
                self.cold_starts += 1
            return worker, None
        worker.stop(kill=True)
        failure = Invocation(
            request_id="",
            error_type=str(ready.get("errorType", "Runtime.InitError")),
            error_message=str(ready.get("errorMessage", "the function failed to initialize")),
        )
        return None, failure

    def _acquire(self) -> tuple[_Worker | None, Invocation | None, bool]:
        with self._available:
            while True:
                if self._closed:
                    raise RuntimeError(f"{self.name} is shut down")
                if self._idle:
                    return self._idle.pop(), None, False
                if self._count < self.max_concurrency:
                    self._count += 1
                    break
                self._available.wait()
        worker, failure = self._start_worker()
        if worker is None:
            self._release(None)
        return worker, failure, True

    def _release(self, worker: _Worker | None) -> None:
        with self._available:
            if worker is not None and worker.alive and not self._closed:
                self._idle.append(worker)
            else:
                self._count -= 1
                if worker is not None:
                    threading.Thread(target=worker.stop, kwargs={"kill": True}, daemon=True).start()
            self._available.notify()

    def invoke(self, event: Any, *, timeout: float | None = None) -> Invocation:
        """Run the handler on `event` in a free environment; never raises for function errors."""
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        worker, failure, cold = self._acquire()
        if worker is None:
            assert failure is not None
            return Invocation(
                request_id=request_id,
                error_type=failure.error_type,
                error_message=failure.error_message,
                cold_start=True,
            )
        limit = float(self.spec.timeout if timeout is None else min(timeout, self.spec.timeout))
        with self._available:
            self.invocations += 1
        deadline_ms = int(time.time() * 1000 + self.spec.timeout * 1000)
        log.debug("START RequestId: %s (%s)", request_id, self.name)
        reply: dict[str, Any] | None = None
        crashed = False
        try:
            worker.send({"event": event, "request_id": request_id, "deadline_ms": deadline_ms})
            reply = worker.receive(time.monotonic() + limit)
        except (_HungUp, OSError, ValueError):  # end-of-file, a broken pipe, or a line that is not a message
            crashed = True
        duration = (time.monotonic() - started) * 1000
        if reply is None:
            # Lambda ends an environment whose invocation timed out or crashed; so do we. Reaped first, then
            # judged: only a worker still running at the deadline timed out.
            if crashed:
                message = f"Runtime exited with error: {_exit_description(worker.reap())}"
                error_type = "Runtime.ExitError"
            else:
                worker.stop(kill=True)
                message = f"Task timed out after {limit:.2f} seconds"
                error_type = "Sandbox.Timedout"
            self._release(None)
            log.error("%s RequestId: %s Error: %s", self.name, request_id, message)
            return Invocation(request_id, None, error_type, message, duration, cold)
        # Its output is read on another thread: all of it is in the logs before the invocation returns.
        worker.wait_logged(request_id, LOGS_GRACE_SECONDS)
        self._release(worker)
        log.debug("REPORT RequestId: %s Duration: %.2f ms (%s)", request_id, duration, self.name)
        if reply.get("type") == "result":
            return Invocation(request_id, reply.get("payload"), None, None, duration, cold)
        return Invocation(
            request_id,
            None,
            str(reply.get("errorType", "Unhandled")),
            str(reply.get("errorMessage", "")),
            duration,
            cold,
        )

    def close(self) -> None:
        with self._available:
            self._closed = True
            idle, self._idle = self._idle, []
            self._available.notify_all()
        for worker in idle:
            worker.stop()
