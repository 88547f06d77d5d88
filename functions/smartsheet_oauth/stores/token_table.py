"""Per-connection token pairs in a DynamoDB table, sealed client-side (TokenStore=dynamodb): one item per connection.

Each pair is sealed by the same PairSealer that keeps a refreshed pair on its record: AES-256-GCM under a KMS data
key (envelope encryption) from the stack's token key, the associated data binding the connection id, the generation
and the version the pair was written as, so a sealed pair cannot be moved to another connection or version.
A data key seals many pairs for a few minutes, and opened data keys are cached (bounded), so a refresh costs no KMS
call on most connections. smartsheet_oauth_client opens the same items (it holds the format in one copied file:
tests/management/test_token_client_store.py holds the two to one)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.tokens import TokenSet
from smartsheet_oauth.stores.storage_errors import storage
from smartsheet_oauth.stores.token_vault import PairSealer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kms import KMSClient

# The KMS encryption context of the token table's data keys: the key policy and every IAM grant match on it, so a
# role allowed to open token pairs cannot open anything else sealed under the key, and the reverse.
TOKEN_PAIR_CONTEXT = {"purpose": "token-pair", "service": "smartsheet-oauth-broker"}
PAIR_FORMAT = 1
# What a record's secret_arn holds for a pair in the token table (a Secrets Manager ARN for the other store).
REF_SCHEME = "dynamodb-token-table:"
# The answer a retired pair (a disconnected connection's, in its recovery window) gives, as Secrets Manager's does.
RETIRED = "InvalidRequestException"
NOT_FOUND = "ResourceNotFoundException"


def pair_binding(connection_id: str, generation: int, version_id: str) -> str:
    """What a stored pair is bound to (authenticated, not encrypted). smartsheet_oauth_client builds the same."""
    return f"token-pair/v{PAIR_FORMAT}/{connection_id}/{generation}/{version_id}"


def is_table_ref(ref: str) -> bool:
    return ref.startswith(REF_SCHEME)


class TokenTable:
    """The token store's interface (save, load, schedule_deletion) over the token table."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        kms: Callable[[], KMSClient],
        key_id: str,
        clock: Callable[[], float] = time.time,
        sealer: PairSealer | None = None,
    ) -> None:
        self._client = client
        # The kept-pair sealer (a refreshed pair waiting on its record when its save fails), as TokenVault has.
        self.sealer = sealer
        self._table = table_name
        self._clock = clock
        self.pair_sealer = PairSealer(kms, key_id, context=TOKEN_PAIR_CONTEXT)

    def ref(self, connection_id: str) -> str:
        return f"{REF_SCHEME}{connection_id}"

    def secret_name(self, connection_id: str) -> str:
        return self.ref(connection_id)

    def save(
        self,
        connection_id: str,
        tokens: TokenSet,
        *,
        known_arn: str | None = None,
        version_id: str | None = None,
        generation: int = 0,
    ) -> str:
        """Store the pair as the connection's current one (the one it replaces is remembered as previous) and return
        its ref. With a version_id the write is idempotent, as Secrets Manager's is: a repeat of the current or the
        previous version changes nothing, so a late retry of a pair already superseded never brings it back."""
        del known_arn  # one table: the ref is the connection id
        version = version_id or str(uuid.uuid4())
        sealed = self.pair_sealer.seal(tokens, binding=pair_binding(connection_id, generation, version))
        try:
            with storage("tokens.put"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"connection_id": {"S": connection_id}},
                    # The pair it replaces stays as the previous one (as a secret's AWSPREVIOUS version does).
                    UpdateExpression=(
                        "SET previous_pair = if_not_exists(sealed_pair, :none_b),"
                        " previous_version = if_not_exists(pair_version, :none_s),"
                        " previous_generation = if_not_exists(pair_generation, :zero),"
                        " sealed_pair = :sealed, pair_version = :version, pair_generation = :generation,"
                        " updated_at = :now"
                        " REMOVE retired_at, expires_at"
                    ),
                    ConditionExpression=(
                        "attribute_not_exists(pair_version)"
                        " OR (pair_version <> :version AND previous_version <> :version)"
                    ),
                    ExpressionAttributeValues={
                        ":sealed": {"B": sealed},
                        ":version": {"S": version},
                        ":generation": {"N": str(generation)},
                        ":none_b": {"B": b"-"},
                        ":none_s": {"S": "-"},
                        ":zero": {"N": "0"},
                        ":now": {"N": str(int(self._clock()))},
                    },
                )
        except StorageError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            # This version is the current or the previous one already: nothing to write.
        return self.ref(connection_id)

    def save_if_vacant(
        self, connection_id: str, tokens: TokenSet, *, version_id: str, generation: int = 0
    ) -> str | None:
        """Store a pair moved here from the other store (migrate-store) unless the table holds a live pair of another
        version (a sign-in that raced the move): its ref, or None when it must not be written. One conditional
        write: a repeat of the same version is a no-op."""
        sealed = self.pair_sealer.seal(tokens, binding=pair_binding(connection_id, generation, version_id))
        try:
            with storage("tokens.put"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"connection_id": {"S": connection_id}},
                    UpdateExpression=(
                        "SET previous_pair = if_not_exists(sealed_pair, :none_b),"
                        " previous_version = if_not_exists(pair_version, :none_s),"
                        " previous_generation = if_not_exists(pair_generation, :zero),"
                        " sealed_pair = :sealed, pair_version = :version, pair_generation = :generation,"
                        " updated_at = :now REMOVE retired_at, expires_at"
                    ),
                    ConditionExpression="attribute_not_exists(sealed_pair) OR attribute_exists(retired_at)",
                    ExpressionAttributeValues={
                        ":sealed": {"B": sealed},
                        ":version": {"S": version_id},
                        ":generation": {"N": str(generation)},
                        ":none_b": {"B": b"-"},
                        ":none_s": {"S": "-"},
                        ":zero": {"N": "0"},
                        ":now": {"N": str(int(self._clock()))},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except StorageError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            item = getattr(exc, "item", None) or {}
            if item.get("pair_version", {}).get("S") != version_id:
                return None
        return self.ref(connection_id)

    def load(self, ref: str) -> TokenSet:
        """The connection's current pair. Also has a data key at hand for the save that follows a refresh, so no KMS
        call stands between Smartsheet's answer and the new pair being stored (one KMS call every few minutes)."""
        tokens = self._open(ref, previous=False)
        self.pair_sealer.prepare()
        return tokens

    def load_previous(self, ref: str) -> TokenSet:
        """The pair the current one replaced (operators' recovery; a secret's AWSPREVIOUS)."""
        return self._open(ref, previous=True)

    def _open(self, ref: str, *, previous: bool) -> TokenSet:
        connection_id = ref.removeprefix(REF_SCHEME)
        with storage("tokens.get"):
            item = self._client.get_item(
                TableName=self._table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
            ).get("Item")
        if item is None or "sealed_pair" not in item:
            raise StorageError("tokens.get", NOT_FOUND, transient=False)
        if "retired_at" in item:
            raise StorageError("tokens.get", RETIRED, transient=False)
        pair, version, generation = (
            ("previous_pair", "previous_version", "previous_generation")
            if previous
            else ("sealed_pair", "pair_version", "pair_generation")
        )
        if previous and item.get(version, {}).get("S", "-") == "-":
            raise StorageError("tokens.get", NOT_FOUND, transient=False)
        binding = pair_binding(connection_id, int(item[generation]["N"]), item[version]["S"])
        return self.pair_sealer.open(bytes(item[pair]["B"]), binding=binding)

    def schedule_deletion(self, ref: str, *, recovery_days: int = 7) -> None:
        """Retire a disconnected connection's pair: unreadable at once, deleted by the table's TTL after the recovery
        window (as a secret's deletion is), and live again if its user signs in again before then."""
        connection_id = ref.removeprefix(REF_SCHEME)
        now = int(self._clock())
        try:
            with storage("tokens.retire"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"connection_id": {"S": connection_id}},
                    UpdateExpression="SET retired_at = :now, expires_at = :gone",
                    ConditionExpression="attribute_exists(connection_id)",
                    ExpressionAttributeValues={
                        ":now": {"N": str(now)},
                        ":gone": {"N": str(now + recovery_days * 86400)},
                    },
                )
        except StorageError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            raise StorageError("tokens.retire", NOT_FOUND, transient=False) from None
