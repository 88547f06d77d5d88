"""The in-process broker: moto's mock_aws for AWS, the Smartsheet emulator on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from moto import mock_aws
from smartsheet_oauth import services

from infra.local.aws import LocalAws
from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator
from infra.local.template_model import Template
from tests.support.broker import Broker


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[SmartsheetEmulator]:
    with SmartsheetEmulator(seed=1234).start() as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_server: SmartsheetEmulator) -> Iterator[SmartsheetEmulator]:
    emulator_server.reset_state()
    emulator_server.reset_faults()
    emulator_server.reset_stats()
    yield emulator_server
    emulator_server.reset_faults()


@pytest.fixture
def broker(emulator: SmartsheetEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    with mock_aws():
        app_credentials = {"client_id": DEFAULT_APP.client_id, "client_secret": DEFAULT_APP.client_secret}
        aws = LocalAws(
            Template.load(),
            stack_name="test-stack",
            region="us-east-1",
            parameters={"SmartsheetClientId": DEFAULT_APP.client_id},
            secret_values={"AppCredentialsSecret": json.dumps(app_credentials)},
            in_process=True,
        ).start()
        env = {
            "STATE_TABLE_NAME": aws.table_name("StateTable"),
            "CONNECTIONS_TABLE_NAME": aws.table_name("ConnectionsTable"),
            "APP_CREDENTIALS_SECRET_ARN": aws.secret_arn("AppCredentialsSecret"),
            "TOKEN_SECRET_PREFIX": "test-stack/connections/",
            "SMARTSHEET_REGION": "us",
            "SMARTSHEET_AUTHORIZE_URL": emulator.authorize_url,
            "SMARTSHEET_API_BASE_URL": emulator.api_base_url,
            "OAUTH_SCOPES": "READ_SHEETS WRITE_SHEETS",
            "ALLOWED_RETURN_TO": "https://app.example.com",
            "POWERTOOLS_SERVICE_NAME": "smartsheet-oauth-broker",
            "POWERTOOLS_LOG_LEVEL": "DEBUG",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        services.reset()
        yield Broker(emulator, aws.dynamodb, aws.secretsmanager, env)
        services.reset()
