"""Fixtures more than one suite needs, registered for all of tests/ by tests/conftest.py (pytest_plugins).

- `broker`: the in-process broker (moto's mock_aws, the Smartsheet emulator on loopback, the real handlers).
- `stack`, `local_stack`, `client`: the local stack over loopback HTTP (moto server, emulator, gateway,
  functions in their own processes), one per session.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from smartsheet_oauth import services

if TYPE_CHECKING:
    from infra.local.demo import BrokerClient
    from infra.local.smartsheet_emulator import SmartsheetEmulator
    from infra.local.stack import LocalStack
    from infra.local.template_model import Template
    from tests.support.broker import Broker

# Every suite loads this plugin: moto and the local stack are imported only by the tests that use them.

# -- the in-process broker ---------------------------------------------------------------------


@functools.cache
def _template() -> Template:
    """template.yaml, parsed once per session (the YAML parse is about a second; every broker needs it)."""
    from infra.local.template_model import Template

    return Template.load()


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[SmartsheetEmulator]:
    from infra.local.smartsheet_emulator import SmartsheetEmulator

    with SmartsheetEmulator(seed=1234).start() as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_server: SmartsheetEmulator) -> Iterator[SmartsheetEmulator]:
    emulator_server.reset_state()
    emulator_server.reset_faults()
    emulator_server.reset_stats()
    yield emulator_server
    emulator_server.reset_faults()


_MOTO_LOCK = threading.RLock()


def _serialized(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with _MOTO_LOCK:
            return call(*args, **kwargs)

    return one_at_a_time


@contextmanager
def in_process_broker(
    emulator: SmartsheetEmulator,
    patch: pytest.MonkeyPatch,
    *,
    stack_name: str = "test-stack",
    token_store: str = "secretsmanager",  # noqa: S107 (a store's name)
) -> Iterator[Broker]:
    """The in-process broker: moto's mock_aws provisioned from template.yaml, the handlers' environment set
    through `patch`. The `broker` fixture is one per test; a session-wide user (tests/ops) passes its own patch."""
    from moto import mock_aws
    from moto.core.botocore_stubber import BotocoreStubber

    from infra.local.aws import LocalAws
    from infra.local.smartsheet_emulator import DEFAULT_APP
    from tests.support.broker import Broker, pending_tokens_key_arn

    # moto in-process answers threads concurrently and its DynamoDB conditional writes are check-then-act, so two
    # threads can both "win" a lease or a state that real DynamoDB gives to one. Serve one request at a time, as
    # DynamoDB's per-item atomicity would: concurrency tests then test our code, not moto's.
    patch.setattr(BotocoreStubber, "__call__", _serialized(BotocoreStubber.__call__))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        app_credentials = {"client_secret": DEFAULT_APP.client_secret}
        aws = LocalAws(
            _template(),
            stack_name=stack_name,
            region="us-east-1",
            parameters={"SmartsheetClientId": DEFAULT_APP.client_id},
            secret_values={"AppCredentialsSecret": json.dumps(app_credentials)},
            in_process=True,
        ).start()
        env = {
            "STATE_TABLE_NAME": aws.table_name("StateTable"),
            "CONNECTIONS_TABLE_NAME": aws.table_name("ConnectionsTable"),
            "SMARTSHEET_CLIENT_ID": DEFAULT_APP.client_id,
            "APP_CREDENTIALS_SECRET_ARN": aws.secret_arn("AppCredentialsSecret"),
            "TOKEN_SECRET_PREFIX": f"{stack_name}/connections/",
            # As the template sets it by default: new token secrets under the stack's own key.
            "TOKEN_KMS_KEY_ID": aws.kms_key_arn("TokenSecretsKey"),
            "SMARTSHEET_REGION": "us",
            "SMARTSHEET_AUTHORIZE_URL": emulator.authorize_url,
            "SMARTSHEET_API_BASE_URL": emulator.api_base_url,
            "OAUTH_SCOPES": "READ_SHEETS WRITE_SHEETS",
            "ALLOWED_RETURN_TO": "https://app.example.com",
            # The template gives every function the pending-tokens key (refresh and connect sessions seal with it).
            "PENDING_TOKENS_KEY_ID": pending_tokens_key_arn(),
            "TOKEN_STORE": token_store,
            "TOKEN_TABLE_NAME": aws.table_name("TokenTable"),
            "CONNECTION_TAGS_TABLE_NAME": aws.table_name("ConnectionTagsTable"),
            "POWERTOOLS_SERVICE_NAME": "smartsheet-oauth-broker",
            "POWERTOOLS_LOG_LEVEL": "DEBUG",
        }
        for name, value in env.items():
            patch.setenv(name, value)
        services.reset()
        try:
            yield Broker(emulator, aws.dynamodb, aws.secretsmanager, env)
        finally:
            services.reset()


# Both token stores: a module whose tests run on each says so with `pytestmark = BOTH_STORES`; every test of it that
# uses the broker (directly or through another fixture) then runs once per store.
TOKEN_STORES = ("secretsmanager", "dynamodb")
BOTH_STORES = pytest.mark.both_stores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("broker", TOKEN_STORES, indirect=True)


@pytest.fixture
def broker(
    emulator: SmartsheetEmulator, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Broker]:
    token_store = getattr(request, "param", "secretsmanager")
    with in_process_broker(emulator, monkeypatch, token_store=token_store) as broker:
        yield broker


# -- the local stack over HTTP -----------------------------------------------------------------
INTEGRATOR_APP = "https://app.example.com"  # where connect sessions return in tests without a browser


class _IntegratorPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><html><head><title>Integrator app</title></head><body><p>Back.</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the completion codes in these URLs are the test's business, not the log's."""


@pytest.fixture(scope="session")
def integrator_app() -> Iterator[str]:
    """The integrator's app as a browser reaches it: every page answers 200 "Integrator app" (its backend's part, the
    redemption of completion codes, is played by the tests). A loopback origin, the only http:// return_to allowed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IntegratorPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def stack(integrator_app: str) -> Iterator[LocalStack]:
    from infra.local.stack import LocalStack

    # Separate stack name from `make dev`'s, so a dev stack and the tests never share secrets' names.
    # The functions' logs go to logging: pytest shows them beside a failing test.
    allowed = f"{INTEGRATOR_APP} {integrator_app}"
    # A second Smartsheet region (its own emulator): the regions' tests sign in there; the rest use the default.
    parameters = {"AllowedReturnTo": allowed, "AllowedRegions": "us,eu"}
    with LocalStack(stack_name=f"e2e-{os.getpid()}", parameters=parameters) as local:
        yield local


@pytest.fixture
def local_stack(stack: LocalStack) -> Iterator[LocalStack]:
    """The session stack with the emulator's faults cleared before and after the test."""
    if not _provisioned(stack):
        # The stack's moto server shares moto's in-process backends with the `broker` fixture, whose mock_aws
        # resets them on exit: a suite that runs after in-process tests gets a stack whose AWS is empty.
        stack.stop()
        stack.start()
    stack.emulator.reset_faults()
    yield stack
    stack.emulator.reset_faults()


def _provisioned(stack: LocalStack) -> bool:
    from botocore.exceptions import ClientError

    try:
        stack.aws.dynamodb.describe_table(TableName=stack.table_name("STATE_TABLE_NAME"))
        stack.aws.secretsmanager.describe_secret(SecretId=stack.secret_arn("APP_CREDENTIALS_SECRET_ARN"))
    except ClientError:
        return False
    return True


@pytest.fixture
def client(local_stack: LocalStack) -> Iterator[BrokerClient]:
    from infra.local.demo import BrokerClient

    broker = BrokerClient.of(local_stack)
    yield broker
    broker.http.close()
