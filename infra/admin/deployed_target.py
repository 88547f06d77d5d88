"""A deployed broker as the admin CLI's Target: the stack found through CloudFormation with the operator's credentials,
its refresh function's own configuration read from its live alias."""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import NoCredentialsError, ProfileNotFound
from smartsheet_oauth.stores.connections import ConnectionStore
from smartsheet_oauth.stores.token_stores import build_token_stores

from infra.admin.stack_facts import StackFacts
from infra.admin.target import (
    LIVE_ALIAS,
    QUICK_CALLS,
    REQUIRED_OUTPUTS,
    Target,
    TargetError,
    aws_errors,
    config_from,
    events_factory,
    smartsheet_factory,
)

_SWEEP: Final = BotoConfig(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=3, read_timeout=900)


def admin_event() -> dict[str, Any]:
    """What a sweep run by hand receives: shaped like the schedule's event, its id the logs' correlation id."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Admin Sweep",
        "source": "smartsheet-oauth-broker.admin",
        "detail": {},
    }


def deployed(
    stack_name: str,
    *,
    region: str | None = None,
    profile: str | None = None,
    session: boto3.session.Session | None = None,
) -> Target:
    """The stack named `stack_name`, found through CloudFormation with the operator's credentials."""
    try:
        session = session or boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise TargetError(f"AWS profile {profile!r} is not in your AWS config (~/.aws/config).") from None
    if not session.region_name:
        raise TargetError("no AWS region: pass --region or set AWS_REGION (or a region in your profile).")
    where = f"stack {stack_name} ({session.region_name})"
    with aws_errors(f"looking up {where}"):
        if session.get_credentials() is None:
            raise NoCredentialsError
        stacks = session.client("cloudformation", config=QUICK_CALLS).describe_stacks(StackName=stack_name)["Stacks"]
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
    if missing:
        raise TargetError(
            f"{where} has no output {', '.join(missing)} (status {stack.get('StackStatus')}): is it a "
            "smartsheet-oauth-broker stack, deployed from this version? Deploy it again (make deploy)."
        )
    lambda_quick = session.client("lambda", config=QUICK_CALLS)
    function = outputs["RefreshFunctionName"]
    with aws_errors(f"reading the configuration of {function}:{LIVE_ALIAS}"):
        configuration = lambda_quick.get_function_configuration(FunctionName=function, Qualifier=LIVE_ALIAS)
    config = config_from(configuration.get("Environment", {}).get("Variables", {}), f"the configuration of {function}")
    log_group = configuration.get("LoggingConfig", {}).get("LogGroup") or f"/aws/lambda/{function}"
    dynamodb = session.client("dynamodb", config=QUICK_CALLS)
    secrets = session.client("secretsmanager", config=QUICK_CALLS)
    # The other clients only for the commands that need them: each costs a model load.

    def run_sweep() -> dict[str, Any]:
        with aws_errors(f"invoking {function}:{LIVE_ALIAS}"):
            answer = session.client("lambda", config=_SWEEP).invoke(
                FunctionName=function,
                Qualifier=LIVE_ALIAS,
                InvocationType="RequestResponse",
                Payload=json.dumps(admin_event()).encode(),
            )
        raw = answer["Payload"].read()
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        if answer.get("FunctionError"):
            error = payload if isinstance(payload, dict) else {}
            raise TargetError(
                f"the sweep failed: {error.get('errorType', 'error')}: {error.get('errorMessage', '')} "
                f"(see the log group {log_group})"
            )
        result: dict[str, Any] = payload if isinstance(payload, dict) else {"result": payload}
        return result

    def waiting(queue_url: str, name: str) -> int:
        with aws_errors(f"reading the {name}"):
            attributes = session.client("sqs", config=QUICK_CALLS).get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def dead_letters() -> int:
        return waiting(outputs["RefreshDeadLetterQueueUrl"], "refresh dead-letter queue")

    def failed_sweeps() -> int | None:
        # A stack deployed before the queue existed has no such output.
        url = outputs.get("FailedSweepQueueUrl")
        return None if url is None else waiting(url, "failed sweep queue")

    def alarms_firing() -> list[str]:
        names: list[str] = []
        with aws_errors("reading the stack's alarms"):
            alarms = session.client("cloudwatch", config=QUICK_CALLS).get_paginator("describe_alarms")
            for page in alarms.paginate(AlarmNamePrefix=f"{stack_name}-", StateValue="ALARM"):
                names += [alarm["AlarmName"] for alarm in page.get("MetricAlarms", [])]
        return names

    return Target(
        description=where,
        config=config,
        connections=ConnectionStore(
            dynamodb, config.connections_table_name, default_region=config.region, due_shards=config.due_shards
        ),
        dynamodb=dynamodb,
        vault=build_token_stores(
            config,
            dynamodb=lambda: dynamodb,
            secrets=lambda: secrets,
            kms=lambda: session.client("kms", config=QUICK_CALLS),
            keep_pairs=False,
        ),
        smartsheet=smartsheet_factory(secrets, config),
        events=events_factory(lambda: session.client("events", config=QUICK_CALLS), config),
        run_sweep=run_sweep,
        dead_letters=dead_letters,
        failed_sweeps=failed_sweeps,
        alarms_firing=alarms_firing,
        stack=StackFacts(
            name=stack_name,
            region=session.region_name,
            outputs=outputs,
            parameters=parameters,
            client=lambda service: session.client(service, config=QUICK_CALLS),  # type: ignore[call-overload]
            local=False,
        ),
    )
