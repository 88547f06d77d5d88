"""One scheduled sweep: a heartbeat metric first, then the sweep lease (one sweep at a time), then the dispatch of
the due connections to the refresh queue (flows/fanout.py; or, with no queue, the sweep in this process at the pace
every refresher shares), and its figures flushed as it goes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.flows import fanout
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.flows.sweep import sweep
from smartsheet_oauth.flows.sweep_metrics import SweepFigures
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores.pace import Pace
from smartsheet_oauth.stores.refresh_queue import RefreshQueue
from smartsheet_oauth.stores.sweep_lease import SweepLeases, SweepRunning


def run(
    make_deps: Callable[[], RefreshDeps],
    *,
    leases: SweepLeases,
    pace: Pace,
    owner: str,
    time_left: Callable[[], float],
    safety_margin_seconds: float,
    clock: Callable[[], float] = time.time,
    queue: RefreshQueue | None = None,
) -> dict[str, object]:
    """Sweep once, unless another sweep holds the lease (a late scheduled sweep that meets the next one, or an
    operator's `sweep`): then nothing is refreshed and the answer says `skipped`. The lease lasts as long as
    this invocation may run, so one that dies without releasing it blocks the next for no longer than that.

    A lease that cannot be taken because DynamoDB failed ends the invocation with that error: Lambda does not retry
    it (template.yaml's EventInvokeConfig sends it to FailedSweepQueue), and the failed-sweeps alarm says so.
    (Sweeping without it could double the rate Smartsheet sees.) The heartbeat goes out before anything else,
    reading the app credentials (`make_deps`) included."""
    started, started_at = time.monotonic(), int(clock())
    figures = SweepFigures(started_at=started_at)
    figures.started()
    deps = make_deps()
    try:
        leases.take(owner=owner, now=started_at, seconds=max(1, math.ceil(time_left())))
    except SweepRunning as running:
        figures.skipped(duration_seconds=time.monotonic() - started)
        logger.warning(
            "another sweep is running: this one does nothing",
            extra={"outcome": "skipped", "lease_until": running.lease_until, "other_started_at": running.started_at},
        )
        return {"skipped": True, "reason": "another_sweep_running", "lease_until": running.lease_until}
    try:
        extra: dict[str, object] = {}
        if queue is not None:
            report, extra = fanout.dispatch(
                deps, queue, time_left=time_left, safety_margin_seconds=safety_margin_seconds, progress=figures.progress
            )
        else:
            report = sweep(
                deps,
                time_left=time_left,
                safety_margin_seconds=safety_margin_seconds,
                pace=pace,
                progress=figures.progress,
            )
        return (
            {"skipped": False}
            | report.as_dict()
            | extra
            | figures.finished(
                report,
                connections=deps.connections,
                time_left=time_left,
                queued=report.dispatched if queue is not None else 0,
            )
        )
    finally:
        try:
            leases.release(owner=owner)
        except StorageError as exc:
            logger.warning("could not release the sweep lease; it expires by itself", extra={"reason": exc.code})
