"""The refresh fan-out in-process: the scheduled dispatcher queues due connections in the template's refresh queue
(moto), and the worker's handler refreshes what it receives, against the Smartsheet emulator, on both stores.

At-least-once delivery (every message delivered twice: each connection refreshed once), the dispatcher's budget
(never more than the pace refreshes before the next run, less what the queue holds), what a worker reports back
(only unreadable messages and crashed refreshes; not what the pace had no slot for), and the due index's
partitions (an upgraded stack's records in "due", DueShards raised and lowered: nothing orphaned)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.shards import LEGACY_SHARD, MAX_DUE_SHARDS, due_jitter, due_shard
from smartsheet_oauth.flows import fanout
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.stores.pace import LocalPace

from tests.support.broker import Broker, pending_tokens_key_arn
from tests.support.fixtures import BOTH_STORES

pytestmark = BOTH_STORES

USERS = (4583173393803140, 6812335718217604, 9007199254740993, 1234567890123456, 2345678901234567)


class Context:
    """Enough of LambdaContext for the handlers: a request id and the time left."""

    def __init__(self, seconds: float = 120.0) -> None:
        self.aws_request_id = "req-" + str(time.monotonic_ns())
        self.function_name = "RefreshWorkerFunction"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:worker"
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self._deadline - time.monotonic()) * 1000)


def queue_url() -> str:
    sqs = boto3.client("sqs", region_name="us-east-1")
    [url] = [u for u in sqs.list_queues().get("QueueUrls", []) if "RefreshWorkQueue" in u]
    return str(url)


@pytest.fixture
def fanned(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """The broker with the dispatcher's environment as the template sets it: the refresh queue configured."""
    known = {user.id for user in broker.emulator.users}
    for user_id in USERS:
        if user_id not in known:
            broker.emulator.add_users(1, first_id=user_id)
    monkeypatch.setenv("PENDING_TOKENS_KEY_ID", pending_tokens_key_arn())
    monkeypatch.setenv("REFRESH_QUEUE_URL", queue_url())
    monkeypatch.setenv("REFRESH_SCHEDULE", "rate(30 minutes)")
    services.reset()
    yield broker
    services.reset()


def signed_in_and_due(broker: Broker, *user_ids: int) -> None:
    for user_id in user_ids:
        assert broker.sign_in(user_id=user_id).status == 200
        broker.make_due(user_id)


def receive_all() -> list[dict[str, Any]]:
    """Every message in the refresh queue, as Lambda's SQS event records (and gone from the queue)."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    records: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url(), MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return records
        for message in messages:
            records.append({"messageId": message["MessageId"], "body": message["Body"], "eventSource": "aws:sqs"})
            sqs.delete_message(QueueUrl=queue_url(), ReceiptHandle=message["ReceiptHandle"])


def run_worker(records: list[dict[str, Any]]) -> dict[str, Any]:
    from refresh.worker import lambda_handler

    answer: dict[str, Any] = lambda_handler({"Records": records}, Context())
    return answer


def refreshes(broker: Broker) -> int:
    return broker.emulator.counts["token.refresh"]


def test_the_dispatcher_queues_the_due_connections_and_the_worker_refreshes_them(fanned: Broker) -> None:
    signed_in_and_due(fanned, *USERS[:3])
    before = refreshes(fanned)

    summary = fanned.sweep()

    assert summary["skipped"] is False
    assert summary["dispatched"] == summary["queued"] == 3
    assert summary["backlog"] == 0  # queued is reached: still due until a worker refreshes it, but not backlog
    assert refreshes(fanned) == before  # queued, not refreshed: the workers do that
    records = receive_all()
    assert sorted(json.loads(r["body"])["connection_id"] for r in records) == sorted(str(u) for u in USERS[:3])
    assert all("token" not in r["body"] for r in records)
    answer = run_worker(records)
    assert answer == {"batchItemFailures": []}
    assert refreshes(fanned) == before + 3
    for user_id in USERS[:3]:
        record = fanned.connection(user_id)
        assert record is not None
        assert record["generation"] == 2
        assert record["refresh_due_at"] > time.time()


def test_every_message_delivered_twice_refreshes_each_connection_once(fanned: Broker) -> None:
    signed_in_and_due(fanned, *USERS)
    before = refreshes(fanned)
    fanned.sweep()
    records = receive_all()
    assert len(records) == len(USERS)

    # A duplicate in the same batch, then the whole batch delivered again (a visibility timeout that ran out).
    first = run_worker(records + records[:2])
    again = run_worker(records)

    assert first == again == {"batchItemFailures": []}
    assert refreshes(fanned) == before + len(USERS)
    for user_id in USERS:
        record = fanned.connection(user_id)
        assert record is not None
        assert record["generation"] == 2
        tokens = fanned.tokens(user_id)
        assert fanned.emulator.refresh_token_is_live(tokens["refresh_token"])


def test_a_late_duplicate_after_a_later_refresh_refreshes_nothing(fanned: Broker) -> None:
    """A message read at generation 1 and delivered after the connection was refreshed and came due again: the
    lease refuses the stale generation, and the current refresh token is not spent."""
    signed_in_and_due(fanned, USERS[0])
    fanned.sweep()
    stale = receive_all()
    run_worker(stale)
    fanned.make_due(USERS[0])
    before = refreshes(fanned)

    assert run_worker(stale) == {"batchItemFailures": []}

    assert refreshes(fanned) == before
    record = fanned.connection(USERS[0])
    assert record is not None
    assert record["generation"] == 2


def test_the_dispatcher_queues_no_more_than_the_pace_refreshes_before_its_next_run(
    fanned: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 a minute: windows of 1 (its budget), 60 s / 10 = 6 s each: 10 a minute; the next run in 15 minutes.
    signed_in_and_due(fanned, *USERS)
    monkeypatch.setenv("REFRESH_RATE_PER_MINUTE", "1")
    monkeypatch.setenv("REFRESH_SCHEDULE", "rate(3 minutes)")
    services.reset()
    deps = RefreshDeps(
        config=get_config(),
        connections=services.connection_store(),
        vault=services.token_vault(),
        smartsheet=services.smartsheet_client(),
    )
    assert fanout.dispatch_budget(deps, waiting=0) == 3
    assert fanout.dispatch_budget(deps, waiting=2) == 1
    assert fanout.dispatch_budget(deps, waiting=5) == 0

    summary = fanned.sweep()
    assert summary["queued"] == 3
    assert summary["budget"] == 3
    queued = receive_all()
    # Earliest first: the three connections due longest.
    assert len(queued) == 3

    # The queue still holds 3 (not yet received): the next run queues nothing more.
    boto3.client("sqs", region_name="us-east-1").send_message_batch(
        QueueUrl=queue_url(), Entries=[{"Id": str(i), "MessageBody": r["body"]} for i, r in enumerate(queued)]
    )
    summary = fanned.sweep()
    assert summary["queued"] == 0
    assert summary["queue_waiting"] == 3


def test_the_dispatcher_sends_the_earliest_due_first_across_partitions(
    fanned: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUE_SHARDS", str(MAX_DUE_SHARDS))
    services.reset()
    signed_in_and_due(fanned, *USERS)
    for order, user_id in enumerate(USERS):
        fanned.make_due(user_id, at=1000 + (len(USERS) - order))  # the last user is due first
    shards = {fanned.connection(u)["due_shard"] for u in USERS}  # type: ignore[index]
    assert len(shards) > 1

    fanned.sweep()

    bodies = [json.loads(r["body"]) for r in receive_all()]
    assert [b["refresh_due_at"] for b in bodies] == sorted(b["refresh_due_at"] for b in bodies)
    assert bodies[0]["connection_id"] == str(USERS[-1])


def test_an_upgraded_stacks_records_and_a_lowered_due_shards_orphan_nothing(
    fanned: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before the fan-out say "due"; records written with DueShards 16 are in "due-N". With
    DueShards then lowered to 1, the dispatcher still reads every partition: all of them are queued."""
    monkeypatch.setenv("DUE_SHARDS", str(MAX_DUE_SHARDS))
    services.reset()
    signed_in_and_due(fanned, *USERS[1:])
    assert {fanned.connection(u)["due_shard"] for u in USERS[1:]} - {LEGACY_SHARD}  # type: ignore[index]
    monkeypatch.setenv("DUE_SHARDS", "1")
    services.reset()
    signed_in_and_due(fanned, USERS[0])
    assert fanned.connection(USERS[0])["due_shard"] == LEGACY_SHARD  # type: ignore[index]

    summary = fanned.sweep()

    assert summary["queued"] == len(USERS)
    before = refreshes(fanned)
    assert run_worker(receive_all()) == {"batchItemFailures": []}
    assert refreshes(fanned) == before + len(USERS)
    # The backlog counts every partition too.
    assert services.connection_store().count_due(now=int(time.time())) == (0, True)


def test_a_connection_keeps_its_partition_and_a_sign_in_comes_due_spread_by_its_id(fanned: Broker) -> None:
    signed_in_and_due(fanned, USERS[0])
    fanned.sweep()
    run_worker(receive_all())
    record = fanned.connection(USERS[0])
    assert record is not None
    assert record["due_shard"] == due_shard(str(USERS[0]), 1)

    assert fanned.sign_in(user_id=USERS[1]).status == 200
    signed = fanned.connection(USERS[1])
    assert signed is not None
    window = get_config().refresh_window_seconds
    assert signed["access_expires_at"] - signed["refresh_due_at"] == window + due_jitter(str(USERS[1]), window)


def test_the_jitter_spreads_due_times_over_a_tenth_of_the_window_and_is_stable() -> None:
    window = 172800
    offsets = [due_jitter(f"user-{n}", window) for n in range(2000)]
    assert all(0 <= o <= window // 10 for o in offsets)
    assert max(offsets) - min(offsets) > 0.9 * window // 10  # spread over the whole tenth
    assert due_jitter("user-1", window) == due_jitter("user-1", window)
    buckets = [0] * 10
    for offset in offsets:
        buckets[min(9, offset * 10 // (window // 10 + 1))] += 1
    assert min(buckets) > 120  # about 200 each: no bunching


def test_a_worker_reports_only_unreadable_messages_and_crashed_refreshes(
    fanned: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_in_and_due(fanned, *USERS[:3])
    fanned.sweep()
    records = receive_all()
    unreadable = [
        {"messageId": "m-not-json", "body": "not json"},
        {"messageId": "m-other-version", "body": json.dumps({"v": 99, "connection_id": "1"})},
        {"messageId": "m-bad-types", "body": json.dumps({"v": 1, "connection_id": 5, "generation": "1"})},
    ]
    crash_for = json.loads(records[0]["body"])["connection_id"]
    from smartsheet_oauth.flows import refresh
    from smartsheet_oauth.flows import sweep as sweep_module

    real = refresh.refresh_connection

    def crashing(due: Any, deps: Any, **kwargs: Any) -> Any:
        if due.connection_id == crash_for:
            raise RuntimeError("a bug")
        return real(due, deps, **kwargs)

    monkeypatch.setattr(sweep_module, "refresh_connection", crashing)
    answer = run_worker(records + unreadable)

    failed = sorted(item["itemIdentifier"] for item in answer["batchItemFailures"])
    assert failed == sorted([records[0]["messageId"], "m-not-json", "m-other-version", "m-bad-types"])


def test_a_message_the_pace_has_no_slot_for_is_not_reported_failed_and_stays_due(
    fanned: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose time runs out waiting for the pace deletes the rest of its batch instead of sending it towards
    the dead-letter queue: those connections are still due, and the next dispatch queues them again."""
    signed_in_and_due(fanned, *USERS[:3])
    fanned.sweep()
    records = receive_all()
    # One slot, then none before the worker's time runs out.
    # (through services.shared_pace, which the worker container's cached view is made from on its first batch)
    services.worker_pace.cache_clear()
    monkeypatch.setattr(services, "shared_pace", lambda: LocalPace(1, time.monotonic, time.sleep))
    before = refreshes(fanned)
    from refresh.worker import lambda_handler

    answer = lambda_handler({"Records": records}, Context(seconds=40.0))

    assert answer == {"batchItemFailures": []}
    assert refreshes(fanned) == before + 1
    assert services.connection_store().count_due(now=int(time.time()))[0] == 2
    assert fanned.sweep()["queued"] == 2


def test_an_open_breaker_lets_the_containers_next_batches_go_and_they_stay_due(
    fanned: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a run of struggling outcomes a worker container stops refreshing for a while, across its batches (each
    only ten): what it receives meanwhile is neither refreshed nor sent towards the dead-letter queue."""
    import refresh.worker
    from smartsheet_oauth.flows.sweep import Breaker

    signed_in_and_due(fanned, *USERS[:2])
    fanned.sweep()
    records = receive_all()
    breaker = Breaker()
    breaker.open()
    monkeypatch.setattr(refresh.worker, "BREAKER", breaker)
    before = refreshes(fanned)

    assert run_worker(records) == {"batchItemFailures": []}

    assert refreshes(fanned) == before
    assert services.connection_store().count_due(now=int(time.time()))[0] == 2
    breaker.opened_at = time.monotonic() - 301  # cooled down: the next batch is refreshed
    assert run_worker(records) == {"batchItemFailures": []}
    assert refreshes(fanned) == before + 2
