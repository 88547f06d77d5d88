"""The composition root: builds each collaborator once per container, lazily, from the configuration."""

from __future__ import annotations

import json
import threading
import time
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from smartsheet_oauth.config import Config, get_config
from smartsheet_oauth.domain.errors import ConfigError
from smartsheet_oauth.platform import aws
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from smartsheet_oauth.smartsheet.client import SmartsheetClient
    from smartsheet_oauth.stores.completions import CompletionStore
    from smartsheet_oauth.stores.connect_sessions import ConnectSessionStore
    from smartsheet_oauth.stores.connection_tags import ConnectionTagStore
    from smartsheet_oauth.stores.connections import ConnectionStore
    from smartsheet_oauth.stores.events import EventPublisher
    from smartsheet_oauth.stores.imports import ImportLedger
    from smartsheet_oauth.stores.pace import SharedPace
    from smartsheet_oauth.stores.refresh_queue import RefreshQueue
    from smartsheet_oauth.stores.states import StateStore
    from smartsheet_oauth.stores.sweep_lease import SweepLeases
    from smartsheet_oauth.stores.token_stores import TokenStores

# Each factory imports its collaborator's module itself: a function's cold start imports only what it uses
# (/login: no token vault, connection store or events; the sweep: no state or connect-session store).


class AppCredentials(NamedTuple):
    """The app's client id (from the configuration) and client secret (from the app credentials secret); the repr
    hides the secret."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"AppCredentials(client_id={self.client_id!r}, client_secret=<hidden>)"


# The key CloudFormation's generated value carries until an operator puts the real client secret in
# (template.yaml's AppCredentialsSecret; make set-client-secret writes {"client_secret": ...} without it).
PLACEHOLDER_KEY = "placeholder"

_credentials_lock = threading.Lock()
_credentials: tuple[float, AppCredentials] | None = None  # (read at, monotonic seconds; value)


def app_credentials(config: Config | None = None) -> AppCredentials:
    """The app's client id and secret; the secret is read once and reused for APP_CREDENTIALS_MAX_AGE_SECONDS, so a
    rotated secret is picked up without a redeploy. Callers arriving while it is read wait for that one read. Only the
    functions that sign token requests call this (their roles alone may read the secret)."""
    global _credentials  # noqa: PLW0603 (a per-container cache)
    config = config or get_config()
    with _credentials_lock:
        now = time.monotonic()
        if _credentials is not None and now - _credentials[0] < config.app_credentials_max_age_seconds:
            return _credentials[1]
        with storage("GetSecretValue"):
            answer = aws.secretsmanager().get_secret_value(SecretId=config.app_credentials_secret_arn)
        secret = client_secret_of(answer.get("SecretString"))
        _credentials = (now, AppCredentials(client_id=config.client_id, client_secret=secret))
        return _credentials[1]


def client_secret_of(text: str | None) -> str:
    """The client secret in the app credentials secret's value ({"client_secret": "..."}; other keys, such as the
    client_id an older version kept there, are ignored). The error never quotes the value."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get(PLACEHOLDER_KEY):
        raise ConfigError(
            "APP_CREDENTIALS_SECRET_ARN",
            "still holds the random placeholder CloudFormation generated: put the app's client secret in "
            "(make set-client-secret STACK=<stack>)",
        )
    client_secret = value.get("client_secret") if isinstance(value, dict) else None
    if not isinstance(client_secret, str) or not client_secret:
        raise ConfigError("APP_CREDENTIALS_SECRET_ARN", 'points at a secret that is not {"client_secret": "..."}')
    return client_secret


@cache
def state_store() -> StateStore:
    from smartsheet_oauth.stores.states import StateStore  # noqa: PLC0415

    config = get_config()
    return StateStore(aws.dynamodb(), config.state_table_name, config.state_ttl_seconds)


@cache
def connection_store() -> ConnectionStore:
    from smartsheet_oauth.stores.connections import ConnectionStore  # noqa: PLC0415

    config = get_config()
    return ConnectionStore(
        aws.dynamodb(), config.connections_table_name, default_region=config.region, due_shards=config.due_shards
    )


@cache
def connection_tags() -> ConnectionTagStore:
    from smartsheet_oauth.stores.connection_tags import ConnectionTagStore  # noqa: PLC0415

    config = get_config()
    return ConnectionTagStore(
        aws.dynamodb(), config.connections_table_name, config.connection_tags_table_name, default_region=config.region
    )


@cache
def token_vault() -> TokenStores:
    from smartsheet_oauth.stores.token_stores import build_token_stores  # noqa: PLC0415

    # The clients are made on first use: a store a container never touches costs it nothing.
    return build_token_stores(get_config(), dynamodb=aws.dynamodb, secrets=aws.secretsmanager, kms=aws.kms)


@cache
def connect_sessions() -> ConnectSessionStore:
    from smartsheet_oauth.stores.connect_sessions import ConnectSessionStore  # noqa: PLC0415

    config = get_config()
    return ConnectSessionStore(aws.dynamodb(), config.state_table_name, config.connect_session_ttl_seconds)


@cache
def completion_store() -> CompletionStore:
    from smartsheet_oauth.stores.completions import CompletionStore  # noqa: PLC0415

    return CompletionStore(aws.dynamodb(), get_config().state_table_name)


@cache
def import_ledger() -> ImportLedger:
    from smartsheet_oauth.stores.imports import ImportLedger  # noqa: PLC0415

    return ImportLedger(aws.dynamodb(), get_config().state_table_name)


@cache
def event_publisher() -> EventPublisher:
    from smartsheet_oauth.stores.events import EventPublisher  # noqa: PLC0415

    config = get_config()
    return EventPublisher(
        aws.events(),
        config.event_bus_name,
        include_email=config.events_include_email,
        resources=(config.event_resource,) if config.event_resource else (),
    )


@cache
def sweep_leases() -> SweepLeases:
    from smartsheet_oauth.stores.sweep_lease import SweepLeases  # noqa: PLC0415

    return SweepLeases(aws.dynamodb(), get_config().state_table_name)


def refresh_queue() -> RefreshQueue | None:
    """The refresh queue the scheduled dispatcher sends due connections to (None: no REFRESH_QUEUE_URL, the sweep
    runs in this process)."""
    from smartsheet_oauth.stores.refresh_queue import RefreshQueue  # noqa: PLC0415

    url = get_config().refresh_queue_url
    return RefreshQueue(aws.sqs(), url) if url else None


def shared_pace() -> SharedPace:
    """A new view of the pace every refresher shares (it holds the slots this caller claimed, so one per sweep or
    request, not per container)."""
    from smartsheet_oauth.stores.pace import PaceWindows, SharedPace  # noqa: PLC0415

    config = get_config()
    return SharedPace(PaceWindows(aws.dynamodb(), config.state_table_name), config.refresh_rate_per_minute)


@cache
def worker_pace() -> SharedPace:
    """The refresh worker container's one view of the shared pace, kept across its batches: slots it claimed for a
    window and did not use in one batch serve the next. A view per batch claimed a fifth of the workers' window
    budget (6 slots at 360 a minute) at a time and left what a batch of 10 did not use, so 8 workers sent only 81.5%
    of the pace to Smartsheet (make bench, section 11, counted at the emulator)."""
    return shared_pace()


_client_lock = threading.Lock()
_client: tuple[AppCredentials, SmartsheetClient] | None = None


def smartsheet_client() -> SmartsheetClient:
    """One client (and its connection pool) per container; rebuilt only when the app credentials change."""
    global _client  # noqa: PLW0603 (a per-container singleton)
    from smartsheet_oauth.smartsheet.client import SmartsheetClient  # noqa: PLC0415

    credentials = app_credentials()
    with _client_lock:
        if _client is None or _client[0] != credentials:
            config = get_config()
            client = SmartsheetClient(
                api_base_url=config.api_base_url,
                client_id=credentials.client_id,
                client_secret=credentials.client_secret,
                # Every region's API, not only the allowed ones: a connection keeps its region's for its refreshes.
                region_bases={name: api for name, _, api in config.region_endpoints},
            )
            _client = (credentials, client)
        return _client[1]


def reset() -> None:
    """Forget everything built so far (tests change the environment between cases)."""
    global _client, _credentials  # noqa: PLW0603
    get_config.cache_clear()
    aws.reset()
    with _credentials_lock:
        _credentials = None
    factories = (
        state_store,
        connection_store,
        connection_tags,
        token_vault,
        event_publisher,
        connect_sessions,
        completion_store,
    )
    for factory in (*factories, sweep_leases, import_ledger, worker_pace):
        factory.cache_clear()
    with _client_lock:
        _client = None
