"""Fixtures of the connections-for-your-code suite: an EventBridge sink beside the in-process broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from smartsheet_oauth import services
from smartsheet_oauth_client import TokenProvider

from tests.support.broker import Broker, completion_code, pending_tokens_key_arn


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


# -- connect sessions as the integrator's backend drives them -----------------------------------------------------
RETURN_TO = "https://app.example.com/connected"


def new_session(end_user_id: str, return_to: str = RETURN_TO) -> str:
    """POST /connect-sessions for an end user; the session token of the login link it answers."""
    answer = call_management("POST", "/connect-sessions", body={"end_user_id": end_user_id, "return_to": return_to})
    assert answer.status == 201, answer.body
    token: str = answer.body["login_url"].split("session=")[1]
    return token


def complete(code: str, end_user_id: str) -> ApiAnswer:
    """The integrator's return_to page redeems the code for the end user signed in to its app."""
    return call_management(
        "POST", "/connect-sessions/complete", body={"completion_code": code, "end_user_id": end_user_id}
    )


def connect(broker: Broker, end_user_id: str, user_id: str) -> ApiAnswer:
    """The whole connect flow of one end user in their own browser, confirmed by the integrator."""
    answer = complete(completion_code(broker.connect_through(new_session(end_user_id), user_id=user_id)), end_user_id)
    assert answer.status == 200, answer.body
    return answer


def integrator_tokens(broker: Broker) -> TokenProvider:
    """The integrators' token client, its signed requests answered by the in-process management function."""

    def send(method: str, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
        parts = urlsplit(url)
        answer = call_management(method, parts.path, query=parts.query, raw_body=body.decode() or None)
        return answer.status, json.dumps(answer.body).encode()

    return TokenProvider(
        api_url="https://broker.example.com",
        secret_prefix=broker.env["TOKEN_SECRET_PREFIX"],
        session=boto3.session.Session(region_name="us-east-1"),
        secrets_client=broker.secrets,
        send=send,
    )
