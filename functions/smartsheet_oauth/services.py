"""The composition root: builds each collaborator once per container, lazily, from the configuration."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from smartsheet_oauth import aws
from smartsheet_oauth.config import Config, get_config
from smartsheet_oauth.connect_sessions import ConnectSessionStore
from smartsheet_oauth.connection_store import ConnectionStore
from smartsheet_oauth.errors import ConfigError
from smartsheet_oauth.events import EventPublisher
from smartsheet_oauth.smartsheet import SmartsheetClient
from smartsheet_oauth.state_store import StateStore
from smartsheet_oauth.token_vault import PairSealer, TokenVault

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider


@dataclass(frozen=True, slots=True)
class AppCredentials:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"AppCredentials(client_id={self.client_id!r}, client_secret=<hidden>)"


@cache
def _secrets_provider() -> SecretsProvider:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415 (cold-start cost)

    return SecretsProvider(boto3_client=aws.secretsmanager())


def app_credentials(config: Config | None = None) -> AppCredentials:
    """The app's client id and secret, cached for APP_CREDENTIALS_MAX_AGE_SECONDS so a rotated secret is
    picked up without a redeploy."""
    config = config or get_config()
    value = _secrets_provider().get(
        config.app_credentials_secret_arn, transform="json", max_age=config.app_credentials_max_age_seconds
    )
    client_id = value.get("client_id") if isinstance(value, dict) else None
    client_secret = value.get("client_secret") if isinstance(value, dict) else None
    if not isinstance(client_id, str) or not client_id or not isinstance(client_secret, str) or not client_secret:
        raise ConfigError(
            "APP_CREDENTIALS_SECRET_ARN",
            'points at a secret that is not {"client_id": "...", "client_secret": "..."}',
        )
    return AppCredentials(client_id=client_id, client_secret=client_secret)


@cache
def state_store() -> StateStore:
    config = get_config()
    return StateStore(aws.dynamodb(), config.state_table_name, config.state_ttl_seconds)


@cache
def connection_store() -> ConnectionStore:
    return ConnectionStore(aws.dynamodb(), get_config().connections_table_name)


@cache
def token_vault() -> TokenVault:
    config = get_config()
    # The KMS client is made on the first seal (refresh only): sign-in never pays for it.
    sealer = PairSealer(aws.kms, config.pending_tokens_key_id) if config.pending_tokens_key_id else None
    return TokenVault(
        aws.secretsmanager(), config.token_secret_prefix, kms_key_id=config.token_kms_key_id, sealer=sealer
    )


@cache
def connect_sessions() -> ConnectSessionStore:
    config = get_config()
    return ConnectSessionStore(aws.dynamodb(), config.state_table_name, config.connect_session_ttl_seconds)


@cache
def event_publisher() -> EventPublisher:
    return EventPublisher(aws.events(), get_config().event_bus_name)


_client_lock = threading.Lock()
_client: tuple[AppCredentials, SmartsheetClient] | None = None


def smartsheet_client() -> SmartsheetClient:
    """One client (and its connection pool) per container; rebuilt only when the app credentials change."""
    global _client  # noqa: PLW0603 (a per-container singleton)
    credentials = app_credentials()
    with _client_lock:
        if _client is None or _client[0] != credentials:
            client = SmartsheetClient(
                api_base_url=get_config().api_base_url,
                client_id=credentials.client_id,
                client_secret=credentials.client_secret,
            )
            _client = (credentials, client)
        return _client[1]


def reset() -> None:
    """Forget everything built so far (tests change the environment between cases)."""
    global _client  # noqa: PLW0603
    get_config.cache_clear()
    aws.reset()
    for factory in (_secrets_provider, state_store, connection_store, token_vault, event_publisher, connect_sessions):
        factory.cache_clear()
    with _client_lock:
        _client = None
