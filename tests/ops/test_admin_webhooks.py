"""The admin CLI's webhook verbs against a running local stack with WebhookUrl set (moto server, the delivery function
behind the template's event source mapping), found as `make admin` finds `make dev`'s: redrive-webhooks sends the
dead-letter queue's events back and the receiver gets them; test-webhook's signed event is checked by a receiver with
smartsheet_oauth_client.verify_webhook, and each answer it can get is reported."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from smartsheet_oauth_client import verify_webhook

from infra.admin.cli import main
from infra.local import dev
from infra.local.stack import LocalStack
from tests.e2e.test_webhooks import Delivery, Receiver, dead_lettered, dead_letters, publish, signing_secret, wait_for

pytestmark = pytest.mark.e2e


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Hooks:
    stack: LocalStack
    receiver: Receiver
    state_file: Path

    def admin(self, *args: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--state-file", str(self.state_file), *args], out=out, err=err)
        return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory, empty_moto_backends: None) -> Iterator[Hooks]:
    """A local stack of this module's own (a receiver's URL as its WebhookUrl, retries in seconds), alone in moto's
    backends as tests/ops/conftest.dev_stack's are."""
    receiver = Receiver().start()
    state_file = tmp_path_factory.mktemp("dev") / "dev.json"
    with (
        LocalStack(
            stack_name=f"ops-hooks-{os.getpid()}",
            prewarm=False,
            parameters={"WebhookUrl": receiver.url},
            environment={"WEBHOOK_RETRY_BASE_SECONDS": "1", "WEBHOOK_RETRY_MAX_SECONDS": "2"},
        ) as stack,
        pytest.MonkeyPatch.context() as patch,
    ):
        receiver.secret = lambda: signing_secret(stack)
        patch.setattr(dev, "STATE_FILE", state_file)
        dev._write_state(stack)  # exactly what `make dev` writes
        yield Hooks(stack, receiver, state_file)
    receiver.stop()


def connection() -> str:
    return f"4{uuid.uuid4().int % 10**15:015d}"


# ------------------------------------------------------------------------------------------------ redrive-webhooks
def test_redrive_sends_the_dead_letters_back_and_the_fixed_receiver_gets_them(hooks: Hooks) -> None:
    refused = [connection() for _ in range(3)]
    for c in refused:
        hooks.receiver.plans[c] = [410]  # "gone" until fixed: dead-lettered at the first attempt
        publish(hooks.stack, c)
    for c in refused:
        wait_for(partial(dead_lettered, hooks.stack, c), what=f"{c} in the dead-letter queue")
    first = {c: hooks.receiver.of(c)[0].headers["Broker-Event-Id"] for c in refused}

    dry = hooks.admin("redrive-webhooks", "--dry-run")
    assert dry.code == 0, dry.err
    assert "3 event(s) waiting" in dry.out
    assert "dry run: nothing moved" in dry.out
    assert len(dead_letters(hooks.stack)) == 3

    one = hooks.admin("redrive-webhooks", "--max", "1", "--json")
    assert one.code == 0, one.err
    assert one.json()["moved"] == 1
    assert one.json()["waiting"] == 3

    rest = hooks.admin("redrive-webhooks")
    assert rest.code == 0, rest.err
    assert "moved 2 to the delivery queue" in rest.out

    def twice(c: str) -> list[Delivery]:
        seen = hooks.receiver.of(c)
        return seen if len(seen) == 2 else []

    for c in refused:  # the receiver answers 200 now (its plan ran out): each event once more, the same event
        (_, again) = wait_for(partial(twice, c), what=c)
        assert again.status == 200
        assert again.headers["Broker-Event-Id"] == first[c]
        assert again.headers["Broker-Delivery-Attempt"] == "1"  # 12 new attempts
        verify_webhook(again.body, again.headers["Broker-Signature"], signing_secret(hooks.stack))
    assert dead_letters(hooks.stack) == []
    empty = hooks.admin("redrive-webhooks")
    assert empty.code == 0
    assert "0 event(s) waiting" in empty.out


def test_redrive_refuses_a_max_below_one(hooks: Hooks) -> None:
    run = hooks.admin("redrive-webhooks", "--max", "0")
    assert run.code == 1
    assert "--max must be 1 or more" in run.err


# ---------------------------------------------------------------------------------------------------- test-webhook
def test_a_receiver_that_verifies_the_signature_takes_the_test_event(hooks: Hooks) -> None:
    before = len(hooks.receiver.deliveries)

    run = hooks.admin("test-webhook")

    assert run.code == 0, run.err
    assert "127.0.0.1 answered 200" in run.out
    assert "OK: the receiver accepted the signed test event" in run.out
    (delivery,) = hooks.receiver.deliveries[before:]
    assert delivery.verdict == "ok"  # WebhookVerifier took it
    event = verify_webhook(delivery.body, delivery.headers["Broker-Signature"], signing_secret(hooks.stack))
    assert event["detail-type"] == delivery.headers["Broker-Event-Type"] == "Webhook Test"
    assert event["detail"]["test"] is True
    assert event["id"] in run.out
    assert signing_secret(hooks.stack) not in run.out + run.err
    assert delivery.headers["Broker-Signature"] not in run.out + run.err


def test_a_receiver_with_another_secret_refuses_it_and_the_hint_says_signature(hooks: Hooks) -> None:
    hooks.receiver.secret = lambda: "a-secret-that-is-not-the-stacks"
    hooks.receiver._verifier = None
    try:
        run = hooks.admin("test-webhook", "--json")
    finally:
        hooks.receiver.secret = lambda: signing_secret(hooks.stack)
        hooks.receiver._verifier = None

    assert run.code == 1
    answer = run.json()
    assert answer["status"] == 400
    assert answer["ok"] is False
    assert "signature check may have failed" in answer["message"]
    assert hooks.receiver.deliveries[-1].verdict == "WebhookSignatureInvalid"


def test_a_receiver_that_is_down_is_reported_unreachable(hooks: Hooks) -> None:
    hooks.receiver.stop()
    try:
        run = hooks.admin("test-webhook")
    finally:
        hooks.receiver.start()

    assert run.code == 1
    assert "no answer" in run.out
    assert "reachable" in run.out
