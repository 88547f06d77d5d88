"""Fixtures of the connections-for-your-code suite: an EventBridge sink beside the in-process broker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.support.broker import Broker


@dataclass
class EventSink:
    """An SQS queue behind an EventBridge rule matching the broker's source, as an integrator would set it up."""

    sqs: Any
    queue_url: str

    def drain(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return events
            for message in messages:
                events.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def raw_bodies(self) -> list[str]:
        return [json.dumps(event) for event in self.drain()]


def make_sink(
    session: boto3.session.Session, *, endpoint_url: str | None = None, name: str = "broker-events"
) -> EventSink:
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    events = session.client("events", endpoint_url=endpoint_url)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps({"source": ["smartsheet-oauth-broker"]}))
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return EventSink(sqs, queue_url)


@pytest.fixture
def event_sink(broker: Broker) -> EventSink:
    # The broker fixture holds moto's mock_aws open: these clients land in the same in-memory AWS.
    return make_sink(boto3.session.Session(region_name="us-east-1"))
