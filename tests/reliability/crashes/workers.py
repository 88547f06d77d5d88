"""Worker processes that are killed (SIGKILL: no cleanup, no exception handler, no `finally`) at a chosen step
boundary of a refresh or of a callback, and the record each one leaves of what it really did.

A worker runs the broker's own library against the world (moto server, emulator) with a step watcher (steps.py)
that sends every boundary it passes to the test before going on. At the chosen boundary it says so and stops
there; the test kills it. The one boundary a worker cannot stop at is "after the token request is sent" (the
request is in the socket, the worker in recv): there the emulator is told to carry the request out and hold its
answer, and the test kills the worker once the emulator reports the refresh done. Either way the kill is placed by
what happened, never by a sleep."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.flows import steps
from smartsheet_oauth.flows.refresh import refresh_connection
from smartsheet_oauth.flows.sign_in import finish_sign_in
from smartsheet_oauth.stores.connections import ConnectionStore, DueConnection

from infra.local.smartsheet_emulator import SmartsheetEmulator
from tests.reliability.harness import SPAWN, SimClock, WorldSpec, build_deps

# The longest a step may take to come (a worker's start, imports included, on a loaded 2-core machine).
STEP_TIMEOUT_SECONDS = 120.0
# How long a worker waits for a token answer: the emulator holds it until the test kills the worker, in ms.
HELD_ANSWER_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Assignment:
    """What one worker is to do and where it stops. `stop_at` is the step it stops at (a refresh's or a callback's);
    `hold_answer`: it does not stop, the emulator holds the token answer it is waiting for instead."""

    kind: str  # "refresh" or "callback"
    stop_at: str
    connection_id: str = ""
    generation: int = 0
    refresh_due_at: int = 0
    access_expires_at: int = 0
    hold_answer: bool = False
    # The first secret write fails (a Secrets Manager hiccup), so the pair is kept sealed on the record first.
    fail_first_save: bool = False
    query: dict[str, str] = field(default_factory=dict)
    nonce: str = ""


def _stop_here(pipe: Pipe, step: str) -> None:
    pipe.send(("stopped", step))
    threading.Event().wait()  # until the test kills this process


def _watcher(pipe: Pipe, assignment: Assignment) -> steps.StepWatcher:
    def watch(step: str, connection_id: str) -> None:
        pipe.send(("step", step, connection_id))
        if step == assignment.stop_at and not assignment.hold_answer:
            _stop_here(pipe, step)

    return watch


def work(spec: WorldSpec, clock_offset: float, pipe: Pipe) -> None:
    """Child process: build the broker's collaborators, say ready, wait for an assignment, carry it out under the
    watcher. It reports `done` only if the chosen boundary never came (a trial that would then not be placed)."""
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    # A long read timeout (yet one the lease's window admits): an answer the emulator holds is waited for until the
    # test kills this worker.
    deps = build_deps(spec, concurrency=1, clock=SimClock(clock_offset), read_timeout=HELD_ANSWER_WAIT_SECONDS)
    pipe.send(("ready",))
    assignment: Assignment = pipe.recv()
    deps = _with_watcher(deps, _watcher(pipe, assignment))
    if assignment.kind == "refresh":
        if assignment.fail_first_save:
            _fail_first_save(deps)
        due = DueConnection(
            connection_id=assignment.connection_id,
            refresh_due_at=assignment.refresh_due_at,
            access_expires_at=assignment.access_expires_at,
            generation=assignment.generation,
        )
        outcome: str = refresh_connection(due, deps, time_left=lambda: 600.0)
    else:
        signed_in = finish_sign_in(
            assignment.query,
            assignment.nonce,
            config=deps.config,
            states=_state_store(deps),
            smartsheet=deps.smartsheet,
            vault=deps.vault,
            connections=deps.connections,
            now=int(deps.clock()),
            completions=lambda: _completion_store(deps),
            watcher=_watcher(pipe, assignment),
        )
        outcome = str(getattr(signed_in, "connection_id", ""))
    pipe.send(("done", outcome))


def _with_watcher(deps: Any, watcher: steps.StepWatcher) -> Any:
    import dataclasses

    return dataclasses.replace(deps, steps=watcher)


def _state_store(deps: Any) -> Any:
    from smartsheet_oauth.stores.states import StateStore

    connections: ConnectionStore = deps.connections
    return StateStore(connections._client, deps.config.state_table_name, deps.config.state_ttl_seconds)


def _completion_store(deps: Any) -> Any:
    from smartsheet_oauth.stores.completions import CompletionStore

    connections: ConnectionStore = deps.connections
    return CompletionStore(connections._client, deps.config.state_table_name)


def _fail_first_save(deps: Any) -> None:
    real_save = deps.vault.save
    failed = False

    def save(*args: Any, **kwargs: Any) -> str:
        nonlocal failed
        if not failed:
            failed = True
            raise StorageError("vault.put", "ThrottlingException", transient=True)
        result: str = real_save(*args, **kwargs)
        return result

    deps.vault.save = save


@dataclass
class Worker:
    """The test's side of one worker process: its pipe, and what it reported before it died."""

    process: Any
    pipe: Pipe
    reported: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def steps(self) -> list[str]:
        return [message[1] for message in self.reported if message[0] == "step"]

    @property
    def stopped_at(self) -> str | None:
        stopped = [message[1] for message in self.reported if message[0] == "stopped"]
        return stopped[0] if stopped else None

    @property
    def finished(self) -> bool:
        return any(message[0] == "done" for message in self.reported)

    def read(self, until: Callable[[], bool], what: str) -> None:
        """Collect what the worker sends until `until()` holds; fail the trial if the worker never gets there."""
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while not until():
            if self.pipe.poll(0.05):
                try:
                    self.reported.append(self.pipe.recv())
                except EOFError:
                    break
            elif not self.process.is_alive() or time.monotonic() > deadline:
                break
        if not until():
            raise AssertionError(f"the worker never reached {what}; it reported {self.reported}")

    def kill(self) -> None:
        """SIGKILL, then keep what it had sent before it died."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(30)
        while self.pipe.poll(0):
            try:
                self.reported.append(self.pipe.recv())
            except EOFError:
                break
        assert self.process.exitcode == -signal.SIGKILL


def start_workers(spec: WorldSpec, clock_offset: float, count: int) -> list[Worker]:
    """Start `count` workers at once (their imports overlap) and wait until each is ready for its assignment."""
    workers = []
    for _ in range(count):
        ours, theirs = SPAWN.Pipe()
        process = SPAWN.Process(target=work, args=(spec, clock_offset, theirs), daemon=True)
        process.start()
        workers.append(Worker(process, ours))
    for worker in workers:
        worker.read(_ready(worker), "ready")
    return workers


def _ready(worker: Worker) -> Callable[[], bool]:
    return lambda: any(message[0] == "ready" for message in worker.reported)


def run_to(worker: Worker, assignment: Assignment, emulator: SmartsheetEmulator) -> None:
    """Send the assignment, wait until the worker is at its boundary, kill it there."""
    if assignment.hold_answer:
        carried_out = emulator.counts["token.refresh.ok"]
        # The next token request is carried out (the pair rotated) and its answer held until its client is gone.
        emulator.set_faults(next_outcomes=["timeout"], timeout_processes=True, timeout_ms=None)
        worker.pipe.send(assignment)
        worker.read(lambda: assignment.stop_at in worker.steps, assignment.stop_at)
        deadline = time.monotonic() + HELD_ANSWER_WAIT_SECONDS / 2
        while emulator.counts["token.refresh.ok"] == carried_out and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emulator.counts["token.refresh.ok"] == carried_out + 1, "Smartsheet never carried the refresh out"
        worker.kill()
        emulator.reset_faults()
        return
    worker.pipe.send(assignment)
    worker.read(lambda: worker.stopped_at is not None or worker.finished, assignment.stop_at)
    worker.kill()
    assert worker.stopped_at == assignment.stop_at, f"{worker.reported}"
