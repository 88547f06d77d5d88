"""The sweep's figures for operators, as EMF metrics: refreshes by outcome, dispatched, duration, backlog, lag.

Each figure is printed as soon as it is known, not only when the handler returns: Lambda ends a sweep that reaches
its timeout without letting it return, and CloudWatch then has only what its log already holds. Counts go out as
what was added since the last flush, so their sums over a period stay exact however many flushes a sweep makes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.lifecycle import metric_of
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.flows.sweep import SweepReport
from smartsheet_oauth.platform.observability import add_metric_safely, flush_metrics_now, logger
from smartsheet_oauth.stores.connections import ConnectionStore

# Emitted by every sweep, zeros included: an alarm's ratio and the dashboard need a datapoint, not a gap.
REFRESH_OUTCOMES = (
    RefreshOutcome.REFRESHED,
    RefreshOutcome.TRANSIENT,
    RefreshOutcome.NEEDS_REAUTH,
    RefreshOutcome.LEASE_BUSY,
)
# The backlog is counted on the due index, a page (about 1 MB of entries) at a time: at most this many pages (tens of
# thousands of connections), and a page after the first only while this much time is left. Past either, the figure
# is a lower bound, which is all the backlog alarm (> 0) needs.
BACKLOG_MAX_PAGES = 10
COUNT_MIN_SECONDS_LEFT = 10.0


class SweepFigures:
    """One sweep's metrics, emitted as it goes: `started` first thing (the heartbeat the "sweep did not run" alarm
    waits for), `progress` whenever the sweep hands its report over, `finished` or `skipped` at the end."""

    def __init__(self, *, started_at: int) -> None:
        # The wall-clock time the sweep started: what the backlog and the lag are measured against.
        self._started_at = started_at
        self._sent: Counter[str] = Counter()
        self._lag_sent = False

    def started(self) -> None:
        """sweep_dispatched = 0, printed at once: every invocation leaves a datapoint, even one that goes no further."""
        add_metric_safely("sweep_dispatched", "Count", 0)
        flush_metrics_now()

    def progress(self, report: SweepReport) -> None:
        """The outcomes and dispatches added since the last flush (zeros included), and the lag once, printed now."""
        totals: Counter[str] = Counter({metric_of(outcome): 0 for outcome in REFRESH_OUTCOMES})
        for outcome, count in report.outcomes.items():
            totals[metric_of(outcome)] += count
        for name, count in totals.items():
            add_metric_safely(name, "Count", count - self._sent[name])
            self._sent[name] = count
        add_metric_safely("sweep_dispatched", "Count", report.dispatched - self._sent["sweep_dispatched"])
        self._sent["sweep_dispatched"] = report.dispatched
        if report.oldest_due_at is not None and not self._lag_sent:
            self._lag_sent = True
            add_metric_safely("sweep_lag", "Seconds", max(0, self._started_at - report.oldest_due_at))
        flush_metrics_now()

    def finished(
        self,
        report: SweepReport,
        *,
        connections: ConnectionStore,
        time_left: Callable[[], float],
        queued: int = 0,
    ) -> dict[str, object]:
        """The last outcomes (printed before the backlog is counted: that count reads the due index), then the
        duration and the backlog, flushed by the handler's log_metrics. Returns the figures for its log line.

        The backlog is what was due when the sweep started and still is: connections it did not reach (time ran
        out), plus any another worker was holding. A dispatch passes what it `queued`: those are reached (still due
        until a worker refreshes them), so they are not backlog. A failure to count it is logged and leaves the
        metric out."""
        self.progress(report)
        add_metric_safely("sweep_duration", "Seconds", report.duration_seconds)
        if report.oldest_due_at is None:
            add_metric_safely("sweep_lag", "Seconds", 0)
        figures: dict[str, object] = {}
        try:
            backlog, complete = connections.count_due(
                now=self._started_at,
                max_pages=BACKLOG_MAX_PAGES,
                keep_going=lambda: time_left() > COUNT_MIN_SECONDS_LEFT,
            )
        except StorageError as exc:
            logger.warning("could not count the sweep's backlog", extra={"reason": exc.code})
            return figures
        backlog = max(0, backlog - queued)
        add_metric_safely("sweep_backlog", "Count", backlog)
        figures["backlog"] = backlog
        figures["backlog_complete"] = complete
        return figures

    def skipped(self, *, duration_seconds: float) -> None:
        """Another sweep holds the lease: this invocation did nothing, and says so."""
        add_metric_safely("sweep_skipped", "Count", 1)
        add_metric_safely("sweep_duration", "Seconds", duration_seconds)


def worker_outcomes(report: SweepReport) -> None:
    """A refresh worker's outcomes (zeros included), as the sweep's: the alarms on them do not care which ran them."""
    totals: Counter[str] = Counter({metric_of(outcome): 0 for outcome in REFRESH_OUTCOMES})
    for outcome, count in report.outcomes.items():
        totals[metric_of(outcome)] += count
    for name, count in totals.items():
        add_metric_safely(name, "Count", count)
