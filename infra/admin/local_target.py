"""`make dev`'s broker as the admin CLI's Target, found through the state file it writes; only loopback endpoints are
used. It loads the local stack's modules (the embedded AWS's credentials, the template model, the gateway's control
header), so the CLI imports it only for `make dev`'s stack."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from smartsheet_oauth.config import Config, is_loopback
from smartsheet_oauth.stores.connections import ConnectionStore
from smartsheet_oauth.stores.token_stores import build_token_stores

from infra.admin.stack_facts import StackFacts
from infra.admin.target import (
    DEV_STATE_FILE,
    QUICK_CALLS,
    REFRESH_FUNCTION,
    SWEEP_TIMEOUT_SECONDS,
    Target,
    TargetError,
    aws_errors,
    config_from,
    events_factory,
    smartsheet_factory,
)
from infra.local.aws import LOCAL_CREDENTIALS
from infra.local.gateway import CONTROL_TOKEN_HEADER
from infra.local.template_model import (
    DEFAULT_TEMPLATE,
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    PhysicalResource,
    Resolver,
    Template,
    TemplateError,
    synthesize_physical,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _parameters(state: Mapping[str, Any], state_file: Path) -> dict[str, str]:
    parameters = state.get("parameters")
    if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
        raise TargetError(f"{state_file} does not say the stack's parameters (an older `make dev`); start it again.")
    return parameters


def _loopback_url(state: Mapping[str, Any], key: str, state_file: Path) -> str:
    url = state.get(key)
    if not isinstance(url, str) or urlsplit(url).scheme != "http" or not is_loopback(urlsplit(url).hostname):
        raise TargetError(f"{state_file}: {key} is not an http://127.0.0.1 URL; start `make dev` again.")
    return url.rstrip("/")


def _control_token(state: Mapping[str, Any], state_file: Path) -> str:
    """The dev gateway's /_local/ token (make dev writes a random one per run)."""
    token = state.get("local_token")
    if not isinstance(token, str) or not token:
        raise TargetError(f"{state_file} holds no local_token (an older make dev wrote it); start `make dev` again.")
    return token


@cache
def _local_session() -> boto3.session.Session:
    """The embedded AWS's fixed credentials; one session per process, so its service models load once."""
    return boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=LOCAL_REGION,
    )


def local(state_file: Path = DEV_STATE_FILE, *, template: Path = DEFAULT_TEMPLATE) -> Target:
    """The running `make dev` stack, found through the state file it writes. Only loopback endpoints are used."""
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(
            f"no local dev stack: {state_file} does not exist. Start one with `make dev` (in another terminal), "
            "or pass --stack NAME to act on a deployed stack."
        ) from None
    except (OSError, ValueError) as exc:
        raise TargetError(f"{state_file} cannot be read ({exc}); start `make dev` again.") from None
    if not isinstance(state, dict):
        raise TargetError(f"{state_file} is not a dev stack's state file; start `make dev` again.")
    pid = state.get("pid")
    if isinstance(pid, int) and not _pid_alive(pid):
        raise TargetError(f"the dev stack that wrote {state_file} (pid {pid}) is gone; start `make dev` again.")
    moto_url = _loopback_url(state, "moto_url", state_file)
    gateway_url = _loopback_url(state, "gateway_url", state_file)
    emulator_url = _loopback_url(state, "emulator_url", state_file) if state.get("emulator_url") else None
    control_token = _control_token(state, state_file)
    session = _local_session()

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=moto_url, config=QUICK_CALLS)  # type: ignore[call-overload]

    dynamodb, secrets, sqs = client("dynamodb"), client("secretsmanager"), client("sqs")
    where = f"the embedded AWS at {moto_url}"
    with aws_errors(f"reaching {where} (is `make dev` still running?)"):
        tables = dynamodb.list_tables()["TableNames"]
        secret_names = [s["Name"] for s in secrets.list_secrets()["SecretList"]]
    stacks = {m.group(1) for m in map(re.compile(r"^(.+)-ConnectionsTable-[A-Z0-9]+$").match, tables) if m}
    if len(stacks) != 1:
        raise TargetError(f"{where} holds {len(stacks)} broker stacks ({', '.join(sorted(stacks))}), expected one.")
    stack_name = stacks.pop()
    physical = {
        **_local_resources(stack_name, tables, secret_names, dynamodb=dynamodb, secrets=secrets, sqs=sqs),
        **_token_key(stack_name, client("kms")),
    }
    environment = _function_environment(template, stack_name, physical, _parameters(state, state_file))
    if emulator_url is not None:
        environment["SMARTSHEET_AUTHORIZE_URL"] = f"{emulator_url}/b/authorize"
        environment["SMARTSHEET_API_BASE_URL"] = f"{emulator_url}/2.0"
    config = config_from(environment, "the local refresh function's configuration")
    queue_url = physical["RefreshDeadLetterQueue"].ref

    def run_sweep() -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - a loopback http URL, checked above
            f"{gateway_url}/_local/schedule?function={REFRESH_FUNCTION}",
            method="POST",
            data=b"",
            headers={CONTROL_TOKEN_HEADER: control_token},
        )
        try:
            with urllib.request.urlopen(request, timeout=SWEEP_TIMEOUT_SECONDS) as response:  # noqa: S310
                answer: dict[str, Any] = json.loads(response.read())
        except (urllib.error.URLError, ConnectionError) as exc:
            raise TargetError(
                f"no dev gateway answers at {gateway_url} ({exc}); is `make dev` still running?"
            ) from None
        run = answer["runs"][0]
        if not run["ok"]:
            raise TargetError(f"the sweep failed: {run['errorType']}: {run['errorMessage']}")
        payload: dict[str, Any] = run["payload"]
        return payload

    def waiting(url: str, name: str) -> int:
        with aws_errors(f"reading the {name}"):
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))

    failed_queue = physical.get("FailedSweepQueue")

    return Target(
        description=f"local dev stack {stack_name} ({gateway_url})",
        config=config,
        connections=ConnectionStore(
            dynamodb, config.connections_table_name, default_region=config.region, due_shards=config.due_shards
        ),
        dynamodb=dynamodb,
        vault=build_token_stores(
            config, dynamodb=lambda: dynamodb, secrets=lambda: secrets, kms=lambda: client("kms"), keep_pairs=False
        ),
        smartsheet=smartsheet_factory(secrets, config),
        events=events_factory(lambda: client("events"), config),
        run_sweep=run_sweep,
        dead_letters=lambda: waiting(queue_url, "refresh dead-letter queue"),
        failed_sweeps=lambda: None if failed_queue is None else waiting(failed_queue.ref, "failed sweep queue"),
        alarms_firing=lambda: None,
        stack=StackFacts(
            name=stack_name,
            region=LOCAL_REGION,
            outputs=_local_outputs(gateway_url, physical, config),
            parameters=_parameters(state, state_file),
            client=client,
            local=True,
        ),
    )


def _local_outputs(gateway_url: str, physical: Mapping[str, PhysicalResource], config: Config) -> dict[str, str]:
    """What CloudFormation's outputs would say, for the parts make dev has (no schedule, alarms or topic locally)."""
    outputs = {
        "LoginUrl": f"{gateway_url}/login",
        "CallbackUrl": f"{gateway_url}/callback",
        "AppCredentialsSecretArn": physical["AppCredentialsSecret"].ref,
        "ConnectionsTableName": config.connections_table_name,
        "TokenSecretPrefix": config.token_secret_prefix,
        "RefreshDeadLetterQueueUrl": physical["RefreshDeadLetterQueue"].ref,
    }
    if "FailedSweepQueue" in physical:
        outputs["FailedSweepQueueUrl"] = physical["FailedSweepQueue"].ref
    # With WebhookUrl set: the webhook's queues and signing secret, as the template's outputs name them.
    for output, logical_id in (
        ("WebhookDeliveryQueueUrl", "WebhookDeliveryQueue"),
        ("WebhookDeadLetterQueueUrl", "WebhookDeadLetterQueue"),
        ("WebhookSigningSecretArn", "WebhookSigningSecret"),
    ):
        if logical_id in physical:
            outputs[output] = physical[logical_id].ref
    return outputs


def _local_resources(
    stack_name: str, tables: list[str], secret_names: list[str], *, dynamodb: Any, secrets: Any, sqs: Any
) -> dict[str, PhysicalResource]:
    """The embedded AWS's tables, secrets and queue by logical id, recognised by the names infra.local.aws gives."""
    found: dict[str, PhysicalResource] = {}
    with aws_errors("reading the embedded AWS"):
        for name in tables:
            match = re.match(rf"^{re.escape(stack_name)}-(\w+)-[A-Z0-9]+$", name)
            if match:
                arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
                found[match.group(1)] = PhysicalResource(ref=name, attributes={"Arn": arn})
        for name in secret_names:
            logical_id = name.rpartition("-")[0]
            if "/" not in name and logical_id:
                arn = secrets.describe_secret(SecretId=name)["ARN"]
                found[logical_id] = PhysicalResource(ref=arn, attributes={"Id": arn})
        urls = sqs.list_queues(QueueNamePrefix=f"{stack_name}-").get("QueueUrls", [])
    for url in urls:
        queue = url.rsplit("/", 1)[-1]
        logical_id = queue.removeprefix(f"{stack_name}-").rpartition("-")[0]
        with aws_errors("reading the embedded AWS"):
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        found[logical_id] = PhysicalResource(ref=url, attributes={"Arn": arn, "QueueName": queue, "QueueUrl": url})
    if "RefreshDeadLetterQueue" not in found:
        raise TargetError(f"the embedded AWS holds no refresh dead-letter queue of {stack_name}")
    return found


# PendingTokensKey's description (template.yaml) does not name the stack; the embedded AWS holds one broker stack.
_PENDING_KEY_DESCRIPTION = "smartsheet-oauth-broker - seals refreshed token pairs"


def _token_key(stack_name: str, kms: Any) -> dict[str, PhysicalResource]:
    """The stack's KMS keys in the embedded AWS, by the descriptions the template gives them: TokenSecretsKey (it
    names the stack: what a TokenStore=dynamodb stack's pairs are opened with) and PendingTokensKey (what an import
    keeps its new pairs under)."""
    found: dict[str, PhysicalResource] = {}
    with aws_errors("reading the embedded AWS's keys"):
        for key in kms.list_keys().get("Keys", []):
            metadata = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
            description = str(metadata.get("Description", ""))
            resource = PhysicalResource(
                ref=metadata["KeyId"], attributes={"Arn": metadata["Arn"], "KeyId": metadata["KeyId"]}
            )
            if description.startswith(f"{stack_name} - encrypts the Smartsheet token"):
                found["TokenSecretsKey"] = resource
            elif description.startswith(_PENDING_KEY_DESCRIPTION):
                found["PendingTokensKey"] = resource
    return found


@cache
def _template(path: Path, _mtime_ns: int) -> Template:
    """Parsing template.yaml is most of a command's start-up; a process running many (tests) parses it once."""
    return Template.load(path)


def _function_environment(
    template_path: Path, stack_name: str, physical: Mapping[str, PhysicalResource], parameters: Mapping[str, str]
) -> dict[str, str]:
    """The refresh function's environment as the local stack computed it from template.yaml and the parameters
    `make dev` was given (its state file)."""
    template = _template(template_path, template_path.stat().st_mtime_ns)

    def lookup(logical_id: str) -> PhysicalResource:
        if logical_id in physical:
            return physical[logical_id]
        return synthesize_physical(template, logical_id, stack_name, LOCAL_REGION, LOCAL_ACCOUNT_ID)

    if "AppCredentialsSecret" not in physical:
        raise TargetError(f"the embedded AWS holds no app credentials secret of {stack_name}")
    try:
        # As the local stack resolves it: an http:// loopback WebhookUrl (LoopbackHttpParameters) is allowed here.
        resolver = Resolver(template, stack_name=stack_name, parameters=parameters, physical=lookup, loopback_http=True)
        return dict(resolver.function(REFRESH_FUNCTION).environment)
    except TemplateError as exc:
        raise TargetError(f"template.yaml: {exc}") from None
