"""make doctor against the local stack (`make doctor` without STACK), found as `make dev`'s is: through its state
file. The sign-in check goes through the real gateway and /login handler; locally the doctor runs a sweep."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.admin.cli import main
from infra.local.stack import LocalStack
from tests.ops.conftest import DevStack
from tests.ops.deployed_stack import Run

pytestmark = pytest.mark.e2e
DEV_STACK: tuple[str, dict[str, str]] = ("doctor", {})  # the module's local stack (conftest.dev_stack)


@dataclass
class Local:
    stack: LocalStack
    state_file: Path

    def doctor(self) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--state-file", str(self.state_file), "doctor"], out=out, err=err)
        return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def local(dev_stack: DevStack) -> Local:
    return Local(dev_stack.stack, dev_stack.state_file)


def test_the_local_stack_passes_what_it_has_and_says_what_it_has_not(local: Local) -> None:
    run = local.doctor()

    assert run.code == 0, run.out + run.err
    emulator = local.stack.emulator
    assert run.line("sign-in") == (
        f"✓ sign-in: /login answers 302 to {emulator.authorize_url} with client id {emulator.apps[0].client_id} and "
        "no redirect_uri (Smartsheet uses the app's registered redirect URL)"
    )
    assert run.line("client secret").startswith("✓ client secret")
    assert run.line("last sweep ran").startswith(
        "✓ last sweep ran: locally there is no timer: the doctor ran one sweep now, as make refresh does"
    )
    for name in ("live alias", "schedule", "last sweep succeeded", "alarms", "alarm topic"):
        assert run.line(name).startswith(f"- {name}: "), run.out
    assert f"  {local.stack.callback_url}" in run.out.splitlines()
    assert emulator.apps[0].client_secret not in run.out + run.err


def test_a_placeholder_secret_fails_locally_with_the_local_fix(local: Local) -> None:
    secrets = local.stack.aws.secretsmanager
    arn = local.stack.secret_arn("APP_CREDENTIALS_SECRET_ARN")
    kept = secrets.get_secret_value(SecretId=arn)["SecretString"]
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"placeholder": True, "client_secret": "g" * 32}))
    try:
        run = local.doctor()
    finally:
        secrets.put_secret_value(SecretId=arn, SecretString=kept)

    assert run.code == 1
    line = run.line("client secret")
    assert line.startswith("✗ client secret: the app credentials secret still holds CloudFormation's placeholder")
    assert "fix: stop and start make dev" in line
    assert "g" * 32 not in run.out


def test_a_sweep_that_cannot_run_fails(local: Local) -> None:
    # The state table gone: the sweep cannot take its lease, and its invocation fails (as on Lambda).
    dynamodb = local.stack.aws.dynamodb
    table = local.stack.table_name("STATE_TABLE_NAME")
    description = dynamodb.describe_table(TableName=table)["Table"]
    dynamodb.delete_table(TableName=table)
    try:
        run = local.doctor()
    finally:
        dynamodb.create_table(
            TableName=table,
            KeySchema=description["KeySchema"],
            AttributeDefinitions=description["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
        )

    assert run.code == 1
    line = run.line("last sweep ran")
    assert line.startswith("✗ last sweep ran: the doctor ran a sweep and it did not complete: the sweep failed:")
    assert "fix: read make dev's output for the RefreshFunction's traceback" in line
