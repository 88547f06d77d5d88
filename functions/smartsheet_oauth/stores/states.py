"""Pending sign-ins: the one-time OAuth `state`, bound to the browser's nonce, in the state table."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartsheet_oauth.domain.errors import ConditionFailed, SignInRejected
from smartsheet_oauth.stores.connect_sessions import tags_attribute, tags_of
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STATE_BYTES = 32  # 256 bits, URL-safe base64: 43 characters
MAX_STATE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """What /login hands the browser: the state for Smartsheet's URL and the nonce for the cookie."""

    state: str
    nonce: str

    def __repr__(self) -> str:
        return "PendingSignIn(<hidden>)"


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A started sign-in, as kept under its state: the nonce's hash, where to return, its lifetime."""

    nonce_hash: str
    return_to: str | None
    created_at: int
    expires_at: int
    # Set when the sign-in started from a connect session: the integrator's user the connection is bound to.
    end_user_id: str | None = None
    # The Smartsheet region the sign-in chose; None (a state written before regions) means the stack's default.
    region: str | None = None
    # Set when the connect session was a reconnect link: the connection (Smartsheet account) that must sign in.
    connection_id: str | None = None
    # The connect session's tags for the connection (None: it keeps its own).
    tags: dict[str, str] | None = None

    def matches(self, nonce: str | None) -> bool:
        """Constant-time comparison of the cookie's nonce with the stored hash."""
        if not nonce or not nonce.isascii():  # ours are URL-safe base64; anything else (a lone surrogate) can't match
            return False
        return hmac.compare_digest(nonce_hash(nonce), self.nonce_hash)


def nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def is_well_formed_state(value: str) -> bool:
    return 0 < len(value) <= MAX_STATE_LENGTH and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)


class StateStore:
    def __init__(self, client: DynamoDBClient, table_name: str, ttl_seconds: int) -> None:
        self._client = client
        self._table = table_name
        self._ttl = ttl_seconds

    def create(
        self,
        *,
        now: int,
        return_to: str | None = None,
        end_user_id: str | None = None,
        region: str | None = None,
        connection_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> PendingSignIn:
        pending = PendingSignIn(state=secrets.token_urlsafe(STATE_BYTES), nonce=secrets.token_urlsafe(32))
        item = {
            "state": {"S": pending.state},
            "nonce_hash": {"S": nonce_hash(pending.nonce)},
            "created_at": {"N": str(now)},
            "expires_at": {"N": str(now + self._ttl)},
        }
        if return_to:
            item["return_to"] = {"S": return_to}
        if end_user_id:
            item["end_user_id"] = {"S": end_user_id}
        if region:
            item["region"] = {"S": region}
        if connection_id:
            item["connection_id"] = {"S": connection_id}
        item.update(tags_attribute(tags))
        with storage("state.create"):
            # 256 random bits cannot collide in practice; the condition makes a collision an error, not a takeover.
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#s)",
                ExpressionAttributeNames={"#s": "state"},
            )
        return pending

    def consume(self, state: str, *, now: int) -> StateRecord:
        """Delete the state and return what it held, in one atomic call: a state works once, even when two
        callbacks race. Raises SignInRejected when it is unknown, used or expired."""
        if not is_well_formed_state(state):
            raise SignInRejected("malformed_state")
        try:
            with storage("state.consume"):
                answer = self._client.delete_item(
                    TableName=self._table,
                    Key={"state": {"S": state}},
                    ConditionExpression="attribute_exists(#s)",
                    ExpressionAttributeNames={"#s": "state"},
                    ReturnValues="ALL_OLD",
                )
        except ConditionFailed:
            raise SignInRejected("unknown_or_used_state") from None
        item = answer.get("Attributes", {})
        record = StateRecord(
            nonce_hash=item["nonce_hash"]["S"],
            return_to=item["return_to"]["S"] if "return_to" in item else None,
            created_at=int(item["created_at"]["N"]),
            expires_at=int(item["expires_at"]["N"]),
            end_user_id=item["end_user_id"]["S"] if "end_user_id" in item else None,
            region=item["region"]["S"] if "region" in item else None,
            connection_id=item["connection_id"]["S"] if "connection_id" in item else None,
            tags=tags_of(item),
        )
        # TTL deletion is lazy (up to days late) and DynamoDB still returns expired items: check it here.
        if record.expires_at <= now:
            raise SignInRejected("expired_state")
        return record
