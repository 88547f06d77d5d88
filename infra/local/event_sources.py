"""Lambda's SQS event source mappings, locally: each AWS::Lambda::EventSourceMapping of the template on an SQS queue
polls the embedded AWS's queue and invokes its function with Lambda's SQS event, as the mapping says: at most
BatchSize messages a batch (one ReceiveMessage returns at most ten), at most ScalingConfig.MaximumConcurrency
invocations at once. What the function handled is deleted (the whole batch, or all but its batchItemFailures with
ReportBatchItemFailures; a function error keeps the whole batch); the rest becomes visible again when its visibility
timeout ends, and the queue's redrive policy (kept by moto, as by SQS) moves a message to its dead-letter queue once
it has been received maxReceiveCount times. The webhook delivery queue and the refresh work queue both run here.

A poller is drained (QueuePoller.backlog) when its queue's own counts say so, read between two of the poller's
receives: nothing visible or delayed, no batch being delivered, and nothing invisible but the messages the function
reported failed (they wait out their visibility timeout, 1,080 s on the refresh queue, and do not hold it up)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from infra.local.template_model import Resolver, TemplateError

if TYPE_CHECKING:
    from infra.local.lambda_runtime import Invocation, LocalFunction

log = logging.getLogger("infra.local.event_sources")

EVENT_SOURCE_MAPPING: Final = "AWS::Lambda::EventSourceMapping"
REPORT_BATCH_ITEM_FAILURES: Final = "ReportBatchItemFailures"
RECEIVE_WAIT_SECONDS: Final = 1
SQS_MAXIMUM_BATCH: Final = 10  # one ReceiveMessage returns at most ten
# A mapping without ScalingConfig: Lambda's SQS pollers start at five concurrent batches (and scale up; five is
# enough locally).
DEFAULT_MAXIMUM_CONCURRENCY: Final = 5
# The line a function may log at the end of a batch with its outcomes (functions/refresh/worker.py does).
BATCH_FINISHED: Final = "refresh batch finished"
QUEUE_COUNTS: Final = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
)
# How often a drain reads the queue's counts again while they are not yet zero (a delivery's end wakes it sooner).
DRAIN_RECHECK_SECONDS: Final = 0.2


@dataclass(frozen=True)
class Backlog:
    """What keeps a poller's queue from being drained, as read at one moment between two of its receives."""

    queue: str
    visible: int = 0
    delayed: int = 0
    not_visible: int = 0
    held_back: int = 0  # messages the function reported failed, waiting out their visibility timeout
    in_flight: int = 0  # batches being delivered
    unsettled: str = field(default="", compare=False)  # why the counts are not a settled reading

    @property
    def drained(self) -> bool:
        return (
            not self.unsettled
            and self.in_flight == 0
            and self.visible == 0
            and self.delayed == 0
            and self.not_visible <= self.held_back
        )

    def __str__(self) -> str:
        counts = (
            f"{self.queue}: {self.visible} waiting, {self.delayed} delayed, {self.not_visible} not visible"
            f" ({self.held_back} reported failed), {self.in_flight} batch(es) being delivered"
        )
        return f"{counts} (unsettled: {self.unsettled})" if self.unsettled else counts


class QueueNotDrained(TimeoutError):
    """A drain's bounded wait ended with work still on a queue; the message names the queue and its counts."""

    def __init__(self, backlogs: Sequence[Backlog], timeout: float) -> None:
        self.backlogs = list(backlogs)
        super().__init__(f"not drained after {timeout:g} s: " + "; ".join(str(b) for b in backlogs))


@dataclass(frozen=True)
class QueueSource:
    """An event source mapping from an SQS queue to a function of the template."""

    logical_id: str
    function: str  # the function's logical id
    queue_arn: str
    batch_size: int = 10
    maximum_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency
    report_item_failures: bool = False
    enabled: bool = True

    @property
    def queue_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[-1]


def read_queue_sources(resolver: Resolver) -> list[QueueSource]:
    """Every active event source mapping of the template whose source is an SQS queue."""
    sources = []
    for logical_id, resource in resolver.template.resources_of_type(EVENT_SOURCE_MAPPING).items():
        if not resolver.is_active(logical_id):
            continue
        raw = resource.get("Properties") or {}
        props = resolver.resolve({k: v for k, v in raw.items() if k != "FunctionName"})
        arn = str(props.get("EventSourceArn", ""))
        if ":sqs:" not in arn:
            continue
        maximum = (props.get("ScalingConfig") or {}).get("MaximumConcurrency")
        sources.append(
            QueueSource(
                logical_id=logical_id,
                function=_function_of(logical_id, raw.get("FunctionName")),
                queue_arn=arn,
                batch_size=int(props.get("BatchSize", 10)),
                maximum_concurrency=None if maximum is None else int(maximum),
                report_item_failures=REPORT_BATCH_ITEM_FAILURES in (props.get("FunctionResponseTypes") or []),
                enabled=props.get("Enabled", True) not in (False, "false"),
            )
        )
    return sources


def _function_of(logical_id: str, name: Any) -> str:
    """The function's logical id from `!Ref Fn`, `!Ref Fn.Alias` (SAM's live alias) or `!GetAtt Fn.Arn`."""
    if isinstance(name, Mapping) and isinstance(name.get("Ref"), str):
        return str(name["Ref"]).removesuffix(".Alias")
    if isinstance(name, Mapping) and isinstance(name.get("Fn::GetAtt"), list):
        return str(name["Fn::GetAtt"][0])
    raise TemplateError(f"{logical_id}: FunctionName must be a !Ref (or !GetAtt) of a function of the template")


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """Lambda's event for a batch of SQS messages."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes") or {}),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "dataType": value.get("DataType"),
                        "stringListValues": [],
                        "binaryListValues": [],
                    }
                    for name, value in (message.get("MessageAttributes") or {}).items()
                },
                "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


def failed_ids(invocation: Invocation, records: Sequence[Mapping[str, Any]], *, partial: bool) -> set[str] | None:
    """The message ids that stay in the queue; None: the whole batch. Lambda's rule: a function error fails the
    whole batch; with ReportBatchItemFailures an empty or null answer or list is a success, the named messages fail,
    and an answer it cannot read (not an object, a list that is not one, an empty, null or unknown identifier) fails
    the whole batch."""
    if not invocation.ok:
        return None
    if not partial:
        return set()
    payload = invocation.payload
    if payload is None:
        return set()
    if not isinstance(payload, Mapping):
        return None
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    ids = {record["messageId"] for record in records}
    named: set[str] = set()
    for failure in failures if isinstance(failures, list) else [None]:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return None
        named.add(identifier)
    return named


class QueuePoller:
    """One event source mapping: polls its queue on a thread, invokes the function on others (at most the mapping's
    maximum concurrency at once)."""

    def __init__(
        self, source: QueueSource, function: LocalFunction, sqs: Any, region: str, *, wait_seconds: int = 1
    ) -> None:
        self.source = source
        self.function = function
        self._sqs = sqs
        self._region = region
        self._wait_seconds = wait_seconds
        self._queue_url = sqs.get_queue_url(QueueName=source.queue_name)["QueueUrl"]
        self._slots = threading.BoundedSemaphore(source.maximum_concurrency or DEFAULT_MAXIMUM_CONCURRENCY)
        self._stopping = threading.Event()
        self._busy = 0  # batches being delivered
        self._held_back: set[str] = set()  # ids the function reported failed, not received since
        self._receives_started = 0
        self._receives_done = 0
        self._batches_received = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self.invocations = 0
        self.failed_messages = 0
        self.outcomes: Counter[str] = Counter()

    def start(self) -> QueuePoller:
        if self._thread is None and self.source.enabled:
            self._thread = threading.Thread(target=self._run, name=f"poller-{self.source.logical_id}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._wait_seconds + 5)
            self._thread = None
        with self._lock:
            self._lock.wait_for(lambda: self._busy == 0, timeout=10)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                messages = self._receive()
            except Exception as exc:  # the embedded AWS stopping under it, mostly: the loop decides
                self._slots.release()
                if not self._stopping.is_set():
                    log.warning("%s: could not receive: %s", self.source.logical_id, exc)
                    self._stopping.wait(0.5)
                continue
            if not messages:
                self._slots.release()
                continue
            threading.Thread(target=self._deliver_and_release, args=(messages,), daemon=True).start()

    def _receive(self) -> list[dict[str, Any]]:
        """One ReceiveMessage; what it got counts as a batch being delivered before the drain can see it done."""
        messages: list[dict[str, Any]] = []
        with self._lock:
            self._receives_started += 1
        try:
            answer = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(SQS_MAXIMUM_BATCH, self.source.batch_size),
                WaitTimeSeconds=self._wait_seconds,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = answer.get("Messages") or []
        finally:
            with self._lock:
                if messages:
                    self._busy += 1
                    self._batches_received += 1
                    self._held_back.difference_update(m["MessageId"] for m in messages)
                self._receives_done += 1
                self._lock.notify_all()
        return messages

    def _deliver_and_release(self, messages: list[dict[str, Any]]) -> None:
        try:
            self._deliver(messages)
        finally:
            self._slots.release()

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        kept = {m["MessageId"] for m in messages}  # until deleted: what stays in the queue, invisible for now
        try:
            event = sqs_event(messages, self.source.queue_arn, self._region)
            invocation = self.function.invoke(event)
            failed = failed_ids(invocation, event["Records"], partial=self.source.report_item_failures)
            done = [] if failed is None else [m for m in messages if m["MessageId"] not in failed]
            if done:
                with contextlib.suppress(Exception):  # not deleted: it comes back, as on AWS
                    answer = self._sqs.delete_message_batch(
                        QueueUrl=self._queue_url,
                        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                    )
                    deleted = {int(entry["Id"]) for entry in answer.get("Successful") or []}
                    kept -= {m["MessageId"] for i, m in enumerate(done) if i in deleted}
            with self._lock:
                self.invocations += 1
                self.failed_messages += len(messages) - len(done)
                self.outcomes.update(self._outcomes_of(invocation))
            if not invocation.ok:
                log.info("%s: %s, the batch comes back", self.source.function, invocation.error_type)
        finally:
            with self._lock:
                self._held_back |= kept
                self._busy -= 1
                self._lock.notify_all()

    def _outcomes_of(self, invocation: Invocation) -> Counter[str]:
        """The outcomes the function logged for this invocation (its "refresh batch finished" line), if any."""
        found: Counter[str] = Counter()
        for line in list(getattr(self.function, "logs", ())):
            if invocation.request_id not in line or BATCH_FINISHED not in line:
                continue
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                record = json.loads(line)
                found.update({k: int(v) for k, v in (record.get("outcomes") or {}).items()})
        return found

    def backlog(self, timeout: float) -> Backlog:
        """What is left on the queue, read consistently: once no batch is being delivered, the queue's counts are
        read; if some messages are invisible, the receive that may have been running meanwhile is awaited (it may
        have taken a message the function reported failed before, again), and if it got a batch, all is read again.
        A message sent before this call is in the counts (visible, delayed or received); one the poller received
        and has not handed to the function yet is invisible and not reported failed, so it is not drained.
        Waits at most `timeout` seconds; what it returns then may not be drained."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._busy == 0, timeout=max(0.0, deadline - time.monotonic()))
                batches, busy, held_back = self._batches_received, self._busy, len(self._held_back)
            if busy:
                return Backlog(self.source.queue_name, in_flight=busy, held_back=held_back)
            counts = self._counts()
            if counts.not_visible == 0:  # nothing received and not deleted when read: no receive can be midway
                return dataclasses.replace(counts, held_back=held_back)
            with self._lock:
                started = self._receives_started
                settled = self._lock.wait_for(
                    functools.partial(self._receives_ended, started), timeout=max(0.0, deadline - time.monotonic())
                )
                received = self._batches_received != batches
            if settled and not received:
                return dataclasses.replace(counts, held_back=held_back)
            if time.monotonic() >= deadline:
                why = "a batch was received while they were read" if received else "a receive did not end in time"
                return dataclasses.replace(counts, held_back=held_back, unsettled=why)

    def _receives_ended(self, started: int) -> bool:
        """Every receive that had started when `started` was counted has ended (or none can run: not polling)."""
        return self._receives_done >= started or self._thread is None

    def _counts(self) -> Backlog:
        try:
            answer = self._sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=list(QUEUE_COUNTS))
        except Exception as exc:  # the embedded AWS stopping, mostly: reported, never taken for drained
            return Backlog(self.source.queue_name, unsettled=f"counts unreadable: {type(exc).__name__}")
        visible, delayed, not_visible = (int(answer["Attributes"].get(name, 0)) for name in QUEUE_COUNTS)
        return Backlog(self.source.queue_name, visible=visible, delayed=delayed, not_visible=not_visible)

    def wait_drained(self, timeout: float) -> Backlog:
        """Wait until drained (see backlog), at most `timeout` seconds: the last backlog read, drained or not."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.backlog(max(0.0, deadline - time.monotonic()))
            if found.drained or time.monotonic() >= deadline:
                return found
            with self._lock:  # woken sooner by a delivery's end or a receive
                self._lock.wait(min(DRAIN_RECHECK_SECONDS, max(0.0, deadline - time.monotonic())))

    def snapshot(self) -> tuple[int, int, Counter[str]]:
        """Batches delivered, messages that stayed in the queue, and the outcomes logged, so far."""
        with self._lock:
            return self.invocations, self.failed_messages, Counter(self.outcomes)
