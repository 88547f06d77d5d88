"""Connection records in the connections table: sign-in upserts, the due index, refresh leases and commits."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.lifecycle import WRITES
from smartsheet_oauth.domain.shards import LEGACY_SHARD, due_shard, every_shard
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.stores.connection_records import (
    Connection,
    DueConnection,
    PendingPair,
    connection_from_item,
    number,
)
from smartsheet_oauth.stores.storage_errors import storage

# The records' types are this store's words too: the flows import them from here.
__all__ = ["DUE_INDEX", "DUE_SHARD", "END_USER_INDEX", "Connection", "ConnectionStore", "DueConnection", "PendingPair"]

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DUE_INDEX = "by-refresh-due"
# Sparse too: only connections bound to an integrator's end user (through a connect session) carry end_user_id.
END_USER_INDEX = "by-end-user"
# The sparse index's partition values: only active connections carry one. With DueShards 1 (and on a stack from
# before the fan-out) every record has this one; with more, a stable hash of the connection id picks one of them
# (domain/shards.py), and the due connections are read from all of them, merged earliest first (due_everywhere).
DUE_SHARD = LEGACY_SHARD

# The attribute names the lifecycle's writes refer to by placeholder (reserved words in DynamoDB).
_NAMES = {"#status": "status", "#region": "region"}


def _num(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _str(value: str) -> dict[str, str]:
    return {"S": value}


def _fence(owner: str, generation: int, now: int) -> dict[str, Any]:
    """The values of a write only the lease holder may make, on the generation it leased (lifecycle.FENCED)."""
    return {":owner": _str(owner), ":gen": _num(generation), ":now": _num(now)}


class ConnectionStore:
    def __init__(self, client: DynamoDBClient, table_name: str, *, default_region: str, due_shards: int = 1) -> None:
        """default_region: the stack's SmartsheetRegion, the region of a record written without one."""
        self._client = client
        self._table = table_name
        self._default_region = default_region
        self._due_shards = due_shards

    def shard_of(self, connection_id: str) -> str:
        """The due index partition a new due time of this connection is written to."""
        return due_shard(connection_id, self._due_shards)

    def record_sign_in(
        self,
        *,
        connection_id: str,
        secret_arn: str,
        email: str,
        scopes: str,
        region: str,
        access_expires_at: int,
        refresh_due_at: int,
        now: int,
        end_user_id: str | None = None,
        default_region: str | None = None,
    ) -> bool:
        """Create or update the connection after a successful sign-in; it is active again, whatever it was.
        With default_region (the stack's SmartsheetRegion), ConditionFailed too when the connection exists in another
        region than `region` (a record without one is of the default region) and is not revoked: a live connection
        never changes region.
        Returns True when the connection is new. With an end_user_id (a confirmed connect session) the connection
        is bound to that end user; ConditionFailed when it is bound to another one and not revoked
        (flows/connect.check_binding looks first; this closes the race of two sign-ins at once). Without one (a
        plain /login), ConditionFailed when it is bound to any end user and not revoked: a binding changes, and a
        bound connection comes back, only through a confirmed connect session of its end user. (A revoked
        connection's binding ended with it: the plain sign-in makes it an unbound connection.)"""
        values = {
            ":active": _str(ConnectionStatus.ACTIVE),
            ":arn": _str(secret_arn),
            ":email": _str(email),
            ":scopes": _str(scopes),
            ":region": _str(region),
            ":exp": _num(access_expires_at),
            ":due": _num(refresh_due_at),
            ":shard": _str(self.shard_of(connection_id)),
            ":zero": _num(0),
            ":one": _num(1),
            ":now": _num(now),
            ":revoked": _str(ConnectionStatus.REVOKED),
        }
        if end_user_id is not None:
            values[":end_user"] = _str(end_user_id)
        # ALL_OLD: no attributes back means there was no item. (UPDATED_OLD leaves out attributes whose value did
        # not change, such as an if_not_exists created_at, in moto at least.)
        write = "sign_in_bound" if end_user_id is not None else "sign_in_unbound"
        also = None
        if default_region is not None:
            also = "attribute_not_exists(connection_id) OR #region = :region OR #status = :revoked"
            if region == default_region:
                also += " OR attribute_not_exists(#region)"
        answer = self._write("connections.sign_in", write, connection_id, values, returns="ALL_OLD", also=also)
        return not answer.get("Attributes")

    def get(self, connection_id: str) -> Connection | None:
        with storage("connections.get"):
            answer = self._client.get_item(
                TableName=self._table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
            )
        item = answer.get("Item")
        return connection_from_item(item, self._default_region) if item else None

    def due(
        self, *, now: int, limit: int, start_key: dict[str, Any] | None = None, shard: str = DUE_SHARD
    ) -> tuple[list[DueConnection], dict[str, Any] | None]:
        """Active connections of one partition of the due index whose refresh is due, earliest first, through the
        sparse index (no scan). Returns one page and the key to continue from."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND refresh_due_at <= :now",
            "ExpressionAttributeValues": {":shard": {"S": shard}, ":now": {"N": str(now)}},
            "ScanIndexForward": True,
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        with storage("connections.due"):
            answer = self._client.query(**kwargs)
        due = [
            DueConnection(
                connection_id=item["connection_id"]["S"],
                refresh_due_at=int(item["refresh_due_at"]["N"]),
                access_expires_at=number(item, "access_expires_at", 0) or 0,
                generation=number(item, "generation", 0) or 0,
            )
            for item in answer.get("Items", [])
            # A connection leased by another worker is skipped; its lease expiry brings it back.
            if (number(item, "lease_until", 0) or 0) <= now
        ]
        return due, answer.get("LastEvaluatedKey")

    def due_everywhere(
        self, *, now: int, page_size: int, read: Callable[..., tuple[list[DueConnection], Any]] | None = None
    ) -> Iterator[DueConnection]:
        """The due connections of every partition (domain/shards.every_shard), merged earliest first, each partition
        read a page at a time as the merge needs it. `read` is how a page is read (default: due); it may raise."""
        page_of = read or self.due

        def partition(shard: str) -> Iterator[tuple[int, str, DueConnection]]:
            start_key: dict[str, Any] | None = None
            while True:
                page, start_key = page_of(now=now, limit=page_size, start_key=start_key, shard=shard)
                yield from ((due.refresh_due_at, due.connection_id, due) for due in page)
                if not start_key:
                    return

        for _, _, due in heapq.merge(*(partition(shard) for shard in every_shard())):
            yield due

    def acquire_lease(
        self, connection_id: str, *, generation: int, owner: str, now: int, lease_seconds: int
    ) -> Connection:
        """Take the refresh lease: only one worker refreshes a connection at a time. Raises ConditionFailed when
        another worker holds it, the connection was refreshed meanwhile (generation moved), or is not active.

        The same write marks this attempt in flight, unless an earlier one still is (its marker stays: it is the one
        that may have spent the grant). Whatever ends the attempt removes the marker only once the grant's fate is
        known, so a worker that dies anywhere after this leaves the record saying so, at no extra write."""
        values = {
            ":until": _num(now + lease_seconds),
            ":owner": _str(owner),
            ":active": _str(ConnectionStatus.ACTIVE),
            ":gen": _num(generation),
            ":now": _num(now),
        }
        answer = self._write("connections.lease", "lease", connection_id, values, returns="ALL_NEW")
        return connection_from_item(answer["Attributes"], self._default_region)

    def commit_refresh(
        self,
        connection_id: str,
        *,
        generation: int,
        owner: str,
        access_expires_at: int,
        refresh_due_at: int,
        now: int,
    ) -> None:
        """Record a refresh whose new pair is already stored: new expiry, generation + 1, lease released, the kept
        pair (if any) dropped."""
        values = {
            ":exp": _num(access_expires_at),
            ":due": _num(refresh_due_at),
            ":next": _num(generation + 1),
            ":zero": _num(0),
            **_fence(owner, generation, now),
        }
        self._write("connections.commit", "commit", connection_id, values)

    def keep_pending(
        self, connection_id: str, *, generation: int, owner: str, sealed: bytes, version_id: str, now: int
    ) -> None:
        """Make a new pair durable on the record, sealed, before it is written to its secret: whoever takes the
        lease next (this worker's next sweep, or another worker after a crash) finishes that write first."""
        values = {":sealed": {"B": sealed}, ":version": _str(version_id), **_fence(owner, generation, now)}
        self._write("connections.keep_pending", "keep", connection_id, values)

    def record_transient_failure(
        self,
        connection_id: str,
        *,
        generation: int,
        owner: str,
        retry_at: int,
        reason: str,
        now: int,
        settled: bool = False,
    ) -> int:
        """Keep the connection active, count the failure, and come back to it at retry_at (a kept pair stays).
        `settled`: the attempt marked in flight is this one and it never reached Smartsheet, so the marker goes;
        otherwise it stays. Returns the count."""
        values = {
            ":retry": _num(retry_at),
            ":zero": _num(0),
            ":one": _num(1),
            ":reason": _str(reason),
            **_fence(owner, generation, now),
        }
        answer = self._write(
            "connections.failure", "fail", connection_id, values, returns="UPDATED_NEW", settled=settled
        )
        return int(answer["Attributes"]["failures"]["N"])

    def mark_needs_reauth(self, connection_id: str, *, generation: int, owner: str, reason: str, now: int) -> None:
        """The grant is gone at Smartsheet: take the connection out of the sweep until the user signs in again."""
        values = {
            ":status": _str(ConnectionStatus.NEEDS_REAUTH),
            ":reason": _str(reason),
            **_fence(owner, generation, now),
        }
        self._write("connections.needs_reauth", "needs_reauth", connection_id, values)

    # -- operators: the sweep's backlog, counts, listing and one-connection actions (admin CLI) -----------------

    def count_due(
        self, *, now: int, max_pages: int | None = None, keep_going: Callable[[], bool] | None = None
    ) -> tuple[int, bool]:
        """How many active connections are due at `now` (leased ones included): the sweep's backlog when `now` is
        the time the sweep started. COUNT queries on every partition of the sparse index, never a scan; each reads
        up to 1 MB of index entries (thousands), an empty partition one small read. With `max_pages` (pages after
        a partition's first), or when `keep_going` says no before such a page, it stops early: returns (the count
        so far, whether it is complete)."""
        total = pages = 0
        for shard in every_shard():
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": DUE_INDEX,
                "KeyConditionExpression": "due_shard = :shard AND refresh_due_at <= :now",
                "ExpressionAttributeValues": {":shard": {"S": shard}, ":now": {"N": str(now)}},
                "Select": "COUNT",
            }
            while True:
                with storage("connections.count_due"):
                    answer = self._client.query(**kwargs)
                total = total + int(answer.get("Count", 0))
                if not answer.get("LastEvaluatedKey"):
                    break
                # A partition's first page is always read (most are empty); `max_pages` bounds the pages after it.
                pages += 1
                if (max_pages is not None and pages >= max_pages) or (keep_going is not None and not keep_going()):
                    return total, False
                kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return total, True

    def scan(self, *, status: str | None = None) -> Iterator[Connection]:
        """Every connection, or those of one status, page by page (operators' listing; never on a request path)."""
        kwargs: dict[str, Any] = {"TableName": self._table}
        if status is not None:
            kwargs["FilterExpression"] = "#status = :status"
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
            kwargs["ExpressionAttributeValues"] = {":status": {"S": status}}
        while True:
            with storage("connections.scan"):
                answer = self._client.scan(**kwargs)
            yield from (connection_from_item(item, self._default_region) for item in answer.get("Items", []))
            if not answer.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def request_refresh(self, connection_id: str, *, now: int) -> Connection:
        """Make a connection due now (an operator's "refresh now"): an active one moves to the front of the queue, a
        needs_reauth one goes back to active so its stored refresh token is tried once more (it recovers a grant that
        was marked by mistake, e.g. while the app secret was wrong). Raises ConditionFailed for an unknown or revoked
        connection, or one whose lease another worker holds."""
        values = {
            ":active": _str(ConnectionStatus.ACTIVE),
            ":revoked": _str(ConnectionStatus.REVOKED),
            ":now": _num(now),
            ":shard": _str(self.shard_of(connection_id)),
        }
        answer = self._write("connections.request_refresh", "request_refresh", connection_id, values, returns="ALL_NEW")
        return connection_from_item(answer["Attributes"], self._default_region)

    def hold(self, connection_id: str, *, owner: str, now: int, lease_seconds: int) -> Connection:
        """Take the lease for an operator action whatever the connection's status, so no sweep refreshes (rotates)
        it meanwhile. Raises ConditionFailed for an unknown connection or one whose lease another worker holds."""
        values = {":until": _num(now + lease_seconds), ":owner": _str(owner), ":now": _num(now)}
        answer = self._write("connections.hold", "hold", connection_id, values, returns="ALL_NEW")
        return connection_from_item(answer["Attributes"], self._default_region)

    def release(self, connection_id: str, *, owner: str, settled: bool = False) -> None:
        """Give a held lease back unchanged (an operator action that did not go through, a refresh that sent
        nothing). `settled`: the in-flight marker is the releasing attempt's own, and it goes too."""
        self._write("connections.release", "release", connection_id, {":owner": _str(owner)}, settled=settled)

    def mark_revoked(self, connection_id: str, *, owner: str, reason: str, now: int) -> None:
        """The connection is disconnected: out of the sweep for good, until the user signs in again, and no longer
        bound to its end user (a later sign-in cannot bring it back to them unless they confirm it again). Needs the
        lease taken with hold(); raises ConditionFailed if it was lost (e.g. the user signed in again meanwhile)."""
        values = {
            ":revoked": _str(ConnectionStatus.REVOKED),
            ":reason": _str(reason),
            ":now": _num(now),
            ":owner": _str(owner),
        }
        self._write("connections.revoke", "revoke", connection_id, values)

    # -- the management API: pages of connections, on-demand refresh --------------------------------------------

    def page(
        self,
        *,
        limit: int,
        status: str | None = None,
        end_user_id: str | None = None,
        start_key: dict[str, Any] | None = None,
    ) -> tuple[list[Connection], dict[str, Any] | None]:
        """One page of connections and the key to continue from. An end user's connections come from the sparse
        index (a Query); otherwise a Scan. The status filter applies after DynamoDB's Limit, so a page can hold
        fewer than `limit` connections (even none) and still have a next one."""
        kwargs: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if end_user_id is not None:
            kwargs["IndexName"] = END_USER_INDEX
            kwargs["KeyConditionExpression"] = "end_user_id = :end_user"
            values[":end_user"] = {"S": end_user_id}
        if status is not None:
            kwargs["FilterExpression"] = "#status = :status"
            names["#status"] = "status"
            values[":status"] = {"S": status}
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        with storage("connections.page"):
            answer = self._client.query(**kwargs) if end_user_id is not None else self._client.scan(**kwargs)
        items = [connection_from_item(item, self._default_region) for item in answer.get("Items", [])]
        return items, answer.get("LastEvaluatedKey")

    def expedite(self, connection_id: str, *, generation: int, now: int) -> None:
        """Make an active connection due now, for an on-demand refresh through the sweep's own lease. Raises
        ConditionFailed when it is not active, was refreshed since it was read (generation moved), or a worker
        holds its lease: then there is nothing to expedite, only to wait for."""
        values = {
            ":now": _num(now),
            ":shard": _str(self.shard_of(connection_id)),
            ":active": _str(ConnectionStatus.ACTIVE),
            ":gen": _num(generation),
        }
        self._write("connections.expedite", "expedite", connection_id, values)

    def _write(
        self,
        operation: str,
        write: str,
        connection_id: str,
        values: dict[str, Any],
        *,
        returns: str | None = None,
        settled: bool = False,
        also: str | None = None,
    ) -> dict[str, Any]:
        """One of the lifecycle's conditional writes (domain/lifecycle.WRITES) on one record, as the table has it;
        `also` is a further condition the write must meet."""
        update = WRITES[write]
        expression = update.update(settled=settled)
        guard = f"({update.guard}) AND ({also})" if also else update.guard
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"connection_id": _str(connection_id)},
            "UpdateExpression": expression,
            "ConditionExpression": guard,
            "ExpressionAttributeValues": values,
        }
        names = {placeholder: name for placeholder, name in _NAMES.items() if placeholder in guard + expression}
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if returns:
            kwargs["ReturnValues"] = returns
        with storage(operation):
            return dict(self._client.update_item(**kwargs))

    def move_pair(self, connection_id: str, *, owner: str, generation: int, old_ref: str, new_ref: str) -> None:
        """Point the record at its pair's new store (migrate-store) and give the lease back. Raises ConditionFailed
        when the lease was lost, or the connection was refreshed or signed in again meanwhile: it stays where it is."""
        with storage("connections.move_pair"):
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression="SET secret_arn = :new REMOVE lease_until, lease_owner",
                ConditionExpression="lease_owner = :owner AND generation = :gen AND secret_arn = :old",
                ExpressionAttributeValues={
                    ":new": {"S": new_ref},
                    ":owner": {"S": owner},
                    ":gen": {"N": str(generation)},
                    ":old": {"S": old_ref},
                },
            )
