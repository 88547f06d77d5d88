"""Turns botocore failures into the broker's StorageError, so the logic never catches botocore errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from smartsheet_oauth.domain.errors import ConditionFailed, StorageError

_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalServiceError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
        "LimitExceededException",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


@contextmanager
def storage(operation: str) -> Iterator[None]:
    """Wrap one AWS call: botocore's exceptions leave as StorageError(transient=...)."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code == "ConditionalCheckFailedException":
            item = exc.response.get("Item")  # asked for with ReturnValuesOnConditionCheckFailure
            raise ConditionFailed(
                operation, code, transient=False, item=item if isinstance(item, dict) else None
            ) from exc
        raise StorageError(operation, code, transient=code in _TRANSIENT_CODES) from exc
    except BotoCoreError as exc:  # timeouts, connection errors: worth retrying later
        raise StorageError(operation, type(exc).__name__, transient=True) from exc
