"""No grant is ever lost by the broker: races, faults, crashes and revocations against moto server and the
Smartsheet emulator over loopback. Each scenario prints its figures; the run ends with a table of them.

Every expectation is derived from what really happened (the refreshers' own step logs, the emulator's and the
store's state), never from what a scenario planned: a refresh whose answer a slow machine lost is a grant lost in
flight, and it is checked to be accounted as one, not taken for a failure of the test."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.flows.sweep import SweepReport

from tests.reliability.conftest import Scale
from tests.reliability.harness import (
    PAIR_WRITE,
    SPAWN,
    AwsThrottle,
    FakeMonotonic,
    SimClock,
    StepLog,
    World,
    answers_lost,
    audit,
    build_deps,
    outcome_figures,
    run_sweep,
    smartsheet_figures,
    spawn,
    sweep_in_process,
    total,
    world,
)

# Each scenario runs once per token store (secretsmanager, dynamodb): lost = 0 for both.
pytestmark = pytest.mark.usefixtures("token_store")

MAX_SWEEPS = 40
# Between sweeps the world moves on further than any backoff (an hour at most): every failure is due again.
BETWEEN_SWEEPS = 2 * 3600


def nothing_due(here: World, clock: Callable[[], float]) -> bool:
    answer = here.dynamodb.query(
        TableName=here.spec.connections_table,
        IndexName="by-refresh-due",
        KeyConditionExpression="due_shard = :shard AND refresh_due_at <= :now",
        ExpressionAttributeValues={":shard": {"S": "due"}, ":now": {"N": str(int(clock()))}},
        Limit=1,
    )
    return not answer["Items"]


def sweep_until_done(here: World, deps: Any, clock: SimClock) -> list[SweepReport]:
    reports = []
    for _ in range(MAX_SWEEPS):
        reports.append(run_sweep(deps))
        clock.advance(BETWEEN_SWEEPS)
        if nothing_due(here, clock):
            break
    return reports


def test_race(scale: Scale, figures: Callable[..., None]) -> None:
    """Refreshers in threads and in separate processes sweep the same due connections at the same moment:
    exactly one Smartsheet refresh per connection, no needs_reauth, every secret holds the newest pair."""
    n = scale.race_connections
    with world(n) as here:
        seeded = time.monotonic()
        start, ready, results = SPAWN.Event(), SPAWN.Queue(), SPAWN.Queue()
        processes = [
            spawn(sweep_in_process, here.spec, scale.race_concurrency, start, results, ready)
            for _ in range(scale.race_processes)
        ]
        thread_reports: list[SweepReport] = []
        log = StepLog()

        def sweep_in_thread() -> None:
            deps = build_deps(here.spec, concurrency=scale.race_concurrency, watcher=log)
            ready.put("thread")
            start.wait(120)
            thread_reports.append(run_sweep(deps))

        threads = [threading.Thread(target=sweep_in_thread) for _ in range(scale.race_threads)]
        for thread in threads:
            thread.start()
        for _ in range(scale.race_processes + scale.race_threads):
            ready.get(timeout=120)
        start.set()
        for thread in threads:
            thread.join(300)
        process_outcomes = [results.get(timeout=300) for _ in processes]
        for process in processes:
            process.join(60)

        raced_seconds = round(time.monotonic() - seeded, 1)
        outcomes = total(thread_reports)
        dispatched = sum(report.dispatched for report in thread_reports)
        for counts, process_dispatched, sent, answered in process_outcomes:
            outcomes.update(counts)
            dispatched += process_dispatched
            log.merge(sent, answered)
        state = audit(here)
        calls = smartsheet_figures(here.emulator)
        lost_answers = answers_lost(here.emulator, log)
        figures(
            connections=n,
            refreshers=f"{scale.race_threads} threads + {scale.race_processes} processes",
            **calls,
            outcomes=outcome_figures(outcomes),
            needs_reauth=state.needs_reauth,
            lost=len(state.lost),
            race_seconds=raced_seconds,
            collisions=outcomes[RefreshOutcome.LEASE_BUSY],
        )

        assert [p.exitcode for p in processes] == [0] * scale.race_processes
        # Single flight, from the refreshers' own logs: every connection's token request was sent exactly once, by
        # whichever refresher won its lease, and the emulator saw exactly those.
        assert sorted(log.sent) == sorted(here.ids)
        assert set(log.sent.values()) == {1}
        assert calls["refresh_calls"] == calls["refresh_ok"] == n
        # Every other dispatch was turned away by the lease, however the refreshers were scheduled.
        assert outcomes[RefreshOutcome.LEASE_BUSY] == dispatched - n
        assert outcomes[RefreshOutcome.REFRESHED] == n - lost_answers
        assert outcomes[RefreshOutcome.NEEDS_REAUTH] == outcomes[RefreshOutcome.RACED] == outcomes["error"] == 0
        assert state.needs_reauth == 0
        # An answer lost on the way (a slow machine) leaves its grant dead and its record saying so.
        assert len(state.lost) == lost_answers
        assert set(state.lost) <= state.in_flight
        assert state.live == n - lost_answers
        assert state.generations == Counter({2: n - lost_answers, 1: lost_answers}) - Counter()
        assert state.kept == 0


def test_faults(scale: Scale, figures: Callable[..., None]) -> None:
    """A fifth of Smartsheet's answers are 5xx, 429 or timeouts and a tenth of the broker's AWS calls are
    throttled: repeated sweeps bring every connection through, active with a working refresh token."""
    n = scale.fault_connections
    with world(n, seed=11) as here:
        here.emulator.set_faults(error_rate=0.10, rate_limit_rate=0.05, timeout_rate=0.05, timeout_ms=2000)
        clock, log = SimClock(), StepLog()
        # The emulator holds a timed-out request 2 s without carrying it out; the client gives up after 1 s.
        deps = build_deps(here.spec, concurrency=8, clock=clock, read_timeout=1.0, watcher=log)
        throttle = AwsThrottle(0.10, seed=12)
        throttle.install(deps)

        reports = sweep_until_done(here, deps, clock)
        here.emulator.reset_faults()
        state = audit(here, now=clock())
        outcomes = total(reports)
        calls = smartsheet_figures(here.emulator)
        # Refreshes carried out whose answer a slow moment made the client give up on: grants lost in flight.
        lost_answers = answers_lost(here.emulator, log)
        figures(
            connections=n,
            refreshers="1 (8 threads)",
            sweeps=len(reports),
            **calls,
            aws_throttled=f"{sum(throttle.throttled.values())}/{sum(throttle.calls.values())}",
            outcomes=outcome_figures(outcomes),
            needs_reauth=state.needs_reauth,
            lost=f"{len(state.lost) + outcomes[RefreshOutcome.LOST]}"
            f" (in flight, accounted: {outcomes[RefreshOutcome.LOST_IN_FLIGHT]})",
        )

        assert calls["refresh_faults"] > n // 10  # the faults were real
        assert sum(throttle.throttled.values()) > n // 4  # a tenth of at least 4 AWS calls per connection
        assert nothing_due(here, clock)
        assert outcomes[RefreshOutcome.LOST] == 0
        assert state.lost == []  # no connection left active with a dead token
        # The only grants gone are those whose answer was lost in flight, each accounted as such.
        assert outcomes[RefreshOutcome.LOST_IN_FLIGHT] == lost_answers
        assert state.needs_reauth_reasons == Counter({"lost_in_flight": lost_answers}) - Counter()
        assert state.active == state.live == n - lost_answers
        assert state.kept == 0


def test_save_fails_for_minutes(scale: Scale, figures: Callable[..., None]) -> None:
    """Secrets Manager refuses every write for three sweeps (each refresh retries its save for the lease's
    length): new pairs wait sealed on their records, the breaker stops more rotations, and when writes work
    again the next sweep stores every kept pair without asking Smartsheet again."""
    n = scale.outage_connections
    with world(n, seed=31) as here:
        clock, monotonic, log = SimClock(), FakeMonotonic(), StepLog()
        deps = build_deps(
            here.spec, concurrency=8, clock=clock, monotonic=monotonic, sleep=monotonic.sleep, watcher=log
        )
        write = PAIR_WRITE[here.spec.token_store]  # the store's pair write: PutSecretValue, or the table's UpdateItem
        outage = AwsThrottle(1.0, operations={write})
        outage.install(deps, store_only=True)
        during, rotated_by_first = [], 0
        for _ in range(3):
            during.append(run_sweep(deps))
            rotated_by_first = rotated_by_first or smartsheet_figures(here.emulator)["refresh_calls"]
            clock.advance(1800)
        state_during = audit(here, now=clock())
        calls_during = smartsheet_figures(here.emulator)["refresh_calls"]
        lost_during = answers_lost(here.emulator, log)
        outage.rate = 0.0
        after = sweep_until_done(here, deps, clock)
        state = audit(here, now=clock())
        outcomes = total(during + after)
        calls = smartsheet_figures(here.emulator)
        lost_answers = answers_lost(here.emulator, log)
        figures(
            connections=n,
            refreshers="1 (8 threads)",
            sweeps=len(during) + len(after),
            **calls,
            aws_throttled=f"{write} {outage.throttled[write]}/{outage.calls[write]}",
            outcomes=outcome_figures(outcomes),
            needs_reauth=state.needs_reauth,
            lost=len(state.lost) + outcomes[RefreshOutcome.LOST],
        )

        assert during[0].breaker_open  # a run of kept pairs stops the sweep: no more rotations for now
        assert rotated_by_first < n
        # Every pair Smartsheet issued and the refresher received waits on its record.
        assert state_during.kept == calls_during - lost_during > 0
        assert total(during)[RefreshOutcome.KEPT] >= calls_during - lost_during
        assert state_during.needs_reauth == 0
        assert outcomes[RefreshOutcome.RESUMED] == calls_during - lost_during
        # Kept pairs were stored, never asked for again; a grant whose answer was lost is asked for once more and
        # refused: accounted as lost in flight.
        assert calls["refresh_calls"] == n + lost_answers
        assert outcomes[RefreshOutcome.LOST] == 0
        assert outcomes[RefreshOutcome.LOST_IN_FLIGHT] == lost_answers
        assert state.lost == []
        assert state.live == n - lost_answers
        assert state.kept == 0
        assert state.generations == Counter({2: n - lost_answers, 1: lost_answers}) - Counter()


def test_revocation(scale: Scale, figures: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    """Users revoked at Smartsheet (1132), among transient 5xx noise: exactly those need a new sign-in."""
    n = scale.revocation_connections
    with world(n, seed=41) as here:
        revoked = set(random.Random(6).sample(here.ids, scale.revoked))
        for connection_id in revoked:
            here.emulator.revoke_user(connection_id)
        here.emulator.set_faults(error_rate=0.10, token_only=True)
        clock, log = SimClock(), StepLog()
        deps = build_deps(here.spec, concurrency=8, clock=clock, watcher=log)

        reports = sweep_until_done(here, deps, clock)
        here.emulator.reset_faults()
        state = audit(here, now=clock())
        outcomes = total(reports)
        calls = smartsheet_figures(here.emulator)
        lost_answers = answers_lost(here.emulator, log)
        # Refusals the grant guard held back (the order the answers came in decides how many): each was retried.
        held_back = sum(1 for record in caplog.records if "is held back" in record.getMessage())
        figures(
            connections=n,
            refreshers="1 (8 threads)",
            sweeps=len(reports),
            **calls,
            outcomes=outcome_figures(outcomes),
            needs_reauth=f"{state.needs_reauth} (revoked {len(revoked)})",
            lost=len(state.lost),
        )

        assert state.needs_reauth_reasons["invalid_grant:1132"] == outcomes[RefreshOutcome.NEEDS_REAUTH] == len(revoked)
        assert state.needs_reauth_reasons["lost_in_flight"] == outcomes[RefreshOutcome.LOST_IN_FLIGHT] == lost_answers
        assert revoked <= state.needs_reauth_ids
        assert state.active == state.live == n - len(revoked) - lost_answers
        assert state.lost == []
        assert here.emulator.counts["token.refresh.1132"] == len(revoked) + held_back
