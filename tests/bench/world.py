"""What every bench part stands on: the template's own resources on moto, the emulator, and each function's
environment as template.yaml defines it (so a variable added to the template reaches the bench too)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.local.aws import LOCAL_CREDENTIALS, LocalAws
from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator, User
from infra.local.stack import app_credentials_secret
from infra.local.template_model import FunctionSpec, Template

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
STACK_NAME = "bench"
REGION = "us-east-1"
# Plenty of distinct Smartsheet users, so every measured sign-in can be a new connection.
FIRST_USER_ID = 5_000_000_000_000_000


def bench_users(count: int) -> list[User]:
    return [
        User(FIRST_USER_ID + i, f"user{i}@example.com", "Bench", f"User{i}", account_id=7254813458524036)
        for i in range(count)
    ]


def start_emulator(users: int = 1000) -> SmartsheetEmulator:
    return SmartsheetEmulator(apps=[DEFAULT_APP], users=bench_users(users), seed=7).start()


def local_aws(*, in_process: bool, stack_name: str = STACK_NAME) -> LocalAws:
    template = Template.load()
    credentials = {"client_secret": DEFAULT_APP.client_secret}  # the client id is SMARTSHEET_CLIENT_ID
    return LocalAws(
        template,
        stack_name=stack_name,
        region=REGION,
        parameters={"SmartsheetClientId": DEFAULT_APP.client_id},
        secret_values={app_credentials_secret(template): json.dumps(credentials)},
        in_process=in_process,
    ).start()


def functions(aws: LocalAws) -> dict[str, FunctionSpec]:
    """The template's functions by handler folder: authorize, callback, refresh."""
    return {spec.module.split(".")[0]: spec for spec in aws.resolver.functions()}


def _kms_keys(aws: LocalAws) -> dict[str, str]:
    """KMS keys of the template the embedded AWS does not create itself: made here, synthesized id -> key ARN."""
    from infra.local.aws import PROVISIONERS

    if "AWS::KMS::Key" in PROVISIONERS:
        return {}
    made: dict[str, str] = getattr(aws, "_bench_kms_keys", {})
    if not made:
        for logical_id in aws.template.resources_of_type("AWS::KMS::Key"):
            if aws.resolver.is_active(logical_id):
                synthesized = aws.resolver.physical(logical_id)
                arn = aws.client("kms").create_key(Description=logical_id)["KeyMetadata"]["Arn"]
                made[synthesized.ref] = arn
                if "Arn" in synthesized.attributes:
                    made[synthesized.attributes["Arn"]] = arn
        aws._bench_kms_keys = made  # type: ignore[attr-defined]
    return made


def function_env(aws: LocalAws, spec: FunctionSpec, emulator: SmartsheetEmulator) -> dict[str, str]:
    """The function's variables from the template plus the local wiring (moto, emulator, dummy credentials)."""
    keys = _kms_keys(aws)
    env = {
        **spec.environment,
        **LOCAL_CREDENTIALS,
        "AWS_DEFAULT_REGION": aws.region,
        "AWS_REGION": aws.region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "SMARTSHEET_AUTHORIZE_URL": emulator.authorize_url,
        "SMARTSHEET_API_BASE_URL": emulator.api_base_url,
    }
    for name, value in env.items():
        env[name] = keys.get(value, value)
    if not aws._in_process:
        env["AWS_ENDPOINT_URL"] = aws.endpoint_url
    return env


def http_event(
    path: str, query: Mapping[str, str] | None = None, cookies: Mapping[str, str] | None = None
) -> dict[str, Any]:
    from tests.support.events import http_event as build

    return build(path, dict(query or {}), cookies=dict(cookies) if cookies else None)


def scheduled_event() -> dict[str, Any]:
    from tests.support.events import scheduled_event as build

    return build()


def state_item(state: str, nonce_hash: str, now: int | None = None, ttl: int = 600) -> dict[str, Any]:
    now = int(time.time()) if now is None else now
    return {
        "state": {"S": state},
        "nonce_hash": {"S": nonce_hash},
        "created_at": {"N": str(now)},
        "expires_at": {"N": str(now + ttl)},
    }


def token_document(grant: Mapping[str, Any], user_id: str, *, now: int, region: str = "us") -> str:
    return json.dumps(
        {
            "access_token": grant["access_token"],
            "refresh_token": grant["refresh_token"],
            "token_type": grant.get("token_type", "bearer"),
            "expires_at": now + int(grant["expires_in"]),
            "scope": "READ_SHEETS",
            "region": region,
            "user_id": user_id,
            "email": f"{user_id}@example.com",
            "obtained_at": now,
        }
    )


def connection_item(connection_id: str, secret_arn: str, *, due_at: int, now: int) -> dict[str, Any]:
    """A connection record as a sign-in leaves it, already due for refresh."""
    return {
        "connection_id": {"S": connection_id},
        "status": {"S": "active"},
        "secret_arn": {"S": secret_arn},
        "email": {"S": f"{connection_id}@example.com"},
        "scopes": {"S": "READ_SHEETS"},
        "region": {"S": "us"},
        "access_expires_at": {"N": str(now + 3600)},
        "refresh_due_at": {"N": str(due_at)},
        "due_shard": {"S": "due"},
        "generation": {"N": "1"},
        "failures": {"N": "0"},
        "created_at": {"N": str(now)},
        "updated_at": {"N": str(now)},
    }


@dataclass
class LambdaContext:
    function_name: str = "bench"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id: str = ""
    timeout_seconds: float = 15.0
    _started: float = 0.0

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self._started = time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.timeout_seconds - (time.monotonic() - self._started)) * 1000)
