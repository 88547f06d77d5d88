"""The connection lifecycle's table (domain/lifecycle.py), row by row against the real store on moto's DynamoDB: each
transition's write moves a record from each of its source states to its target, its guard refuses every other
state, and its event and metric are the ones the flows send and the sweep counts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.errors import ConditionFailed
from smartsheet_oauth.domain.lifecycle import BY_NAME, TRANSITIONS, WRITES, State, Transition, metric_of, status_after
from smartsheet_oauth.domain.vocabulary import ConnectionStatus, DetailType, RefreshOutcome
from smartsheet_oauth.stores import events
from smartsheet_oauth.stores.connections import Connection, ConnectionStore

from tests.support.broker import Broker
from tests.support.metric_catalog import EMITTED

LEASE_SECONDS = 120
SEALED = b"sealed-pair"  # the store keeps a kept pair's bytes as they are; sealing is the vault's


def state_of(store: ConnectionStore, connection_id: str, now: int) -> State:
    record = store.get(connection_id)
    if record is None:
        return State.ABSENT
    if record.status != ConnectionStatus.ACTIVE:
        return State(record.status)
    if record.pending is not None:
        return State.KEPT
    return State.REFRESHING if (record.lease_until or 0) > now else State.ACTIVE


def sign_in(store: ConnectionStore, connection_id: str, now: int, end_user_id: str | None = None) -> bool:
    return store.record_sign_in(
        connection_id=connection_id,
        secret_arn=f"arn:aws:secretsmanager:eu-west-1:123456789012:secret:{connection_id}",
        email="ada@example.com",
        scopes="READ_SHEETS",
        region="us",
        access_expires_at=now + 3600,
        refresh_due_at=now,
        now=now,
        end_user_id=end_user_id,
    )


def lease(store: ConnectionStore, connection_id: str, now: int, owner: str = "worker") -> Connection:
    record = store.get(connection_id)
    assert record is not None
    return store.acquire_lease(
        connection_id, generation=record.generation, owner=owner, now=now, lease_seconds=LEASE_SECONDS
    )


def put_in(store: ConnectionStore, connection_id: str, state: State, now: int) -> None:
    """A record in `state`, made through the store's own writes; the lease, where one is held, is "worker"'s."""
    if state in (State.ABSENT, State.PENDING_BINDING):  # a held sign-in writes no record
        return
    sign_in(store, connection_id, now)
    if state == State.ACTIVE:
        return
    leased = lease(store, connection_id, now)
    if state == State.KEPT:  # its save failed: the pair stays kept, the lease goes (the "kept" transition)
        fenced: dict[str, Any] = {"generation": leased.generation, "owner": "worker", "now": now}
        store.keep_pending(connection_id, sealed=SEALED, version_id="v2", **fenced)
        store.record_transient_failure(connection_id, retry_at=now, reason="vault:ServiceUnavailable", **fenced)
    elif state == State.NEEDS_REAUTH:
        store.mark_needs_reauth(connection_id, generation=leased.generation, owner="worker", reason="gone", now=now)
    elif state == State.REVOKED:
        store.mark_revoked(connection_id, owner="worker", reason="disconnected", now=now)


def perform(store: ConnectionStore, write: str, connection_id: str, now: int, *, settled: bool = False) -> None:
    """The store method that sends `write`, as the flows call it, by the worker holding the lease (if any)."""
    record = store.get(connection_id)
    generation = record.generation if record is not None else 0
    fenced: dict[str, Any] = {"generation": generation, "owner": "worker", "now": now}
    calls: dict[str, Callable[[], Any]] = {
        "sign_in_unbound": lambda: sign_in(store, connection_id, now),
        "sign_in_bound": lambda: sign_in(store, connection_id, now, end_user_id="end-user-1"),
        "lease": lambda: store.acquire_lease(
            connection_id, generation=generation, owner="worker", now=now, lease_seconds=LEASE_SECONDS
        ),
        "keep": lambda: store.keep_pending(connection_id, sealed=SEALED, version_id="v3", **fenced),
        "commit": lambda: store.commit_refresh(
            connection_id, access_expires_at=now + 7200, refresh_due_at=now + 3600, **fenced
        ),
        "fail": lambda: store.record_transient_failure(
            connection_id, retry_at=now + 300, reason="http:503", settled=settled, **fenced
        ),
        "needs_reauth": lambda: store.mark_needs_reauth(connection_id, reason="invalid_grant:1071", **fenced),
        "release": lambda: store.release(connection_id, owner="worker", settled=settled),
        "hold": lambda: store.hold(connection_id, owner="worker", now=now, lease_seconds=LEASE_SECONDS),
        "revoke": lambda: store.mark_revoked(connection_id, owner="worker", reason="disconnected", now=now),
        "request_refresh": lambda: store.request_refresh(connection_id, now=now),
        "expedite": lambda: store.expedite(connection_id, generation=generation, now=now),
    }
    assert set(calls) == set(WRITES), "every write of the table has its store method here"
    calls[write]()


FENCED_WRITES = {"keep", "commit", "fail", "needs_reauth"}
RECORD_STATES = (State.ABSENT, State.ACTIVE, State.REFRESHING, State.KEPT, State.NEEDS_REAUTH, State.REVOKED)
WRITTEN = [(t, source) for t in TRANSITIONS if t.write for source in t.source if source != State.PENDING_BINDING]


@pytest.mark.parametrize(("transition", "source"), WRITTEN, ids=[f"{t.name}:{s}" for t, s in WRITTEN])
def test_each_transition_s_write_moves_each_source_state_to_its_target(
    broker: Broker, transition: Transition, source: State
) -> None:
    assert transition.write is not None
    store, now = services.connection_store(), int(time.time())
    write = transition.write
    for settled in (False, True) if WRITES[write].settled else (False,):
        connection_id = f"c-{settled}"
        put_in(store, connection_id, source, now)
        if source == State.KEPT and write in FENCED_WRITES:
            lease(store, connection_id, now)  # a kept pair is stored (or kept again) by whoever leases it next
        if write == "revoke" and source != State.REFRESHING:
            store.hold(connection_id, owner="worker", now=now, lease_seconds=LEASE_SECONDS)  # hold_inactive first

        perform(store, write, connection_id, now, settled=settled)

        assert state_of(store, connection_id, now) == (transition.target or source)
        if WRITES[write].settled:
            record = store.get(connection_id)
            assert record is not None
            assert (record.in_flight_attempt is None) == settled  # the attempt's own marker goes only when settled


PENDING = [t for t in TRANSITIONS if State.PENDING_BINDING in t.source and t.write]


@pytest.mark.parametrize("transition", PENDING, ids=[t.name for t in PENDING])
def test_a_confirmed_binding_writes_the_record_whether_it_existed_or_not(
    broker: Broker, transition: Transition
) -> None:
    assert transition.write is not None
    store, now = services.connection_store(), int(time.time())
    if transition.event == DetailType.RECONNECTED:
        put_in(store, "c1", State.NEEDS_REAUTH, now)

    perform(store, transition.write, "c1", now)

    assert state_of(store, "c1", now) == transition.target
    record = store.get("c1")
    assert record is not None
    assert record.end_user_id == "end-user-1"


# Writes whose guard another state may pass as well: the sign-ins (any state), hold (any record), request_refresh
# (any record not revoked), release and revoke (only the lease holder's, whatever the status).
OPEN_GUARDS = {"sign_in_unbound", "sign_in_bound", "hold", "request_refresh", "release", "revoke"}
REFUSED = [
    (name, state)
    for name in sorted(set(WRITES) - OPEN_GUARDS)
    for state in RECORD_STATES
    if state not in {s for t in TRANSITIONS if t.write == name for s in t.source}
]


@pytest.mark.parametrize(("write", "state"), REFUSED, ids=[f"{w}:{s}" for w, s in REFUSED])
def test_each_write_s_guard_refuses_the_states_no_transition_takes_it_from(
    broker: Broker, write: str, state: State
) -> None:
    store, now = services.connection_store(), int(time.time())
    put_in(store, "c1", state, now)
    before = store.get("c1")

    with pytest.raises(ConditionFailed):
        perform(store, write, "c1", now)
    assert store.get("c1") == before


def test_a_fenced_write_of_a_worker_whose_lease_was_taken_over_is_refused(broker: Broker) -> None:
    store, now = services.connection_store(), int(time.time())
    put_in(store, "c1", State.REFRESHING, now)
    lease(store, "c1", now + LEASE_SECONDS + 1, owner="another")  # "worker"'s lease ran out: another took it
    for write in ("keep", "commit", "fail", "needs_reauth", "release", "revoke"):
        with pytest.raises(ConditionFailed):
            perform(store, write, "c1", now)


def test_each_refresh_outcome_is_one_transition_s_and_counted_as_one_catalogued_metric() -> None:
    for outcome in RefreshOutcome:
        rows = [t for t in TRANSITIONS if t.outcome == outcome]
        assert rows, f"{outcome} has no transition"
        assert {t.metric for t in rows} == {metric_of(outcome)}
        assert metric_of(outcome) in EMITTED
    assert metric_of(RefreshOutcome.REFRESHED) == "refresh_ok"
    assert metric_of(RefreshOutcome.LOST_IN_FLIGHT) == metric_of(RefreshOutcome.LOST) == "refresh_lost"


class Recorder:
    def __init__(self) -> None:
        self.published: list[events.ConnectionEvent] = []

    def publish(self, event: events.ConnectionEvent) -> None:
        self.published.append(event)


@pytest.mark.parametrize("transition", TRANSITIONS, ids=[t.name for t in TRANSITIONS])
def test_each_transition_announces_its_event_with_the_status_it_leaves(transition: Transition) -> None:
    connection = Connection(
        connection_id="c1", status="active", secret_arn="arn", email="ada@example.com", scopes="", region="us",
        access_expires_at=0, refresh_due_at=0, generation=1, lease_until=None, failures=2, last_error=None,
        created_at=0, updated_at=0,
    )  # fmt: skip
    for had_failed in (False, True):
        recorder = Recorder()
        events.announce(recorder, transition.name, connection, had_failed=had_failed)  # type: ignore[arg-type]
        expected = transition.event if transition.event_if == "always" or had_failed else None
        assert [event.detail_type for event in recorder.published] == ([expected] if expected else [])
        if expected:
            assert recorder.published[0].status == status_after(transition.name)
    assert BY_NAME[transition.name] is transition


def test_the_statuses_events_carry() -> None:
    assert status_after("refreshed") == status_after("kept") == status_after("lease") == ConnectionStatus.ACTIVE
    assert status_after("lost_in_flight") == ConnectionStatus.NEEDS_REAUTH
    assert status_after("revoke") == ConnectionStatus.REVOKED
    assert status_after("binding_refused") == "refused"
