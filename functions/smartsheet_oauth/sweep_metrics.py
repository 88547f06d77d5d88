"""The sweep's figures for operators, as EMF metrics: refreshes by outcome, duration, backlog, connections by status."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

from smartsheet_oauth.connection_store import ConnectionStore
from smartsheet_oauth.errors import StorageError
from smartsheet_oauth.observability import logger, metrics
from smartsheet_oauth.refresh import LEASE_BUSY, NEEDS_REAUTH, REFRESHED, TRANSIENT, SweepReport

# Emitted on every sweep, zeros included: an alarm's ratio and the dashboard need a datapoint, not a gap.
REFRESH_OUTCOMES = (REFRESHED, TRANSIENT, NEEDS_REAUTH, LEASE_BUSY)
CONNECTION_FIGURES = ("active", "needs_reauth", "revoked", "expired", "failing")
# Counting by status reads the whole table: skip it rather than run the invocation into its timeout.
COUNT_MIN_SECONDS_LEFT = 10.0


def record_sweep(
    report: SweepReport,
    *,
    connections: ConnectionStore,
    started_at: int,
    time_left: Callable[[], float],
    clock: Callable[[], float] = time.time,
) -> dict[str, object]:
    """Add the sweep's metrics (flushed by the handler's log_metrics) and return the figures for its log line.

    The backlog is what was due when the sweep started and still is: connections it did not reach (time ran
    out), plus any another worker was holding. A failure to count is logged and leaves that metric out; it
    never fails the sweep."""
    for outcome in REFRESH_OUTCOMES:
        metrics.add_metric(name=f"refresh_{outcome}", unit="Count", value=report.outcomes.get(outcome, 0))
    for outcome, count in report.outcomes.items():
        if outcome not in REFRESH_OUTCOMES:
            metrics.add_metric(name=f"refresh_{outcome}", unit="Count", value=count)
    metrics.add_metric(name="sweep_dispatched", unit="Count", value=report.dispatched)
    metrics.add_metric(name="sweep_duration", unit="Seconds", value=report.duration_seconds)

    figures: dict[str, object] = {}
    try:
        backlog = connections.count_due(now=started_at)
    except StorageError as exc:
        logger.warning("could not count the sweep's backlog", extra={"reason": exc.code})
    else:
        metrics.add_metric(name="sweep_backlog", unit="Count", value=backlog)
        figures["backlog"] = backlog

    if time_left() <= COUNT_MIN_SECONDS_LEFT:
        logger.warning("no time left to count connections by status", extra={"seconds_left": round(time_left(), 1)})
        return figures
    try:
        counts = asdict(connections.count_by_status(now=int(clock())))
    except StorageError as exc:
        logger.warning("could not count connections by status", extra={"reason": exc.code})
        return figures
    for name in CONNECTION_FIGURES:
        metrics.add_metric(name=f"connections_{name}", unit="Count", value=counts[name])
    figures["connections"] = counts
    return figures
