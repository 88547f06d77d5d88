"""make doctor against one working deployed stack (moto's mock_aws, tests/ops/deployed_stack.py) that no test here
changes: everything passes; what /login answers (the loopback server each test tells) and what the operator's
credentials may read (a patched call) decide the rest. Tests that break a part of the stack: test_doctor_deployed.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from infra.admin.target import LIVE_ALIAS
from tests.ops.deployed_stack import (
    CALLBACK_URL,
    CLIENT_SECRET,
    DeployedBroker,
    LoginServer,
    deployed_broker,
    login_redirect,
)

CHECKS = (
    "sign-in",
    "client secret",
    "live alias",
    "schedule",
    "last sweep ran",
    "last sweep succeeded",
    "alarms",
    "alarm topic",
)


@pytest.fixture(scope="module")
def working() -> Iterator[DeployedBroker]:
    login = LoginServer()
    try:
        with deployed_broker(login) as broker:
            yield broker
    finally:
        login.close()


@pytest.fixture
def deployed(working: DeployedBroker) -> Iterator[DeployedBroker]:
    working.login.answer(302, login_redirect())  # what the broker's /login answers
    yield working
    working.login.answer(302, login_redirect())


def test_a_working_stack_passes_every_check_and_names_the_callback_url(deployed: DeployedBroker) -> None:
    run = deployed.doctor()
    as_json = json.loads(deployed.doctor("--json").out)

    assert run.code == 0, run.out
    for name in CHECKS:
        assert run.line(name).startswith(f"✓ {name}:"), run.out
    assert "/login answers 302 to https://app.smartsheet.com/b/authorize with client id doctor-client-id" in run.out
    assert f":function:{deployed.outputs['RefreshFunctionName']}:{LIVE_ALIAS}" in run.line("schedule")
    # A metric's minute is its granularity: a heartbeat 7 minutes old is 7 or 8 minutes into its minute.
    assert re.search(r"a sweep last started [78] min ago", run.line("last sweep ran"))
    alarms = len(deployed.alarms)
    assert f"{alarms} alarms, none firing: {alarms} INSUFFICIENT_DATA" in run.line("alarms")
    assert run.out.rstrip().splitlines()[-2:] == [
        f"  {CALLBACK_URL}",
        "8 passed, 0 failed, 0 could not be checked, 0 not applicable here",
    ]
    assert as_json["exit_status"] == 0
    assert [check["verdict"] for check in as_json["checks"]] == ["passed"] * len(CHECKS)
    assert as_json["callback_url"] == CALLBACK_URL
    assert CLIENT_SECRET not in run.out + run.err


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            login_redirect(client_id="an-old-client-id"),
            "/login sends client id an-old-client-id, the stack's is doctor-client-id",
        ),
        (
            login_redirect(page="https://app.smartsheet.eu/b/authorize"),
            "/login redirects to https://app.smartsheet.eu/b/authorize, not to https://app.smartsheet.com/b/authorize",
        ),
        (
            login_redirect(redirect_uri=CALLBACK_URL),
            f"/login sends redirect_uri {CALLBACK_URL}, the stack's RedirectUri is (empty)",
        ),
        (
            login_redirect(scope="READ_SHEETS WRITE_SHEETS"),
            "/login asks for scopes 'READ_SHEETS WRITE_SHEETS', not the stack's OAuthScopes",
        ),
        (login_redirect(state=None), "the redirect lacks response_type=code or a state"),
    ],
)
def test_a_redirect_that_is_not_the_stacks_fails(deployed: DeployedBroker, location: str, expected: str) -> None:
    deployed.login.answer(302, location)

    run = deployed.doctor()

    assert run.code == 1
    assert run.line("sign-in").startswith(f"✗ sign-in: {expected}")


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        (500, "the AuthorizeFunction fails: read its log group"),
        (404, "LoginUrl does not reach the broker's API"),
        (200, "compare the LoginUrl output with the API Gateway console"),
        (403, "AnonymousLogin=disabled on the running version but not in the stack"),
    ],
)
def test_login_answering_anything_but_a_redirect_fails(deployed: DeployedBroker, status: int, fix: str) -> None:
    deployed.login.answer(status)

    line = deployed.doctor().line("sign-in")

    assert line.startswith(f"✗ sign-in: /login answered {status}, not a 302 redirect to Smartsheet")
    assert f"fix: {fix}" in line


# ------------------------------------------------------------------------------------------------- permissions
def test_a_read_the_credentials_may_not_make_is_unchecked_not_failed(
    deployed: DeployedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def denied(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "GetSchedule":
            error = {"Error": {"Code": "AccessDeniedException", "Message": "not for you"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", denied)
    run = deployed.doctor()

    assert run.code == 3, run.out
    line = run.line("schedule")
    assert line.startswith(f"? schedule: could not read the schedule {deployed.schedule} (AccessDeniedException)")
    assert "fix: the doctor needs scheduler:GetSchedule" in line
    # The period then comes from the RefreshSchedule parameter.
    assert re.match(
        r"✓ last sweep ran: a sweep last started [78] min ago \(schedule rate\(30 minutes\)", run.line("last sweep ran")
    )


@pytest.mark.parametrize(
    ("operation", "name", "permission"),
    [
        ("GetSecretValue", "client secret", "secretsmanager:GetSecretValue"),
        ("ListStackResources", "live alias", "cloudformation:ListStackResources"),
        ("GetMetricData", "last sweep ran", "cloudwatch:GetMetricData"),
        ("GetQueueAttributes", "last sweep succeeded", "sqs:GetQueueAttributes"),
        ("DescribeAlarms", "alarms", "cloudwatch:DescribeAlarms"),
        ("ListSubscriptionsByTopic", "alarm topic", "sns:ListSubscriptionsByTopic"),
    ],
)
def test_each_read_the_credentials_may_not_make_names_its_permission(
    deployed: DeployedBroker, monkeypatch: pytest.MonkeyPatch, operation: str, name: str, permission: str
) -> None:
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def denied(self: BaseClient, called: str, params: dict[str, Any]) -> Any:
        if called == operation:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, called)
        return original(self, called, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", denied)
    run = deployed.doctor()

    assert run.code == 3, run.out
    line = run.line(name)
    assert line.startswith(f"? {name}: could not read "), line
    assert f"fix: the doctor needs {permission}" in line


def test_a_stack_whose_resources_hold_no_function_fails(
    deployed: DeployedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def without_functions(self: BaseClient, called: str, params: dict[str, Any]) -> Any:
        answer = original(self, called, params)
        if called == "ListStackResources":
            kept = [r for r in answer["StackResourceSummaries"] if r["ResourceType"] != "AWS::Lambda::Function"]
            answer = answer | {"StackResourceSummaries": kept}
        return answer

    monkeypatch.setattr(BaseClient, "_make_api_call", without_functions)
    line = deployed.doctor().line("live alias")

    assert line.startswith("✗ live alias: found no Lambda function among the stack's resources")


def test_login_that_answers_nothing_fails() -> None:
    from infra.admin.doctor.sign_in import SignInSettings, Unreachable, check_sign_in

    settings = SignInSettings(
        login_url="https://nowhere.example/login",
        callback_url=CALLBACK_URL,
        authorize_url="https://app.smartsheet.com/b/authorize",
        client_id="doctor-client-id",
        scopes=frozenset({"READ_SHEETS"}),
        redirect_uri=None,
        anonymous_login=True,
    )

    def unreachable(url: str) -> Any:
        raise Unreachable("gaierror: name not known")

    check = check_sign_in(settings, unreachable)

    assert check.verdict == "failed"
    assert check.summary == "no answer from https://nowhere.example/login (gaierror: name not known)"
    assert check.fix.startswith("check the LoginUrl output and your network")
    assert "CustomDomainTarget" in check.fix  # a custom domain whose DNS record is missing answers nothing too
