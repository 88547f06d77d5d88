"""No grant is ever lost by the broker: races, faults, crashes and revocations against moto server and the
Smartsheet emulator over loopback. Each scenario prints its figures; the run ends with a table of them."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from smartsheet_oauth.refresh import (
    KEPT,
    LEASE_BUSY,
    LOST,
    NEEDS_REAUTH,
    RACED,
    REFRESHED,
    RESUMED,
)
from smartsheet_oauth.sweep import SweepReport

from tests.reliability.conftest import Scale
from tests.reliability.harness import (
    KILL_POINTS,
    LEASE_SECONDS,
    SPAWN,
    AwsThrottle,
    FakeMonotonic,
    SimClock,
    World,
    audit,
    build_deps,
    outcome_figures,
    refresh_until_killed,
    run_sweep,
    smartsheet_figures,
    spawn,
    sweep_in_process,
    total,
    world,
)

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

        def sweep_in_thread() -> None:
            deps = build_deps(here.spec, concurrency=scale.race_concurrency)
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
        for counts in process_outcomes:
            outcomes.update(counts)
        state = audit(here)
        calls = smartsheet_figures(here.emulator)
        figures(
            connections=n,
            refreshers=f"{scale.race_threads} threads + {scale.race_processes} processes",
            **calls,
            outcomes=outcome_figures(outcomes),
            needs_reauth=state.needs_reauth,
            lost=len(state.lost),
            race_seconds=raced_seconds,
        )

        assert [p.exitcode for p in processes] == [0] * scale.race_processes
        assert calls["refresh_calls"] == n  # exactly one Smartsheet refresh per connection
        assert calls["refresh_ok"] == n
        assert outcomes[REFRESHED] == n
        assert outcomes[LEASE_BUSY] > 0  # the refreshers really did collide
        assert outcomes[NEEDS_REAUTH] == outcomes[RACED] == outcomes["error"] == 0
        assert state.needs_reauth == 0
        assert state.lost == []
        assert state.live == n  # every secret's refresh token is the grant's newest one
        assert state.generations == Counter({2: n})
        assert state.kept == 0


def test_faults(scale: Scale, figures: Callable[..., None]) -> None:
    """A fifth of Smartsheet's answers are 5xx, 429 or timeouts and a tenth of the broker's AWS calls are
    throttled: repeated sweeps bring every connection through, active with a working refresh token."""
    n = scale.fault_connections
    with world(n, seed=11) as here:
        here.emulator.set_faults(error_rate=0.10, rate_limit_rate=0.05, timeout_rate=0.05, timeout_ms=2000)
        clock = SimClock()
        deps = build_deps(here.spec, concurrency=8, clock=clock, read_timeout=0.5)
        throttle = AwsThrottle(0.10, seed=12)
        throttle.install(deps)

        reports = sweep_until_done(here, deps, clock)
        here.emulator.reset_faults()
        state = audit(here, now=clock())
        outcomes = total(reports)
        calls = smartsheet_figures(here.emulator)
        figures(
            connections=n,
            refreshers="1 (8 threads)",
            sweeps=len(reports),
            **calls,
            aws_throttled=f"{sum(throttle.throttled.values())}/{sum(throttle.calls.values())}",
            outcomes=outcome_figures(outcomes),
            needs_reauth=state.needs_reauth,
            lost=len(state.lost) + outcomes[LOST],
        )

        assert calls["refresh_faults"] > n // 10  # the faults were real
        assert sum(throttle.throttled.values()) > n // 4  # a tenth of at least 4 AWS calls per connection
        assert nothing_due(here, clock)
        assert state.active == n
        assert state.needs_reauth == 0
        assert outcomes[LOST] == 0
        assert state.lost == []
        assert state.live == n
        assert state.kept == 0


def test_crash_between_answer_and_save(scale: Scale, figures: Callable[..., None]) -> None:
    """Refresh workers are killed (SIGKILL) after Smartsheet answered and their secret write failed (the pair is
    kept), before the write is retried; or after the secret write, before the commit. Once the dead worker's lease
    runs out, the next worker finds the kept pair and stores it without asking Smartsheet again, or refreshes from
    the stored pair whose commit was lost: none is lost."""
    n = scale.crash_connections
    rng = random.Random(5)
    with world(n, seed=21) as here:
        offset = 0.0
        kills: Counter[str] = Counter()
        for round_ in range(scale.crash_rounds):
            # The last round leaves a kept pair for the final sweep to store.
            point = KILL_POINTS[(scale.crash_rounds - 1 - round_) % len(KILL_POINTS)]
            worker = spawn(refresh_until_killed, here.spec, offset, point, rng.randint(2, 5))
            worker.join(120)
            assert worker.exitcode == -signal.SIGKILL
            kills[point] += 1
            offset += LEASE_SECONDS + 1  # the dead worker's lease runs out
        mid = audit(here)
        deps = build_deps(here.spec, concurrency=4, clock=SimClock(offset))
        report = run_sweep(deps)
        state = audit(here)
        calls = smartsheet_figures(here.emulator)
        figures(
            connections=n,
            refreshers=f"{scale.crash_rounds} killed ({dict(kills)}) + 1",
            sweeps=scale.crash_rounds + 1,
            **calls,
            outcomes=outcome_figures(report.outcomes),
            needs_reauth=state.needs_reauth,
            lost=len(state.lost),
        )

        # Victims not yet resumed by a later worker wait with their pair kept on the record; the last sweep
        # stores each of them.
        assert mid.kept >= 1
        assert report.outcomes[RESUMED] == mid.kept
        # A kept pair is stored, not asked for again; a pair stored but not committed is refreshed once more.
        assert calls["refresh_calls"] == n + kills["after_save"]
        assert state.needs_reauth == 0
        assert state.lost == []
        assert state.live == n
        assert state.kept == 0
        assert state.generations == Counter({2: n})


def test_save_fails_for_minutes(scale: Scale, figures: Callable[..., None]) -> None:
    """Secrets Manager refuses every write for three sweeps (each refresh retries its save for the lease's
    length): new pairs wait sealed on their records, the breaker stops more rotations, and when writes work
    again the next sweep stores every kept pair without asking Smartsheet again."""
    n = scale.outage_connections
    with world(n, seed=31) as here:
        clock, monotonic = SimClock(), FakeMonotonic()
        deps = build_deps(here.spec, concurrency=8, clock=clock, monotonic=monotonic, sleep=monotonic.sleep)
        outage = AwsThrottle(1.0, operations={"PutSecretValue"})
        outage.install(deps)
        during = []
        for _ in range(3):
            during.append(run_sweep(deps))
            clock.advance(1800)
        state_during = audit(here, now=clock())
        calls_during = smartsheet_figures(here.emulator)["refresh_calls"]
        outage.rate = 0.0
        after = sweep_until_done(here, deps, clock)
        state = audit(here, now=clock())
        outcomes = total(during + after)
        calls = smartsheet_figures(here.emulator)
        figures(
            connections=n,
            refreshers="1 (8 threads)",
            sweeps=len(during) + len(after),
            **calls,
            aws_throttled=f"PutSecretValue {outage.throttled['PutSecretValue']}/{outage.calls['PutSecretValue']}",
            outcomes=outcome_figures(outcomes),
            needs_reauth=state.needs_reauth,
            lost=len(state.lost) + outcomes[LOST],
        )

        assert during[0].breaker_open  # a run of kept pairs stops the sweep: no more rotations for now
        assert during[0].dispatched < n
        assert state_during.kept == calls_during > 0  # every pair Smartsheet issued waits on its record
        assert total(during)[KEPT] >= calls_during
        assert state_during.needs_reauth == 0
        assert outcomes[RESUMED] == calls_during
        assert calls["refresh_calls"] == n  # kept pairs were stored, never asked for again
        assert outcomes[LOST] == 0
        assert state.lost == []
        assert state.live == n
        assert state.kept == 0
        assert state.generations == Counter({2: n})


def test_revocation(scale: Scale, figures: Callable[..., None]) -> None:
    """Users revoked at Smartsheet (1132), among transient 5xx noise: exactly those need a new sign-in."""
    n = scale.revocation_connections
    with world(n, seed=41) as here:
        revoked = set(random.Random(6).sample(here.ids, scale.revoked))
        for connection_id in revoked:
            here.emulator.revoke_user(connection_id)
        here.emulator.set_faults(error_rate=0.10, token_only=True)
        clock = SimClock()
        deps = build_deps(here.spec, concurrency=8, clock=clock)

        reports = sweep_until_done(here, deps, clock)
        here.emulator.reset_faults()
        state = audit(here, now=clock())
        outcomes = total(reports)
        calls = smartsheet_figures(here.emulator)
        figures(
            connections=n,
            refreshers="1 (8 threads)",
            sweeps=len(reports),
            **calls,
            outcomes=outcome_figures(outcomes),
            needs_reauth=f"{state.needs_reauth} (revoked {len(revoked)})",
            lost=len(state.lost),
        )

        assert state.needs_reauth_ids == revoked
        assert outcomes[NEEDS_REAUTH] == len(revoked)
        assert state.active == state.live == n - len(revoked)
        assert state.lost == []
        assert here.emulator.counts["token.refresh.1132"] == len(revoked)
