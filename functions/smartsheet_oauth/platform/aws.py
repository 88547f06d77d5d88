"""The boto3 clients the broker uses: created once per container, lazily, on first use."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

# Standard retry mode retries throttling and 5xx with backoff; short timeouts keep a request inside its budget.
_CONNECT_SECONDS, _READ_SECONDS = 2, 5
_BOTO_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=_CONNECT_SECONDS,
    read_timeout=_READ_SECONDS,
    max_pool_connections=64,
)
# The longest one attempt of a DynamoDB, Secrets Manager or KMS call waits before it gives up (refresh_window.py).
ATTEMPT_SECONDS = float(_CONNECT_SECONDS + _READ_SECONDS)

# Events are best-effort beside a sign-in or a refresh: tight timeouts bound what a slow EventBridge can cost.
_EVENTS_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=1,
    read_timeout=2,
    max_pool_connections=64,
)


@cache
def dynamodb() -> DynamoDBClient:
    return boto3.client("dynamodb", config=_BOTO_CONFIG)


@cache
def secretsmanager() -> SecretsManagerClient:
    return boto3.client("secretsmanager", config=_BOTO_CONFIG)


@cache
def events() -> EventBridgeClient:
    return boto3.client("events", config=_EVENTS_CONFIG)


@cache
def kms() -> KMSClient:
    return boto3.client("kms", config=_BOTO_CONFIG)


@cache
def sqs() -> Any:  # no mypy_boto3_sqs among the dev dependencies
    return boto3.client("sqs", config=_BOTO_CONFIG)


def reset() -> None:
    """Forget the cached clients (tests switch endpoints between cases)."""
    sqs.cache_clear()
    kms.cache_clear()
    dynamodb.cache_clear()
    secretsmanager.cache_clear()
    events.cache_clear()
    sqs.cache_clear()
