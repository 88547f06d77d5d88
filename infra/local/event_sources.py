"""Lambda's SQS event source mappings, locally: each AWS::Lambda::EventSourceMapping of the template on an SQS queue
polls the embedded AWS's queue and invokes its function with Lambda's SQS event, as the mapping says: at most
BatchSize messages a batch (one ReceiveMessage returns at most ten), at most ScalingConfig.MaximumConcurrency
invocations at once. What the function handled is deleted (the whole batch, or all but its batchItemFailures with
ReportBatchItemFailures; a function error keeps the whole batch); the rest becomes visible again when its visibility
timeout ends, and the queue's redrive policy (kept by moto, as by SQS) moves a message to its dead-letter queue once
it has been received maxReceiveCount times. The webhook delivery queue and the refresh work queue both run here."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
        self._busy = 0
        self._last_empty = float("-inf")  # when the latest receive that found nothing started
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
            with self._lock:
                self._busy += 1
            threading.Thread(target=self._deliver_and_release, args=(messages,), daemon=True).start()

    def _receive(self) -> list[dict[str, Any]]:
        started = time.monotonic()
        answer = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=min(SQS_MAXIMUM_BATCH, self.source.batch_size),
            WaitTimeSeconds=self._wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = answer.get("Messages") or []
        if not messages:
            with self._lock:
                self._last_empty = max(self._last_empty, started)
        return messages

    def _deliver_and_release(self, messages: list[dict[str, Any]]) -> None:
        try:
            self._deliver(messages)
        finally:
            self._slots.release()

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        try:
            event = sqs_event(messages, self.source.queue_arn, self._region)
            invocation = self.function.invoke(event)
            failed = failed_ids(invocation, event["Records"], partial=self.source.report_item_failures)
            done = [] if failed is None else [m for m in messages if m["MessageId"] not in failed]
            if done:
                with contextlib.suppress(Exception):  # not deleted: it comes back, as on AWS
                    self._sqs.delete_message_batch(
                        QueueUrl=self._queue_url,
                        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                    )
            with self._lock:
                self.invocations += 1
                self.failed_messages += len(messages) - len(done)
                self.outcomes.update(self._outcomes_of(invocation))
            if not invocation.ok:
                log.info("%s: %s, the batch comes back", self.source.function, invocation.error_type)
        finally:
            with self._lock:
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

    def idle(self, since: float) -> bool:
        """Drained since `since` (time.monotonic()): no batch being delivered, and a receive that started after it
        found the queue empty. (One thread receives, so no batch can be between its receive and its delivery then.)
        Messages a function reported failed stay invisible until their visibility timeout: they do not count."""
        with self._lock:
            return self._busy == 0 and self._last_empty >= since

    def snapshot(self) -> tuple[int, int, Counter[str]]:
        """Batches delivered, messages that stayed in the queue, and the outcomes logged, so far."""
        with self._lock:
            return self.invocations, self.failed_messages, Counter(self.outcomes)
