"""The management function trusts the IAM caller its event names, so who may invoke it matters (issue 16, item 8):
the template lets API Gateway alone (this stack's API, its management routes), and the function refuses events
that cannot be a request API Gateway sent (a sample, a stored event replayed, another account's API). What it cannot
refuse, a forger who holds lambda:InvokeFunction, SECURITY.md says plainly."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import requests

from infra.local.gateway import CONTROL_TOKEN_HEADER
from infra.local.stack import LocalStack
from infra.scripts.sam_translate import translate
from tests.management.conftest import SIGNED_CALLER
from tests.support.broker import Broker
from tests.support.events import LambdaContext, http_event

ADMIN = {"iam": {**SIGNED_CALLER["iam"], "userArn": "arn:aws:iam::123456789012:user/made-up-admin"}}


def listing_as_a_made_up_admin() -> dict[str, Any]:
    event = http_event("/connections", method="GET")
    event["requestContext"]["authorizer"] = copy.deepcopy(ADMIN)
    return event


def sample_event() -> dict[str, Any]:
    """Lambda console's "API Gateway HTTP API" test event, as someone would paste it with an IAM caller added."""
    event = listing_as_a_made_up_admin()
    event["requestContext"]["timeEpoch"] = 1583348638390
    event["requestContext"]["time"] = "04/Mar/2020:19:03:58 +0000"
    return event


def replayed_event() -> dict[str, Any]:
    event = listing_as_a_made_up_admin()
    event["requestContext"]["timeEpoch"] -= 10 * 60 * 1000
    return event


def future_event() -> dict[str, Any]:
    event = listing_as_a_made_up_admin()
    event["requestContext"]["timeEpoch"] += 10 * 60 * 1000
    return event


def other_accounts_api() -> dict[str, Any]:
    event = listing_as_a_made_up_admin()
    event["requestContext"]["accountId"] = "210987654321"
    return event


def rest_api_event() -> dict[str, Any]:
    event = listing_as_a_made_up_admin()
    event["version"] = "1.0"
    return event


def time_as_text() -> dict[str, Any]:
    event = listing_as_a_made_up_admin()
    event["requestContext"]["timeEpoch"] = str(event["requestContext"]["timeEpoch"])
    return event


def without_context() -> dict[str, Any]:
    event = listing_as_a_made_up_admin()
    event["requestContext"] = ["authorizer", ADMIN]
    return event


HAND_MADE = [
    sample_event,
    replayed_event,
    future_event,
    other_accounts_api,
    rest_api_event,
    time_as_text,
    without_context,
]


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    from management.app import lambda_handler

    result: dict[str, Any] = lambda_handler(event, LambdaContext())
    return result


@pytest.mark.parametrize("make", HAND_MADE, ids=lambda make: make.__name__)
def test_an_event_api_gateway_cannot_have_sent_is_refused_whatever_caller_it_names(
    broker: Broker, make: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert broker.sign_in().status == 200

    answer = invoke(make())

    assert answer["statusCode"] == 403, answer
    assert json.loads(answer["body"])["error"] == "forbidden"
    assert "connections" not in answer["body"]
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("management_not_from_api_gateway") == [1.0] for m in metrics)


def test_an_event_as_api_gateway_sends_it_is_served(broker: Broker) -> None:
    assert broker.sign_in().status == 200

    answer = invoke(listing_as_a_made_up_admin())

    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["connections"]


def test_direct_invocation_in_the_runtime_is_refused_too(local_stack: LocalStack) -> None:
    # A program on this machine may invoke a local function directly (/_local/invoke, with the run's token); the
    # function tells a stale event from API Gateway's as the deployed one does (the runtime's own ARN and clock).
    answer = requests.post(
        f"{local_stack.url}/_local/invoke/ManagementFunction",
        data=json.dumps(sample_event()),
        headers={CONTROL_TOKEN_HEADER: local_stack.gateway.control_token},
        timeout=60,
    ).json()

    assert answer["ok"] is True
    assert answer["payload"]["statusCode"] == 403


def test_only_this_stacks_api_may_invoke_the_management_function() -> None:
    resources = translate()["Resources"]
    management = {"ManagementFunction", "ManagementFunctionAliaslive"}
    permissions = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["FunctionName"].get("Ref") in management
    ]
    assert len(permissions) >= 5  # one per management route
    for permission in permissions:
        assert permission["Principal"] == "apigateway.amazonaws.com"
        template, names = permission["SourceArn"]["Fn::Sub"]
        assert template.startswith("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${__ApiId__}/")
        assert names["__ApiId__"] == {"Ref": "HttpApi"}
    # Nor does any role or policy the stack makes allow invoking it (the scheduler's role invokes the refresh
    # function's alias, by name; the admin CLI's sweep is the operator's own permission).
    for logical_id, resource in resources.items():
        for statement in _statements(resource):
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            invokes = [a for a in actions if a in {"*", "lambda:*", "lambda:InvokeFunction"}]
            targets = json.dumps(statement.get("Resource"))
            assert not invokes or ("Management" not in targets and "*" not in targets), logical_id


def _statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    properties = resource.get("Properties", {})
    documents = [properties.get("PolicyDocument")]
    documents += [policy.get("PolicyDocument") for policy in properties.get("Policies", [])]
    found: list[dict[str, Any]] = []
    for document in documents:
        if isinstance(document, dict):
            statements = document.get("Statement", [])
            found += [s for s in statements if isinstance(s, dict) and s.get("Effect") == "Allow"]
    return found


def test_the_event_clock_allows_what_api_gateways_signature_check_allows() -> None:
    from smartsheet_oauth.edge.management_api import EVENT_MAX_AGE_SECONDS, not_from_api_gateway

    arn = LambdaContext().invoked_function_arn
    event = listing_as_a_made_up_admin()
    sent = event["requestContext"]["timeEpoch"] / 1000
    assert not_from_api_gateway(event, function_arn=arn, now=sent + EVENT_MAX_AGE_SECONDS) is None
    assert not_from_api_gateway(event, function_arn=arn, now=sent + EVENT_MAX_AGE_SECONDS + 1) is not None
    assert not_from_api_gateway(event, function_arn="not-an-arn", now=time.time()) is not None
