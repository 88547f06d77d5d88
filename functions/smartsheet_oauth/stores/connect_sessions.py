"""Connect sessions in the state table: one-time login links that bind the connection made through them to an
integrator's end user (what the binding allows: flows/connect.py)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.errors import ConditionFailed, ConnectLinkRejected
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


SESSION_TOKEN_BYTES = 32  # 256 bits, URL-safe base64: 43 characters
# Sessions share the state table with pending sign-ins. Their keys carry a ':' that a state never has, so the
# callback cannot consume a session as a state, nor /login a state as a session.
KEY_PREFIX = "connect-session:"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new session: the token goes into the login link and nowhere else (only its hash is stored)."""

    token: str
    end_user_id: str
    expires_at: int
    connection_id: str | None = None  # a reconnect link: the connection it brings back
    tags: dict[str, str] | None = None  # set on the connection when it is bound (None: left as they are)

    def __repr__(self) -> str:
        return (
            f"IssuedSession(end_user_id={self.end_user_id!r}, connection_id={self.connection_id!r},"
            f" expires_at={self.expires_at}, token=<hidden>)"
        )


@dataclass(frozen=True, slots=True)
class ConnectSession:
    """A login link's binding: the integrator's user, where to return (with the completion code), until when it
    works."""

    end_user_id: str
    return_to: str
    expires_at: int
    # The Smartsheet region the sign-in goes to; None: the stack's default.
    region: str | None = None
    # A reconnect link's connection: the sign-in succeeds only as that Smartsheet account (flows/connect.py).
    connection_id: str | None = None
    # The tags the connection gets when the sign-in is confirmed (None: it keeps its own).
    tags: dict[str, str] | None = None


def _key(token: str) -> str:
    return KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


class ConnectSessionStore:
    def __init__(self, client: DynamoDBClient, table_name: str, ttl_seconds: int) -> None:
        self._client = client
        self._table = table_name
        self._ttl = ttl_seconds

    def create(
        self,
        *,
        end_user_id: str,
        return_to: str,
        now: int,
        region: str | None = None,
        connection_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> IssuedSession:
        token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
        expires_at = now + self._ttl
        item = {
            "state": {"S": _key(token)},
            "kind": {"S": "connect_session"},
            "end_user_id": {"S": end_user_id},
            "return_to": {"S": return_to},
            "created_at": {"N": str(now)},
            "expires_at": {"N": str(expires_at)},
        }
        if region:
            item["region"] = {"S": region}
        if connection_id is not None:
            item["connection_id"] = {"S": connection_id}
        item.update(tags_attribute(tags))
        with storage("sessions.create"):
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#s)",
                ExpressionAttributeNames={"#s": "state"},
            )
        return IssuedSession(
            token=token, end_user_id=end_user_id, expires_at=expires_at, connection_id=connection_id, tags=tags
        )

    def peek(self, token: str, *, now: int) -> ConnectSession:
        """What the session holds, leaving it unused: opening the link (GET) only shows the connect page, so a mail
        or chat scanner that fetches it does not use it up. Raises ConnectLinkRejected like consume()."""
        _check_token(token)
        with storage("sessions.peek"):
            answer = self._client.get_item(
                TableName=self._table, Key={"state": {"S": _key(token)}}, ConsistentRead=True
            )
        item = answer.get("Item")
        if not item or item.get("kind", {}).get("S") != "connect_session":
            raise ConnectLinkRejected("unknown_or_used_session")
        return _session(item, now=now)

    def consume(self, token: str, *, now: int) -> ConnectSession:
        """Delete the session and return what it held, in one atomic call: a link works once, even when it is
        opened twice at the same moment. Raises ConnectLinkRejected when it is unknown, used or expired."""
        _check_token(token)
        try:
            with storage("sessions.consume"):
                answer = self._client.delete_item(
                    TableName=self._table,
                    Key={"state": {"S": _key(token)}},
                    ConditionExpression="attribute_exists(#s) AND kind = :kind",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues={":kind": {"S": "connect_session"}},
                    ReturnValues="ALL_OLD",
                )
        except ConditionFailed:
            raise ConnectLinkRejected("unknown_or_used_session") from None
        return _session(answer.get("Attributes", {}), now=now)


def _check_token(token: str) -> None:
    if not _TOKEN.fullmatch(token):
        raise ConnectLinkRejected("malformed_session")


def _session(item: dict[str, Any], *, now: int) -> ConnectSession:
    # TTL deletion is lazy: an expired item can still be there. A session made before return_to was required has
    # nowhere to send its completion code, so it cannot be finished.
    if int(item["expires_at"]["N"]) <= now:
        raise ConnectLinkRejected("expired_session")
    if "return_to" not in item:
        raise ConnectLinkRejected("session_without_return_to")
    return ConnectSession(
        end_user_id=item["end_user_id"]["S"],
        return_to=item["return_to"]["S"],
        expires_at=int(item["expires_at"]["N"]),
        region=item["region"]["S"] if "region" in item else None,
        connection_id=item["connection_id"]["S"] if "connection_id" in item else None,
        tags=tags_of(item),
    )


def tags_of(item: dict[str, Any]) -> dict[str, str] | None:
    """The tags a session, a state or a completion item carries on to the connection (stored as JSON)."""
    if "tags" not in item:
        return None
    tags = json.loads(item["tags"]["S"])
    return {str(key): str(value) for key, value in tags.items()}


def tags_attribute(tags: dict[str, str] | None) -> dict[str, Any]:
    return {} if tags is None else {"tags": {"S": json.dumps(tags, separators=(",", ":"))}}
