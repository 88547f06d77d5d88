"""Completion items in the state table: a connect-session sign-in's new pair, sealed, under the hash of a one-time
code, until the integrator redeems the code (flows/connect.py says why and when)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.errors import CompletionRefused, ConditionFailed, StorageError
from smartsheet_oauth.stores.connect_sessions import tags_attribute, tags_of
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from smartsheet_oauth.domain.tokens import TokenSet
    from smartsheet_oauth.stores.token_vault import PairSealer

COMPLETION_CODE_BYTES = 32  # 256 bits, URL-safe base64: 43 characters
# The browser lands on return_to at once; the integrator may first have to sign its user in again.
COMPLETION_TTL_SECONDS = 600
# A redeem in progress holds the code this long: past API Gateway's 30 s, so a crashed redeem frees it soon after.
CLAIM_SECONDS = 60
# Shares the state table with sign-ins and connect sessions; the ':' keeps the three kinds of key apart.
KEY_PREFIX = "connect-completion:"
KIND = "connect_completion"
SEAL_FORMAT = 1

BOUND, VOIDED = "bound", "voided"


@dataclass(frozen=True, slots=True)
class HeldCompletion:
    """A claimed completion item: whom the sign-in was for, which account finished it, its sealed pair."""

    key: str
    end_user_id: str
    smartsheet_user_id: str
    sealed: bytes
    expires_at: int
    reconnect_of: str | None = None  # a reconnect link's connection
    tags: dict[str, str] | None = None  # the session's tags for the connection (None: it keeps its own)

    def __repr__(self) -> str:
        return (
            f"HeldCompletion(end_user_id={self.end_user_id!r}, smartsheet_user_id={self.smartsheet_user_id!r},"
            f" expires_at={self.expires_at}, sealed=<hidden>)"
        )

    @property
    def binding(self) -> str:
        return _binding(self.key, self.smartsheet_user_id, self.end_user_id)


def _key(code: str) -> str:
    return KEY_PREFIX + hashlib.sha256(code.encode()).hexdigest()


def _binding(key: str, smartsheet_user_id: str, end_user_id: str) -> str:
    """What a sealed pair is bound to (authenticated, not encrypted): this code, this account, this end user."""
    return f"connect-completion/v{SEAL_FORMAT}/{key}/{smartsheet_user_id}/{end_user_id}"


class CompletionStore:
    def __init__(self, client: DynamoDBClient, table_name: str, ttl_seconds: int = COMPLETION_TTL_SECONDS) -> None:
        self._client = client
        self._table = table_name
        self._ttl = ttl_seconds

    def hold(
        self,
        tokens: TokenSet,
        *,
        end_user_id: str,
        sealer: PairSealer | None,
        now: int,
        reconnect_of: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Keep the pair sealed under a new code and return the code (only its hash is stored)."""
        if sealer is None:  # the template always sets PENDING_TOKENS_KEY_ID; without a key, nothing is held
            raise StorageError("completions.seal", "NoSealingKey", transient=False)
        code = secrets.token_urlsafe(COMPLETION_CODE_BYTES)
        key = _key(code)
        item: dict[str, Any] = {
            "state": {"S": key},
            "kind": {"S": KIND},
            "end_user_id": {"S": end_user_id},
            "smartsheet_user_id": {"S": tokens.user_id},
            "sealed_pair": {"B": sealer.seal(tokens, binding=_binding(key, tokens.user_id, end_user_id))},
            "created_at": {"N": str(now)},
            "expires_at": {"N": str(now + self._ttl)},
        }
        if reconnect_of is not None:
            item["reconnect_of"] = {"S": reconnect_of}
        item.update(tags_attribute(tags))
        with storage("completions.hold"):
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#s)",
                ExpressionAttributeNames={"#s": "state"},
            )
        return code

    def claim(self, code: str, *, owner: str, now: int) -> HeldCompletion:
        """Take the code for one redeem, atomically: two redeems of one code never both go on. Raises
        CompletionRefused when it is unknown, used, or being redeemed right now."""
        key = _key(code)
        try:
            with storage("completions.claim"):
                answer = self._client.update_item(
                    TableName=self._table,
                    Key={"state": {"S": key}},
                    UpdateExpression="SET claim_until = :until, claim_owner = :owner",
                    ConditionExpression=(
                        "attribute_exists(#s) AND kind = :kind AND attribute_not_exists(used_at)"
                        " AND (attribute_not_exists(claim_until) OR claim_until <= :now)"
                    ),
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues={
                        ":until": {"N": str(now + CLAIM_SECONDS)},
                        ":owner": {"S": owner},
                        ":kind": {"S": KIND},
                        ":now": {"N": str(now)},
                    },
                    ReturnValues="ALL_NEW",
                )
        except ConditionFailed:
            raise self._why_not_claimed(key, now) from None
        item = answer["Attributes"]
        return HeldCompletion(
            key=key,
            end_user_id=item["end_user_id"]["S"],
            smartsheet_user_id=item["smartsheet_user_id"]["S"],
            sealed=bytes(item["sealed_pair"]["B"]),
            expires_at=int(item["expires_at"]["N"]),
            reconnect_of=item["reconnect_of"]["S"] if "reconnect_of" in item else None,
            tags=tags_of(item),
        )

    def _why_not_claimed(self, key: str, now: int) -> CompletionRefused:
        with storage("completions.get"):
            item = self._client.get_item(TableName=self._table, Key={"state": {"S": key}}, ConsistentRead=True).get(
                "Item"
            )
        if not item or item.get("kind", {}).get("S") != KIND:
            return CompletionRefused(
                "unknown_completion_code",
                "No such completion code: it was never issued, or it expired long ago.",
                status=404,
            )
        if "used_at" in item:
            return CompletionRefused(
                "completion_code_used", "This completion code was already redeemed; a code works once."
            )
        wait = max(1, int(item.get("claim_until", {}).get("N", now)) - now)
        return CompletionRefused(
            "completion_in_progress",
            "This completion code is being redeemed by another request right now.",
            retry_after=wait,
        )

    def finish(self, held: HeldCompletion, *, owner: str, outcome: str, now: int) -> None:
        """Use the code up: its sealed pair goes; what is left answers a replay with completion_code_used until the
        item's TTL removes it."""
        with storage("completions.finish"):
            self._client.update_item(
                TableName=self._table,
                Key={"state": {"S": held.key}},
                UpdateExpression="SET used_at = :now, outcome = :outcome REMOVE sealed_pair, claim_until, claim_owner",
                ConditionExpression="claim_owner = :owner",
                ExpressionAttributeValues={
                    ":now": {"N": str(now)},
                    ":outcome": {"S": outcome},
                    ":owner": {"S": owner},
                },
            )

    def release(self, held: HeldCompletion, *, owner: str) -> None:
        """Give the claim back unchanged (AWS storage failed mid-way): the same code can be redeemed again."""
        with storage("completions.release"):
            self._client.update_item(
                TableName=self._table,
                Key={"state": {"S": held.key}},
                UpdateExpression="REMOVE claim_until, claim_owner",
                ConditionExpression="claim_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
