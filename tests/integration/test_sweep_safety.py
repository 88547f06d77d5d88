"""One sweep at a time (the sweep lease), one pace for every refresher (the shared windows), and figures that reach
the log before any long step: through the real refresh handler, against mock_aws and the Smartsheet emulator."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import Counter
from contextlib import redirect_stdout
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.config import REQUIRED, load_config
from smartsheet_oauth.domain.errors import ConfigError, PaceExhausted, StorageError
from smartsheet_oauth.stores.pace import PaceWindows, SharedPace, Windows
from smartsheet_oauth.stores.sweep_lease import LEASE_KEY, SweepLeases

from infra.scripts.sam_translate import TEMPLATE, load_template
from tests.integration.test_refresh import refreshes, signed_in_and_due
from tests.ops.support import emf_blobs, metric_totals
from tests.support.broker import Broker
from tests.support.events import LambdaContext, scheduled_event

ADA, GRACE, ALAN = 4583173393803140, 6812335718217604, 9007199254740993
REQUIRED_ONLY = {**dict.fromkeys(REQUIRED, "x/"), "OAUTH_SCOPES": "READ_SHEETS"}


def leases(broker: Broker) -> SweepLeases:
    return SweepLeases(broker.dynamodb, broker.state_table)


def lease_item(broker: Broker) -> dict[str, Any] | None:
    return broker.dynamodb.get_item(
        TableName=broker.state_table, Key={"state": {"S": LEASE_KEY}}, ConsistentRead=True
    ).get("Item")


class SweepInThread:
    """The refresh handler running in a thread (as another Lambda would), its printed output kept."""

    def __init__(self, broker: Broker, timeout_seconds: float = 60.0) -> None:
        self.printed = io.StringIO()
        self.result: dict[str, Any] = {}
        self.context = LambdaContext(timeout_seconds=timeout_seconds)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from refresh.app import lambda_handler

        self.result = lambda_handler(scheduled_event(), self.context)

    def start(self) -> SweepInThread:
        self._thread.start()
        return self

    def join(self) -> dict[str, Any]:
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()
        return self.result


@pytest.fixture
def printed() -> io.StringIO:
    """What the test prints inside `with redirect_stdout(printed)`, from any thread (EMF documents are lines)."""
    return io.StringIO()


# -- one sweep at a time --------------------------------------------------------------------------------------


def test_a_sweep_started_while_another_holds_the_lease_does_nothing_and_says_so(
    broker: Broker, printed: io.StringIO
) -> None:
    signed_in_and_due(broker, ADA, GRACE)
    broker.emulator.set_faults(latency_ms=600, latency_token_only=True)
    with redirect_stdout(printed):
        before = int(time.time())
        first = SweepInThread(broker).start()
        deadline = time.monotonic() + 10
        while lease_item(broker) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        held = lease_item(broker)
        after = int(time.time()) + 1
        assert held is not None
        # The lease lasts as long as the first invocation may run (its context's time left at its start): 60 s from
        # a moment between `before` and `after` (a loaded machine may wake this thread seconds after the lease).
        assert before + 58 <= int(held["lease_until"]["N"]) <= after + 60

        second = broker.sweep()
        totals_of_second = metric_totals(emf_blobs(printed.getvalue()))
        done = first.join()

    assert second == {"skipped": True, "reason": "another_sweep_running", "lease_until": int(held["lease_until"]["N"])}
    assert totals_of_second["sweep_skipped"] == 1
    assert done["skipped"] is False
    assert done["outcomes"]["refreshed"] == 2
    assert refreshes(broker) == 2  # each connection once: the second sweep sent nothing
    assert lease_item(broker) is None  # given back when the first one finished
    assert broker.sweep()["skipped"] is False


def test_a_sweep_that_crashes_gives_the_lease_back(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    signed_in_and_due(broker, ADA)

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug in the sweep")

    # monkeypatch.context(), not undo(): undo() would also take back the broker fixture's environment.
    with monkeypatch.context() as patch:
        patch.setattr("smartsheet_oauth.flows.scheduled_sweep.sweep", crash)
        with pytest.raises(ZeroDivisionError):
            broker.sweep()  # a Lambda error: the function-errors alarm, and Lambda's retries

    assert lease_item(broker) is None
    assert broker.sweep()["outcomes"]["refreshed"] == 1


def test_a_killed_sweeps_lease_blocks_the_next_one_only_until_its_timeout(broker: Broker) -> None:
    """A sweep Lambda ended at its timeout never gives the lease back: it holds it until that timeout (2 s here),
    then the next sweep takes over."""
    signed_in_and_due(broker, ADA)
    started = int(time.time())
    leases(broker).take(owner="killed-at-its-timeout", now=started, seconds=2)

    blocked = broker.sweep()
    while time.time() < started + 2:
        time.sleep(0.05)
    after_expiry = broker.sweep()

    assert blocked["skipped"] is True
    assert blocked["lease_until"] == started + 2
    assert after_expiry["skipped"] is False
    assert after_expiry["outcomes"]["refreshed"] == 1
    assert refreshes(broker) == 1


def test_a_lease_that_cannot_be_taken_ends_the_invocation_and_refreshes_nothing(
    broker: Broker, printed: io.StringIO
) -> None:
    signed_in_and_due(broker, ADA)
    broker.dynamodb.delete_table(TableName=broker.state_table)

    with redirect_stdout(printed), pytest.raises(StorageError):
        broker.sweep()

    assert refreshes(broker) == 0
    assert metric_totals(emf_blobs(printed.getvalue()))["sweep_dispatched"] == 0  # the heartbeat went out first


# -- figures before any long step -----------------------------------------------------------------------------


def test_a_sweep_cut_short_by_its_timeout_has_already_printed_its_figures(
    broker: Broker, printed: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-second invocation whose refreshes take longer than that (Smartsheet answers in 3 s): when its time is up,
    which is when Lambda would end it, its log already holds the heartbeat and what it dispatched."""
    import refresh.app

    monkeypatch.setattr(refresh.app, "SAFETY_MARGIN_SECONDS", 0.5)
    signed_in_and_due(broker, ADA, GRACE)
    broker.emulator.set_faults(latency_ms=3000, latency_token_only=True)
    with redirect_stdout(printed):
        running = SweepInThread(broker, timeout_seconds=2).start()
        while running.context.get_remaining_time_in_millis() > 0:
            time.sleep(0.05)
        at_the_timeout = metric_totals(emf_blobs(printed.getvalue()))
        running.join()

    assert at_the_timeout["sweep_dispatched"] == 2
    assert at_the_timeout["refresh_ok"] == 0  # zeros included: the outcomes' datapoints are there already
    assert "sweep_lag" in at_the_timeout


def test_the_backlog_is_counted_a_bounded_number_of_pages(broker: Broker) -> None:
    signed_in_and_due(broker, ADA, GRACE, ALAN)
    store = services.connection_store()
    client = store._client

    def one_item_pages(params: dict[str, Any], **_: Any) -> None:
        params["Limit"] = 1

    client.meta.events.register("provide-client-params.dynamodb.Query", one_item_pages, unique_id="one-item-pages")
    try:
        assert store.count_due(now=int(time.time())) == (3, True)
        assert store.count_due(now=int(time.time()), max_pages=2) == (2, False)
        assert store.count_due(now=int(time.time()), keep_going=lambda: False) == (1, False)
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.Query", unique_id="one-item-pages")


# -- one pace for every refresher -----------------------------------------------------------------------------


class WallClock:
    """Wall-clock and monotonic time that sleeping moves, shared by every refresher of a test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def shared_pace(broker: Broker, clock: WallClock, per_minute: int) -> SharedPace:
    windows = PaceWindows(broker.dynamodb, broker.state_table)
    return SharedPace(windows, per_minute, clock=clock, monotonic=clock, sleep=clock.sleep)


def test_the_windows_keep_a_tenth_of_the_pace_each_with_a_share_left_for_on_demand_refreshes() -> None:
    default = Windows(300)
    assert (default.budget, default.seconds, default.sweep_budget) == (30, 6.0, 27)
    assert (Windows(60).budget, Windows(60).sweep_budget) == (6, 5)
    assert (Windows(1).budget, Windows(1).seconds, Windows(1).sweep_budget) == (1, 60.0, 1)


def test_overlapping_sweeps_and_on_demand_refreshes_share_one_pace(broker: Broker) -> None:
    """Two sweeps (a retry overlapping the next run, with no lease between them here) and on-demand callers take
    slots at 60 a minute: no window gives out more than its 6 slots, the sweeps together no more than 5 of them."""
    clock = WallClock()
    sweeps = [shared_pace(broker, clock, 60), shared_pace(broker, clock, 60)]
    on_demand = shared_pace(broker, clock, 60)
    taken: Counter[tuple[str, int]] = Counter()
    windows = Windows(60)
    for step in range(60):  # 60 rounds of 0.5 s: 30 s, 5 windows
        for pace in sweeps:
            if pace.take(lambda: 0.5):
                taken["sweep", windows.index(clock())] += 1
        if step % 3 == 0:
            with contextlib.suppress(PaceExhausted):  # a full window: the caller is told to come back later
                on_demand.take_one(max_wait=0)
                taken["on_demand", windows.index(clock())] += 1
        clock.sleep(0.5)

    per_window: Counter[int] = Counter()
    for (_, window), count in taken.items():
        per_window[window] += count
    assert max(per_window.values()) <= windows.budget
    assert max(count for (kind, _), count in taken.items() if kind == "sweep") <= windows.sweep_budget
    assert sum(count for (kind, _), count in taken.items() if kind == "on_demand") >= len(per_window)


def test_an_on_demand_caller_waits_for_the_next_window_and_no_longer(broker: Broker) -> None:
    clock = WallClock()
    pace = shared_pace(broker, clock, 60)  # 6 a window of 6 s
    for _ in range(6):
        pace.take_one(max_wait=0)
    started = clock()

    pace.take_one(max_wait=10)  # the next window opens within 6 s
    waited = clock() - started
    for _ in range(5):
        pace.take_one(max_wait=0)
    with pytest.raises(PaceExhausted) as exhausted:
        pace.take_one(max_wait=1)

    assert 0 < waited <= 6
    assert 1 <= exhausted.value.retry_after <= 6


def test_the_scheduled_sweep_takes_its_slots_from_the_shared_pace(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 60 a minute with a whole window's budget already taken by others, the sweep waits for the next window
    and sends Smartsheet no more than its share of it."""
    monkeypatch.setenv("REFRESH_RATE_PER_MINUTE", "60")
    services.reset()
    signed_in_and_due(broker, ADA, GRACE, ALAN)
    windows = Windows(60)
    current = windows.index(time.time())
    PaceWindows(broker.dynamodb, broker.state_table).claim(
        window=current, wanted=windows.budget, limit=windows.budget, expires_at=int(time.time()) + 60
    )
    opens_in, started = windows.end(current) - time.time(), time.monotonic()

    report = broker.sweep()

    assert report["outcomes"]["refreshed"] == 3
    assert time.monotonic() - started >= opens_in - 0.1  # it waited for the next window
    used = broker.dynamodb.get_item(
        TableName=broker.state_table, Key={"state": {"S": f"pace:{current + 1}"}}, ConsistentRead=True
    )["Item"]["used"]["N"]
    assert int(used) <= windows.sweep_budget


def test_the_template_keeps_refresh_writes_within_a_fifth_of_the_regions_secret_write_quota() -> None:
    """Every refresh (sweep or on-demand) writes one secret version and takes one slot of the shared pace, so the
    broker's refresh writes per second are at most the pace / 60. AWS's quota for PutSecretValue and the writes
    that share it is 50 a second per Region and account (not adjustable): while pairs are written to Secrets Manager
    the template's ceiling keeps the broker to a fifth of it, and a cold start above the ceiling fails."""
    template = load_template(TEMPLATE)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["REFRESH_RATE_PER_MINUTE"] == {"Ref": "RefreshRatePerMinute"}
    condition, with_secrets, without = variables["REFRESH_RATE_CEILING"]["Fn::If"]
    assert condition == "UsesTokenSecrets"
    assert int(with_secrets) / 60 <= 0.2 * 50
    assert int(without) == int(template["Parameters"]["RefreshRatePerMinute"]["MaxValue"])
    environ = {**REQUIRED_ONLY, "SMARTSHEET_CLIENT_ID": "client", "REFRESH_RATE_CEILING": with_secrets}
    with pytest.raises(ConfigError, match="REFRESH_RATE_PER_MINUTE is 601, above 600"):
        load_config({**environ, "REFRESH_RATE_PER_MINUTE": "601"})
    assert load_config(environ).refresh_rate_per_minute <= 600
