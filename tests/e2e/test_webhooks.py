"""Signed webhooks end to end on the local stack, run from template.yaml with WebhookUrl set: the broker's events
reach the template's rule and queue (moto), the delivery function takes them through the template's event source
mapping and POSTs them to a receiver on 127.0.0.1, which checks each with smartsheet_oauth_client's helper.
Backoffs are shortened (WEBHOOK_RETRY_BASE_SECONDS=1, at most 2 s) so the suite never waits real minutes; the
production schedule is checked in tests/unit/test_webhook_delivery.py."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from smartsheet_oauth_client import (
    WebhookReplayed,
    WebhookSignatureError,
    WebhookSignatureExpired,
    WebhookSignatureInvalid,
    WebhookVerifier,
    verify_webhook,
)

from infra.local.demo import BrokerClient
from infra.local.dev import _banner
from infra.local.stack import LocalStack

pytestmark = pytest.mark.e2e

MAX_RECEIVES = 12  # the delivery queue's redrive policy (template.yaml)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verdict: str  # "ok" or the helper's exception name
    status: int
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class Receiver:
    """An integrator's endpoint on 127.0.0.1: verifies each delivery with WebhookVerifier, then answers what the
    test planned for its connection (one status per attempt, or a status and its Retry-After header; 200 once the
    plan runs out)."""

    secret: Callable[[], str] = field(default=lambda: "")
    plans: dict[str, list[int | tuple[int, str]]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _verifier: WebhookVerifier | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                planned, verdict = receiver.answer(dict(self.headers), body)
                status, retry_after = planned if isinstance(planned, tuple) else (planned, None)
                receiver.deliveries.append(Delivery(dict(self.headers), body, verdict, status))  # before answering
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/broker-events"

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int | tuple[int, str], str]:
        if self._verifier is None:
            self._verifier = WebhookVerifier(self.secret())
        try:
            event = self._verifier.verify(body, headers.get("Broker-Signature"))
        except WebhookSignatureError as exc:
            return 400, type(exc).__name__
        plan = self.plans.get(str(event["detail"].get("connection_id")), [])
        return (plan.pop(0) if plan else 200), "ok"

    def of(self, connection_id: str, verdict: str = "ok") -> list[Delivery]:
        return [
            d
            for d in list(self.deliveries)
            if d.verdict == verdict and json.loads(d.body)["detail"].get("connection_id") == connection_id
        ]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(receiver: Receiver) -> Iterator[LocalStack]:
    with LocalStack(
        stack_name=f"e2e-hooks-{os.getpid()}",
        parameters={"WebhookUrl": receiver.url},
        environment={"WEBHOOK_RETRY_BASE_SECONDS": "1", "WEBHOOK_RETRY_MAX_SECONDS": "2"},
    ) as local:
        receiver.secret = lambda: signing_secret(local)
        yield local


def signing_secret(stack: LocalStack) -> str:
    return str(
        stack.aws.secretsmanager.get_secret_value(SecretId=stack.aws.secret_arn("WebhookSigningSecret"))["SecretString"]
    )


def publish(stack: LocalStack, connection_id: str, detail_type: str = "Connection Refresh Failed") -> None:
    """An event as the broker's functions publish it (stores/events.py), on the stack's bus."""
    detail = {
        "connection_id": connection_id,
        "smartsheet_user_id": connection_id,
        "end_user_id": None,
        "email": None,
        "region": "us",
        "status": "active",
        "reason": "http:503",
        "occurred_at": int(time.time()),
    }
    answer = stack.aws.client("events").put_events(
        Entries=[
            {
                "Source": "smartsheet-oauth-broker",
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "EventBusName": "default",
                "Resources": [stack.aws.resources["ConnectionsTable"].attributes["Arn"]],
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0, answer


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


def dead_letters(stack: LocalStack) -> list[dict[str, Any]]:
    """Every message in the dead-letter queue, each once, left there (visible again) for the next look."""
    sqs = stack.aws.client("sqs")
    url = stack.aws.queue_url("WebhookDeadLetterQueue")
    found: dict[str, dict[str, Any]] = {}
    while True:
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, MessageAttributeNames=["All"]
        )
        messages = answer.get("Messages") or []
        if not messages:
            break
        found.update({m["MessageId"]: m for m in messages})
    for message in found.values():
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return list(found.values())


def dead_lettered(stack: LocalStack, connection_id: str) -> list[dict[str, Any]]:
    return [m for m in dead_letters(stack) if json.loads(m["Body"])["detail"]["connection_id"] == connection_id]


# ------------------------------------------------------------------------------------------------------------ tests
def test_a_sign_in_reaches_the_receiver_signed_without_a_token(stack: LocalStack, receiver: Receiver) -> None:
    client = BrokerClient.of(stack)
    sign_in = client.login()
    client.consent(sign_in, allow=True)
    assert client.callback(sign_in).status_code == 303  # connected: See Other to the result page
    user = str(stack.emulator.users[0].id)

    (delivery,) = wait_for(lambda: receiver.of(user), what="the Connection Created delivery")

    event = verify_webhook(delivery.body, delivery.headers["Broker-Signature"], signing_secret(stack))
    assert event["detail-type"] == delivery.headers["Broker-Event-Type"] == "Connection Created"
    assert event["id"] == delivery.headers["Broker-Event-Id"]
    assert event["source"] == "smartsheet-oauth-broker"
    assert event["detail"]["connection_id"] == user
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Broker-Delivery-Attempt"] == "1"
    # Nothing of the grant in the payload or in the function's logs: tokens, the code, the state.
    pair = stack.token_pair(user)
    logs = "\n".join(stack.function_logs("WebhookDeliveryFunction"))
    secrets = [pair["access_token"], pair["refresh_token"], sign_in.state, signing_secret(stack)]
    for value in secrets:
        assert value not in delivery.body.decode()
        assert value not in logs
    assert delivery.headers["Broker-Signature"] not in logs
    assert "webhook delivered" in logs


def test_a_delivery_answered_5xx_is_retried_with_backoff_until_it_lands(stack: LocalStack, receiver: Receiver) -> None:
    connection = f"9{uuid.uuid4().int % 10**15:015d}"
    receiver.plans[connection] = [503, 500, 502]

    publish(stack, connection)

    wait_for(lambda: len(receiver.of(connection)) == 4, what="three failures and a success")
    attempts = receiver.of(connection)
    assert [d.status for d in attempts] == [503, 500, 502, 200]
    assert [d.headers["Broker-Delivery-Attempt"] for d in attempts] == ["1", "2", "3", "4"]
    assert len({d.headers["Broker-Event-Id"] for d in attempts}) == 1  # one event: the receiver deduplicates on it
    time.sleep(3)  # past the longest backoff: nothing more comes, nothing is dead-lettered
    assert len(receiver.of(connection)) == 4
    assert not dead_lettered(stack, connection)
    waits = [
        json.loads(line)["retry_in_seconds"]
        for line in stack.function_logs("WebhookDeliveryFunction")
        if connection not in line and '"retry_in_seconds"' in line
    ]
    assert waits
    assert all(1 <= w <= 2 for w in waits), waits  # base 1 s doubling, capped at 2 s (shortened for the suite)


def test_a_receiver_that_asks_to_wait_with_retry_after_is_not_attempted_sooner(
    stack: LocalStack, receiver: Receiver
) -> None:
    """429 or 503 with Retry-After (seconds, or an HTTP-date): the next attempt comes no sooner, though the suite's
    backoff is 1 to 2 s; a Retry-After that is not one leaves the backoff."""
    in_seconds, as_date, garbage = (f"{n}{uuid.uuid4().int % 10**15:015d}" for n in (4, 3, 2))
    receiver.plans[in_seconds] = [(429, "6")]
    receiver.plans[as_date] = [(503, formatdate(time.time() + 7, usegmt=True))]  # 6 to 7 s from now
    receiver.plans[garbage] = [(429, "in a while"), (503, "-3")]

    for connection in (in_seconds, as_date, garbage):
        publish(stack, connection)

    def attempts(connection: str, n: int) -> Callable[[], bool]:
        return lambda: len(receiver.of(connection)) == n

    for connection, n in ((in_seconds, 2), (as_date, 2), (garbage, 3)):
        wait_for(attempts(connection, n), what=f"{connection}'s attempts")

    def gaps(connection: str) -> list[float]:
        arrivals = [d.at for d in receiver.of(connection)]
        return [later - earlier for earlier, later in itertools.pairwise(arrivals)]

    assert [d.status for d in receiver.of(in_seconds)] == [429, 200]
    assert gaps(in_seconds)[0] >= 5.9, gaps(in_seconds)  # asked 6 s (the backoff alone: 1 to 2 s)
    assert [d.status for d in receiver.of(as_date)] == [503, 200]
    assert gaps(as_date)[0] >= 5.0, gaps(as_date)  # the date was 6 to 7 s ahead when sent
    assert [d.status for d in receiver.of(garbage)] == [429, 503, 200]
    assert all(gap < 5.0 for gap in gaps(garbage)), gaps(garbage)  # the backoff, nothing else
    logged = [
        json.loads(line)
        for line in stack.function_logs("WebhookDeliveryFunction")
        if '"retry_after_seconds"' in line and '"http:429"' in line
    ]
    assert any(line["retry_in_seconds"] == line["retry_after_seconds"] == 6 for line in logged), logged


def test_a_receiver_down_for_a_while_gets_the_event_once_it_is_back(stack: LocalStack, receiver: Receiver) -> None:
    connection = f"8{uuid.uuid4().int % 10**15:015d}"
    logs_before = len(stack.function_logs("WebhookDeliveryFunction"))
    receiver.stop()  # connection refused from now on
    try:
        publish(stack, connection)

        def refused() -> int:
            lines = stack.function_logs("WebhookDeliveryFunction")[logs_before:]
            return sum('"reason":"unreachable:' in line for line in lines)

        wait_for(lambda: refused() >= 3, what="three refused attempts")
    finally:
        receiver.start()  # the same port

    (delivery,) = wait_for(lambda: receiver.of(connection), what="the delivery after the receiver came back")
    assert int(delivery.headers["Broker-Delivery-Attempt"]) >= 4
    assert delivery.status == 200
    # Signed at its own attempt, not when the event was first tried: inside the receiver's tolerance window.
    verify_webhook(delivery.body, delivery.headers["Broker-Signature"], signing_secret(stack), tolerance_seconds=5)


def test_replayed_and_tampered_deliveries_are_refused_by_the_helper(stack: LocalStack, receiver: Receiver) -> None:
    connection = f"7{uuid.uuid4().int % 10**15:015d}"
    publish(stack, connection, "Connection Needs Reauth")
    (genuine,) = wait_for(lambda: receiver.of(connection), what="the genuine delivery")
    headers = {k: v for k, v in genuine.headers.items() if k.lower() not in ("host", "content-length")}

    def resend(body: bytes, **changed: str) -> int:
        answer = requests.post(receiver.url, data=body, headers={**headers, **changed}, timeout=10)
        return answer.status_code

    assert resend(genuine.body) == 400  # the very same request again: replayed
    tampered = genuine.body.replace(b"Connection Needs Reauth", b"Connection Recovered")
    assert resend(tampered) == 400
    assert resend(genuine.body, **{"Broker-Signature": ""}) == 400
    assert resend(genuine.body, **{"Broker-Signature": "t=1,v1=zz"}) == 400
    verdicts = [d.verdict for d in receiver.deliveries if d.body in (genuine.body, tampered)]
    assert verdicts == [
        "ok",
        "WebhookReplayed",
        "WebhookSignatureInvalid",
        "WebhookSignatureMissing",
        "WebhookSignatureMalformed",
    ]
    # Captured and replayed later, past the tolerance window: refused even by a fresh receiver.
    signature = genuine.headers["Broker-Signature"]
    signed_at = int(signature.split(",")[0].removeprefix("t="))
    with pytest.raises(WebhookSignatureExpired):
        verify_webhook(genuine.body, signature, signing_secret(stack), now=signed_at + 301)
    verifier = WebhookVerifier(signing_secret(stack), clock=lambda: signed_at + 10)
    verifier.verify(genuine.body, signature)
    with pytest.raises(WebhookReplayed):
        verifier.verify(genuine.body, signature)
    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(genuine.body, signature, "another-stacks-secret", now=signed_at)


def test_what_never_lands_goes_to_the_dead_letter_queue(stack: LocalStack, receiver: Receiver) -> None:
    failing, refused = f"6{uuid.uuid4().int % 10**15:015d}", f"5{uuid.uuid4().int % 10**15:015d}"
    receiver.plans[failing] = [500] * 50  # down for good
    receiver.plans[refused] = [404]  # gone: retrying cannot help

    publish(stack, failing)
    publish(stack, refused)

    (kept,) = wait_for(lambda: dead_lettered(stack, refused), what="the 404'd event in the DLQ")
    assert kept["MessageAttributes"]["reason"]["StringValue"] == "http:404"
    assert len(receiver.of(refused)) == 1  # not retried
    (lost,) = wait_for(lambda: dead_lettered(stack, failing), timeout=120, what="the failing event in the DLQ")
    assert len(receiver.of(failing)) == MAX_RECEIVES
    assert json.loads(lost["Body"])["id"] == receiver.of(failing)[0].headers["Broker-Event-Id"]
    time.sleep(3)
    assert len(receiver.of(failing)) == MAX_RECEIVES  # moved, so no 13th attempt


def test_make_devs_banner_says_where_events_go_and_where_the_secret_is(stack: LocalStack, receiver: Receiver) -> None:
    banner = _banner(stack)

    assert f"POSTed, signed, to {receiver.url}" in banner
    assert stack.aws.secret_arn("WebhookSigningSecret") in banner
    assert signing_secret(stack) not in banner
