"""Each function's cold start imports only what its path needs: a fresh interpreter imports the handler template.yaml
names, with the function's own environment, and must not have loaded a module its path has no use for. It keeps the
reasons for the small router (edge/router.py instead of Powertools' event handler), for urllib3 instead of requests,
and for /login's lazy imports (it never touches a token) true."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local.template_model import Resolver, Template

ROOT = Path(__file__).resolve().parents[2]

# No function loads these: the Powertools event handler (every resolver, event class and asyncio: ~80 ms), requests
# (~20 ms: urllib3, which botocore loads anyway, serves), and the dev dependencies moto and werkzeug.
NEVER = ("aws_lambda_powertools.event_handler", "requests", "moto", "werkzeug")
# /login starts a sign-in or shows the connect page: it reads and writes states, never a token.
NOT_ON_LOGIN = ("smartsheet_oauth.stores.token_vault", "cryptography", "smartsheet_oauth.flows.refresh")
# The webhook delivery function signs and posts events: no token, no connection or state store, no refresh.
NOT_ON_WEBHOOKS = (
    "smartsheet_oauth.stores.token_vault",
    "smartsheet_oauth.stores.token_stores",
    "smartsheet_oauth.stores.connections",
    "smartsheet_oauth.stores.states",
    "smartsheet_oauth.flows.refresh",
    "smartsheet_oauth.services",
    "cryptography",
)
FORBIDDEN = {
    "WebhookDeliveryFunction": NEVER + NOT_ON_WEBHOOKS,
    "AuthorizeFunction": NEVER + NOT_ON_LOGIN,
    "CallbackFunction": NEVER,
    "RefreshFunction": NEVER,
    "RefreshWorkerFunction": NEVER,
    "ManagementFunction": NEVER,
}

CHILD = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
assert callable(getattr(module, sys.argv[2]))
forbidden = json.loads(sys.argv[3])
print(json.dumps(sorted(
    name for name in sys.modules if any(name == f or name.startswith(f + ".") for f in forbidden)
)))
"""


def functions() -> list[tuple[str, str, str, dict[str, str]]]:
    resolver = Resolver(
        Template.load(),
        stack_name="broker-prod",
        # WebhookUrl set: the optional webhook delivery function exists too.
        parameters={"SmartsheetClientId": "1a2b3c4d5e6f", "WebhookUrl": "https://hooks.example.com/broker"},
    )
    return [
        (spec.logical_id, spec.module, spec.attribute, dict(spec.environment))
        for spec in sorted(resolver.functions(), key=lambda spec: spec.logical_id)
    ]


def test_every_function_of_the_template_has_its_budget() -> None:
    assert {logical_id for logical_id, *_ in functions()} == set(FORBIDDEN)


@pytest.mark.parametrize(("logical_id", "module", "attribute", "environment"), functions(), ids=lambda v: str(v)[:24])
def test_a_cold_start_loads_no_module_its_path_does_not_use(
    logical_id: str, module: str, attribute: str, environment: dict[str, str]
) -> None:
    answer = subprocess.run(
        [sys.executable, "-c", CHILD, module, attribute, json.dumps(FORBIDDEN[logical_id])],
        check=False,
        cwd=ROOT,
        env={
            **environment,
            "PYTHONPATH": str(ROOT / "functions"),  # what Lambda's /var/task holds
            "PATH": "/usr/bin:/bin",
            "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == [], f"{logical_id} ({module}) loaded what its path does not use"


def test_the_check_sees_a_forbidden_module_when_one_is_loaded() -> None:
    # The same child, asked about a module every handler loads: it must name it (the check is not blind).
    answer = subprocess.run(
        [sys.executable, "-c", CHILD, "smartsheet_oauth.edge.router", "Router", json.dumps(["smartsheet_oauth.edge"])],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "functions"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "smartsheet_oauth.edge.router" in json.loads(answer.stdout)
