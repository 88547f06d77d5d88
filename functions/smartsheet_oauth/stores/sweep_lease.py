"""The sweep lease: one item in the state table that lets one scheduled sweep run at a time. It lasts as long as
the invocation may (Lambda's time left at its start), so a sweep that crashed or timed out without giving it back
holds it no longer than its own timeout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartsheet_oauth.domain.errors import BrokerError, ConditionFailed
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# A ':' that a state never has: the callback refuses it as a state, so no browser can consume the lease.
LEASE_KEY = "sweep:lease"
# DynamoDB's TTL may delete an expired lease after this; the lease's own lease_until is what counts.
LEASE_TTL_SLACK_SECONDS = 3600


class SweepRunning(BrokerError):
    """Another sweep holds the lease until `lease_until` (epoch seconds)."""

    def __init__(self, lease_until: int, started_at: int) -> None:
        super().__init__(f"another sweep holds the lease until {lease_until}")
        self.lease_until = lease_until
        self.started_at = started_at


class SweepLeases:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def take(self, *, owner: str, now: int, seconds: int) -> None:
        """Hold the lease until now + seconds. Raises SweepRunning when an unexpired lease is another sweep's, and
        StorageError when the table cannot be reached."""
        lease_until = now + seconds
        try:
            with storage("sweep_lease.take"):
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        "state": {"S": LEASE_KEY},
                        "kind": {"S": "sweep_lease"},
                        "owner": {"S": owner},
                        "started_at": {"N": str(now)},
                        "lease_until": {"N": str(lease_until)},
                        "expires_at": {"N": str(lease_until + LEASE_TTL_SLACK_SECONDS)},
                    },
                    ConditionExpression="attribute_not_exists(#s) OR lease_until <= :now",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues={":now": {"N": str(now)}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailed as held:
            item = held.item or {}
            raise SweepRunning(
                lease_until=int(item.get("lease_until", {}).get("N", lease_until)),
                started_at=int(item.get("started_at", {}).get("N", now)),
            ) from None

    def release(self, *, owner: str) -> None:
        """Give the lease back; only its holder can (a lease that expired and was taken over stays with the taker)."""
        try:
            with storage("sweep_lease.release"):
                self._client.delete_item(
                    TableName=self._table,
                    Key={"state": {"S": LEASE_KEY}},
                    ConditionExpression="#owner = :owner",
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={":owner": {"S": owner}},
                )
        except ConditionFailed:
            return
