"""`make dev`'s banner tells a developer how to point their own code at the stack (issue 22 item 4): its block of
environment variables, pasted into a fresh shell, is all boto3 and the token client need. Nothing else is set, no
~/.aws is read, and the token's api_base_url is the emulator's, never the real Smartsheet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local.demo import BrokerClient
from infra.local.dev import _banner
from infra.local.stack import LocalStack
from tests.management.test_over_http import sign_in, unbind

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ADA = "4583173393803140"

YOUR_CODE = """
import json, sys, urllib.request
import boto3
from smartsheet_oauth_client import ManagementClient, TokenProvider

connection_id = sys.argv[1]
names = [s["Name"] for s in boto3.client("secretsmanager").list_secrets()["SecretList"]]
token = TokenProvider.from_environment().token(connection_id)
bearer = {"Authorization": "Bearer " + token.access_token}
with urllib.request.urlopen(urllib.request.Request(token.api_base_url + "/users/me", headers=bearer)) as answer:
    me = json.load(answer)
status = ManagementClient.from_environment().get_connection(connection_id).status
print(json.dumps({"secrets": names, "api_base_url": token.api_base_url, "me": str(me["id"]), "status": status}))
"""


def exported(banner: str) -> dict[str, str]:
    pairs = [line.strip().removeprefix("export ").split("=", 1) for line in banner.splitlines() if "export " in line]
    return {pair[0]: pair[1] for pair in pairs}


def test_the_banners_environment_block_is_all_your_code_needs(
    local_stack: LocalStack, client: BrokerClient, tmp_path: Path
) -> None:
    unbind(local_stack, ADA)
    sign_in(client, ADA)
    banner = _banner(local_stack)
    variables = exported(banner)
    assert "unset AWS_PROFILE AWS_SESSION_TOKEN" in banner

    # A fresh shell: the block, a PATH, and the client file on the import path (integrators copy it).
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "functions"), **variables}
    ran = subprocess.run(
        [sys.executable, "-c", YOUR_CODE, ADA], env=env, capture_output=True, text=True, timeout=120, check=False
    )

    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert f"{local_stack.token_secret_prefix}{ADA}" in seen["secrets"]
    assert seen["api_base_url"] == local_stack.emulator.api_base_url
    assert (seen["me"], seen["status"]) == (ADA, "active")
    assert set(variables) == {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "SMARTSHEET_BROKER_API_URL",
        "SMARTSHEET_BROKER_SECRET_PREFIX",
        "SMARTSHEET_API_BASE_URL",
        "SMARTSHEET_API_BASE_URL_EU",  # the test stack's second region (AllowedRegions=us,eu): its own emulator
    }
    assert variables["SMARTSHEET_API_BASE_URL_EU"] == local_stack.emulators["eu"].api_base_url


def test_the_banner_offers_login_only_when_anonymous_sign_in_is_on(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert f"sign in:     {local_stack.login_url}" in _banner(local_stack)
    assert "/_emulator/revoke-user" in _banner(local_stack)
    assert "webhooks:" not in _banner(local_stack)  # only with --param WebhookUrl=...

    monkeypatch.setattr(local_stack, "parameters", {**local_stack.parameters, "AnonymousLogin": "disabled"})

    assert local_stack.login_url not in _banner(local_stack)
    assert "through a connect session only (AnonymousLogin=disabled)" in _banner(local_stack)
