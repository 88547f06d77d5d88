"""Which broker the admin CLI acts on: a deployed stack found through its CloudFormation outputs, or `make dev`'s."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, ProfileNotFound
from smartsheet_oauth.config import Config, is_loopback, load_config
from smartsheet_oauth.connection_store import ConnectionStore
from smartsheet_oauth.errors import ConfigError
from smartsheet_oauth.events import EventPublisher
from smartsheet_oauth.services import client_secret_of
from smartsheet_oauth.smartsheet import SmartsheetClient
from smartsheet_oauth.token_vault import TokenVault

from infra.admin.stack_facts import StackFacts
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

DEV_STATE_FILE: Final = Path(__file__).resolve().parents[2] / ".local" / "dev.json"
REFRESH_FUNCTION: Final = "RefreshFunction"  # the sweep's logical id in template.yaml
# The alias the schedule invokes (template.yaml's AutoPublishAlias): the version and configuration that really run,
# with SnapStart's snapshot and the async settings; $LATEST may hold a configuration no alias points at.
LIVE_ALIAS: Final = "live"
# The outputs the CLI cannot work without (template.yaml's Outputs section).
REQUIRED_OUTPUTS: Final = ("RefreshFunctionName", "ConnectionsTableName", "RefreshDeadLetterQueueUrl")
SWEEP_TIMEOUT_SECONDS: Final = 900  # Lambda's maximum: a sweep invoked by hand is waited for

# Short timeouts for everything but the sweep: an operator should hear about a dead endpoint at once.
_QUICK = BotoConfig(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=15)
_SWEEP = BotoConfig(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=3, read_timeout=900)


class TargetError(RuntimeError):
    """The stack cannot be reached or is not a broker: the message says what to do."""


@dataclass(frozen=True)
class Target:
    """One broker's parts, wired for the operator's own process."""

    description: str  # "stack prod-broker (eu-west-1)" or "local dev stack (http://127.0.0.1:3000)"
    config: Config  # the refresh function's own configuration
    connections: ConnectionStore
    vault: TokenVault
    smartsheet: Callable[[], SmartsheetClient]  # reads the app credentials on first use
    events: Callable[[], EventPublisher]  # the stack's connection events (e.g. Connection Revoked)
    dynamodb: Any  # the client the stores use
    run_sweep: Callable[[], dict[str, Any]]  # the sweep's report
    dead_letters: Callable[[], int]  # messages waiting in the refresh dead-letter queue (ticks not delivered)
    failed_sweeps: Callable[[], int | None]  # records in FailedSweepQueue (sweeps that failed); None: no such queue
    alarms_firing: Callable[[], list[str] | None]  # names of alarms in ALARM; None where there are none (local)
    stack: StackFacts  # its name, outputs, parameters and AWS clients (make doctor reads the rest through them)


@contextmanager
def _aws(what: str) -> Iterator[None]:
    """AWS failures while finding the stack, as messages an operator can act on."""
    try:
        yield
    except NoCredentialsError:
        raise TargetError(
            f"{what}: no AWS credentials found. Set AWS_PROFILE (or pass --profile), run `aws sso login` or "
            "`aws configure`, or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
        ) from None
    except NoRegionError:
        raise TargetError(f"{what}: no AWS region. Pass --region or set AWS_REGION.") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        if code in {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException"}:
            raise TargetError(f"{what}: AWS refused the credentials ({code}); refresh them and try again.") from None
        if code in {"AccessDenied", "AccessDeniedException"}:
            raise TargetError(
                f"{what}: access denied ({message}). Use credentials allowed to operate the stack."
            ) from None
        raise TargetError(f"{what}: {code}: {message}") from None
    except BotoCoreError as exc:  # endpoint unreachable, SSO token expired, ...
        raise TargetError(f"{what}: {exc}") from None


def _client_secret(secrets: Any, secret_arn: str) -> str:
    with _aws("reading the app credentials secret"):
        raw = secrets.get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        return client_secret_of(raw)
    except ConfigError as exc:
        raise TargetError(f"the app credentials secret {secret_arn} {exc.problem}") from None


def _smartsheet_factory(secrets: Any, config: Config) -> Callable[[], SmartsheetClient]:
    @cache
    def build() -> SmartsheetClient:
        # The client id is the stack's configuration (SMARTSHEET_CLIENT_ID), the secret only holds the secret.
        client_secret = _client_secret(secrets, config.app_credentials_secret_arn)
        return SmartsheetClient(
            api_base_url=config.api_base_url, client_id=config.client_id, client_secret=client_secret
        )

    return build


def _events_factory(client: Callable[[], Any], config: Config) -> Callable[[], EventPublisher]:
    @cache
    def build() -> EventPublisher:
        return EventPublisher(client(), config.event_bus_name, include_email=config.events_include_email)

    return build


def _config(environment: Mapping[str, str], where: str) -> Config:
    try:
        return load_config(environment)
    except ConfigError as exc:
        raise TargetError(f"{where}: {exc}") from None


def admin_event() -> dict[str, Any]:
    """What a sweep run by hand receives: shaped like the schedule's event, its id the logs' correlation id."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Admin Sweep",
        "source": "smartsheet-oauth-broker.admin",
        "detail": {},
    }


# ------------------------------------------------------------------------------------------- deployed stack
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
    with _aws(f"looking up {where}"):
        if session.get_credentials() is None:
            raise NoCredentialsError
        stacks = session.client("cloudformation", config=_QUICK).describe_stacks(StackName=stack_name)["Stacks"]
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
    if missing:
        raise TargetError(
            f"{where} has no output {', '.join(missing)} (status {stack.get('StackStatus')}): is it a "
            "smartsheet-oauth-broker stack, deployed from this version? Deploy it again (make deploy)."
        )
    lambda_quick = session.client("lambda", config=_QUICK)
    function = outputs["RefreshFunctionName"]
    with _aws(f"reading the configuration of {function}:{LIVE_ALIAS}"):
        configuration = lambda_quick.get_function_configuration(FunctionName=function, Qualifier=LIVE_ALIAS)
    config = _config(configuration.get("Environment", {}).get("Variables", {}), f"the configuration of {function}")
    log_group = configuration.get("LoggingConfig", {}).get("LogGroup") or f"/aws/lambda/{function}"
    dynamodb = session.client("dynamodb", config=_QUICK)
    secrets = session.client("secretsmanager", config=_QUICK)
    # The other clients only for the commands that need them: each costs a model load.

    def run_sweep() -> dict[str, Any]:
        with _aws(f"invoking {function}:{LIVE_ALIAS}"):
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
        with _aws(f"reading the {name}"):
            attributes = session.client("sqs", config=_QUICK).get_queue_attributes(
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
        with _aws("reading the stack's alarms"):
            alarms = session.client("cloudwatch", config=_QUICK).get_paginator("describe_alarms")
            for page in alarms.paginate(AlarmNamePrefix=f"{stack_name}-", StateValue="ALARM"):
                names += [alarm["AlarmName"] for alarm in page.get("MetricAlarms", [])]
        return names

    return Target(
        description=where,
        config=config,
        connections=ConnectionStore(dynamodb, config.connections_table_name),
        dynamodb=dynamodb,
        vault=TokenVault(secrets, config.token_secret_prefix, kms_key_id=config.token_kms_key_id),
        smartsheet=_smartsheet_factory(secrets, config),
        events=_events_factory(lambda: session.client("events", config=_QUICK), config),
        run_sweep=run_sweep,
        dead_letters=dead_letters,
        failed_sweeps=failed_sweeps,
        alarms_firing=alarms_firing,
        stack=StackFacts(
            name=stack_name,
            region=session.region_name,
            outputs=outputs,
            parameters=parameters,
            client=lambda service: session.client(service, config=_QUICK),  # type: ignore[call-overload]
            local=False,
        ),
    )


# ------------------------------------------------------------------------------------------ local dev stack
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
    from infra.local.aws import LOCAL_CREDENTIALS  # noqa: PLC0415 - moto and werkzeug: never for a deployed stack

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
        return session.client(service, endpoint_url=moto_url, config=_QUICK)  # type: ignore[call-overload]

    dynamodb, secrets, sqs = client("dynamodb"), client("secretsmanager"), client("sqs")
    where = f"the embedded AWS at {moto_url}"
    with _aws(f"reaching {where} (is `make dev` still running?)"):
        tables = dynamodb.list_tables()["TableNames"]
        secret_names = [s["Name"] for s in secrets.list_secrets()["SecretList"]]
    stacks = {m.group(1) for m in map(re.compile(r"^(.+)-ConnectionsTable-[A-Z0-9]+$").match, tables) if m}
    if len(stacks) != 1:
        raise TargetError(f"{where} holds {len(stacks)} broker stacks ({', '.join(sorted(stacks))}), expected one.")
    stack_name = stacks.pop()
    physical = _local_resources(stack_name, tables, secret_names, dynamodb=dynamodb, secrets=secrets, sqs=sqs)
    environment = _function_environment(template, stack_name, physical, _parameters(state, state_file))
    if emulator_url is not None:
        environment["SMARTSHEET_AUTHORIZE_URL"] = f"{emulator_url}/b/authorize"
        environment["SMARTSHEET_API_BASE_URL"] = f"{emulator_url}/2.0"
    config = _config(environment, "the local refresh function's configuration")
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
        with _aws(f"reading the {name}"):
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))

    failed_queue = physical.get("FailedSweepQueue")

    return Target(
        description=f"local dev stack {stack_name} ({gateway_url})",
        config=config,
        connections=ConnectionStore(dynamodb, config.connections_table_name),
        dynamodb=dynamodb,
        vault=TokenVault(secrets, config.token_secret_prefix),
        smartsheet=_smartsheet_factory(secrets, config),
        events=_events_factory(lambda: client("events"), config),
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
    return outputs


def _local_resources(
    stack_name: str, tables: list[str], secret_names: list[str], *, dynamodb: Any, secrets: Any, sqs: Any
) -> dict[str, PhysicalResource]:
    """The embedded AWS's tables, secrets and queue by logical id, recognised by the names infra.local.aws gives."""
    found: dict[str, PhysicalResource] = {}
    with _aws("reading the embedded AWS"):
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
        with _aws("reading the embedded AWS"):
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        found[logical_id] = PhysicalResource(ref=url, attributes={"Arn": arn, "QueueName": queue, "QueueUrl": url})
    if "RefreshDeadLetterQueue" not in found:
        raise TargetError(f"the embedded AWS holds no refresh dead-letter queue of {stack_name}")
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
        resolver = Resolver(template, stack_name=stack_name, parameters=parameters, physical=lookup)
        return dict(resolver.function(REFRESH_FUNCTION).environment)
    except TemplateError as exc:
        raise TargetError(f"template.yaml: {exc}") from None
