"""Lambda's SQS event source mappings, locally: each AWS::Lambda::EventSourceMapping of the template on an SQS queue
polls the embedded AWS's queue and invokes its function with Lambda's SQS event. What the function handled is
deleted (the whole batch, or all but its batchItemFailures with ReportBatchItemFailures); the rest becomes visible
again when its visibility timeout ends, and the queue's redrive policy (kept by moto, as by SQS) moves a message to
its dead-letter queue once it has been received maxReceiveCount times."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from infra.local.gateway import Invoker
from infra.local.template_model import Resolver, TemplateError

log = logging.getLogger("infra.local.event_sources")

EVENT_SOURCE_MAPPING: Final = "AWS::Lambda::EventSourceMapping"
REPORT_BATCH_ITEM_FAILURES: Final = "ReportBatchItemFailures"


@dataclass(frozen=True)
class QueueSource:
    """An event source mapping from an SQS queue to a function of the template."""

    logical_id: str
    function: str  # the function's logical id
    queue_arn: str
    batch_size: int = 10
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
        sources.append(
            QueueSource(
                logical_id=logical_id,
                function=_function_of(logical_id, raw.get("FunctionName")),
                queue_arn=arn,
                batch_size=int(props.get("BatchSize", 10)),
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


def sqs_event(messages: list[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
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


class QueuePoller:
    """Polls one queue for one function, as Lambda's pollers do (one batch at a time here)."""

    def __init__(self, source: QueueSource, function: Invoker, sqs: Any, region: str, *, wait_seconds: int = 1):
        self.source = source
        self._function = function
        self._sqs = sqs
        self._region = region
        self._wait_seconds = wait_seconds
        self._queue_url = sqs.get_queue_url(QueueName=source.queue_name)["QueueUrl"]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.invocations = 0

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

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # the embedded AWS stopping under it, mostly: the loop decides
                if not self._stopping.is_set():
                    log.exception("%s: polling failed", self.source.logical_id)
                    self._stopping.wait(0.5)

    def poll_once(self) -> int:
        """Receive one batch, invoke the function with it, delete what it handled; the batch's size."""
        answer = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=min(10, self.source.batch_size),
            WaitTimeSeconds=self._wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages") or []
        if not messages:
            return 0
        invocation = self._function.invoke(sqs_event(messages, self.source.queue_arn, self._region))
        self.invocations += 1
        handled = self._handled(messages, invocation.payload if invocation.ok else None, ok=invocation.ok)
        if not invocation.ok:
            log.info("%s: %s, the batch comes back", self.source.function, invocation.error_type)
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages) if m in handled]
        if entries:
            self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        return len(messages)

    def _handled(self, messages: list[Mapping[str, Any]], payload: Any, *, ok: bool) -> list[Mapping[str, Any]]:
        """Lambda's rule: a function error fails the whole batch; with ReportBatchItemFailures, the listed ones
        fail, and an answer naming an id not in the batch (or none at all) fails the whole batch."""
        if not ok:
            return []
        if not self.source.report_item_failures or not isinstance(payload, Mapping):
            return list(messages)
        failures = payload.get("batchItemFailures") or []
        if not isinstance(failures, list):
            return []
        failed = {str(f.get("itemIdentifier")) for f in failures if isinstance(f, Mapping)}
        ids = {m["MessageId"] for m in messages}
        if not failed <= ids or "" in failed:
            return []
        return [m for m in messages if m["MessageId"] not in failed]
