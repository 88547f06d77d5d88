"""Which broker the admin CLI acts on: the Target its commands use, and what a deployed stack's (deployed_target.py) and
`make dev`'s (local_target.py) have in common. Nothing here loads the local stack's modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from smartsheet_oauth.config import Config, load_config
from smartsheet_oauth.domain.errors import ConfigError
from smartsheet_oauth.services import client_secret_of
from smartsheet_oauth.smartsheet.client import SmartsheetClient
from smartsheet_oauth.stores.connections import ConnectionStore
from smartsheet_oauth.stores.events import EventPublisher
from smartsheet_oauth.stores.token_stores import TokenStores

from infra.admin.stack_facts import StackFacts

DEV_STATE_FILE: Final = Path(__file__).resolve().parents[2] / ".local" / "dev.json"
REFRESH_FUNCTION: Final = "RefreshFunction"  # the sweep's logical id in template.yaml
# The alias the schedule invokes (template.yaml's AutoPublishAlias): the version and configuration that really run,
# with SnapStart's snapshot and the async settings; $LATEST may hold a configuration no alias points at.
LIVE_ALIAS: Final = "live"
# The outputs the CLI cannot work without (template.yaml's Outputs section).
REQUIRED_OUTPUTS: Final = ("RefreshFunctionName", "ConnectionsTableName", "RefreshDeadLetterQueueUrl")
SWEEP_TIMEOUT_SECONDS: Final = 900  # Lambda's maximum: a sweep invoked by hand is waited for

# Short timeouts for everything but the sweep: an operator should hear about a dead endpoint at once.
QUICK_CALLS: Final = BotoConfig(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=15)


class TargetError(RuntimeError):
    """The stack cannot be reached or is not a broker: the message says what to do."""


@dataclass(frozen=True)
class Target:
    """One broker's parts, wired for the operator's own process."""

    description: str  # "stack prod-broker (eu-west-1)" or "local dev stack (http://127.0.0.1:3000)"
    config: Config  # the refresh function's own configuration
    connections: ConnectionStore
    vault: TokenStores
    smartsheet: Callable[[], SmartsheetClient]  # reads the app credentials on first use
    events: Callable[[], EventPublisher]  # the stack's connection events (e.g. Connection Revoked)
    dynamodb: Any  # the client the stores use
    run_sweep: Callable[[], dict[str, Any]]  # the sweep's report
    dead_letters: Callable[[], int]  # messages waiting in the refresh dead-letter queue (ticks not delivered)
    failed_sweeps: Callable[[], int | None]  # records in FailedSweepQueue (sweeps that failed); None: no such queue
    alarms_firing: Callable[[], list[str] | None]  # names of alarms in ALARM; None where there are none (local)
    stack: StackFacts  # its name, outputs, parameters and AWS clients (make doctor reads the rest through them)


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
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
    with aws_errors("reading the app credentials secret"):
        raw = secrets.get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        return client_secret_of(raw)
    except ConfigError as exc:
        raise TargetError(f"the app credentials secret {secret_arn} {exc.problem}") from None


def smartsheet_factory(secrets: Any, config: Config) -> Callable[[], SmartsheetClient]:
    @cache
    def build() -> SmartsheetClient:
        # The client id is the stack's configuration (SMARTSHEET_CLIENT_ID), the secret only holds the secret.
        client_secret = _client_secret(secrets, config.app_credentials_secret_arn)
        return SmartsheetClient(
            api_base_url=config.api_base_url,
            client_id=config.client_id,
            client_secret=client_secret,
            # Each connection's refresh and revoke go to its own region's API, as the functions' do.
            region_bases={name: api for name, _, api in config.region_endpoints},
        )

    return build


def events_factory(client: Callable[[], Any], config: Config) -> Callable[[], EventPublisher]:
    @cache
    def build() -> EventPublisher:
        return EventPublisher(client(), config.event_bus_name, include_email=config.events_include_email)

    return build


def config_from(environment: Mapping[str, str], where: str) -> Config:
    try:
        return load_config(environment)
    except ConfigError as exc:
        raise TargetError(f"{where}: {exc}") from None
