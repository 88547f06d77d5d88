"""The admin CLI's webhook verbs: `redrive-webhooks` sends the webhook dead-letter queue's events back to the delivery
queue, `test-webhook` POSTs a signed "Webhook Test" event to the stack's WebhookUrl and says what the receiver made of
it. Neither prints the signing secret or a signature; docs/webhooks.md says what each needs of IAM."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from smartsheet_oauth.flows.webhook_delivery import Answer, Poster, Unreachable, signed_post
from smartsheet_oauth.stores.events import SOURCE

from infra.admin.actions import ActionError
from infra.admin.target import Target, aws_errors

TEST_EVENT_TYPE: Final = "Webhook Test"
SQS_MAXIMUM_BATCH: Final = 10  # one ReceiveMessage, SendMessageBatch or DeleteMessageBatch: ten at most
# How long a received dead letter stays hidden while it is sent and deleted: a run that dies between the two leaves it
# in both queues, and it shows in the dead-letter queue again after this.
HOLD_SECONDS: Final = 120
REDRIVE_WAIT_SECONDS: Final = 1  # a receive that waits this long and finds nothing ends the run
# A moved event is delivered no sooner than this after it was sent back: its last attempt (which put it in the
# dead-letter queue) was signed before the move, so the next is signed at a later second. Signed in the same second,
# the two attempts would be the very same request (`t` is whole seconds, the body the same event), and a receiver's
# replay check (WebhookVerifier) would refuse the redelivery: back to the dead-letter queue.
REDRIVE_DELAY_SECONDS: Final = 1


@dataclass(frozen=True)
class WebhookParts:
    url: str
    delivery_queue_url: str
    dead_letter_queue_url: str
    signing_secret_arn: str


def webhook_parts(target: Target) -> WebhookParts:
    """The stack's webhook URL, queues and signing secret (its outputs), or what to do when it has none."""
    url = target.stack.parameters.get("WebhookUrl", "")
    if not url:
        raise ActionError(
            f"{target.description} has no WebhookUrl: webhooks are off (docs/webhooks.md, deploy with WebhookUrl=...)"
        )
    outputs = target.stack.outputs
    needed = ("WebhookDeliveryQueueUrl", "WebhookDeadLetterQueueUrl", "WebhookSigningSecretArn")
    missing = [name for name in needed if not outputs.get(name)]
    if missing:
        raise ActionError(
            f"{target.description} has no output {', '.join(missing)}: deployed from an older version? "
            "Deploy it again (make deploy)."
        )
    return WebhookParts(
        url=url,
        delivery_queue_url=outputs["WebhookDeliveryQueueUrl"],
        dead_letter_queue_url=outputs["WebhookDeadLetterQueueUrl"],
        signing_secret_arn=outputs["WebhookSigningSecretArn"],
    )


# ------------------------------------------------------------------------------------------------ redrive-webhooks
@dataclass(frozen=True)
class Redrive:
    waiting: int  # visible in the dead-letter queue when the run started
    in_flight: int  # received by someone else (or a run that died) and not deleted yet: back after their timeout
    moved: int = 0  # sent to the delivery queue and deleted from the dead-letter queue
    not_sent: int = 0  # the send refused: left in the dead-letter queue (visible again after HOLD_SECONDS)
    not_deleted: int = 0  # sent, but still in the dead-letter queue too: a duplicate a later run would send again


def _counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)), int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def _attributes(message: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's attributes as SendMessage takes them (a receive also answers empty list fields)."""
    kept: dict[str, dict[str, Any]] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        field = "BinaryValue" if "BinaryValue" in value else "StringValue"
        kept[name] = {"DataType": value["DataType"], field: value[field]}
    return kept


def redrive(
    sqs: Any,
    *,
    source: str,
    destination: str,
    limit: int | None,
    dry_run: bool = False,
    wait_seconds: int = REDRIVE_WAIT_SECONDS,
    hold_seconds: int = HOLD_SECONDS,
) -> Redrive:
    """Move from `source` to `destination` at most what waited when the run started (so events the receiver refuses
    again at once are not moved round forever), and at most `limit` of them. Each batch is sent first and deleted only
    once sent: a crash in between leaves a message in both queues, never in neither."""
    waiting, in_flight = _counts(sqs, source)
    if dry_run:
        return Redrive(waiting=waiting, in_flight=in_flight)
    budget = waiting if limit is None else min(limit, waiting)
    moved = not_sent = not_deleted = 0
    while moved + not_deleted < budget:
        messages = (
            sqs.receive_message(
                QueueUrl=source,
                MaxNumberOfMessages=min(SQS_MAXIMUM_BATCH, budget - moved - not_deleted),
                VisibilityTimeout=hold_seconds,
                WaitTimeSeconds=wait_seconds,
                MessageAttributeNames=["All"],
            ).get("Messages")
            or []
        )
        if not messages:
            break
        by_id = {str(i): message for i, message in enumerate(messages)}
        sent = sqs.send_message_batch(
            QueueUrl=destination,
            Entries=[
                {
                    "Id": i,
                    "MessageBody": m["Body"],
                    "MessageAttributes": _attributes(m),
                    "DelaySeconds": REDRIVE_DELAY_SECONDS,
                }
                for i, m in by_id.items()
            ],
        )
        sent_ids = [entry["Id"] for entry in sent.get("Successful") or []]
        not_sent += len(messages) - len(sent_ids)
        if sent_ids:
            deleted = sqs.delete_message_batch(
                QueueUrl=source,
                Entries=[{"Id": i, "ReceiptHandle": by_id[i]["ReceiptHandle"]} for i in sent_ids],
            )
            gone = len(deleted.get("Successful") or [])
            moved += gone
            not_deleted += len(sent_ids) - gone
        if len(sent_ids) < len(messages):
            break  # SQS refused part of a send (throttled, a permission): stop rather than loop on it
    return Redrive(waiting, in_flight, moved=moved, not_sent=not_sent, not_deleted=not_deleted)


def redrive_webhooks(target: Target, *, limit: int | None, dry_run: bool) -> Redrive:
    parts = webhook_parts(target)
    sqs = target.stack.client("sqs")
    with aws_errors("moving the webhook dead-letter queue's events"):
        return redrive(
            sqs,
            source=parts.dead_letter_queue_url,
            destination=parts.delivery_queue_url,
            limit=limit,
            dry_run=dry_run,
        )


# ---------------------------------------------------------------------------------------------------- test-webhook
def webhook_test_event(*, stack: str, region: str, account: str, now: int) -> dict[str, Any]:
    """A "Webhook Test" event: the connection events' envelope (docs/events.md) about no connection."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": TEST_EVENT_TYPE,
        "source": SOURCE,
        "account": account,
        "time": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [],
        "detail": {"test": True, "stack": stack, "occurred_at": now},
    }


_SIGNATURE_HINT = (
    "its signature check may have failed (the verify_webhook example answers 400 then): does it use this stack's "
    "signing secret (the WebhookSigningSecretArn output; after a rotation, both values), the raw body as received, "
    "and a clock within 5 minutes of the right time?"
)


def verdict(answer: Answer | Exception) -> tuple[bool, str]:
    """Whether the receiver took the test event, and what to check when it did not."""
    if isinstance(answer, Unreachable):
        return False, (
            f"no answer ({answer}): is the URL's host reachable from the internet (DNS, firewall, TLS certificate)? "
            "Deliveries would be retried for about 5 hours, then dead-lettered."
        )
    if isinstance(answer, Exception):
        return False, f"no answer ({type(answer).__name__})"
    status = answer.status
    if 200 <= status < 300:
        return True, f"OK: the receiver accepted the signed test event ({status})"
    if status in (400, 401, 403):
        return False, f"refused ({status}): {_SIGNATURE_HINT} Deliveries it refuses go to the dead-letter queue."
    if status in (404, 405, 410):
        return False, f"refused ({status}): no endpoint at that path: check WebhookUrl (redeploy to change it)"
    if 300 <= status < 400:
        return False, (
            f"a redirect ({status}), never followed: set WebhookUrl to the final URL (redeploy to change it)"
        )
    if status in (429, 503) or status >= 500 or status in (408, 425):
        wait = f" (Retry-After {answer.retry_after})" if answer.retry_after else ""
        return False, f"busy or failing ({status}){wait}: deliveries would be retried later; try again"
    return False, f"refused ({status}): deliveries it answers so go to the dead-letter queue at once"


@dataclass(frozen=True)
class WebhookTest:
    event_id: str
    receiver: str  # the URL's host (its path or query may carry the receiver's own token)
    status: int | None  # None: no answer
    ok: bool
    message: str


def send_test_event(target: Target, *, post: Poster | None = None, clock: Any = time.time) -> WebhookTest:
    """POST a signed test event to the stack's WebhookUrl, signed as the delivery function signs (signed_post)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from smartsheet_oauth.platform import webhook_http  # noqa: PLC0415

    parts = webhook_parts(target)
    with aws_errors("reading the webhook signing secret"):
        secret = str(
            target.stack.client("secretsmanager")
            .get_secret_value(SecretId=parts.signing_secret_arn)
            .get("SecretString")
            or ""
        )
    if not secret:
        raise ActionError(f"the webhook signing secret {parts.signing_secret_arn} is empty: put a value in it")
    now = int(clock())
    account = parts.signing_secret_arn.split(":")[4] if parts.signing_secret_arn.count(":") >= 5 else ""
    event = webhook_test_event(stack=target.stack.name, region=target.stack.region, account=account, now=now)
    answer: Answer | Exception
    try:
        answer = signed_post(post or webhook_http.post, parts.url, event, secret=secret, attempt=1, now=now)
    except Unreachable as exc:
        answer = exc
    ok, message = verdict(answer)
    return WebhookTest(
        event_id=event["id"],
        receiver=urlsplit(parts.url).hostname or "",
        status=answer.status if isinstance(answer, Answer) else None,
        ok=ok,
        message=message,
    )
