"""Connection records in the connections table: sign-in upserts, the due index, refresh leases and commits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DUE_INDEX = "by-refresh-due"
# Sparse too: only connections bound to an integrator's end user (through a connect session) carry end_user_id.
END_USER_INDEX = "by-end-user"
# The sparse index's one partition value: only active connections carry it. A single partition keeps the
# earliest-first order global; DynamoDB serves a few thousand reads a second from it, far above what one
# sweep asks.
DUE_SHARD = "due"

# The record's in-flight marker (see Connection.in_flight_attempt), removed together.
IN_FLIGHT = "in_flight_attempt, in_flight_since"


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection's record: its status, its secret, when its token expires and when to refresh it."""

    connection_id: str
    status: str
    secret_arn: str
    email: str
    scopes: str
    region: str
    access_expires_at: int
    refresh_due_at: int | None
    generation: int
    lease_until: int | None
    failures: int
    last_error: str | None
    created_at: int
    updated_at: int
    # The integrator's own user this connection is bound to (through a connect session), if any.
    end_user_id: str | None = None
    # A refreshed pair that is not in the secret yet: the next refresh stores it before anything else.
    pending: PendingPair | None = None
    # When a refresh was last committed (a new secret version): on-demand refreshes wait a cooldown after it.
    refreshed_at: int | None = None
    # A refresh attempt that may have reached Smartsheet and whose answer was never used (its worker died, or the
    # answer never came): the lease owner of the earliest such attempt, and when it started. Set with the lease,
    # gone once the grant's fate is known (refreshed, needs_reauth, signed in again). See refusals.py.
    in_flight_attempt: str | None = None
    in_flight_since: int | None = None


@dataclass(frozen=True, slots=True)
class PendingPair:
    """A new token pair kept sealed on the record (TokenVault's PairSealer) until it is in its secret, under the
    secret version id it is written with, so a repeated write of it is a no-op."""

    sealed: bytes
    version_id: str
    generation: int

    def __repr__(self) -> str:
        return f"PendingPair(version_id={self.version_id!r}, generation={self.generation}, sealed=<hidden>)"


@dataclass(frozen=True, slots=True)
class DueConnection:
    """An entry of the due index: enough to lease the connection (its generation) and order the sweep."""

    connection_id: str
    refresh_due_at: int
    access_expires_at: int
    generation: int


def _n(item: dict[str, Any], name: str, default: int | None = None) -> int | None:
    return int(item[name]["N"]) if name in item else default


def _s(item: dict[str, Any], name: str) -> str | None:
    return str(item[name]["S"]) if name in item else None


def connection_from_item(item: dict[str, Any]) -> Connection:
    return Connection(
        connection_id=item["connection_id"]["S"],
        status=item["status"]["S"],
        secret_arn=item["secret_arn"]["S"],
        email=_s(item, "email") or "",
        scopes=_s(item, "scopes") or "",
        region=_s(item, "region") or "",
        access_expires_at=_n(item, "access_expires_at", 0) or 0,
        refresh_due_at=_n(item, "refresh_due_at"),
        generation=_n(item, "generation", 0) or 0,
        lease_until=_n(item, "lease_until"),
        failures=_n(item, "failures", 0) or 0,
        last_error=_s(item, "last_error"),
        created_at=_n(item, "created_at", 0) or 0,
        updated_at=_n(item, "updated_at", 0) or 0,
        end_user_id=_s(item, "end_user_id"),
        pending=_pending(item),
        refreshed_at=_n(item, "refreshed_at"),
        in_flight_attempt=_s(item, "in_flight_attempt"),
        in_flight_since=_n(item, "in_flight_since"),
    )


def _pending(item: dict[str, Any]) -> PendingPair | None:
    if "pending_pair" not in item or "pending_version" not in item:
        return None
    return PendingPair(
        sealed=bytes(item["pending_pair"]["B"]),
        version_id=str(item["pending_version"]["S"]),
        generation=_n(item, "pending_generation", 0) or 0,
    )


class ConnectionStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

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
    ) -> bool:
        """Create or update the connection after a successful sign-in; it is active again, whatever it was.
        Returns True when the connection is new. With an end_user_id (a confirmed connect session) the connection
        is bound to that end user; ConditionFailed when it is bound to another one and not revoked
        (flows/connect.check_binding looks first; this closes the race of two sign-ins at once). Without one (a
        plain /login), ConditionFailed when it is bound to any end user and not revoked: a binding changes, and a
        bound connection comes back, only through a confirmed connect session of its end user."""
        set_end_user, remove_end_user = "", ""
        binding_values: dict[str, Any]
        if end_user_id is not None:
            set_end_user = ", end_user_id = :end_user"
            condition = "attribute_not_exists(end_user_id) OR end_user_id = :end_user OR #status = :revoked"
            binding_values = {":end_user": {"S": end_user_id}, ":revoked": {"S": ConnectionStatus.REVOKED}}
        else:
            # A revoked connection's binding ended with it (records revoked before disconnect cleared it still
            # carry one): the plain sign-in makes it an unbound connection.
            remove_end_user = ", end_user_id"
            condition = "attribute_not_exists(end_user_id) OR #status = :revoked"
            binding_values = {":revoked": {"S": ConnectionStatus.REVOKED}}
        with storage("connections.sign_in"):
            answer = self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET #status = :active, secret_arn = :arn, email = :email, scopes = :scopes, #region = :region,"
                    " access_expires_at = :exp, refresh_due_at = :due, due_shard = :shard,"
                    " generation = if_not_exists(generation, :zero) + :one, failures = :zero,"
                    " created_at = if_not_exists(created_at, :now), updated_at = :now"
                    + set_end_user
                    + " REMOVE lease_until, lease_owner, last_error, pending_pair, pending_version, pending_generation,"
                    + IN_FLIGHT
                    + remove_end_user
                ),
                ExpressionAttributeNames={"#status": "status", "#region": "region"},
                ExpressionAttributeValues={
                    ":active": {"S": ConnectionStatus.ACTIVE},
                    ":arn": {"S": secret_arn},
                    ":email": {"S": email},
                    ":scopes": {"S": scopes},
                    ":region": {"S": region},
                    ":exp": {"N": str(access_expires_at)},
                    ":due": {"N": str(refresh_due_at)},
                    ":shard": {"S": DUE_SHARD},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":now": {"N": str(now)},
                    **binding_values,
                },
                ConditionExpression=condition,
                # ALL_OLD: no attributes back means there was no item. (UPDATED_OLD leaves out attributes whose
                # value did not change, such as an if_not_exists created_at, in moto at least.)
                ReturnValues="ALL_OLD",
            )
        return not answer.get("Attributes")

    def get(self, connection_id: str) -> Connection | None:
        with storage("connections.get"):
            answer = self._client.get_item(
                TableName=self._table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
            )
        item = answer.get("Item")
        return connection_from_item(item) if item else None

    def due(
        self, *, now: int, limit: int, start_key: dict[str, Any] | None = None
    ) -> tuple[list[DueConnection], dict[str, Any] | None]:
        """Active connections whose refresh is due, earliest first, through the sparse index (no scan).
        Returns one page and the key to continue from."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND refresh_due_at <= :now",
            "ExpressionAttributeValues": {":shard": {"S": DUE_SHARD}, ":now": {"N": str(now)}},
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
                access_expires_at=_n(item, "access_expires_at", 0) or 0,
                generation=_n(item, "generation", 0) or 0,
            )
            for item in answer.get("Items", [])
            # A connection leased by another worker is skipped; its lease expiry brings it back.
            if (_n(item, "lease_until", 0) or 0) <= now
        ]
        return due, answer.get("LastEvaluatedKey")

    def acquire_lease(
        self, connection_id: str, *, generation: int, owner: str, now: int, lease_seconds: int
    ) -> Connection:
        """Take the refresh lease: only one worker refreshes a connection at a time. Raises ConditionFailed when
        another worker holds it, the connection was refreshed meanwhile (generation moved), or is not active.

        The same write marks this attempt in flight, unless an earlier one still is (its marker stays: it is the one
        that may have spent the grant). Whatever ends the attempt removes the marker only once the grant's fate is
        known, so a worker that dies anywhere after this leaves the record saying so, at no extra write."""
        with storage("connections.lease"):
            answer = self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET lease_until = :until, lease_owner = :owner,"
                    " in_flight_attempt = if_not_exists(in_flight_attempt, :owner),"
                    " in_flight_since = if_not_exists(in_flight_since, :now)"
                ),
                ConditionExpression=(
                    "#status = :active AND generation = :gen AND refresh_due_at <= :now"
                    " AND (attribute_not_exists(lease_until) OR lease_until <= :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":until": {"N": str(now + lease_seconds)},
                    ":owner": {"S": owner},
                    ":active": {"S": ConnectionStatus.ACTIVE},
                    ":gen": {"N": str(generation)},
                    ":now": {"N": str(now)},
                },
                ReturnValues="ALL_NEW",
            )
        return connection_from_item(answer["Attributes"])

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
        with storage("connections.commit"):
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET access_expires_at = :exp, refresh_due_at = :due, generation = :next, failures = :zero,"
                    " updated_at = :now, refreshed_at = :now"
                    " REMOVE lease_until, lease_owner, last_error, pending_pair, pending_version, pending_generation,"
                    + IN_FLIGHT
                ),
                ConditionExpression="lease_owner = :owner AND generation = :gen",
                ExpressionAttributeValues={
                    ":exp": {"N": str(access_expires_at)},
                    ":due": {"N": str(refresh_due_at)},
                    ":next": {"N": str(generation + 1)},
                    ":zero": {"N": "0"},
                    ":now": {"N": str(now)},
                    ":owner": {"S": owner},
                    ":gen": {"N": str(generation)},
                },
            )

    def keep_pending(
        self, connection_id: str, *, generation: int, owner: str, sealed: bytes, version_id: str, now: int
    ) -> None:
        """Make a new pair durable on the record, sealed, before it is written to its secret: whoever takes the
        lease next (this worker's next sweep, or another worker after a crash) finishes that write first."""
        with storage("connections.keep_pending"):
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET pending_pair = :sealed, pending_version = :version, pending_generation = :gen,"
                    " updated_at = :now"
                ),
                ConditionExpression="lease_owner = :owner AND generation = :gen",
                ExpressionAttributeValues={
                    ":sealed": {"B": sealed},
                    ":version": {"S": version_id},
                    ":gen": {"N": str(generation)},
                    ":now": {"N": str(now)},
                    ":owner": {"S": owner},
                },
            )

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
        with storage("connections.failure"):
            answer = self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET refresh_due_at = :retry, failures = if_not_exists(failures, :zero) + :one,"
                    " last_error = :reason, updated_at = :now REMOVE lease_until, lease_owner"
                    + (", " + IN_FLIGHT if settled else "")
                ),
                ConditionExpression="lease_owner = :owner AND generation = :gen",
                ExpressionAttributeValues={
                    ":retry": {"N": str(retry_at)},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":reason": {"S": reason},
                    ":now": {"N": str(now)},
                    ":owner": {"S": owner},
                    ":gen": {"N": str(generation)},
                },
                ReturnValues="UPDATED_NEW",
            )
        return int(answer["Attributes"]["failures"]["N"])

    def mark_needs_reauth(self, connection_id: str, *, generation: int, owner: str, reason: str, now: int) -> None:
        """The grant is gone at Smartsheet: take the connection out of the sweep until the user signs in again."""
        with storage("connections.needs_reauth"):
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET #status = :status, last_error = :reason, updated_at = :now"
                    " REMOVE lease_until, lease_owner, refresh_due_at, due_shard, " + IN_FLIGHT
                ),
                ConditionExpression="lease_owner = :owner AND generation = :gen",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":status": {"S": ConnectionStatus.NEEDS_REAUTH},
                    ":reason": {"S": reason},
                    ":now": {"N": str(now)},
                    ":owner": {"S": owner},
                    ":gen": {"N": str(generation)},
                },
            )

    # -- operators: the sweep's backlog, counts, listing and one-connection actions (admin CLI) -----------------

    def count_due(
        self, *, now: int, max_pages: int | None = None, keep_going: Callable[[], bool] | None = None
    ) -> tuple[int, bool]:
        """How many active connections are due at `now` (leased ones included): the sweep's backlog when `now` is
        the time the sweep started. COUNT queries on the sparse index, never a scan; each reads up to 1 MB of index
        entries (thousands). With `max_pages`, or when `keep_going` says no before a page after the first, it stops
        early: returns (the count so far, whether it is complete)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND refresh_due_at <= :now",
            "ExpressionAttributeValues": {":shard": {"S": DUE_SHARD}, ":now": {"N": str(now)}},
            "Select": "COUNT",
        }
        total = pages = 0
        while True:
            with storage("connections.count_due"):
                answer = self._client.query(**kwargs)
            total, pages = total + int(answer.get("Count", 0)), pages + 1
            if not answer.get("LastEvaluatedKey"):
                return total, True
            if (max_pages is not None and pages >= max_pages) or (keep_going is not None and not keep_going()):
                return total, False
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

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
            yield from (connection_from_item(item) for item in answer.get("Items", []))
            if not answer.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def request_refresh(self, connection_id: str, *, now: int) -> Connection:
        """Make a connection due now (an operator's "refresh now"): an active one moves to the front of the queue, a
        needs_reauth one goes back to active so its stored refresh token is tried once more (it recovers a grant that
        was marked by mistake, e.g. while the app secret was wrong). Raises ConditionFailed for an unknown or revoked
        connection, or one whose lease another worker holds."""
        with storage("connections.request_refresh"):
            answer = self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET #status = :active, refresh_due_at = :now, due_shard = :shard, updated_at = :now"
                ),
                ConditionExpression=(
                    "attribute_exists(connection_id) AND #status <> :revoked"
                    " AND (attribute_not_exists(lease_until) OR lease_until <= :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":active": {"S": ConnectionStatus.ACTIVE},
                    ":revoked": {"S": ConnectionStatus.REVOKED},
                    ":now": {"N": str(now)},
                    ":shard": {"S": DUE_SHARD},
                },
                ReturnValues="ALL_NEW",
            )
        return connection_from_item(answer["Attributes"])

    def hold(self, connection_id: str, *, owner: str, now: int, lease_seconds: int) -> Connection:
        """Take the lease for an operator action whatever the connection's status, so no sweep refreshes (rotates)
        it meanwhile. Raises ConditionFailed for an unknown connection or one whose lease another worker holds."""
        with storage("connections.hold"):
            answer = self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression="SET lease_until = :until, lease_owner = :owner",
                ConditionExpression=(
                    "attribute_exists(connection_id) AND (attribute_not_exists(lease_until) OR lease_until <= :now)"
                ),
                ExpressionAttributeValues={
                    ":until": {"N": str(now + lease_seconds)},
                    ":owner": {"S": owner},
                    ":now": {"N": str(now)},
                },
                ReturnValues="ALL_NEW",
            )
        return connection_from_item(answer["Attributes"])

    def release(self, connection_id: str, *, owner: str, settled: bool = False) -> None:
        """Give a held lease back unchanged (an operator action that did not go through, a refresh that sent
        nothing). `settled`: the in-flight marker is the releasing attempt's own, and it goes too."""
        with storage("connections.release"):
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression="REMOVE lease_until, lease_owner" + (", " + IN_FLIGHT if settled else ""),
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}},
            )

    def mark_revoked(self, connection_id: str, *, owner: str, reason: str, now: int) -> None:
        """The connection is disconnected: out of the sweep for good, until the user signs in again, and no longer
        bound to its end user (a later sign-in cannot bring it back to them unless they confirm it again). Needs the
        lease taken with hold(); raises ConditionFailed if it was lost (e.g. the user signed in again meanwhile)."""
        with storage("connections.revoke"):
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression=(
                    "SET #status = :revoked, last_error = :reason, updated_at = :now"
                    " REMOVE lease_until, lease_owner, refresh_due_at, due_shard, end_user_id, " + IN_FLIGHT
                ),
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":revoked": {"S": ConnectionStatus.REVOKED},
                    ":reason": {"S": reason},
                    ":now": {"N": str(now)},
                    ":owner": {"S": owner},
                },
            )

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
        items = [connection_from_item(item) for item in answer.get("Items", [])]
        return items, answer.get("LastEvaluatedKey")

    def expedite(self, connection_id: str, *, generation: int, now: int) -> None:
        """Make an active connection due now, for an on-demand refresh through the sweep's own lease. Raises
        ConditionFailed when it is not active, was refreshed since it was read (generation moved), or a worker
        holds its lease: then there is nothing to expedite, only to wait for."""
        with storage("connections.expedite"):
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": connection_id}},
                UpdateExpression="SET refresh_due_at = :now, due_shard = :shard",
                ConditionExpression=(
                    "#status = :active AND generation = :gen"
                    " AND (attribute_not_exists(lease_until) OR lease_until <= :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":now": {"N": str(now)},
                    ":shard": {"S": DUE_SHARD},
                    ":active": {"S": ConnectionStatus.ACTIVE},
                    ":gen": {"N": str(generation)},
                },
            )
