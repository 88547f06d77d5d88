"""Connections by status for the admin CLI's health: a scan of the whole table, run only when an operator asks
(the sweep emits no such count: its cost would grow with the table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.stores.storage_errors import storage


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """Connections per status; `expired` and `failing` are subsets of `active`."""

    active: int = 0
    needs_reauth: int = 0
    revoked: int = 0
    expired: int = 0  # active, but the access token is past its expiry: the refresher fell behind
    failing: int = 0  # active, with failed refresh attempts waiting for a retry


def count_by_status(dynamodb: Any, table_name: str, *, now: int) -> StatusCounts:
    """Every connection's status, access expiry and failures, read page by page (three attributes each)."""
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "ProjectionExpression": "#status, access_expires_at, failures",
        "ExpressionAttributeNames": {"#status": "status"},
    }
    counts = dict.fromkeys((*(status.value for status in ConnectionStatus), "expired", "failing"), 0)
    while True:
        with storage("connections.count"):
            answer = dynamodb.scan(**kwargs)
        for item in answer.get("Items", []):
            status = item.get("status", {}).get("S", "")
            if status in ConnectionStatus:
                counts[status] += 1
            if status == ConnectionStatus.ACTIVE and int(item.get("access_expires_at", {}).get("N", "0")) <= now:
                counts["expired"] += 1
            if status == ConnectionStatus.ACTIVE and int(item.get("failures", {}).get("N", "0")) > 0:
                counts["failing"] += 1
        if not answer.get("LastEvaluatedKey"):
            return StatusCounts(**counts)
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
