"""Fixtures of the connections-for-your-code suite: an EventBridge sink beside the in-process broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from smartsheet_oauth import services

from tests.support.broker import Broker, pending_tokens_key_arn


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


@pytest.fixture
def sealing(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """The broker with the management function's whole environment: the template's pending-tokens KMS key too, so
    a refresh whose save fails keeps its new pair on the record."""
    monkeypatch.setenv("PENDING_TOKENS_KEY_ID", pending_tokens_key_arn())
    services.reset()
    yield broker
    services.reset()


SIGNED_CALLER = {
    "iam": {
        "accessKey": "AKIAEXAMPLE",
        "accountId": "123456789012",
        "callerId": "AIDAEXAMPLE",
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": "arn:aws:iam::123456789012:user/integrator",
        "userId": "AIDAEXAMPLE",
    }
}


@dataclass
class ApiAnswer:
    status: int
    headers: dict[str, str]
    body: Any
    result_keys: frozenset[str] = frozenset()  # the handler's payload 2.0 result, its top-level keys

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


def call_management(
    method: str,
    path: str,
    *,
    query: dict[str, str] | str | None = None,
    body: Any = None,
    raw_body: str | None = None,
    signed: bool = True,
    timeout_seconds: float = 29,
) -> ApiAnswer:
    """The management function as API Gateway invokes it after AWS_IAM authorization (or, signed=False, as it
    would be invoked if a route lost its authorization)."""
    from management.app import lambda_handler

    from tests.support.events import LambdaContext, http_event

    event = http_event(path, query, method=method, headers={"content-type": "application/json"})
    if signed:
        event["requestContext"]["authorizer"] = SIGNED_CALLER
    if raw_body is not None or body is not None:
        event["body"] = raw_body if raw_body is not None else json.dumps(body)
    result = lambda_handler(event, LambdaContext(timeout_seconds=timeout_seconds))
    text = result.get("body") or ""
    return ApiAnswer(
        result["statusCode"], dict(result.get("headers") or {}), json.loads(text) if text else None, frozenset(result)
    )
