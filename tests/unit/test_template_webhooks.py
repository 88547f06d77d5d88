"""The optional signed webhooks (WebhookUrl) on the SAM translation: nothing exists (or costs) without the URL; with
it, a rule on the bus the broker publishes to feeds a queue whose redrive policy and the function's backoff are the
retries, the event source mapping takes the live alias, only the rule may send to the queues, an alarm watches the
dead-letter queue, and the URL must be https (loopback http only in the local stack)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import boto3
import pytest
from moto import mock_aws
from smartsheet_oauth.flows.webhook_delivery import (
    ATTEMPT_SECONDS,
    MAX_BACKOFF_SECONDS,
    Answer,
    WebhookDelivery,
    backoff_seconds,
)
from smartsheet_oauth.stores.webhook_queue import SigningSecret, SqsDeliveryQueue

from infra.local.template_model import Resolver, Template, TemplateError
from infra.scripts.sam_translate import TEMPLATE as TEMPLATE_PATH
from infra.scripts.sam_translate import load_template, translate
from tests.support.iam_simulator import ALLOWED, Request, decide
from tests.unit.test_token_access import ACCOUNT, REGION, STACK, deployment, session_of

URL = "https://hooks.example.com/broker"
WITH_WEBHOOK = (("WebhookUrl", URL),)
PARAMETER: dict[str, Any] = load_template()["Parameters"]["WebhookUrl"]


@cache
def stack(parameters: tuple[tuple[str, str], ...] = ()) -> tuple[dict[str, Any], Resolver]:
    document = translate(parameters=dict(parameters))
    values = {"SmartsheetClientId": "placeholder-client-id", **dict(parameters)}
    return document, Resolver(Template(path=TEMPLATE_PATH, document=document), stack_name="stack", parameters=values)


def active(parameters: tuple[tuple[str, str], ...] = ()) -> dict[str, dict[str, Any]]:
    document, resolver = stack(parameters)
    return {lid: r for lid, r in document["Resources"].items() if resolver.is_active(lid)}


def properties(logical_id: str, parameters: tuple[tuple[str, str], ...] = WITH_WEBHOOK) -> dict[str, Any]:
    return dict(active(parameters)[logical_id]["Properties"])


def resolved(logical_id: str, parameters: tuple[tuple[str, str], ...] = WITH_WEBHOOK) -> dict[str, Any]:
    _, resolver = stack(parameters)
    value: dict[str, Any] = resolver.resolve(properties(logical_id, parameters))
    return value


def test_without_a_url_no_webhook_resource_exists_and_nothing_else_changes() -> None:
    off, on = active(), active(WITH_WEBHOOK)

    added = set(on) - set(off)
    assert not [lid for lid in off if "Webhook" in lid]
    assert set(off) <= set(on)
    assert {on[lid]["Type"] for lid in added} == {
        "AWS::SecretsManager::Secret",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
        "AWS::Events::Rule",
        "AWS::Logs::LogGroup",
        "AWS::Lambda::Function",
        "AWS::Lambda::Version",
        "AWS::Lambda::Alias",
        "AWS::IAM::Role",
        "AWS::Lambda::EventSourceMapping",
        "AWS::CloudWatch::Alarm",
    }
    assert all(lid.startswith("Webhook") for lid in added), sorted(added)
    document, resolver = stack()
    webhook_outputs = sorted(name for name, output in document["Outputs"].items() if "Webhook" in name)
    assert webhook_outputs == ["WebhookDeadLetterQueueUrl", "WebhookDeliveryQueueUrl", "WebhookSigningSecretArn"]
    assert all(document["Outputs"][name]["Condition"] == "HasWebhook" for name in webhook_outputs)
    assert not resolver.condition("HasWebhook")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("", True),
        (URL, True),
        ("https://hooks.example.com:8443/broker/events?key=abc", True),
        ("http://hooks.example.com/broker", False),
        ("http://127.0.0.1:9000/hook", False),  # CloudFormation refuses it; only the local stack takes loopback http
        ("https://user:pass@hooks.example.com/", False),
        ("https://hooks.example.com/#fragment", False),
        ("ftp://hooks.example.com/", False),
        ("https://" + "a" * 193, False),  # 201 characters: longer than the version description holds
    ],
)
def test_the_url_must_be_https(value: str, valid: bool) -> None:
    resolver = Resolver(Template.load(), stack_name="s", parameters={"SmartsheetClientId": "c", "WebhookUrl": value})
    if valid:
        assert resolver.parameter("WebhookUrl") == value
    else:
        with pytest.raises(TemplateError):
            resolver.parameter("WebhookUrl")


def test_only_the_local_stack_takes_a_loopback_http_url() -> None:
    values = {"SmartsheetClientId": "c", "WebhookUrl": "http://127.0.0.1:9000/hook"}
    local = Resolver(Template.load(), stack_name="s", parameters=values, loopback_http=True)
    assert local.parameter("WebhookUrl") == values["WebhookUrl"]
    elsewhere = {**values, "WebhookUrl": "http://10.0.0.5:9000/hook"}
    with pytest.raises(TemplateError):
        Resolver(Template.load(), stack_name="s", parameters=elsewhere, loopback_http=True).parameter("WebhookUrl")
    other = {**values, "AppName": "x", "SupportUrl": "http://127.0.0.1/help"}
    with pytest.raises(TemplateError):  # no other parameter is relaxed
        Resolver(Template.load(), stack_name="s", parameters=other, loopback_http=True).parameter("SupportUrl")


@pytest.mark.parametrize(
    ("parameters", "bus"),
    [
        ((), "default"),
        ((("EventBusName", "integration-events"),), "integration-events"),
        ((("StackEventBus", "enabled"),), "ConnectionEventBus"),
    ],
    ids=["default-bus", "named-bus", "stack-bus"],
)
def test_the_rule_listens_on_the_bus_the_broker_publishes_to(parameters: tuple[tuple[str, str], ...], bus: str) -> None:
    chosen = (*WITH_WEBHOOK, *parameters)
    rule = resolved("WebhookEventsRule", chosen)
    publishing = resolved("CallbackFunction", chosen)["Environment"]["Variables"]

    assert rule["EventBusName"] == publishing["EVENT_BUS_NAME"]
    assert bus in rule["EventBusName"]
    # Only this stack's events: each names the stack's connections table (EVENT_RESOURCE_ARN) in `resources`.
    table = stack(chosen)[1].get_att("ConnectionsTable", "Arn")
    assert rule["EventPattern"] == {"source": ["smartsheet-oauth-broker"], "resources": [table]}
    assert publishing["EVENT_RESOURCE_ARN"] == table
    assert "Name" not in rule  # CloudFormation names it: two stacks never collide
    (target,) = rule["Targets"]
    assert target["Arn"] == stack(chosen)[1].get_att("WebhookDeliveryQueue", "Arn")
    assert target["DeadLetterConfig"]["Arn"] == stack(chosen)[1].get_att("WebhookDeadLetterQueue", "Arn")


def test_retries_live_in_the_queue_and_outlast_a_receiver_down_for_hours() -> None:
    queue, dead = properties("WebhookDeliveryQueue"), properties("WebhookDeadLetterQueue")
    function = properties("WebhookDeliveryFunction")
    receives = int(queue["RedrivePolicy"]["maxReceiveCount"])

    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    # Lambda refuses a mapping whose queue hides a message for less than the function may run.
    assert int(queue["VisibilityTimeout"]) >= 6 * int(function["Timeout"])
    # A batch of attempts fits the function's timeout.
    assert int(function["Timeout"]) >= int(properties("WebhookDeliveryEventSource")["BatchSize"]) * ATTEMPT_SECONDS
    # The backoffs before the last attempt (the function's defaults), at their shortest and longest jitter.
    shortest = sum(backoff_seconds(n, 30, 3600, lambda low, high: low) for n in range(1, receives))
    longest = sum(backoff_seconds(n, 30, 3600, lambda low, high: high) for n in range(1, receives))
    assert receives == 12
    assert 3.5 * 3600 < shortest < longest < 5.1 * 3600, (shortest, longest)
    # A message lives well beyond its retries, and the dead-letter queue keeps it for the longest SQS allows.
    assert int(queue["MessageRetentionPeriod"]) > 4 * longest
    assert int(dead["MessageRetentionPeriod"]) == 1209600
    # A receiver answering every attempt 429 with the longest Retry-After SQS allows (12 h): the message must still
    # reach its last attempt, and then the dead-letter queue, not expire in the delivery queue unseen.
    assert int(queue["MessageRetentionPeriod"]) > (receives - 1) * MAX_BACKOFF_SECONDS + 3600
    assert queue["SqsManagedSseEnabled"] is True
    assert dead["SqsManagedSseEnabled"] is True


def test_the_event_source_takes_the_live_alias_with_partial_batch_failures() -> None:
    document, _ = stack(WITH_WEBHOOK)
    mapping = properties("WebhookDeliveryEventSource")
    aliases = [
        lid
        for lid, r in document["Resources"].items()
        if r["Type"] == "AWS::Lambda::Alias" and r["Properties"]["FunctionName"] == {"Ref": "WebhookDeliveryFunction"}
    ]

    assert mapping["FunctionName"] == {"Ref": aliases[0]}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["WebhookDeliveryQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"]["MaximumConcurrency"] == 2
    # SAM's SQS event would attach AWSLambdaSQSQueueExecutionRole (every queue of the account): not used.
    function = active(WITH_WEBHOOK)["WebhookDeliveryFunction"]
    role = active(WITH_WEBHOOK)[function["Properties"]["Role"]["Fn::GetAtt"][0]]
    assert all("SQS" not in arn for arn in role["Properties"]["ManagedPolicyArns"])


def test_the_signing_secret_is_generated_by_cloudformation_without_a_name() -> None:
    secret = properties("WebhookSigningSecret")

    assert "Name" not in secret
    assert "SecretString" not in secret
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    variables = resolved("WebhookDeliveryFunction")["Environment"]["Variables"]
    assert variables["WEBHOOK_SIGNING_SECRET_ARN"] == stack(WITH_WEBHOOK)[1].physical("WebhookSigningSecret").ref
    assert variables["WEBHOOK_URL"] == URL


def test_an_alarm_fires_on_the_first_undelivered_event_and_on_a_backlog() -> None:
    dead, backlog = resolved("WebhookDeadLetterAlarm"), resolved("WebhookBacklogAlarm")
    _, resolver = stack(WITH_WEBHOOK)
    topic = resolver.physical("AlarmTopic").ref

    assert dead["AlarmName"] == "stack-webhook-dlq"
    assert (dead["Namespace"], dead["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert dead["Dimensions"] == [
        {"Name": "QueueName", "Value": resolver.get_att("WebhookDeadLetterQueue", "QueueName")}
    ]
    assert (dead["ComparisonOperator"], float(dead["Threshold"])) == ("GreaterThanThreshold", 0.0)
    assert (backlog["MetricName"], float(backlog["Threshold"])) == ("ApproximateAgeOfOldestMessage", 900.0)
    assert backlog["Dimensions"][0]["Value"] == resolver.get_att("WebhookDeliveryQueue", "QueueName")
    for alarm in (dead, backlog):
        assert alarm["AlarmActions"] == alarm["OKActions"] == [topic]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert "Do:" in alarm["AlarmDescription"]


# ------------------------------------------------------------------ policies, by the IAM simulator
def queue_arn(d: Any, logical_id: str) -> str:
    return str(d.resolver.get_att(logical_id, "Arn"))


def test_only_this_stacks_rule_may_send_to_the_webhook_queues() -> None:
    d = deployment({"WebhookUrl": URL})
    policy = d.resolved("WebhookQueuePolicy")["PolicyDocument"]
    rule = str(d.resolver.get_att("WebhookEventsRule", "Arn"))
    other_rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/someone-elses-rule"
    requests, expected = [], []
    for queue in ("WebhookDeliveryQueue", "WebhookDeadLetterQueue"):
        for source, allowed in ((rule, True), (other_rule, False)):
            requests.append(
                Request(
                    "events.amazonaws.com",
                    "sqs:SendMessage",
                    queue_arn(d, queue),
                    (),
                    policy,
                    {"aws:SourceArn": source, "aws:SourceAccount": ACCOUNT},
                )
            )
            expected.append(allowed)

    decisions = decide(requests)

    assert [decision == ALLOWED for decision in decisions] == expected, decisions


def test_the_delivery_function_reads_its_secret_and_its_queues_only() -> None:
    d = deployment({"WebhookUrl": URL})
    role = d.role_arn("WebhookDeliveryFunction")
    policies = d.role_policies("WebhookDeliveryFunction")
    secret = str(d.resolver.physical("WebhookSigningSecret").ref)
    app_credentials = str(d.resolver.physical("AppCredentialsSecret").ref)
    token_secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}/connections/4583173393803140-AbCdEf"
    deliveries, dead = queue_arn(d, "WebhookDeliveryQueue"), queue_arn(d, "WebhookDeadLetterQueue")
    failed_sweeps = queue_arn(d, "FailedSweepQueue")
    cases = [
        ("secretsmanager:GetSecretValue", secret, True),
        ("secretsmanager:GetSecretValue", app_credentials, False),
        ("secretsmanager:GetSecretValue", token_secret, False),
        ("sqs:ReceiveMessage", deliveries, True),
        ("sqs:DeleteMessage", deliveries, True),
        ("sqs:ChangeMessageVisibility", deliveries, True),
        ("sqs:SendMessage", dead, True),
        ("sqs:SendMessage", deliveries, False),
        ("sqs:ReceiveMessage", dead, False),
        ("sqs:ReceiveMessage", failed_sweeps, False),
        ("sqs:SendMessage", failed_sweeps, False),
    ]

    decisions = decide([Request(session_of(role), action, resource, policies) for action, resource, _ in cases])

    wrong = [
        f"{action} on {resource}: {decision}"
        for (action, resource, allowed), decision in zip(cases, decisions, strict=True)
        if (decision == ALLOWED) != allowed
    ]
    assert not wrong, wrong


def test_every_call_the_delivery_makes_is_allowed_by_its_role() -> None:
    """The real adapters (SigningSecret, SqsDeliveryQueue) against moto, each AWS call recorded, then each decided by
    the IAM simulator for the function's role on the stack's own resource."""
    d = deployment({"WebhookUrl": URL})
    calls: list[tuple[str, dict[str, Any]]] = []
    recording = [False]

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        if recording[0]:
            calls.append((f"{model.service_model.signing_name}:{model.name}", dict(params)))

    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        # The call's own parameters; clients copy the session's events when they are made.
        session.events.register("before-parameter-build", record)
        secrets, sqs = session.client("secretsmanager"), session.client("sqs")
        secret_arn = secrets.create_secret(Name="signing", SecretString="k" * 64)["ARN"]
        deliveries = sqs.create_queue(QueueName="deliveries")["QueueUrl"]
        undelivered = sqs.create_queue(QueueName="undelivered")["QueueUrl"]
        for body in ('{"source": "smartsheet-oauth-broker"}',) * 3:
            sqs.send_message(QueueUrl=deliveries, MessageBody=body)
        received = sqs.receive_message(QueueUrl=deliveries, MaxNumberOfMessages=3, AttributeNames=["All"])
        recording[0] = True  # from here on, only what the delivery does
        answers = iter([503, 404, 200])
        flow = WebhookDelivery(
            URL,
            secret=SigningSecret(secrets, secret_arn, max_age_seconds=0),
            post=lambda url, body, headers: Answer(next(answers)),
            queue=SqsDeliveryQueue(sqs, delivery_queue_url=deliveries, dead_letter_queue_url=undelivered),
            retry_base_seconds=30,
            retry_max_seconds=3600,
            clock=lambda: 1_796_300_000,
        )
        event = {"version": "0", "id": "e-1", "detail-type": "Connection Created", "detail": {}}
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": json.dumps({**event, "source": "smartsheet-oauth-broker"}),
                "attributes": m["Attributes"],
            }
            for m in received["Messages"]
        ]
        flow.run({"Records": records}, time_left=lambda: 60.0)

    # Which of the stack's resources each call is on (moto's stand-ins mapped to the deployment's).
    on = {secret_arn: "WebhookSigningSecret", deliveries: "WebhookDeliveryQueue", undelivered: "WebhookDeadLetterQueue"}
    arn = {
        "WebhookSigningSecret": str(d.resolver.physical("WebhookSigningSecret").ref),
        "WebhookDeliveryQueue": queue_arn(d, "WebhookDeliveryQueue"),
        "WebhookDeadLetterQueue": queue_arn(d, "WebhookDeadLetterQueue"),
    }
    made = sorted({(action, on[params.get("SecretId") or params.get("QueueUrl")]) for action, params in calls})
    assert made == [
        ("secretsmanager:GetSecretValue", "WebhookSigningSecret"),
        ("sqs:ChangeMessageVisibility", "WebhookDeliveryQueue"),
        ("sqs:SendMessage", "WebhookDeadLetterQueue"),
    ]
    role = d.role_arn("WebhookDeliveryFunction")
    requests = [
        Request(session_of(role), action, arn[target], d.role_policies("WebhookDeliveryFunction"))
        for action, target in made
    ]
    assert decide(requests) == [ALLOWED] * len(made)
