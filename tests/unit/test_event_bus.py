"""The optional stack-owned event bus (StackEventBus), its policy evaluated by an IAM policy simulator over the SAM
translation: only the broker's publishing functions put events on it, and only with the broker's source. In one
account an identity policy allowing events:PutEvents on "*" reaches every bus unless the bus's policy denies it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.iam_simulator import ALLOWED, Request, decide
from tests.unit.test_token_access import ACCOUNT, ADMINISTRATOR_ACCESS, REGION, STACK, Deployment, session_of

SOURCE = "smartsheet-oauth-broker"
BUS = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{STACK}-connections"
PUBLISHERS = ("CallbackFunction", "RefreshFunction", "ManagementFunction")
EVENTS_WRITER = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "events:*", "Resource": "*"}]}


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return Deployment({"StackEventBus": "enabled"})


def put_events(d: Deployment, role_arn: str, policies: Any, *sources: str) -> Request:
    """One PutEvents call whose entries have these sources (events:source is their list)."""
    bus_policy = d.resolved("ConnectionEventBus")["Policy"]
    context = {"events:source": list(sources), "aws:PrincipalArn": role_arn}
    return Request(session_of(role_arn), "events:PutEvents", BUS, policies, bus_policy, context)


def test_only_the_brokers_functions_put_events_on_its_bus_and_only_with_its_source(deployment: Deployment) -> None:
    d = deployment
    assert d.resolved("ConnectionEventBus")["Name"] == f"{STACK}-connections"
    requests, expected = [], []
    for function in PUBLISHERS:
        role, policies = d.role_arn(function), d.role_policies(function)
        requests += [
            put_events(d, role, policies, SOURCE),
            put_events(d, role, policies, "my-app"),
            put_events(d, role, policies, SOURCE, "my-app"),  # one forged entry among real ones
        ]
        expected += [(function, SOURCE, True), (function, "my-app", False), (function, f"{SOURCE} and my-app", False)]
    for name, role, policies in (
        ("AuthorizeFunction", d.role_arn("AuthorizeFunction"), d.role_policies("AuthorizeFunction")),
        ("an administrator", f"arn:aws:iam::{ACCOUNT}:role/Admin", [ADMINISTRATOR_ACCESS]),
        ("your code with events:* on *", f"arn:aws:iam::{ACCOUNT}:role/integration-worker", [EVENTS_WRITER]),
    ):
        requests.append(put_events(d, role, policies, SOURCE))
        expected.append((name, SOURCE, False))

    decisions = decide(requests)

    wrong = [
        f"{who} putting source {source}: {decision}"
        for (who, source, allowed), decision in zip(expected, decisions, strict=True)
        if (decision == ALLOWED) != allowed
    ]
    assert not wrong, wrong


def test_the_functions_publish_to_the_stacks_bus_and_may_put_there(deployment: Deployment) -> None:
    d = deployment
    for function in PUBLISHERS:
        environment = d.resolved(function)["Environment"]["Variables"]
        assert environment["EVENT_BUS_NAME"] == d.resolver.ref("ConnectionEventBus")
        granted = [
            s for p in d.role_policies(function) for s in p["Statement"] if s.get("Sid") == "PublishConnectionEvents"
        ]
        assert [s["Resource"] for s in granted] == [BUS], function
    assert d.resolver.resolve(d.document["Outputs"]["ConnectionEventBusName"]["Value"]) == d.resolver.ref(
        "ConnectionEventBus"
    )


def test_by_default_there_is_no_stack_bus_and_events_go_to_event_bus_name() -> None:
    d = Deployment({"EventBusName": "integration-events"})
    assert not d.resolver.is_active("ConnectionEventBus")
    environment = d.resolved("CallbackFunction")["Environment"]["Variables"]
    assert environment["EVENT_BUS_NAME"] == "integration-events"
    assert environment["EVENTS_INCLUDE_EMAIL"] == "disabled"


def test_the_embedded_aws_makes_the_stacks_bus_with_its_policy() -> None:
    from moto import mock_aws

    from infra.local.aws import LocalAws
    from infra.local.template_model import Template

    with mock_aws():
        parameters = {"SmartsheetClientId": "placeholder-client-id", "StackEventBus": "enabled"}
        aws = LocalAws(Template.load(), stack_name="local", parameters=parameters, in_process=True).start()

        bus = aws.client("events").describe_event_bus(Name="local-connections")

    assert aws.resolver.function("CallbackFunction").environment["EVENT_BUS_NAME"] == "local-connections"
    assert {s["Sid"] for s in json.loads(bus["Policy"])["Statement"]} == {
        "BrokerFunctionsPutConnectionEvents",
        "NobodyElsePuts",
        "OnlyTheBrokersSource",
    }
