"""The webhook delivery flow with fakes (a receiver that answers what the test says, a queue that records): what is
delivered, retried with which backoff, dead-lettered, and what is never sent or logged. End to end on the local
stack: tests/e2e/test_webhooks.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from smartsheet_oauth.config import load_webhook_config
from smartsheet_oauth.domain.errors import ConfigError, StorageError
from smartsheet_oauth.flows.webhook_delivery import (
    ATTEMPT_SECONDS,
    Answer,
    Unreachable,
    WebhookDelivery,
    backoff_seconds,
)
from smartsheet_oauth_client import verify_webhook

from tests.ops.support import captured_logs

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-signing-key-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
URL = "https://hooks.example.com/broker/events?key=receivers-own-token"
NOW = 1_796_300_000


def event(**overrides: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "7f0b6a3e-9c1d-4c7e-8f0a-1b2c3d4e5f60",
        "detail-type": "Connection Created",
        "source": "smartsheet-oauth-broker",
        "account": "123456789012",
        "time": "2026-11-28T12:13:30Z",
        "region": "us-east-1",
        "resources": ["arn:aws:dynamodb:us-east-1:123456789012:table/broker-ConnectionsTable-X"],
        "detail": {"connection_id": "4583173393803140", "status": "active", "reason": None},
        **overrides,
    }


def record(body: Any, *, attempt: int = 1, message_id: str = "m-1") -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {"ApproximateReceiveCount": str(attempt)},
    }


@dataclass
class FakeReceiver:
    answers: list[int | Answer | Exception] = field(default_factory=list)
    seen: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.seen.append((url, body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, Answer) else Answer(answer)


@dataclass
class FakeQueue:
    backoffs: list[tuple[str, int]] = field(default_factory=list)
    dead: list[tuple[str, str, int]] = field(default_factory=list)
    failing: bool = False

    def retry_later(self, receipt_handle: str, seconds: int) -> None:
        if self.failing:
            raise StorageError("ChangeMessageVisibility", "ReceiptHandleIsInvalid", transient=False)
        self.backoffs.append((receipt_handle, seconds))

    def dead_letter(self, body: str, reason: str, attempts: int) -> None:
        if self.failing:
            raise StorageError("SendMessage", "AccessDenied", transient=False)
        self.dead.append((body, reason, attempts))


def delivery(receiver: FakeReceiver, queue: FakeQueue, *, secret: Any = None) -> WebhookDelivery:
    return WebhookDelivery(
        URL,
        secret=secret or (lambda: SECRET),
        post=receiver,
        queue=queue,
        retry_base_seconds=30,
        retry_max_seconds=3600,
        clock=lambda: NOW,
        jitter=lambda low, high: high,
    )


def run(d: WebhookDelivery, *records: dict[str, Any], time_left: float = 60.0) -> list[str]:
    answer = d.run({"Records": list(records)}, time_left=lambda: time_left)
    return [f["itemIdentifier"] for f in answer["batchItemFailures"]]


def test_a_delivery_is_the_event_signed_with_its_id_and_type() -> None:
    receiver, queue = FakeReceiver(), FakeQueue()

    failures = run(delivery(receiver, queue), record(event()))

    assert failures == []
    ((url, body, headers),) = receiver.seen
    assert url == URL
    assert verify_webhook(body, headers["Broker-Signature"], SECRET, now=NOW) == event()
    assert headers["Broker-Signature"].startswith(f"t={NOW},v1=")
    assert headers["Broker-Event-Id"] == event()["id"]
    assert headers["Broker-Event-Type"] == "Connection Created"
    assert headers["Broker-Delivery-Attempt"] == "1"
    assert headers["Content-Type"] == "application/json"
    assert (queue.backoffs, queue.dead) == ([], [])


def test_only_the_envelope_and_its_detail_are_sent() -> None:
    receiver, queue = FakeReceiver(), FakeQueue()
    smuggled = event(access_token="tok-should-never-leave", **{"replay-name": "x"})

    run(delivery(receiver, queue), record(smuggled))

    sent = json.loads(receiver.seen[0][1])
    assert set(sent) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert b"tok-should-never-leave" not in receiver.seen[0][1]


@pytest.mark.parametrize(
    "answer", [500, 502, 503, 504, 408, 425, 429, Unreachable("NewConnectionError"), Unreachable("ReadTimeoutError")]
)
def test_a_failing_or_unreachable_receiver_gets_the_event_again_after_a_backoff(answer: int | Exception) -> None:
    receiver, queue = FakeReceiver([answer]), FakeQueue()

    failures = run(delivery(receiver, queue), record(event(), attempt=3, message_id="m-3"))

    assert failures == ["m-3"]
    assert queue.backoffs == [("handle-m-3", 120)]  # 30 s doubled twice after the third attempt
    assert queue.dead == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 301, 302, 307])
def test_a_refusal_retrying_cannot_change_goes_to_the_dead_letter_queue_at_once(status: int) -> None:
    receiver, queue = FakeReceiver([status]), FakeQueue()

    failures = run(delivery(receiver, queue), record(event(), attempt=2))

    assert failures == []  # done with: Lambda deletes it from the delivery queue
    assert queue.dead == [(json.dumps(event()), f"http:{status}", 2)]
    assert queue.backoffs == []
    assert len(receiver.seen) == 1


@pytest.mark.parametrize("body", ["not json", "[]", json.dumps(event(source="someone-else")), json.dumps({"id": "x"})])
def test_a_message_that_is_not_a_broker_event_is_never_posted(body: str) -> None:
    receiver, queue = FakeReceiver(), FakeQueue()

    failures = run(delivery(receiver, queue), record(body))

    assert failures == []
    assert receiver.seen == []
    assert queue.dead == [(body, "not_a_broker_event", 1)]


def test_an_unreadable_signing_secret_retries_later_without_posting() -> None:
    receiver, queue = FakeReceiver(), FakeQueue()

    def secret() -> str:
        raise StorageError("GetSecretValue", "AccessDeniedException", transient=False)

    assert run(delivery(receiver, queue, secret=secret), record(event())) == ["m-1"]
    assert receiver.seen == []
    assert queue.backoffs == [("handle-m-1", 30)]


def test_a_queue_that_cannot_be_written_keeps_the_message_for_another_try() -> None:
    receiver, queue = FakeReceiver([404, 503]), FakeQueue(failing=True)

    failures = run(delivery(receiver, queue), record(event(), message_id="gone"), record(event(), message_id="busy"))

    assert failures == ["gone", "busy"]  # back after the queue's visibility timeout, dead-lettered by SQS at last


def test_records_are_left_for_later_when_the_function_is_about_to_time_out() -> None:
    receiver, queue = FakeReceiver(), FakeQueue()

    failures = run(
        delivery(receiver, queue),
        record(event(), message_id="a"),
        record(event(), message_id="b"),
        time_left=ATTEMPT_SECONDS,
    )

    assert failures == ["a", "b"]
    assert receiver.seen == []
    assert queue.backoffs == []  # not attempted: no backoff either


def test_the_backoff_doubles_from_the_base_to_the_cap_with_jitter_below() -> None:
    highest = [backoff_seconds(n, 30, 3600, lambda low, high: high) for n in range(1, 13)]
    lowest = [backoff_seconds(n, 30, 3600, lambda low, high: low) for n in range(1, 13)]

    assert highest == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600]
    assert lowest == [round(h * 0.75) for h in highest]
    assert backoff_seconds(1000, 30, 10**9) == pytest.approx(43200, rel=0.25)  # SQS's 12-hour limit
    assert backoff_seconds(5, 0, 3600) == 0


def test_a_receiver_down_for_three_hours_still_gets_the_event() -> None:
    """At the template's 12 receives and the default backoff, a receiver down for 3 h (and, at the longest jitter,
    5 h) is attempted again after it is back, before the event is dead-lettered."""
    down = 3 * 3600
    waited, attempt = 0, 1
    while waited < down:
        waited += backoff_seconds(attempt, 30, 3600, lambda low, high: low)
        attempt += 1
    assert attempt <= 12, attempt


def test_logs_name_the_receivers_host_never_its_url_the_body_or_the_signature() -> None:
    receiver, queue = FakeReceiver([503, 200, 404]), FakeQueue()
    d = delivery(receiver, queue)

    with captured_logs() as sink:
        run(d, record(event(), message_id="a"), record(event(), message_id="b"), record(event(), message_id="c"))

    logs = sink.getvalue()
    assert "hooks.example.com" in logs
    assert "receivers-own-token" not in logs
    assert "/broker/events" not in logs
    for _, body, headers in receiver.seen:
        assert headers["Broker-Signature"] not in logs
        assert body.decode() not in logs
    assert SECRET not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{") and '"message"' in line]
    assert [line["message"] for line in lines] == [
        "webhook not delivered, retried later",
        "webhook delivered",
        "webhook refused, kept in the dead-letter queue",
    ]


# ------------------------------------------------------------------------------------------- configuration
GOOD = {
    "WEBHOOK_URL": "https://hooks.example.com/broker",
    "WEBHOOK_SIGNING_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:signing-AbCdEf",
    "WEBHOOK_DELIVERY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/deliveries",
    "WEBHOOK_DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/undelivered",
}


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/broker", True),
        ("http://127.0.0.1:8080/hook", True),  # the local stack's receiver
        ("http://localhost/hook", True),
        ("http://hooks.example.com/broker?key=hidden-token", False),
        ("https://user:hidden-token@hooks.example.com/", False),
        ("https://hooks.example.com/#frag", False),
        ("ftp://hooks.example.com/", False),
        ("", False),
    ],
)
def test_the_url_is_checked_at_the_cold_start_without_quoting_it(url: str, ok: bool) -> None:
    environ = {**GOOD, "WEBHOOK_URL": url}
    if ok:
        assert load_webhook_config(environ).url == url
        return
    with pytest.raises(ConfigError) as refused:
        load_webhook_config(environ)
    assert refused.value.variable == "WEBHOOK_URL"
    assert "hidden-token" not in str(refused.value)


@pytest.mark.parametrize("missing", sorted(GOOD))
def test_each_variable_is_required(missing: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_webhook_config({k: v for k, v in GOOD.items() if k != missing})
    assert refused.value.variable == missing


def test_the_handler_runs_on_its_own_variables_alone() -> None:
    """None of the broker's Globals: why its version description need not carry them (test_template_versions.py)."""
    child = (
        "import json, types; from webhooks import app; "
        "ctx = types.SimpleNamespace(get_remaining_time_in_millis=lambda: 60000, function_name='f', "
        "memory_limit_in_mb=256, invoked_function_arn='arn:aws:lambda:us-east-1:1:function:f', aws_request_id='r'); "
        "print(json.dumps(app.lambda_handler({'Records': []}, ctx)))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", child],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **GOOD,
            "PYTHONPATH": str(ROOT / "functions"),
            "PATH": "/usr/bin:/bin",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        },
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout.strip().splitlines()[-1]) == {"batchItemFailures": []}
