"""SnapStart runtime hooks: registered with the runtime's module when there is one, nothing random before the
snapshot, `random` (and the one library secret made at import) renewed after a restore."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from smartsheet_oauth.platform import aws, snapstart

from infra.local.template_model import Template


def test_without_the_runtime_module_nothing_is_registered() -> None:
    assert snapstart.register(module="no_such_snapshot_module") is False


def test_with_the_runtime_module_both_hooks_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    before: list[Callable[[], None]] = []
    after: list[Callable[[], None]] = []
    runtime = types.ModuleType("fake_snapshot_restore_py")
    runtime.register_before_snapshot = before.append  # type: ignore[attr-defined]
    runtime.register_after_restore = after.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_snapshot_restore_py", runtime)

    assert snapstart.register(module="fake_snapshot_restore_py") is True
    assert before == [snapstart.before_snapshot]
    assert after == [snapstart.after_restore]


def test_before_snapshot_builds_the_clients_without_making_a_random_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in snapstart.PRELOADED_MODULES:
        __import__(name)  # imports happen in the init phase anyway; the hook's own work is what is checked
    calls: list[int] = []
    real_urandom = os.urandom

    def counted(size: int) -> bytes:
        calls.append(size)
        return real_urandom(size)

    monkeypatch.setattr(os, "urandom", counted)
    seeded: list[object] = []
    real_seed = random.Random.seed

    def counted_seed(self: random.Random, a: object = None, version: int = 2) -> None:
        seeded.append(a)
        real_seed(self, a, version)  # type: ignore[arg-type]

    monkeypatch.setattr(random.Random, "seed", counted_seed)
    aws.reset()
    try:
        snapstart.before_snapshot()
        assert aws.dynamodb.cache_info().currsize == 1
        assert aws.secretsmanager.cache_info().currsize == 1
    finally:
        aws.reset()
    assert calls == []
    assert seeded == []


def test_after_restore_reseeds_random_and_renews_the_multiprocessing_authkey() -> None:
    random.seed(1234)  # as if every restored environment resumed with this same state
    cloned_state = random.getstate()
    cloned_authkey = bytes(multiprocessing.current_process().authkey)

    snapstart.after_restore()

    assert random.getstate() != cloned_state
    assert bytes(multiprocessing.current_process().authkey) != cloned_authkey


# ------------------------------------------------------------------------------- every function of the template
FAKE_RUNTIME = """\
import json, os

def _record(kind, hook):
    with open(os.environ["SNAPSTART_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps([kind, hook.__module__, hook.__qualname__]) + "\\n")

def register_before_snapshot(hook):
    _record("before", hook)

def register_after_restore(hook):
    _record("after", hook)
"""
CONFIG = {
    "STATE_TABLE_NAME": "states",
    "CONNECTIONS_TABLE_NAME": "connections",
    "SMARTSHEET_CLIENT_ID": "client",
    "APP_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf",
    "TOKEN_SECRET_PREFIX": "stack/connections/",
    "OAUTH_SCOPES": "READ_SHEETS",
    # The webhook delivery function's own (WebhookUrl set).
    "WEBHOOK_URL": "https://hooks.example.com/broker",
    "WEBHOOK_SIGNING_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:signing-AbCdEf",
    "WEBHOOK_DELIVERY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/deliveries",
    "WEBHOOK_DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/undelivered",
}


@pytest.mark.parametrize("function", sorted(Template.load().resources_of_type("AWS::Serverless::Function")))
def test_every_function_of_the_template_registers_both_hooks_at_import(function: str, tmp_path: Path) -> None:
    # EnableSnapStart applies to every function: one without the hooks would resume every copy with the same
    # `random` state. Each handler is imported in a fresh interpreter, as Lambda's init phase does, with a stand-in
    # for the runtime's snapshot_restore_py that records what registers.
    handler = str(Template.load().resources[function]["Properties"]["Handler"])
    (tmp_path / "snapshot_restore_py.py").write_text(FAKE_RUNTIME, encoding="utf-8")
    record = tmp_path / "registered.jsonl"
    functions = Path(__file__).resolve().parents[2] / "functions"
    environment = {
        **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "PATH"))},
        **CONFIG,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(functions)]),
        "SNAPSTART_RECORD": str(record),
    }

    subprocess.run(
        [sys.executable, "-c", f"import {handler.rpartition('.')[0]}"], env=environment, check=True, timeout=120
    )

    lines = record.read_text(encoding="utf-8").splitlines() if record.exists() else []
    registered = [json.loads(line) for line in lines]
    assert registered == [
        ["before", "smartsheet_oauth.platform.snapstart", "before_snapshot"],
        ["after", "smartsheet_oauth.platform.snapstart", "after_restore"],
    ], f"{function} ({handler}) must call snapstart.register() at import"
