"""The admin CLI aimed at a deployed stack runs on boto3 and the broker's library alone: moto and werkzeug (the
embedded AWS's, dev dependencies) and the local stack's modules (infra.local) are never loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infra.local.template_model import Resolver, Template

ROOT = Path(__file__).resolve().parents[2]
STACK = "broker-prod"

# A fresh interpreter: the CLI against botocore's Stubber for every client (no request leaves the process), listing
# the one connection the stubbed table holds; then what it loaded.
CHILD = """
import datetime, io, json, sys
import boto3
from botocore.stub import Stubber

environment = json.loads(sys.argv[1])
outputs = {
    "RefreshFunctionName": "broker-prod-RefreshFunction-AbC",
    "ConnectionsTableName": environment["CONNECTIONS_TABLE_NAME"],
    "RefreshDeadLetterQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/broker-prod-RefreshDeadLetterQueue-AbC",
}
answers = {
    "cloudformation": ("describe_stacks", {"Stacks": [{
        "StackName": "broker-prod", "CreationTime": datetime.datetime(2026, 11, 1), "StackStatus": "UPDATE_COMPLETE",
        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()], "Parameters": [],
    }]}),
    "lambda": ("get_function_configuration", {"FunctionName": outputs["RefreshFunctionName"],
                                              "Environment": {"Variables": environment}}),
    "dynamodb": ("scan", {"Items": [{
        "connection_id": {"S": "4583173393803140"}, "status": {"S": "active"},
        "secret_arn": {"S": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:broker-prod/connections/4583"},
        "access_expires_at": {"N": "1796472976"},
    }]}),
}
stubs = []
make_client = boto3.session.Session.client

def stubbed_client(self, service, *args, **kwargs):
    client = make_client(self, service, *args, **kwargs)
    stub = Stubber(client)  # a call nobody stubbed raises: nothing reaches AWS
    if service in answers:
        stub.add_response(*answers[service])
    stub.activate()
    stubs.append(stub)
    return client

boto3.session.Session.client = stubbed_client

from infra.admin.cli import main

out, err = io.StringIO(), io.StringIO()
status = main(["--stack", "broker-prod", "--region", "eu-west-1", "list", "--ids"], out=out, err=err)
for stub in stubs:
    stub.assert_no_pending_responses()
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {"moto", "werkzeug", "flask"} or name == "infra.local" or name.startswith("infra.local.")
)
print(json.dumps({"status": status, "out": out.getvalue(), "err": err.getvalue(), "loaded": loaded}))
"""


def test_the_admin_cli_runs_a_command_on_a_deployed_stack_without_the_local_stacks_modules() -> None:
    template = Template.load()
    refresh = Resolver(template, stack_name=STACK, parameters={"SmartsheetClientId": "1a2b3c4d5e6f"}).function(
        "RefreshFunction"
    )
    answer = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(dict(refresh.environment))],
        cwd=ROOT,
        env={
            "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}",
            "PATH": "/usr/bin:/bin",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(answer.stdout)

    assert result["status"] == 0, result["err"]
    assert result["out"] == "4583173393803140\n"
    assert result["loaded"] == []
