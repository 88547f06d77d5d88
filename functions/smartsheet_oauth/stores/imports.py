"""The import ledger in the state table: one item per imported grant, under a hash of its refresh token, saying how far
its import went (claimed, its new pair kept sealed, imported into a connection, refused), so a re-run skips what is
done and finishes what a crash left half-way (flows/import_grant.py says why and when)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.errors import ConditionFailed
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Shares the state table with sign-ins, connect sessions, completions and the pace; the ':' keeps the kinds apart.
KEY_PREFIX = "grant-import:"
KIND = "grant_import"
SEAL_FORMAT = 1
# A hash domain of its own: the same token hashed for another purpose never gives this key.
_HASH_DOMAIN = b"smartsheet-oauth-broker/grant-import/v1\n"

KEPT, IMPORTED, REFUSED = "kept", "imported", "refused"
DONE = (IMPORTED, REFUSED)


def grant_key(refresh_token: str) -> str:
    """The ledger key of a grant: SHA-256 of its refresh token (never the token itself). A refresh token is a long
    random string, so its hash gives nothing to guess from, and the imported token dies with its one refresh anyway.
    Unkeyed on purpose: the key must stay the same across client-secret rotations, or a re-run after one would send
    the dead token again instead of saying "already imported"."""
    return KEY_PREFIX + hashlib.sha256(_HASH_DOMAIN + refresh_token.encode()).hexdigest()


def sealed_binding(key: str) -> str:
    """What a kept pair is bound to (authenticated, not encrypted): this ledger item, so it cannot be replayed."""
    return f"grant-import/v{SEAL_FORMAT}/{key}"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One grant's import as the ledger has it. `status`: None (nothing durable yet), KEPT, IMPORTED or REFUSED.
    `in_flight_attempt`: the claim owner of the earliest attempt that may have sent the refresh and never came to an
    end (its refresh token may be spent)."""

    key: str
    status: str | None
    owner: str | None
    claim_until: int | None
    sealed: bytes | None
    connection_id: str | None
    reason: str | None
    in_flight_attempt: str | None

    def __repr__(self) -> str:
        return (
            f"LedgerEntry(key={self.key!r}, status={self.status!r}, connection_id={self.connection_id!r},"
            f" reason={self.reason!r}, sealed={'<hidden>' if self.sealed else None})"
        )


def _entry(key: str, item: dict[str, Any]) -> LedgerEntry:
    def s(name: str) -> str | None:
        return str(item[name]["S"]) if name in item else None

    return LedgerEntry(
        key=key,
        status=s("status"),
        owner=s("claim_owner"),
        claim_until=int(item["claim_until"]["N"]) if "claim_until" in item else None,
        sealed=bytes(item["sealed_pair"]["B"]) if "sealed_pair" in item else None,
        connection_id=s("connection_id"),
        reason=s("reason"),
        in_flight_attempt=s("in_flight_attempt"),
    )


class ImportLedger:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def claim(self, key: str, *, owner: str, now: int, seconds: int) -> LedgerEntry:
        """Take the grant for one import attempt, atomically, and mark the attempt in flight (unless an earlier one
        still is: its marker stays, as on a connection's lease). Raises ConditionFailed, with the item as it was,
        when the grant is done (imported or refused) or another attempt holds it."""
        try:
            with storage("imports.claim"):
                answer = self._client.update_item(
                    TableName=self._table,
                    Key={"state": {"S": key}},
                    UpdateExpression=(
                        "SET kind = :kind, claim_until = :until, claim_owner = :owner,"
                        " created_at = if_not_exists(created_at, :now), updated_at = :now,"
                        " attempts = if_not_exists(attempts, :zero) + :one,"
                        " in_flight_attempt = if_not_exists(in_flight_attempt, :owner)"
                    ),
                    ConditionExpression=(
                        "attribute_not_exists(#s) OR (kind = :kind AND NOT #status IN (:imported, :refused)"
                        " AND (attribute_not_exists(claim_until) OR claim_until <= :now))"
                    ),
                    ExpressionAttributeNames={"#s": "state", "#status": "status"},
                    ExpressionAttributeValues={
                        ":kind": {"S": KIND},
                        ":until": {"N": str(now + seconds)},
                        ":owner": {"S": owner},
                        ":now": {"N": str(now)},
                        ":zero": {"N": "0"},
                        ":one": {"N": "1"},
                        ":imported": {"S": IMPORTED},
                        ":refused": {"S": REFUSED},
                    },
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailed as failed:
            if failed.item is None:  # not every DynamoDB (moto) returns the old item: read it
                failed.item = self._get(key)
            raise
        return _entry(key, answer["Attributes"])

    def _get(self, key: str) -> dict[str, Any] | None:
        with storage("imports.get"):
            item = self._client.get_item(TableName=self._table, Key={"state": {"S": key}}, ConsistentRead=True).get(
                "Item"
            )
        return dict(item) if item else None

    def get(self, key: str) -> LedgerEntry | None:
        item = self._get(key)
        return _entry(key, item) if item else None

    def keep(self, key: str, *, owner: str, sealed: bytes, now: int) -> None:
        """The new pair, sealed, is durable here: the grant's fate is known, so the in-flight marker goes."""
        self._update(
            "imports.keep",
            key,
            owner,
            "SET #status = :kept, sealed_pair = :sealed, updated_at = :now REMOVE in_flight_attempt",
            {":kept": {"S": KEPT}, ":sealed": {"B": sealed}, ":now": {"N": str(now)}},
        )

    def release(self, key: str, *, owner: str, settled: bool) -> None:
        """Give the claim back (a kept pair stays). `settled`: this attempt's refresh never reached Smartsheet or was
        refused unprocessed, so its in-flight marker goes too (only if it is its own)."""
        self._update("imports.release", key, owner, "REMOVE claim_until, claim_owner", {})
        if settled:
            try:
                with storage("imports.settle"):
                    self._client.update_item(
                        TableName=self._table,
                        Key={"state": {"S": key}},
                        UpdateExpression="REMOVE in_flight_attempt",
                        ConditionExpression="in_flight_attempt = :owner",
                        ExpressionAttributeValues={":owner": {"S": owner}},
                    )
            except ConditionFailed:
                pass  # an earlier attempt's marker: it stays

    def finish(self, key: str, *, owner: str, status: str, now: int, connection_id: str = "", reason: str = "") -> None:
        """The grant is done: IMPORTED into `connection_id`, or REFUSED for `reason`. The kept pair goes."""
        values: dict[str, Any] = {":status": {"S": status}, ":now": {"N": str(now)}}
        sets = "#status = :status, finished_at = :now, updated_at = :now"
        if connection_id:
            sets += ", connection_id = :connection"
            values[":connection"] = {"S": connection_id}
        if reason:
            sets += ", reason = :reason"
            values[":reason"] = {"S": reason}
        self._update(
            "imports.finish",
            key,
            owner,
            f"SET {sets} REMOVE sealed_pair, claim_until, claim_owner, in_flight_attempt",
            values,
        )

    def _update(self, operation: str, key: str, owner: str, expression: str, values: dict[str, Any]) -> None:
        names = {"#status": "status"} if "#status" in expression else {}
        with storage(operation):
            self._client.update_item(
                TableName=self._table,
                Key={"state": {"S": key}},
                UpdateExpression=expression,
                ConditionExpression="claim_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}, **values},
                **({"ExpressionAttributeNames": names} if names else {}),  # type: ignore[arg-type]
            )
