"""make doctor against a deployed stack (moto's mock_aws, tests/ops/deployed_stack.py), one stack per test: each
broken part fails its check with its fix, and nothing printed holds the client secret. The working stack, /login's
answers and the operator's permissions: test_doctor_working_stack.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from infra.admin.target import LIVE_ALIAS
from tests.ops.deployed_stack import (
    CALLBACK_URL,
    CLIENT_SECRET,
    PERIOD,
    STACK,
    DeployedBroker,
    LoginServer,
    deployed_broker,
    login_redirect,
)


@pytest.fixture(scope="module")
def login() -> Iterator[LoginServer]:
    server = LoginServer()
    yield server
    server.close()


@pytest.fixture
def broker(login: LoginServer) -> Iterator[DeployedBroker]:
    login.answer(302, login_redirect())
    with deployed_broker(login) as deployed:
        yield deployed


# ------------------------------------------------------------------------------------------------ client secret
def _placeholder(generated: str) -> str:
    return json.dumps({"placeholder": True, "client_secret": generated})


def test_a_fresh_stack_still_holding_the_placeholder_fails_with_the_command_that_puts_the_secret_in(
    broker: DeployedBroker,
) -> None:
    generated = "GeneratedByCloudFormation0123456"
    broker.put_app_credentials(_placeholder(generated))
    broker.put_app_credentials(_placeholder(generated))  # a first deploy: no version before holds a secret

    run = broker.doctor()

    assert run.code == 1
    line = run.line("client secret")
    assert line.startswith("✗ client secret: the app credentials secret still holds CloudFormation's placeholder")
    assert f"fix: make set-client-secret STACK={STACK} (asks for it without echoing it)" in line
    assert "--restore-previous" not in line
    assert generated not in run.out + run.err
    assert CLIENT_SECRET not in run.out + run.err


def test_after_an_upgrade_replaced_the_secret_the_fix_brings_the_previous_one_back(broker: DeployedBroker) -> None:
    broker.put_app_credentials(_placeholder("GeneratedByCloudFormation0123456"))  # the one upgrade deploy

    line = broker.doctor().line("client secret")

    assert line.startswith("✗ client secret")
    assert f"fix: make set-client-secret STACK={STACK} ARGS=--restore-previous" in line


def test_a_secret_that_holds_something_else_fails(broker: DeployedBroker) -> None:
    broker.put_app_credentials("pasted-without-json")

    run = broker.doctor()

    assert run.code == 1
    assert run.line("client secret").startswith(
        '✗ client secret: the app credentials secret does not hold {"client_secret": "..."}'
    )
    assert "pasted-without-json" not in run.out


# ----------------------------------------------------------------------------------------------------- schedule
def test_a_disabled_schedule_fails_and_says_how_to_enable_it(broker: DeployedBroker) -> None:
    broker.update_schedule(State="DISABLED")

    run = broker.doctor()

    assert run.code == 1
    line = run.line("schedule")
    assert line.startswith(f"✗ schedule: {broker.schedule} is DISABLED: no sweep runs")
    assert "fix: enable it" in line
    assert "--state ENABLED" in line


def test_a_schedule_that_invokes_latest_fails_and_names_the_alias_to_put_back(broker: DeployedBroker) -> None:
    function = broker.functions["RefreshFunction"]
    alias = broker.client("lambda").get_alias(FunctionName=function, Name=LIVE_ALIAS)["AliasArn"]
    unqualified = alias.removesuffix(f":{LIVE_ALIAS}")
    broker.update_schedule(Target={"Arn": unqualified, "RoleArn": "arn:aws:iam::123456789012:role/broker"})

    line = broker.doctor().line("schedule")

    assert line.startswith(f"✗ schedule: {broker.schedule} invokes $LATEST, not the live alias {alias}")
    assert f"fix: set its target back to {alias}" in line


# ------------------------------------------------------------------------------------------------------- sweeps
def test_a_sweep_that_last_ran_three_periods_ago_fails(login: LoginServer) -> None:
    login.answer(302, login_redirect())
    with deployed_broker(login, last_sweep=3 * PERIOD) as broker:
        run = broker.doctor()

    assert run.code == 1
    line = run.line("last sweep ran")
    assert line.startswith(
        "✗ last sweep ran: no sweep started within two periods (schedule rate(30 minutes), every 30 min)"
    )
    assert re.search(r"the last started (90|91) min ago", line)
    assert f'make admin ARGS="--stack {STACK} sweep" runs one now' in line
    assert run.line("last sweep succeeded").startswith("✓")  # it did not fail: it did not run


def test_a_stack_that_has_not_swept_yet_is_not_a_failure_but_not_a_pass_either(login: LoginServer) -> None:
    login.answer(302, login_redirect())
    with deployed_broker(login, last_sweep=None) as broker:
        run = broker.doctor()

    assert run.code == 3, run.out
    assert run.line("last sweep ran").startswith("? last sweep ran: no sweep yet: the schedule was created 0 min ago")
    assert run.line("last sweep succeeded").startswith("? last sweep succeeded: no sweep to judge yet")
    assert "0 failed, 2 could not be checked" in run.out


def test_no_sweep_for_a_day_on_a_stack_deployed_long_ago_fails(login: LoginServer) -> None:
    from moto.scheduler.models import scheduler_backends

    login.answer(302, login_redirect())
    with deployed_broker(login, last_sweep=None) as broker:
        # moto dates a schedule when it is created: make this one a week old, as a stack deployed then has.
        group = scheduler_backends["123456789012"]["us-east-1"].schedule_groups["default"]
        group.schedules[broker.schedule].creation_date -= 7 * 86400
        run = broker.doctor()

    assert run.code == 1
    assert "none in the last 24 hours" in run.line("last sweep ran")


def test_a_failing_sweep_fails_with_the_place_to_read_why(broker: DeployedBroker) -> None:
    broker.sweep_errors(ago=timedelta(minutes=7))  # the sweep that started 7 minutes ago ended in an error

    run = broker.doctor()

    assert run.code == 1
    line = run.line("last sweep succeeded")
    assert line.startswith(
        "✗ last sweep succeeded: the last sweep failed: 1 Lambda error(s) on the live alias since it started"
    )
    assert "fix: read the RefreshFunction's log group" in line
    assert run.line("last sweep ran").startswith("✓")


def test_a_failure_before_the_last_sweep_does_not_fail_it(broker: DeployedBroker) -> None:
    broker.sweep_errors(ago=timedelta(minutes=40))  # the sweep before the last one

    assert broker.doctor().line("last sweep succeeded").startswith("✓")


def test_a_sweep_that_fails_before_its_heartbeat_fails(login: LoginServer) -> None:
    login.answer(302, login_redirect())
    with deployed_broker(login, last_sweep=None) as broker:
        broker.sweep_errors(ago=timedelta(minutes=3))  # a cold start that failed: no heartbeat, an error
        line = broker.doctor().line("last sweep succeeded")

    assert line.startswith(
        "✗ last sweep succeeded: the last sweep failed: 1 Lambda error(s) on the live alias in the last two "
        "periods, and no heartbeat"
    )


def test_records_in_the_failed_sweep_and_dead_letter_queues_fail(broker: DeployedBroker) -> None:
    sqs = broker.client("sqs")
    sqs.send_message(QueueUrl=broker.outputs["FailedSweepQueueUrl"], MessageBody="{}")
    sqs.send_message(QueueUrl=broker.outputs["FailedSweepQueueUrl"], MessageBody="{}")
    sqs.send_message(QueueUrl=broker.outputs["RefreshDeadLetterQueueUrl"], MessageBody="{}")

    line = broker.doctor().line("last sweep succeeded")

    assert line.startswith("✗ last sweep succeeded: 2 record(s) wait in FailedSweepQueue")
    assert "fix: each record holds a failed sweep's error: read them, fix the cause, then purge the queue" in line
    assert "also: 1 record(s) wait in RefreshDeadLetterQueue" in line


# ------------------------------------------------------------------------------------------------------- alarms
def test_an_alarm_in_alarm_fails_with_its_own_runbook_text(broker: DeployedBroker) -> None:
    cloudwatch = broker.client("cloudwatch")
    cloudwatch.set_alarm_state(AlarmName=f"{STACK}-refresh-failed-sweeps", StateValue="ALARM", StateReason="1 record")
    # Another stack whose name starts with this one's: its alarms are not this stack's.
    other_topic = broker.client("sns").create_topic(Name="staging-alarms")["TopicArn"]
    cloudwatch.put_metric_alarm(
        AlarmName=f"{STACK}-staging-needs-reauth",
        Namespace="SmartsheetOAuthBroker",
        MetricName="refresh_needs_reauth",
        Statistic="Sum",
        Period=3600,
        EvaluationPeriods=1,
        Threshold=3,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        AlarmActions=[other_topic],
    )
    cloudwatch.set_alarm_state(AlarmName=f"{STACK}-staging-needs-reauth", StateValue="ALARM", StateReason="test")

    run = broker.doctor()

    assert run.code == 1
    line = run.line("alarms")
    assert line.startswith(f"✗ alarms: 1 of {len(broker.alarms)} alarms firing: {STACK}-refresh-failed-sweeps")
    assert f"{STACK}-refresh-failed-sweeps since " in line
    assert ": 1 record" in line
    # The alarm's own "Do:" text from template.yaml is its fix.
    assert f"fix {STACK}-refresh-failed-sweeps: read the RefreshFunction's errors" in line
    assert "then purge the queue (FailedSweepQueueUrl output)." in line
    assert "staging" not in line


def test_an_unconfirmed_subscription_fails_until_the_mail_is_clicked(broker: DeployedBroker) -> None:
    sns = broker.client("sns")
    topic = broker.outputs["AlarmTopicArn"]
    for subscription in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="oncall@example.com")  # AlarmEmail's, unclicked

    run = broker.doctor()

    assert run.code == 1
    line = run.line("alarm topic")
    assert line.startswith("✗ alarm topic: no confirmed subscription: email 1 wait(s) for confirmation")
    assert "fix: click the link in the mail 'AWS Notification - Subscription Confirmation'" in line
    assert "oncall@example.com" not in run.out  # endpoints are never printed


def test_a_topic_without_subscriptions_fails_and_says_how_to_subscribe(broker: DeployedBroker) -> None:
    sns = broker.client("sns")
    topic = broker.outputs["AlarmTopicArn"]
    for subscription in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])

    line = broker.doctor().line("alarm topic")

    assert line.startswith("✗ alarm topic: the alarm topic has no subscription: nobody hears an alarm")
    assert f"aws sns subscribe --topic-arn {topic}" in line


# --------------------------------------------------------------------------------------------------- live alias
def test_a_long_parameter_changed_alone_leaves_the_alias_behind_and_the_fix_publishes(broker: DeployedBroker) -> None:
    # A deploy that changed only OAuthScopes: $LATEST has the new scopes, no version was published.
    function = broker.functions["AuthorizeFunction"]
    lambdas = broker.client("lambda")
    environment = lambdas.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    lambdas.update_function_configuration(
        FunctionName=function, Environment={"Variables": environment | {"OAUTH_SCOPES": "READ_SHEETS WRITE_SHEETS"}}
    )

    run = broker.doctor()

    assert run.code == 1
    line = run.line("live alias")
    assert line.startswith("✗ live alias: 1 function(s) run an older configuration than the stack's: AuthorizeFunction")
    assert "AuthorizeFunction: live runs version 1, whose OAUTH_SCOPES differ(s) from $LATEST" in line
    publish = f"$(aws lambda publish-version --function-name {function} --query Version --output text)"
    assert f"aws lambda update-alias --function-name {function} --name live --function-version {publish}" in line
    assert "WRITE_SHEETS" not in run.out  # names, never values


# ------------------------------------------------------------------------------------------------------ sign-in
def test_with_redirect_uri_set_the_redirect_must_carry_the_callback_url(login: LoginServer) -> None:
    login.answer(302, login_redirect(redirect_uri=CALLBACK_URL))
    with deployed_broker(login, RedirectUri=CALLBACK_URL) as broker:
        line = broker.doctor().line("sign-in")

    assert line == (
        "✓ sign-in: /login answers 302 to https://app.smartsheet.com/b/authorize with client id doctor-client-id "
        f"and redirect_uri {CALLBACK_URL}"
    )


def test_a_redirect_uri_that_is_not_the_callback_url_fails(login: LoginServer) -> None:
    elsewhere = "https://broker.example.com/old-callback"
    login.answer(302, login_redirect(redirect_uri=elsewhere))
    with deployed_broker(login, RedirectUri=elsewhere) as broker:
        line = broker.doctor().line("sign-in")

    assert line.startswith(f"✗ sign-in: RedirectUri is {elsewhere}, not the stack's callback URL {CALLBACK_URL}")
    assert "fix: set RedirectUri to the CallbackUrl output (or leave it empty)" in line


def test_with_anonymous_login_disabled_a_refusal_passes_and_what_was_not_exercised_is_said(login: LoginServer) -> None:
    login.answer(403)
    with deployed_broker(login, AnonymousLogin="disabled") as broker:
        refused = broker.doctor().line("sign-in")
        login.answer(302, login_redirect())
        started = broker.doctor().line("sign-in")

    assert refused.startswith("✓ sign-in: /login refuses a sign-in without a connect session (AnonymousLogin=disabled)")
    assert "not exercised: the redirect to Smartsheet, which only a connect session starts" in refused
    assert started.startswith(
        "✗ sign-in: /login started a sign-in without a connect session although AnonymousLogin=disabled"
    )


# ------------------------------------------------------------------------------------------- missing parts
def test_a_stack_from_before_the_outputs_fails_each_check_that_needs_one(login: LoginServer) -> None:
    missing = ("LoginUrl", "AppCredentialsSecretArn", "RefreshScheduleName", "AlarmTopicArn")
    with deployed_broker(login, without_outputs=missing) as broker:
        run = broker.doctor()

    assert run.code == 1
    assert run.line("sign-in").startswith("✗ sign-in: the stack has no LoginUrl output")
    assert run.line("client secret").startswith("✗ client secret: the stack has no AppCredentialsSecretArn output")
    assert run.line("schedule").startswith("✗ schedule: the stack has no RefreshScheduleName output")
    assert run.line("alarm topic").startswith("✗ alarm topic: the stack has no AlarmTopicArn output")
    for name in ("sign-in", "client secret", "schedule", "alarm topic"):
        assert "fix: redeploy" in run.line(name)
    assert run.line("alarms").startswith("✓ alarms")  # found by name alone, then


def test_a_deleted_schedule_fails(broker: DeployedBroker) -> None:
    broker.client("scheduler").delete_schedule(Name=broker.schedule)

    line = broker.doctor().line("schedule")

    assert line.startswith(f"✗ schedule: the schedule {broker.schedule} does not exist")
    assert "fix: redeploy (make deploy)" in line


def test_a_function_without_its_live_alias_fails(broker: DeployedBroker) -> None:
    broker.client("lambda").delete_alias(FunctionName=broker.functions["CallbackFunction"], Name=LIVE_ALIAS)

    line = broker.doctor().line("live alias")

    assert line.startswith("✗ live alias: 1 function(s) run an older configuration than the stack's: CallbackFunction")
    assert "CallbackFunction has no live alias" in line


def test_a_stack_without_its_alarms_fails(broker: DeployedBroker) -> None:
    cloudwatch = broker.client("cloudwatch")
    names = [alarm["AlarmName"] for alarm in cloudwatch.describe_alarms(AlarmNamePrefix=f"{STACK}-")["MetricAlarms"]]
    cloudwatch.delete_alarms(AlarmNames=names)

    line = broker.doctor().line("alarms")

    assert line.startswith(f"✗ alarms: no alarm named {STACK}-... notifies the stack's topic")
    assert "fix: redeploy (make deploy)" in line


def test_a_deleted_alarm_topic_fails(broker: DeployedBroker) -> None:
    broker.client("sns").delete_topic(TopicArn=broker.outputs["AlarmTopicArn"])

    line = broker.doctor().line("alarm topic")

    assert line.startswith(f"✗ alarm topic: the alarm topic {broker.outputs['AlarmTopicArn']} does not exist")
