"""Connections' tags: the `tags` map on each connection record, and the tag index (ConnectionTagsTable: one item per
tag and connection, partition key `tag` = "key=value", sort key `connection_id`), which lists the connections of one
tag with a Query, never a Scan.

Why a sibling table: a GSI over one denormalised attribute holds one tag per connection, and index items inside the
connections table would turn up in every Scan of it (listings, the admin CLI, migrate-store). Record and index change
together in one TransactWriteItems (the record's update, guarded by its `tags_version`, with the index items' puts and
deletes), so the index never names a tag the record lacks nor misses one it has; listings still check each record
(a connection deleted by hand leaves nothing wrong in a page)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from smartsheet_oauth.domain.errors import ConditionFailed, StorageError
from smartsheet_oauth.domain.tags import index_key
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.stores.connection_records import Connection, connection_from_item
from smartsheet_oauth.stores.storage_errors import error_code, storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_BATCH_ATTEMPTS = 5  # BatchGetItem may leave keys unprocessed under throttling: asked again, then a 503


class ConnectionTagStore:
    def __init__(
        self, client: DynamoDBClient, connections_table: str, tags_table: str | None, *, default_region: str
    ) -> None:
        """default_region: the stack's SmartsheetRegion, the region of a record written without one."""
        self._client = client
        self._connections = connections_table
        self._tags = tags_table
        self._default_region = default_region

    def _table(self) -> str:
        if self._tags is None:  # the template gives every function CONNECTION_TAGS_TABLE_NAME
            raise StorageError("tags.table", "NoTagsTable", transient=False)
        return self._tags

    def replace(
        self, connection_id: str, tags: Mapping[str, str], *, now: int, revoked_too: bool = False
    ) -> Connection:
        """Make the connection's tags exactly `tags`, and the index with them, atomically. ConditionFailed when the
        connection does not exist, is revoked (unless `revoked_too`: a disconnect clearing them), or its tags changed
        since they were read (ask again: the caller re-reads)."""
        table = self._table()
        with storage("tags.read"):
            item = self._client.get_item(
                TableName=self._connections, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
            ).get("Item")
        if item is None:
            raise ConditionFailed("tags.read", "ConnectionMissing", transient=False)
        current = connection_from_item(item, self._default_region)
        version = int(item.get("tags_version", {}).get("N", "0"))
        old = {index_key(k, v) for k, v in current.tags.items()}
        new = {index_key(k, v) for k, v in tags.items()}
        values: dict[str, Any] = {":next": {"N": str(version + 1)}, ":now": {"N": str(now)}}
        guard = "attribute_exists(connection_id) AND "
        guard += "tags_version = :version" if version else "attribute_not_exists(tags_version)"
        if version:
            values[":version"] = {"N": str(version)}
        if not revoked_too:
            guard += " AND #status <> :revoked"
            values[":revoked"] = {"S": ConnectionStatus.REVOKED}
        if tags:
            update = "SET #tags = :tags, tags_version = :next, updated_at = :now"
            values[":tags"] = {"M": {k: {"S": v} for k, v in tags.items()}}
        else:
            update = "SET tags_version = :next, updated_at = :now REMOVE #tags"
        record_update: dict[str, Any] = {
            "TableName": self._connections,
            "Key": {"connection_id": {"S": connection_id}},
            "UpdateExpression": update,
            "ConditionExpression": guard,
            "ExpressionAttributeValues": values,
        }
        record_update["ExpressionAttributeNames"] = {"#tags": "tags"}
        if not revoked_too:
            record_update["ExpressionAttributeNames"]["#status"] = "status"
        actions: list[Any] = [{"Update": record_update}]
        actions += [
            {"Put": {"TableName": table, "Item": {"tag": {"S": tag}, "connection_id": {"S": connection_id}}}}
            for tag in sorted(new - old)
        ]
        actions += [
            {"Delete": {"TableName": table, "Key": {"tag": {"S": tag}, "connection_id": {"S": connection_id}}}}
            for tag in sorted(old - new)
        ]
        self._transact(actions)
        return current._replace(tags=dict(tags), updated_at=now)

    def _transact(self, actions: list[Any]) -> None:
        try:
            self._client.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            code = error_code(exc)
            reasons = [str(r.get("Code")) for r in exc.response.get("CancellationReasons", []) if r.get("Code")]
            if code == "TransactionCanceledException" and "ConditionalCheckFailed" in reasons:
                raise ConditionFailed("tags.write", "ConditionalCheckFailed", transient=False) from exc
            transient = code in ("TransactionConflictException", "ThrottlingException", "InternalServerError") or any(
                reason in ("TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded")
                for reason in reasons
            )
            raise StorageError("tags.write", code, transient=transient) from exc
        except BotoCoreError as exc:
            raise StorageError("tags.write", type(exc).__name__, transient=True) from exc

    def page(
        self, key: str, value: str, *, limit: int, start_key: dict[str, Any] | None = None
    ) -> tuple[list[Connection], dict[str, Any] | None]:
        """One page of the connections tagged key=value (a Query of the tag index, then their records in one
        BatchGetItem), and the key to continue from. A page can hold fewer than `limit` (even none) and still have
        a next one."""
        kwargs: dict[str, Any] = {
            "TableName": self._table(),
            "KeyConditionExpression": "#tag = :tag",
            "ExpressionAttributeNames": {"#tag": "tag"},
            "ExpressionAttributeValues": {":tag": {"S": index_key(key, value)}},
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        with storage("tags.query"):
            answer = self._client.query(**kwargs)
        # A page is at most 100 index items (the API's limit): within BatchGetItem's 100 keys.
        ids = [item["connection_id"]["S"] for item in answer.get("Items", [])]
        records = self._records(ids)
        found = [records[i] for i in ids if i in records and records[i].tags.get(key) == value]
        return found, answer.get("LastEvaluatedKey")

    def _records(self, ids: list[str]) -> dict[str, Connection]:
        records: dict[str, Connection] = {}
        keys: list[dict[str, Any]] = [{"connection_id": {"S": i}} for i in ids]
        for _ in range(_BATCH_ATTEMPTS):
            if not keys:
                return records
            with storage("tags.records"):
                answer = self._client.batch_get_item(
                    RequestItems={self._connections: {"Keys": keys, "ConsistentRead": True}}
                )
            for item in answer.get("Responses", {}).get(self._connections, []):
                connection = connection_from_item(item, self._default_region)
                records[connection.connection_id] = connection
            unprocessed: dict[str, Any] = dict(answer.get("UnprocessedKeys") or {})
            keys = list(unprocessed.get(self._connections, {}).get("Keys", []))
        if keys:
            raise StorageError("tags.records", "UnprocessedKeys", transient=True)
        return records
