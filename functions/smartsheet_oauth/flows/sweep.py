"""The refresh sweep: due connections, earliest first, each refreshed under its lease (refresh.py), at most
`refresh_concurrency` at once and at the pace, until the time budget or the breaker stops it."""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.flows.refresh import GrantGuard, refresh_connection
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores.connections import DueConnection
from smartsheet_oauth.stores.pace import LocalPace, Pace

# Outcomes that mean "Smartsheet or AWS is struggling": a long run of them stops the sweep (see sweep()).
_STRUGGLING = frozenset({RefreshOutcome.TRANSIENT, RefreshOutcome.KEPT, RefreshOutcome.LOST})
# Outcomes that say nothing of how Smartsheet and AWS are doing now (a refresh not sent for lack of time, a loss in
# flight found out now but caused earlier, a lease another refresher holds or a duplicate message the lease
# refused): they neither extend nor end a run of struggling ones.
_NEUTRAL = frozenset({RefreshOutcome.DEFERRED, RefreshOutcome.LOST_IN_FLIGHT, RefreshOutcome.LEASE_BUSY})
# This many struggling outcomes in a row stop the sweep: an outage is waited out, not hammered.
BREAKER_THRESHOLD = 25
# An open breaker of a refresh worker's container lets its messages go (they stay due) for this long.
BREAKER_COOL_DOWN_SECONDS = 300.0
DUE_QUERY_ATTEMPTS = 3
# A sweep hands its figures over (to be flushed as metrics) at least this often: one cut short by its timeout loses
# at most this much of them.
PROGRESS_SECONDS = 30.0


@dataclass(slots=True)
class SweepReport:
    """What one sweep did: outcomes by kind, how many it dispatched, and why it stopped."""

    # Every outcome is present, zeros included: each becomes a metric, and alarms need datapoints, not gaps.
    outcomes: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(RefreshOutcome, 0)))
    dispatched: int = 0
    stopped_early: bool = False
    breaker_open: bool = False
    duration_seconds: float = 0.0
    # The earliest refresh time among the due connections the sweep found first (None: nothing was due).
    oldest_due_at: int | None = None
    # The connections dispatched, and those whose refresh crashed (a worker reports these back to its queue).
    tried: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "dispatched": self.dispatched,
            "outcomes": dict(self.outcomes),
            "stopped_early": self.stopped_early,
            "breaker_open": self.breaker_open,
            "duration_seconds": round(self.duration_seconds, 3),
            "oldest_due_at": self.oldest_due_at,
        }


class Breaker:
    """A run of struggling outcomes, and whether it opened. A sweep has its own; a refresh worker keeps one for its
    container, so the run counts across its batches (each only ten), and stays open BREAKER_COOL_DOWN_SECONDS."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.struggling = 0
        self.opened_at: float | None = None
        self._monotonic = monotonic

    @property
    def is_open(self) -> bool:
        if self.opened_at is not None and self._monotonic() - self.opened_at >= BREAKER_COOL_DOWN_SECONDS:
            self.opened_at, self.struggling = None, 0  # cooled down: try again
        return self.opened_at is not None

    def open(self) -> None:
        self.opened_at = self._monotonic()


class _Tally:
    """Counts finished refreshes into the report and opens the breaker after a run of struggling outcomes."""

    def __init__(self, report: SweepReport, breaker: Breaker) -> None:
        self.report = report
        self._breaker = breaker

    def collect(self, done: set[Future[Any]]) -> None:
        for future in done:
            try:
                outcome = future.result()
            except Exception as exc:  # one connection's failure never stops the sweep
                logger.error("refresh crashed", extra={"error_type": type(exc).__name__})
                outcome = "error"
            self.report.outcomes[outcome] += 1
            if outcome not in _NEUTRAL:
                self._breaker.struggling = self._breaker.struggling + 1 if outcome in _STRUGGLING else 0
        if self._breaker.struggling >= BREAKER_THRESHOLD and not self.report.breaker_open:
            self.report.breaker_open = True
            self._breaker.open()
            logger.error(
                "refreshes keep failing; the sweep stops for now", extra={"in_a_row": self._breaker.struggling}
            )


class _Progress:
    """Hands the growing report to the caller's `progress` when asked to, or when PROGRESS_SECONDS have passed."""

    def __init__(
        self, report: SweepReport, progress: Callable[[SweepReport], None] | None, monotonic: Callable[[], float]
    ) -> None:
        self._report, self._progress, self._monotonic = report, progress, monotonic
        self._last = monotonic()

    def __call__(self, *, now: bool = False) -> None:
        if self._progress is not None and (now or self._monotonic() - self._last >= PROGRESS_SECONDS):
            self._progress(self._report)
            self._last = self._monotonic()


def sweep(
    deps: RefreshDeps,
    *,
    time_left: Callable[[], float],
    safety_margin_seconds: float = 30.0,
    # Small pages: with overlapping sweeps (a retried schedule, an on-demand refresh), each page is read shortly
    # before its connections are tried, so fewer of them are already leased by another worker (a wasted write).
    page_size: int = 32,
    pace: Pace | None = None,
    progress: Callable[[SweepReport], None] | None = None,
) -> SweepReport:
    """Refresh due connections in this process: the dispatcher's reading of the due index (due_connections) fed
    straight to the worker's loop (refresh_each), as the admin CLI's local target, the tests and the benchmarks
    run it. Deployed, the dispatcher queues them instead and workers run refresh_each on what they receive
    (flows/fanout.py)."""
    report = SweepReport()
    return refresh_each(
        deps,
        due_connections(deps, page_size=page_size, report=report),
        time_left=time_left,
        safety_margin_seconds=safety_margin_seconds,
        page_size=page_size,
        pace=pace,
        progress=progress,
        report=report,
    )


def refresh_each(
    deps: RefreshDeps,
    due: Iterable[DueConnection],
    *,
    time_left: Callable[[], float],
    safety_margin_seconds: float = 30.0,
    page_size: int = 32,
    pace: Pace | None = None,
    progress: Callable[[SweepReport], None] | None = None,
    report: SweepReport | None = None,
    breaker: Breaker | None = None,
) -> SweepReport:
    """Refresh the given due connections, earliest first, at most `refresh_concurrency` at once and at the pace (by
    default `refresh_rate_per_minute` in this process, after a burst of a tenth of it; the scheduled path passes the
    pace every refresher shares), and stop dispatching when less than the safety margin is left or after
    BREAKER_THRESHOLD struggling outcomes in a row: what is not reached stays due for the next dispatch. `progress`
    gets the report as it grows: after the first page, every PROGRESS_SECONDS, and before the in-flight refreshes
    are waited for. The report names each connection it dispatched (`tried`) and those whose refresh crashed."""
    started = time.monotonic()
    report = report if report is not None else SweepReport()
    guard = GrantGuard()
    breaker = breaker or Breaker(deps.monotonic)
    report.breaker_open = breaker.is_open
    tally, report_progress = _Tally(report, breaker), _Progress(report, progress, deps.monotonic)
    concurrency = deps.config.refresh_concurrency
    pace = pace or LocalPace(deps.config.refresh_rate_per_minute, deps.monotonic, deps.sleep)
    seen: set[str] = set()
    in_flight: dict[Future[Any], str] = {}
    order = random.Random()  # noqa: S311 (spreading work, not security)

    def stop_now() -> bool:
        if report.breaker_open or time_left() <= safety_margin_seconds:
            report.stopped_early = True
        return report.stopped_early

    def collect(done: set[Future[Any]]) -> None:
        for future in done:
            connection_id = in_flight.pop(future)
            if future.exception() is not None:
                report.crashed.append(connection_id)
        tally.collect(done)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="refresh") as pool:
        due_iter = iter(due)
        while not stop_now():
            page = list(itertools.islice(due_iter, page_size))
            if report.oldest_due_at is None and page:
                report.oldest_due_at = min(item.refresh_due_at for item in page)
                report_progress(now=True)
            # Earliest first page by page; within a page, a random order keeps overlapping sweeps from
            # walking the same connections in lockstep, each losing the lease race on every one.
            order.shuffle(page)
            for item in page:
                if item.connection_id in seen:
                    continue
                while len(in_flight) >= concurrency:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    collect(done)
                report_progress()
                if stop_now() or not _paced(pace, lambda: time_left() - safety_margin_seconds, report):
                    report.stopped_early = True
                    break
                seen.add(item.connection_id)
                future = pool.submit(refresh_connection, item, deps, time_left=time_left, guard=guard)
                in_flight[future] = item.connection_id
                report.tried.append(item.connection_id)
                report.dispatched += 1
            if report.stopped_early or len(page) < page_size:
                break
        report_progress(now=True)
        done, _ = wait(in_flight)
        collect(done)
    report.duration_seconds = time.monotonic() - started
    return report


def _paced(pace: Pace, seconds_left: Callable[[], float], report: SweepReport) -> bool:
    """The pace's next slot; a pace that cannot be reached (the shared count in DynamoDB) ends the sweep."""
    try:
        return pace.take(seconds_left)
    except StorageError as exc:
        logger.error("could not take a slot of the shared pace; the sweep ends", extra={"reason": exc.code})
        report.outcomes["error"] += 1
        return False


class _DueUnreadable(Exception):
    """The due index could not be read, after DUE_QUERY_ATTEMPTS."""


def due_connections(deps: RefreshDeps, *, page_size: int, report: SweepReport) -> Iterator[DueConnection]:
    """The due connections of every partition of the due index, earliest first (ConnectionStore.due_everywhere),
    read lazily. A read that keeps failing ends them: counted as an `error` outcome."""

    def read(**kwargs: Any) -> tuple[list[DueConnection], dict[str, Any] | None]:
        page = _due_page(deps, **kwargs)
        if page is None:
            raise _DueUnreadable
        return page

    try:
        yield from deps.connections.due_everywhere(now=int(deps.clock()), page_size=page_size, read=read)
    except _DueUnreadable:
        report.outcomes["error"] += 1


def _due_page(deps: RefreshDeps, **kwargs: Any) -> tuple[list[DueConnection], dict[str, Any] | None] | None:
    """One page of one partition of the due index; a throttled or failed read is retried briefly, then None."""
    for attempt in range(DUE_QUERY_ATTEMPTS):
        try:
            return deps.connections.due(**kwargs)
        except StorageError as exc:
            logger.warning("could not read due connections", extra={"reason": exc.code, "attempt": attempt + 1})
            if attempt < DUE_QUERY_ATTEMPTS - 1:
                deps.sleep(0.5 * 2**attempt)
    logger.error("could not read due connections; the sweep ends")
    return None
