"""The refresh fan-out: a scheduled dispatcher queues due connections, workers refresh what they receive.

- dispatch(): reads every partition of the due index, earliest first (sweep.due_connections, the sweep's own
  reading), and sends the connections to the refresh queue ten at a time: no more than the shared pace can refresh
  before the next dispatch, less what the queue still holds. Workers that fall behind are not flooded; what is not
  sent stays due, and the next dispatch sends it.
- work(): a worker's batch from the queue, refreshed by the sweep's own loop (sweep.refresh_each: the lease, the
  pace every refresher shares, the breaker) and so by refresh.refresh_connection, unchanged. At-least-once delivery
  is harmless: a message names the generation and due time it was read at, and the lease refuses a connection whose
  generation moved or that is not due (a duplicate, a message older than a refresh), or that another worker holds.
  A message this batch could not reach (the pace had no slot in time, the breaker opened) is not a failure: the
  connection is still due and the next dispatch sends it again. Only what cannot be read or whose refresh crashed is
  reported back (ReportBatchItemFailures), so the queue delivers it again and, after maxReceiveCount, dead-letters
  it, where an alarm says so."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.flows.sweep import Breaker, SweepReport, due_connections, refresh_each
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores.connections import DueConnection
from smartsheet_oauth.stores.pace import Pace, Windows
from smartsheet_oauth.stores.refresh_queue import BATCH_SIZE, DueQueue, due_of

# The dispatcher reads the due index in pages of this many per partition.
DISPATCH_PAGE_SIZE = 100


def dispatch_budget(deps: RefreshDeps, *, waiting: int) -> int:
    """How many connections one dispatch may queue: what the scheduled share of the pace refreshes until the next
    dispatch (RefreshSchedule), less what the queue still holds."""
    shape = Windows(deps.config.refresh_rate_per_minute)
    per_minute = shape.sweep_budget * 60.0 / shape.seconds
    return max(0, int(per_minute * deps.config.dispatch_interval_minutes) - waiting)


def dispatch(
    deps: RefreshDeps,
    queue: DueQueue,
    *,
    time_left: Callable[[], float],
    safety_margin_seconds: float,
    progress: Callable[[SweepReport], None] | None = None,
) -> tuple[SweepReport, dict[str, object]]:
    """Queue due connections, earliest first across the due index's partitions, up to dispatch_budget. Returns the
    report (`dispatched`: how many were queued; no outcomes, the workers have those) and the figures for the log."""
    started = time.monotonic()
    report = SweepReport()
    try:
        waiting = queue.waiting()
    except StorageError as exc:
        # Unknown: queue one period's worth at most, as if the queue were empty. The workers' pace still holds.
        logger.warning("could not read the refresh queue's depth", extra={"reason": exc.code})
        waiting = 0
    budget = dispatch_budget(deps, waiting=waiting)
    seen: set[str] = set()
    unsent = 0
    due = (item for item in due_connections(deps, page_size=DISPATCH_PAGE_SIZE, report=report) if _first(item, seen))
    while report.dispatched < budget:
        if time_left() <= safety_margin_seconds:
            report.stopped_early = True
            break
        batch = list(itertools.islice(due, min(BATCH_SIZE, budget - report.dispatched)))
        if not batch:
            break
        if report.oldest_due_at is None:
            report.oldest_due_at = batch[0].refresh_due_at
        try:
            sent = queue.send(batch)
        except StorageError as exc:
            logger.error("could not queue due connections; the next dispatch sends them", extra={"reason": exc.code})
            report.outcomes["error"] += 1
            break
        report.dispatched += sent
        unsent += len(batch) - sent
        if progress is not None and report.dispatched == sent:
            progress(report)
    else:
        report.stopped_early = True  # the budget is spent: what is still due waits for the next dispatch
    report.duration_seconds = time.monotonic() - started
    figures: dict[str, object] = {"queued": report.dispatched, "budget": budget, "queue_waiting": waiting}
    if unsent:
        figures["unsent"] = unsent
        logger.warning("the refresh queue refused some messages; they stay due", extra={"unsent": unsent})
    return report, figures


def _first(item: DueConnection, seen: set[str]) -> bool:
    if item.connection_id in seen:
        return False
    seen.add(item.connection_id)
    return True


def work(
    deps: RefreshDeps,
    records: list[dict[str, Any]],
    *,
    pace: Pace,
    time_left: Callable[[], float],
    safety_margin_seconds: float,
    breaker: Breaker | None = None,
) -> tuple[SweepReport, list[str]]:
    """Refresh the connections of one batch of the queue's messages (Lambda's SQS event `Records`). Returns the report
    and the message ids to report as failed: unreadable ones and those whose refresh crashed. `breaker`: the
    container's, kept across batches (while it is open, the batch's connections are let go: they stay due)."""
    failed: list[str] = []
    message_ids: dict[str, list[str]] = {}
    due: list[DueConnection] = []
    for record in records:
        message_id = str(record.get("messageId", ""))
        item = due_of(str(record.get("body", "")))
        if item is None:
            logger.error("a refresh message that cannot be read goes back to the queue", extra={"reason": "malformed"})
            failed.append(message_id)
            continue
        if item.connection_id not in message_ids:
            due.append(item)
        message_ids.setdefault(item.connection_id, []).append(message_id)
    due.sort(key=lambda item: item.refresh_due_at)
    report = refresh_each(
        deps,
        due,
        time_left=time_left,
        safety_margin_seconds=safety_margin_seconds,
        page_size=max(1, len(due)),
        pace=pace,
        breaker=breaker,
    )
    for connection_id in report.crashed:
        failed.extend(message_ids[connection_id])
    not_reached = len(due) - len(report.tried)
    if not_reached:
        logger.info("connections not reached in this batch stay due for the next dispatch", extra={"n": not_reached})
    return report, failed
