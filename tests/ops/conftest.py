"""The ops suite's recording: every scenario of tests/ops/support.py run once, its EMF output kept per scenario."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, Any

import pytest
from smartsheet_oauth import services

from tests.ops.support import SCENARIOS, emf_blobs
from tests.support.broker import Broker

if TYPE_CHECKING:
    from infra.local.smartsheet_emulator import SmartsheetEmulator

# Scenarios sharing one broker, in an order where each leaves what the next needs (destructive ones last).
GROUPS = (
    (
        "login_started",
        "callback_success",
        "callback_denied",
        "callback_bad_state",
        "callback_smartsheet_error",
        "callback_smartsheet_unavailable",
        "callback_internal_error",
        "events_publish_failed",
        "sweep_backlog",
        "connections_by_status",
        "callback_storage_error",
    ),
    (
        "refresh_ok",
        "refresh_transient",
        "refresh_needs_reauth",
        "refresh_lease_busy",
        "refresh_raced",
        "sweep_out_of_time",
        "refresh_error",
    ),
)

Recorded = dict[str, list[dict[str, Any]]]


@contextmanager
def in_process_broker(emulator: SmartsheetEmulator) -> Iterator[Broker]:
    """The `broker` fixture's set-up, usable once for a whole session (tests/support/fixtures.py has the original)."""
    from moto import mock_aws

    from infra.local.aws import LocalAws
    from infra.local.smartsheet_emulator import DEFAULT_APP
    from infra.local.template_model import Template

    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        credentials = {"client_id": DEFAULT_APP.client_id, "client_secret": DEFAULT_APP.client_secret}
        aws = LocalAws(
            Template.load(),
            stack_name="ops-stack",
            parameters={"SmartsheetClientId": DEFAULT_APP.client_id},
            secret_values={"AppCredentialsSecret": json.dumps(credentials)},
            in_process=True,
        ).start()
        env = {
            "STATE_TABLE_NAME": aws.table_name("StateTable"),
            "CONNECTIONS_TABLE_NAME": aws.table_name("ConnectionsTable"),
            "APP_CREDENTIALS_SECRET_ARN": aws.secret_arn("AppCredentialsSecret"),
            "TOKEN_SECRET_PREFIX": "ops-stack/connections/",
            "SMARTSHEET_AUTHORIZE_URL": emulator.authorize_url,
            "SMARTSHEET_API_BASE_URL": emulator.api_base_url,
            "OAUTH_SCOPES": "READ_SHEETS",
        }
        for name, value in env.items():
            patch.setenv(name, value)
        services.reset()
        try:
            yield Broker(emulator, aws.dynamodb, aws.secretsmanager, env)
        finally:
            services.reset()


@pytest.fixture(scope="session")
def recorded(emulator_server: SmartsheetEmulator) -> Recorded:
    """Scenario name -> the EMF documents the handlers printed while it ran."""
    result: Recorded = {}
    for group in GROUPS:
        emulator_server.reset_state()
        emulator_server.reset_faults()
        with in_process_broker(emulator_server) as broker:
            for name in group:
                printed = io.StringIO()
                with pytest.MonkeyPatch.context() as patch, redirect_stdout(printed):
                    SCENARIOS[name](broker, patch)
                result[name] = emf_blobs(printed.getvalue())
    emulator_server.reset_faults()
    return result
