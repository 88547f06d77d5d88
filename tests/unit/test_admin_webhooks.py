"""The admin CLI's webhook verbs on their own (moto in process): redrive-webhooks moves the dead-letter queue's messages
back to the delivery queue, sending each before deleting it, so a crash or a failed call leaves a message in both
queues (a duplicate the receiver's dedupe on the event id absorbs) and never in neither; test-webhook's verdict of each
answer. Against the local stack through the CLI: tests/ops/test_admin_webhooks.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import boto3
import pytest
from moto import mock_aws
from smartsheet_oauth.flows.webhook_delivery import Answer, Unreachable

from infra.admin.actions import ActionError
from infra.admin.stack_facts import StackFacts
from infra.admin.target import Target
from infra.admin.webhooks import redrive, verdict, webhook_parts, webhook_test_event

REGION = "us-east-1"


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def queues(sqs: Any) -> tuple[str, str]:
    return sqs.create_queue(QueueName="dead")["QueueUrl"], sqs.create_queue(QueueName="deliveries")["QueueUrl"]


def fill(sqs: Any, url: str, n: int) -> list[str]:
    bodies = [json.dumps({"id": f"event-{i}", "source": "smartsheet-oauth-broker"}) for i in range(n)]
    for body in bodies:
        sqs.send_message(
            QueueUrl=url,
            MessageBody=body,
            MessageAttributes={"reason": {"DataType": "String", "StringValue": "http:404"}},
        )
    return bodies


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message in the queue, the delayed ones (a redrive's) once their delay is over."""
    deadline = time.monotonic() + 10
    while delayed(sqs, url) and time.monotonic() < deadline:
        time.sleep(0.05)
    found: dict[str, dict[str, Any]] = {}
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
    ).get("Messages"):
        found.update({m["MessageId"]: m for m in messages})
    return list(found.values())


def delayed(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"])


def test_a_moved_event_waits_a_second_so_its_next_attempt_is_not_the_same_signed_request(sqs: Any) -> None:
    # The attempt that dead-lettered it was signed at `t` (whole seconds); a redelivery in that same second would be
    # byte for byte the same request, and WebhookVerifier refuses it as a replay (caught by the ops test in CI).
    dead, deliveries = queues(sqs)
    fill(sqs, dead, 3)

    report = redrive(sqs, source=dead, destination=deliveries, limit=None, wait_seconds=0)

    assert report.moved == 3
    counts = sqs.get_queue_attributes(QueueUrl=deliveries, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesDelayed"] == "3"
    assert len(drain(sqs, deliveries)) == 3  # and then delivered


def test_every_waiting_message_is_moved_with_its_body_and_attributes(sqs: Any) -> None:
    dead, deliveries = queues(sqs)
    bodies = fill(sqs, dead, 23)

    report = redrive(sqs, source=dead, destination=deliveries, limit=None, wait_seconds=0)

    assert (report.waiting, report.moved, report.not_sent, report.not_deleted) == (23, 23, 0, 0)
    moved = drain(sqs, deliveries)
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    assert {m["MessageAttributes"]["reason"]["StringValue"] for m in moved} == {"http:404"}
    assert drain(sqs, dead) == []


def test_max_moves_at_most_that_many(sqs: Any) -> None:
    dead, deliveries = queues(sqs)
    fill(sqs, dead, 15)

    report = redrive(sqs, source=dead, destination=deliveries, limit=12, wait_seconds=0)

    assert report.moved == 12
    assert len(drain(sqs, deliveries)) == 12
    assert len(drain(sqs, dead)) == 3


def test_a_dry_run_moves_nothing_and_counts_what_waits(sqs: Any) -> None:
    dead, deliveries = queues(sqs)
    fill(sqs, dead, 4)

    report = redrive(sqs, source=dead, destination=deliveries, limit=None, wait_seconds=0, dry_run=True)

    assert (report.waiting, report.moved) == (4, 0)
    assert drain(sqs, deliveries) == []
    assert len(drain(sqs, dead)) == 4


class Refusing:
    """The queue client, with a receiver that still refuses: each event sent back is dead-lettered again at once."""

    def __init__(self, sqs: Any, dead: str) -> None:
        self._sqs, self._dead = sqs, dead

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        answer = self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        self._sqs.send_message_batch(QueueUrl=self._dead, Entries=Entries)
        return answer


def test_a_run_stops_at_what_waited_when_it_started_even_if_more_arrive(sqs: Any) -> None:
    dead, deliveries = queues(sqs)
    fill(sqs, dead, 5)

    report = redrive(Refusing(sqs, dead), source=dead, destination=deliveries, limit=None, wait_seconds=0)

    assert report.moved == 5  # not forever: the events dead-lettered again wait for the next run
    assert len(drain(sqs, dead)) == 5


class Crashing:
    """The queue client, failing the way a crash or a refused call would at one step."""

    def __init__(self, sqs: Any, *, fail: str, partial: bool = False) -> None:
        self._sqs, self._fail, self._partial = sqs, fail, partial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        if self._fail != "send":
            return self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        if not self._partial:
            raise KeyboardInterrupt  # the operator's ^C, or the process killed, before anything was sent
        answer = self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries[:1])
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in Entries[1:]]
        return {"Successful": answer["Successful"], "Failed": failed}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        if self._fail == "delete":
            raise KeyboardInterrupt  # killed between the send and the delete
        return self._sqs.delete_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def test_a_crash_between_send_and_delete_leaves_a_duplicate_never_a_loss(sqs: Any) -> None:
    dead, deliveries = queues(sqs)
    bodies = fill(sqs, dead, 3)

    with pytest.raises(KeyboardInterrupt):
        redrive(
            Crashing(sqs, fail="delete"),
            source=dead,
            destination=deliveries,
            limit=None,
            wait_seconds=0,
            hold_seconds=1,
        )
    time.sleep(1.5)  # the hold ends: what was not deleted is back in the dead-letter queue

    assert sorted(m["Body"] for m in drain(sqs, deliveries)) == sorted(bodies)
    assert sorted(m["Body"] for m in drain(sqs, dead)) == sorted(bodies)


def test_a_crash_before_the_send_leaves_every_message_where_it_was(sqs: Any) -> None:
    dead, deliveries = queues(sqs)
    bodies = fill(sqs, dead, 3)

    with pytest.raises(KeyboardInterrupt):
        redrive(
            Crashing(sqs, fail="send"), source=dead, destination=deliveries, limit=None, wait_seconds=0, hold_seconds=1
        )
    time.sleep(1.5)

    assert drain(sqs, deliveries) == []
    assert sorted(m["Body"] for m in drain(sqs, dead)) == sorted(bodies)


def test_messages_the_send_refused_stay_in_the_dead_letter_queue_and_the_run_stops(sqs: Any) -> None:
    dead, deliveries = queues(sqs)
    fill(sqs, dead, 3)

    report = redrive(
        Crashing(sqs, fail="send", partial=True),
        source=dead,
        destination=deliveries,
        limit=None,
        wait_seconds=0,
        hold_seconds=1,
    )
    time.sleep(1.5)

    assert (report.moved, report.not_sent) == (1, 2)
    assert len(drain(sqs, deliveries)) == 1
    assert len(drain(sqs, dead)) == 2


# ---------------------------------------------------------------------------------------------- test-webhook
def test_the_test_event_is_a_broker_envelope_of_its_own_type() -> None:
    event = webhook_test_event(stack="broker-prod", region="eu-west-1", account="123456789012", now=1_796_300_000)

    assert event["detail-type"] == "Webhook Test"
    assert event["source"] == "smartsheet-oauth-broker"
    assert (event["region"], event["account"], event["resources"]) == ("eu-west-1", "123456789012", [])
    assert event["time"] == "2026-12-03T12:13:20Z"
    assert event["detail"] == {"test": True, "stack": "broker-prod", "occurred_at": 1_796_300_000}
    assert len(event["id"]) == 36
    assert webhook_test_event(stack="s", region="r", account="a", now=1)["id"] != event["id"]  # one id per test


@pytest.mark.parametrize(
    ("answer", "ok", "words"),
    [
        (Answer(200), True, "accepted"),
        (Answer(204), True, "accepted"),
        (Answer(400), False, "signature"),
        (Answer(401), False, "signature"),
        (Answer(403), False, "signature"),
        (Answer(404), False, "WebhookUrl"),
        (Answer(410), False, "WebhookUrl"),
        (Answer(301), False, "redirect"),
        (Answer(429, "30"), False, "Retry-After 30"),
        (Answer(503), False, "retried"),
        (Answer(500), False, "retried"),
        (Unreachable("NewConnectionError"), False, "NewConnectionError"),
    ],
)
def test_each_answer_has_a_verdict_and_a_hint(answer: Answer | Exception, ok: bool, words: str) -> None:
    passed, text = verdict(answer)

    assert passed is ok
    assert words in text


# ------------------------------------------------------------------------------------------------ the stack's parts
def stack_with(parameters: dict[str, str], outputs: dict[str, str]) -> Target:
    facts = StackFacts(
        name="broker-prod", region=REGION, outputs=outputs, parameters=parameters, client=lambda _: None, local=False
    )
    return cast(Target, SimpleNamespace(description="stack broker-prod (us-east-1)", stack=facts))


OUTPUTS = {
    "WebhookDeliveryQueueUrl": "https://sqs.us-east-1.amazonaws.com/1/deliveries",
    "WebhookDeadLetterQueueUrl": "https://sqs.us-east-1.amazonaws.com/1/dead",
    "WebhookSigningSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:signing-AbCdEf",
}


def test_a_stack_without_webhook_url_is_told_webhooks_are_off() -> None:
    with pytest.raises(ActionError, match="webhooks are off"):
        webhook_parts(stack_with({"WebhookUrl": ""}, {}))


def test_a_stack_deployed_before_the_delivery_queue_output_is_told_to_deploy_again() -> None:
    outputs = {k: v for k, v in OUTPUTS.items() if k != "WebhookDeliveryQueueUrl"}
    with pytest.raises(ActionError, match=r"no output WebhookDeliveryQueueUrl.*Deploy it again"):
        webhook_parts(stack_with({"WebhookUrl": "https://hooks.example.com/in?key=its-own-token"}, outputs))


def test_the_parts_come_from_the_stacks_parameter_and_outputs() -> None:
    url = "https://hooks.example.com/in?key=its-own-token"
    parts = webhook_parts(stack_with({"WebhookUrl": url}, OUTPUTS))

    assert parts.url == url
    assert parts.delivery_queue_url.endswith("/deliveries")
    assert parts.dead_letter_queue_url.endswith("/dead")
    assert parts.signing_secret_arn == OUTPUTS["WebhookSigningSecretArn"]
