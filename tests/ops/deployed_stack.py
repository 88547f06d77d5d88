"""A "deployed" broker in moto's mock_aws, built the way CloudFormation leaves one, for `make doctor`'s AWS side: the
stack with its parameters and outputs, the four functions (template.yaml's own environments) each with a published
version behind its live alias, the schedule, the template's alarms on the alarm topic with a confirmed subscription,
a recent sweep heartbeat. /login is a loopback server that answers what a test tells it. Each test breaks one part."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock
from urllib.parse import urlencode

import boto3

from infra.admin import cli, deployed_target
from infra.admin.target import LIVE_ALIAS
from infra.local.template_model import Template

STACK = "broker-prod"
CLIENT_ID = "doctor-client-id"
CLIENT_SECRET = "the-real-client-secret-0123456789"
CALLBACK_URL = "https://abc123.execute-api.us-east-1.amazonaws.com/callback"
AUTHORIZE_URL = "https://app.smartsheet.com/b/authorize"  # SmartsheetRegion us
PERIOD = timedelta(minutes=30)  # RefreshSchedule rate(30 minutes)
PARAMETERS = {
    "SmartsheetClientId": CLIENT_ID,
    "SmartsheetRegion": "us",
    "OAuthScopes": "READ_SHEETS",
    "RedirectUri": "",
    "AnonymousLogin": "enabled",
    "RefreshSchedule": "rate(30 minutes)",
}


class LoginServer:
    """Answers GET /login with the status and Location a test sets (a real redirect of /login by default)."""

    def __init__(self) -> None:
        self.status = 302
        self.location: str | None = login_redirect()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(server.status)
                if server.location:
                    self.send_header("Location", server.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/login"

    def answer(self, status: int, location: str | None = None) -> None:
        self.status, self.location = status, location

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def login_redirect(**changes: str | None) -> str:
    """Where the broker's /login sends a browser for this stack, with `changes` (None drops a parameter)."""
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "scope": "READ_SHEETS",
        "state": "s" * 43,
    }
    query |= changes
    base = query.pop("page", None) or AUTHORIZE_URL
    return f"{base}?{urlencode({k: v for k, v in query.items() if v is not None})}"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def line(self, name: str) -> str:
        """The checklist line of the check `name`, with its notes and fix."""
        lines = self.out.splitlines()
        for index, text in enumerate(lines):
            if text[4:].startswith(f"{name}:"):
                end = index + 1
                while end < len(lines) and lines[end].startswith("    "):
                    end += 1
                return " ".join(part.strip() for part in lines[index:end])
        raise AssertionError(f"no line for {name!r} in:\n{self.out}")


@dataclass
class DeployedBroker:
    session: boto3.session.Session
    login: LoginServer
    outputs: dict[str, str]
    functions: dict[str, str]  # logical id -> function name
    schedule: str
    alarms: list[str] = field(default_factory=list)  # template.yaml's alarms as this stack has them
    created: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return self.session.client(service)  # type: ignore[call-overload]

    def doctor(self, *args: str) -> Run:
        """`make doctor STACK=broker-prod`, in this session: a session loads AWS's service models once, and how the
        CLI makes one from the operator's configuration is tests/ops/test_admin_deployed.py's."""
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(cli, "deployed", partial(deployed_target.deployed, session=self.session)):
            code = cli.main(["--stack", STACK, "doctor", *args], out=out, err=err)
        return Run(code, out.getvalue(), err.getvalue())

    # -- what a test changes ------------------------------------------------------------------
    def heartbeat(self, ago: timedelta) -> None:
        self.metric("SmartsheetOAuthBroker", "sweep_dispatched", {"service": STACK}, ago, 0.0)

    def sweep_errors(self, ago: timedelta, count: float = 1.0) -> None:
        function = self.functions["RefreshFunction"]
        dimensions = {"FunctionName": function, "Resource": f"{function}:{LIVE_ALIAS}"}
        self.metric("AWS/Lambda", "Errors", dimensions, ago, count)

    def metric(self, namespace: str, name: str, dimensions: Mapping[str, str], ago: timedelta, value: float) -> None:
        self.client("cloudwatch").put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                    "Timestamp": datetime.now(UTC) - ago,
                    "Value": value,
                }
            ],
        )

    def update_schedule(self, **changes: Any) -> None:
        """UpdateSchedule, repeating what is not changed (it resets whatever it is not given)."""
        scheduler = self.client("scheduler")
        now = scheduler.get_schedule(Name=self.schedule)
        request = {key: now[key] for key in ("ScheduleExpression", "FlexibleTimeWindow", "Target", "State")}
        scheduler.update_schedule(Name=self.schedule, **(request | changes))

    def put_app_credentials(self, value: str) -> None:
        self.client("secretsmanager").put_secret_value(
            SecretId=self.outputs["AppCredentialsSecretArn"], SecretString=value
        )


def _function_code() -> dict[str, str]:
    return {"ZipFile": "def lambda_handler(event, context):\n    return {}\n"}


def _stack_template(aws: Any, role: str, login_url: str, schedule: str, without: tuple[str, ...]) -> dict[str, Any]:
    """The stack as CloudFormation holds it: parameters, the functions (with the environments template.yaml gives
    them), the alarm topic, and the outputs the doctor reads."""
    functions = {
        spec.logical_id: {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Runtime": spec.runtime,
                "Handler": spec.handler,
                "Role": role,
                "Code": _function_code(),
                "Timeout": spec.timeout,
                "Environment": {"Variables": dict(spec.environment)},
            },
        }
        for spec in aws.resolver.functions()
    }
    outputs = {
        "LoginUrl": login_url,
        "CallbackUrl": CALLBACK_URL,
        "AppCredentialsSecretArn": aws.secret_arn("AppCredentialsSecret"),
        "ConnectionsTableName": aws.table_name("ConnectionsTable"),
        "TokenSecretPrefix": f"{STACK}/connections/",
        "RefreshDeadLetterQueueUrl": aws.queue_url("RefreshDeadLetterQueue"),
        "FailedSweepQueueUrl": aws.queue_url("FailedSweepQueue"),
        "RefreshScheduleName": schedule,
        "RefreshFunctionName": {"Ref": "RefreshFunction"},
        "AlarmTopicArn": {"Ref": "AlarmTopic"},
    }
    return {
        "Parameters": {name: {"Type": "String"} for name in PARAMETERS},
        "Resources": functions | {"AlarmTopic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items() if name not in without},
    }


def _template_alarms(aws: Any, cloudwatch: Any, topic: str) -> list[str]:
    """template.yaml's alarms, resolved for this stack, notifying its topic."""
    names = []
    for logical_id, resource in aws.template.resources_of_type("AWS::CloudWatch::Alarm").items():
        if not aws.resolver.is_active(logical_id):
            continue
        alarm = dict(aws.resolver.resolve(resource["Properties"]))
        alarm |= {"AlarmActions": [topic], "OKActions": [topic], "Threshold": float(alarm["Threshold"])}
        for number in ("EvaluationPeriods", "DatapointsToAlarm", "Period"):
            if number in alarm:
                alarm[number] = int(alarm[number])
        cloudwatch.put_metric_alarm(**alarm)
        names.append(alarm["AlarmName"])
    return names


@cache
def _template() -> Template:
    return Template.load()  # read-only once parsed: one parse for every test


@cache
def _session() -> boto3.session.Session:
    return boto3.session.Session(region_name="us-east-1")


@contextmanager
def deployed_broker(
    login: LoginServer,
    *,
    last_sweep: timedelta | None = timedelta(minutes=7),
    without_outputs: tuple[str, ...] = (),
    **parameters: str,
) -> Iterator[DeployedBroker]:
    from moto import mock_aws

    from infra.local.aws import LocalAws

    with mock_aws(config={"lambda": {"use_docker": False}}):
        given = PARAMETERS | parameters
        aws = LocalAws(
            _template(),
            stack_name=STACK,
            parameters=given,
            secret_values={"AppCredentialsSecret": json.dumps({"client_secret": CLIENT_SECRET})},
            in_process=True,
        ).start()
        session = _session()
        role = session.client("iam").create_role(RoleName="broker", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        schedule = f"{STACK}-RefreshFunctionSweep-1A2B3C"
        cloudformation = session.client("cloudformation")
        cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(_stack_template(aws, role, login.url, schedule, without_outputs)),
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in given.items()],
        )
        stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        resources = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
        functions = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in resources
            if r["ResourceType"] == "AWS::Lambda::Function"
        }
        topic = next(r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "AlarmTopic")
        lambdas = session.client("lambda")
        for function in functions.values():  # AutoPublishAlias: a version, and the live alias on it
            version = lambdas.publish_version(FunctionName=function)["Version"]
            lambdas.create_alias(FunctionName=function, Name=LIVE_ALIAS, FunctionVersion=version)
        alias = lambdas.get_alias(FunctionName=functions["RefreshFunction"], Name=LIVE_ALIAS)["AliasArn"]
        session.client("scheduler").create_schedule(
            Name=schedule,
            ScheduleExpression=given["RefreshSchedule"],
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={"Arn": alias, "RoleArn": role},
            State="ENABLED",
        )
        alarms = _template_alarms(aws, session.client("cloudwatch"), topic)
        inbox = session.client("sqs").create_queue(QueueName="ops-alarms")["QueueUrl"]
        inbox_arn = session.client("sqs").get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])
        session.client("sns").subscribe(  # same-account SQS: confirmed at once, in AWS too
            TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn["Attributes"]["QueueArn"]
        )
        broker = DeployedBroker(session, login, outputs, functions, schedule, alarms)
        if last_sweep is not None:
            broker.heartbeat(last_sweep)  # the last sweep's first metric, as it started
        yield broker
