"""The local SQS event source poller's drain check, against moto server: drained only when the queue's own counts
say so (nothing visible, delayed or held by anyone but the function's reported failures) and no batch is being
delivered; a bounded wait that says which queue holds what when it ends."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest

from infra.local.aws.moto_server import MotoServer
from infra.local.event_sources import QueueNotDrained, QueuePoller, QueueSource
from infra.local.lambda_runtime import Invocation

REGION = "us-east-1"
_names = itertools.count()


class FakeFunction:
    """Records each batch; holds it while `hold` is clear; reports the bodies in `fail` as failed items."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.fail = fail
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.bodies: list[str] = []
        self.logs: list[str] = []

    def invoke(self, event: Mapping[str, Any]) -> Invocation:
        self.started.set()
        assert self.hold.wait(30)
        records = event["Records"]
        self.bodies.extend(r["body"] for r in records)
        failures = [{"itemIdentifier": r["messageId"]} for r in records if r["body"] in self.fail]
        return Invocation(f"r{len(self.bodies)}", {"batchItemFailures": failures})


@pytest.fixture(scope="module")
def sqs() -> Iterator[Any]:
    server = MotoServer("127.0.0.1", 0)
    try:
        yield boto3.client(
            "sqs",
            endpoint_url=f"http://127.0.0.1:{server.port}",
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    finally:
        server.stop()


@pytest.fixture
def queue(sqs: Any) -> tuple[str, str]:
    name = f"drain-{next(_names)}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    return name, url


@pytest.fixture
def start(sqs: Any, queue: tuple[str, str]) -> Iterator[Any]:
    pollers: list[QueuePoller] = []

    def started(function: FakeFunction) -> QueuePoller:
        source = QueueSource(
            "Mapping", "Fn", f"arn:aws:sqs:{REGION}:123456789012:{queue[0]}", report_item_failures=True
        )
        poller = QueuePoller(source, function, sqs, REGION)  # type: ignore[arg-type]
        pollers.append(poller.start())
        return poller

    yield started
    for poller in pollers:
        poller.stop()


def test_a_message_sent_just_before_the_drain_is_delivered_before_it_is_drained(
    sqs: Any, queue: tuple[str, str], start: Any
) -> None:
    function = FakeFunction()
    poller = start(function)
    for n in range(5):
        sqs.send_message(QueueUrl=queue[1], MessageBody=f"m{n}")
        backlog = poller.wait_drained(timeout=10)
        assert backlog.drained, backlog
        assert f"m{n}" in function.bodies
    assert (backlog.visible, backlog.not_visible, backlog.in_flight) == (0, 0, 0)


def test_a_batch_being_delivered_is_not_drained_until_it_is_done(sqs: Any, queue: tuple[str, str], start: Any) -> None:
    function = FakeFunction()
    function.hold.clear()
    poller = start(function)
    sqs.send_message(QueueUrl=queue[1], MessageBody="slow")
    assert function.started.wait(10)

    held = poller.wait_drained(timeout=1.5)

    assert not held.drained
    assert held.in_flight == 1
    function.hold.set()
    done = poller.wait_drained(timeout=10)
    assert done.drained, done
    assert function.bodies == ["slow"]


def test_a_delayed_message_holds_the_drain_until_it_is_delivered(sqs: Any, queue: tuple[str, str], start: Any) -> None:
    function = FakeFunction()
    poller = start(function)
    sqs.send_message(QueueUrl=queue[1], MessageBody="later", DelaySeconds=4)
    started = time.monotonic()

    backlog = poller.wait_drained(timeout=15)

    assert backlog.drained, backlog
    assert function.bodies == ["later"]
    assert time.monotonic() - started >= 3.5


def test_a_message_the_function_reported_failed_does_not_hold_it_up(
    sqs: Any, queue: tuple[str, str], start: Any
) -> None:
    function = FakeFunction(fail=frozenset({"bad"}))
    poller = start(function)
    sqs.send_message(QueueUrl=queue[1], MessageBody="bad")
    sqs.send_message(QueueUrl=queue[1], MessageBody="good")

    backlog = poller.wait_drained(timeout=10)

    assert backlog.drained, backlog
    assert sorted(function.bodies) == ["bad", "good"]
    # The failed one waits out its visibility timeout (60 s) in the queue: known, so it does not count.
    assert (backlog.not_visible, backlog.held_back, backlog.visible) == (1, 1, 0)


def test_a_message_nothing_receives_is_not_drained(sqs: Any, queue: tuple[str, str], start: Any) -> None:
    poller = start(FakeFunction())
    poller.stop()  # nothing receives: the message stays visible
    sqs.send_message(QueueUrl=queue[1], MessageBody="waiting")
    started = time.monotonic()

    backlog = poller.wait_drained(timeout=1)

    assert 1 <= time.monotonic() - started < 5
    assert not backlog.drained
    assert (backlog.visible, backlog.not_visible, backlog.in_flight) == (1, 0, 0)


def test_a_message_someone_else_holds_is_not_drained_and_the_timeout_names_the_queue_and_counts(
    sqs: Any, queue: tuple[str, str], start: Any
) -> None:
    # Received by another consumer and not deleted: invisible, but not the function's reported failure either.
    sqs.send_message(QueueUrl=queue[1], MessageBody="taken")
    assert sqs.receive_message(QueueUrl=queue[1], VisibilityTimeout=60)["Messages"]
    function = FakeFunction()
    poller = start(function)

    held = poller.wait_drained(timeout=3)

    assert not held.drained
    assert (held.visible, held.not_visible, held.held_back, held.in_flight) == (0, 1, 0, 0)
    assert str(QueueNotDrained([held], 3)).startswith(
        f"not drained after 3 s: {queue[0]}: 0 waiting, 0 delayed, 1 not visible (0 reported failed),"
        " 0 batch(es) being delivered"
    )
    assert function.bodies == []


def test_counts_it_cannot_read_are_never_drained(sqs: Any, queue: tuple[str, str], start: Any) -> None:
    poller = start(FakeFunction())
    poller.stop()
    sqs.delete_queue(QueueUrl=queue[1])

    backlog = poller.wait_drained(timeout=0.5)

    assert not backlog.drained
    assert "counts unreadable" in str(backlog)
