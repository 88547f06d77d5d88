"""The admin CLI against a "deployed" stack: found by name through CloudFormation outputs, in moto's mock_aws,
with the Smartsheet emulator on loopback; and the errors an operator sees without credentials or stack.

The stack's RefreshFunction here is a stub: moto's Lambda runs no code without docker and answers an invocation with
the event it was given. So `sweep` proves the CLI's side (which function, which alias, which event, how the answer is
read), not a sweep; the real refresh function run by `sweep` is tested on make dev's stack (test_admin_local.py).
`list`, `refresh` and `health` run the broker's own code in this process against the stack's AWS resources."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from smartsheet_oauth.domain.tokens import TokenSet
from smartsheet_oauth.stores.connections import ConnectionStore
from smartsheet_oauth.stores.token_vault import TokenVault

from infra.admin.cli import main
from infra.admin.target import LIVE_ALIAS
from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator
from tests.ops.support import ADA

STACK = "broker-prod"


@dataclass
class Deployed:
    emulator: SmartsheetEmulator
    vault: TokenVault
    session: boto3.session.Session
    queue_url: str
    failed_sweep_queue_url: str

    def admin(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--stack", STACK, *args], out=out, err=err)
        return code, out.getvalue(), err.getvalue()


def _stub_function_zip() -> bytes:
    """A refresh function that does nothing (moto would not run it anyway)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return {}\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def deployed(emulator_server: SmartsheetEmulator) -> Iterator[Deployed]:
    emulator = emulator_server
    from moto import mock_aws

    from infra.local.aws import LocalAws
    from infra.local.template_model import Template

    # No docker: moto's Lambda answers an invocation with the event it was given.
    with mock_aws(config={"lambda": {"use_docker": False}}):
        credentials = {"client_secret": DEFAULT_APP.client_secret}
        aws = LocalAws(
            Template.load(),
            stack_name=STACK,
            parameters={"SmartsheetClientId": DEFAULT_APP.client_id},
            secret_values={"AppCredentialsSecret": json.dumps(credentials)},
            in_process=True,
        ).start()
        session = boto3.session.Session(region_name="us-east-1")
        environment = {
            "STATE_TABLE_NAME": aws.table_name("StateTable"),
            "CONNECTIONS_TABLE_NAME": aws.table_name("ConnectionsTable"),
            "SMARTSHEET_CLIENT_ID": DEFAULT_APP.client_id,
            "APP_CREDENTIALS_SECRET_ARN": aws.secret_arn("AppCredentialsSecret"),
            "TOKEN_SECRET_PREFIX": f"{STACK}/connections/",
            "OAUTH_SCOPES": "READ_SHEETS",
            "SMARTSHEET_AUTHORIZE_URL": emulator.authorize_url,
            "SMARTSHEET_API_BASE_URL": emulator.api_base_url,
        }
        role = session.client("iam").create_role(RoleName="refresh", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        function = f"{STACK}-RefreshFunction-ABC"
        lambdas = session.client("lambda")
        lambdas.create_function(
            FunctionName=function,
            Runtime="python3.13",
            Role=role,
            Handler="app.lambda_handler",
            Code={"ZipFile": _stub_function_zip()},
            Environment={"Variables": environment},
        )
        # What the schedule runs is the live alias's version; $LATEST may hold a configuration not yet published
        # (here, one whose table does not exist): the CLI must act as the alias does.
        version = lambdas.publish_version(FunctionName=function)["Version"]
        lambdas.create_alias(FunctionName=function, Name=LIVE_ALIAS, FunctionVersion=version)
        lambdas.update_function_configuration(
            FunctionName=function,
            Environment={"Variables": {**environment, "CONNECTIONS_TABLE_NAME": "not-published-yet"}},
        )
        outputs = {
            "RefreshFunctionName": function,
            "ConnectionsTableName": environment["CONNECTIONS_TABLE_NAME"],
            "RefreshDeadLetterQueueUrl": aws.queue_url("RefreshDeadLetterQueue"),
            "FailedSweepQueueUrl": aws.queue_url("FailedSweepQueue"),
            "TokenSecretPrefix": environment["TOKEN_SECRET_PREFIX"],
        }
        template = {
            "Resources": {"AlarmTopic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }
        session.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))
        # One connection, as a sign-in would have stored it.
        vault = TokenVault(session.client("secretsmanager"), environment["TOKEN_SECRET_PREFIX"])
        grant = emulator.issue_grant(DEFAULT_APP.client_id, ADA)
        tokens = TokenSet(
            access_token=grant["access_token"],
            refresh_token=grant["refresh_token"],
            token_type="bearer",
            expires_at=2_000_000_000,
            scope="READ_SHEETS",
            region="us",
            user_id=str(ADA),
            email="ada@example.com",
            obtained_at=1_700_000_000,
        )
        arn = vault.save(str(ADA), tokens)
        ConnectionStore(
            session.client("dynamodb"), environment["CONNECTIONS_TABLE_NAME"], default_region="us"
        ).record_sign_in(
            connection_id=str(ADA),
            secret_arn=arn,
            email="ada@example.com",
            scopes="READ_SHEETS",
            region="us",
            access_expires_at=2_000_000_000,
            refresh_due_at=1_999_000_000,
            now=1_700_000_000,
        )
        yield Deployed(emulator, vault, session, outputs["RefreshDeadLetterQueueUrl"], outputs["FailedSweepQueueUrl"])


def test_the_stack_is_found_by_name_and_its_connections_operated(deployed: Deployed) -> None:
    before = deployed.vault.load(deployed.vault.secret_name(str(ADA)))

    listed = deployed.admin("list", "--ids")
    refreshed = deployed.admin("refresh", str(ADA))

    assert listed == (0, f"{ADA}\n", "")
    assert refreshed[0] == 0, refreshed
    after = deployed.vault.load(deployed.vault.secret_name(str(ADA)))
    assert after.refresh_token != before.refresh_token
    assert deployed.emulator.refresh_token_is_live(after.refresh_token)


def test_health_lists_this_stacks_firing_alarms_and_dead_letters(deployed: Deployed) -> None:
    cloudwatch = deployed.session.client("cloudwatch")
    healthy = deployed.admin("health")
    for name in (f"{STACK}-needs-reauth", "another-stack-needs-reauth"):
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            Namespace="SmartsheetOAuthBroker",
            MetricName="refresh_needs_reauth",
            Statistic="Sum",
            Period=3600,
            EvaluationPeriods=1,
            Threshold=3,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="test")
    deployed.session.client("sqs").send_message(QueueUrl=deployed.queue_url, MessageBody="{}")
    deployed.session.client("sqs").send_message(QueueUrl=deployed.failed_sweep_queue_url, MessageBody="{}")

    code, out, _ = deployed.admin("health")
    report: dict[str, Any] = json.loads(deployed.admin("health", "--json")[1])

    assert healthy[0] == 0, healthy
    assert "alarms firing: none" in healthy[1]
    assert code == 1
    assert report["alarms_firing"] == [f"{STACK}-needs-reauth"]
    assert report["dead_letters"] == 1
    assert report["failed_sweeps"] == 1
    assert "1 failed sweep(s) in FailedSweepQueue" in out
    assert "ATTENTION" in out


def test_sweep_invokes_the_stub_refresh_function_through_its_live_alias_with_an_admin_event(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's call only: the function is moto's stub, which echoes the event (see the module's docstring)."""
    invoked: list[dict[str, Any]] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def record(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "Invoke":
            invoked.append(params)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    code, out, _ = deployed.admin("sweep", "--json")

    assert code == 0
    assert [(call["FunctionName"], call.get("Qualifier")) for call in invoked] == [
        (f"{STACK}-RefreshFunction-ABC", LIVE_ALIAS)
    ]
    echoed = json.loads(out)  # moto's Lambda without docker answers with the event it received
    assert echoed["detail-type"] == "Admin Sweep"
    assert echoed["id"]  # the logs' correlation id


def test_a_missing_stack_or_one_without_the_outputs_is_named(deployed: Deployed) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--stack", "no-such-stack", "list"], out=out, err=err) == 2
    assert "no-such-stack" in err.getvalue()
    assert "does not exist" in err.getvalue()

    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    deployed.session.client("cloudformation").create_stack(StackName="not-a-broker", TemplateBody=json.dumps(template))
    err = io.StringIO()
    assert main(["--stack", "not-a-broker", "list"], out=out, err=err) == 2
    assert "has no output RefreshFunctionName" in err.getvalue()


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without AWS credentials (and no instance metadata to fall back on: nothing leaves 127.0.0.1)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_aws_config")
def test_missing_credentials_profile_or_region_get_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: str) -> tuple[int, str]:
        err = io.StringIO()
        return main(["--stack", STACK, *args, "list"], out=io.StringIO(), err=err), err.getvalue()

    code, message = run()
    assert code == 2
    assert "no AWS credentials found" in message

    code, message = run("--profile", "ops")
    assert code == 2
    assert "profile 'ops'" in message

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    code, message = run()
    assert code == 2
    assert "--region" in message


def test_the_live_alias_is_the_one_the_template_publishes() -> None:
    from infra.scripts.sam_translate import load_template

    assert load_template()["Globals"]["Function"]["AutoPublishAlias"] == LIVE_ALIAS
