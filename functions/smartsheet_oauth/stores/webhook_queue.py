"""The webhook delivery's AWS side: its queue (a failed attempt's backoff, the dead-letter queue) and its signing
secret, read from Secrets Manager and reused for a few minutes so a rotated secret is picked up without a deploy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class SqsDeliveryQueue:
    def __init__(self, client: Any, *, delivery_queue_url: str, dead_letter_queue_url: str) -> None:
        self._client = client
        self._delivery_queue_url = delivery_queue_url
        self._dead_letter_queue_url = dead_letter_queue_url

    def retry_later(self, receipt_handle: str, seconds: int) -> None:
        with storage("ChangeMessageVisibility"):
            self._client.change_message_visibility(
                QueueUrl=self._delivery_queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )

    def dead_letter(self, body: str, reason: str, attempts: int) -> None:
        with storage("SendMessage"):
            self._client.send_message(
                QueueUrl=self._dead_letter_queue_url,
                MessageBody=body,
                MessageAttributes={
                    "reason": {"DataType": "String", "StringValue": reason},
                    "attempts": {"DataType": "Number", "StringValue": str(attempts)},
                },
            )


class SigningSecret:
    """The webhook signing secret (a plain string), cached for `max_age_seconds`."""

    def __init__(
        self,
        client: SecretsManagerClient,
        secret_arn: str,
        *,
        max_age_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._arn = secret_arn
        self._max_age = max_age_seconds
        self._clock = clock
        self._cached: tuple[float, str] | None = None

    def __call__(self) -> str:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._max_age:
            return self._cached[1]
        with storage("GetSecretValue"):
            value = self._client.get_secret_value(SecretId=self._arn).get("SecretString") or ""
        if not value:
            raise StorageError("GetSecretValue", "EmptySecret", transient=False)
        self._cached = (now, value)
        return value

    def __repr__(self) -> str:
        return f"SigningSecret({self._arn!r}, <hidden>)"
