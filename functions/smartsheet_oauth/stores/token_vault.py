"""Per-connection token secrets in Secrets Manager: one secret per connection, a new version per token pair."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.tokens import TokenSet
from smartsheet_oauth.stores.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

# A refreshed pair that is not in its secret yet is kept on the connection record, sealed: AES-256-GCM under a
# data key from KMS (envelope encryption). The data key is made before Smartsheet is called and reused for a few
# minutes, so no KMS call stands between Smartsheet's answer and the pair being durable.
SEAL_FORMAT = 1
DATA_KEY_MAX_AGE_SECONDS = 300.0
DATA_KEY_MAX_USES = 10_000
_NONCE_BYTES = 12
# Secrets Manager's answer to any write to a secret scheduled for deletion (CreateSecret of its name included).
_SCHEDULED_FOR_DELETION = "InvalidRequestException"
_DATA_KEY_CONTEXT = {"purpose": "pending-token-pair", "service": "smartsheet-oauth-broker"}
# Opened data keys kept per container (by their encrypted form), so reading many pairs sealed under one data key
# costs one KMS Decrypt, not one per pair. Bounded in count and age.
OPENED_KEYS_MAX = 64
# Tags every token secret gets at creation, so your code's policies can scope by them (secretsmanager:ResourceTag/...).
PREFIX_TAG = "smartsheet-oauth-broker:secret-prefix"
CONNECTION_TAG = "smartsheet-oauth-broker:connection-id"


class PairSealer:
    """Seals a token pair for the connection record and opens it again (envelope encryption under a KMS key).
    Each sealed pair is bound to its connection, generation and secret version: it cannot be replayed elsewhere."""

    def __init__(
        self,
        kms: Callable[[], KMSClient],
        key_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        context: dict[str, str] | None = None,
    ) -> None:
        self._kms = kms
        self._key_id = key_id
        self._clock = clock
        # The KMS encryption context of every data key: what the key policies and IAM conditions match on.
        self._context = dict(context or _DATA_KEY_CONTEXT)
        self._lock = threading.Lock()
        self._data_key: tuple[bytes, bytes, float] | None = None  # plaintext, encrypted under the KMS key, made at
        self._uses = 0
        self._opened: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()  # encrypted key -> (plaintext, at)

    def prepare(self) -> None:
        """Have a data key at hand (one KMS call every few minutes), so seal() needs no network call."""
        self._key(use=False)

    def seal(self, tokens: TokenSet, *, binding: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 (refresh path only)

        plaintext_key, encrypted_key = self._key(use=True)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(plaintext_key).encrypt(nonce, tokens.to_json().encode(), binding.encode())
        return bytes([SEAL_FORMAT]) + len(encrypted_key).to_bytes(2, "big") + encrypted_key + nonce + sealed

    def open(self, sealed: bytes, *, binding: str) -> TokenSet:
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        if len(sealed) < 3 or sealed[0] != SEAL_FORMAT:
            raise StorageError("vault.unseal", "UnknownSealFormat", transient=False)
        key_length = int.from_bytes(sealed[1:3], "big")
        encrypted_key = sealed[3 : 3 + key_length]
        nonce = sealed[3 + key_length : 3 + key_length + _NONCE_BYTES]
        body = sealed[3 + key_length + _NONCE_BYTES :]
        plaintext_key = self._opened_key(encrypted_key)
        try:
            plaintext = AESGCM(plaintext_key).decrypt(nonce, body, binding.encode())
        except (InvalidTag, ValueError):
            raise StorageError("vault.unseal", "InvalidTag", transient=False) from None
        return TokenSet.from_json(plaintext.decode())

    def _opened_key(self, encrypted_key: bytes) -> bytes:
        now = self._clock()
        with self._lock:
            known = self._opened.get(encrypted_key)
            if known is not None and now - known[1] < DATA_KEY_MAX_AGE_SECONDS:
                self._opened.move_to_end(encrypted_key)
                return known[0]
        with storage("vault.unseal"):
            plaintext_key = self._kms().decrypt(
                CiphertextBlob=encrypted_key, KeyId=self._key_id, EncryptionContext=self._context
            )["Plaintext"]
        with self._lock:
            self._remember(encrypted_key, plaintext_key, now)
        return plaintext_key

    def _remember(self, encrypted_key: bytes, plaintext_key: bytes, at: float) -> None:
        self._opened[encrypted_key] = (plaintext_key, at)
        self._opened.move_to_end(encrypted_key)
        while len(self._opened) > OPENED_KEYS_MAX:
            self._opened.popitem(last=False)

    def _key(self, *, use: bool) -> tuple[bytes, bytes]:
        with self._lock:
            key = self._data_key
            if key is None or self._uses >= DATA_KEY_MAX_USES or self._clock() - key[2] >= DATA_KEY_MAX_AGE_SECONDS:
                with storage("vault.data_key"):
                    answer = self._kms().generate_data_key(
                        KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=self._context
                    )
                key = (answer["Plaintext"], answer["CiphertextBlob"], self._clock())
                self._data_key, self._uses = key, 0
                self._remember(key[1], key[0], key[2])  # what this container seals, it opens without KMS
            if use:
                self._uses += 1
            return key[0], key[1]


def pending_binding(connection_id: str, generation: int, version_id: str) -> str:
    """What a sealed pair is bound to (authenticated, not encrypted)."""
    return f"pending-pair/v{SEAL_FORMAT}/{connection_id}/{generation}/{version_id}"


class TokenVault:
    def __init__(
        self,
        client: SecretsManagerClient,
        prefix: str,
        *,
        kms_key_id: str | None = None,
        sealer: PairSealer | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._kms_key_id = kms_key_id
        # None: no key to seal with, so a pair that cannot be saved has nowhere durable to wait.
        self.sealer = sealer

    def secret_name(self, connection_id: str) -> str:
        return f"{self._prefix}{connection_id}"

    def save(
        self,
        connection_id: str,
        tokens: TokenSet,
        *,
        known_arn: str | None = None,
        version_id: str | None = None,
        generation: int = 0,
    ) -> str:
        """Store the pair as the secret's new AWSCURRENT version (the previous one becomes AWSPREVIOUS) and
        return the secret's ARN. A first sign-in creates the secret.

        With a version_id the write is idempotent: Secrets Manager ignores a repeat of the same version and
        value, so a late retry of a pair that was already stored (and maybe superseded) changes nothing.
        (generation: what the token table binds a pair to; a secret's versions need no such binding.)"""
        del generation
        if known_arn is not None:
            return self._put(known_arn, tokens, version_id)
        name = self.secret_name(connection_id)
        try:
            with storage("vault.create"):
                kwargs: dict[str, Any] = {
                    "Name": name,
                    "SecretString": tokens.to_json(),
                    "Description": f"Smartsheet OAuth tokens of connection {connection_id}",
                    "Tags": [
                        {"Key": PREFIX_TAG, "Value": self._prefix},
                        {"Key": CONNECTION_TAG, "Value": connection_id},
                    ],
                }
                if self._kms_key_id:
                    kwargs["KmsKeyId"] = self._kms_key_id
                return self._client.create_secret(**kwargs)["ARN"]
        except StorageError as exc:
            if exc.code == _SCHEDULED_FOR_DELETION:
                # The name belongs to a disconnected connection's secret, waiting out its recovery window.
                return self._restore_and_put(name, tokens, version_id)
            if exc.code != "ResourceExistsException":
                raise
        # A returning user: one more call (the failed create), no look-up. A secret scheduled for deletion
        # refuses the write; it is restored first.
        try:
            return self._put(name, tokens, version_id)
        except StorageError as exc:
            if exc.code != _SCHEDULED_FOR_DELETION:
                raise
        return self._restore_and_put(name, tokens, version_id)

    def _restore_and_put(self, secret_id: str, tokens: TokenSet, version_id: str | None) -> str:
        """Secrets Manager refuses writes to a secret scheduled for deletion (a disconnected connection's, in its
        recovery window): when its user signs in again, cancel the deletion, then write."""
        with storage("vault.restore"):
            self._client.restore_secret(SecretId=secret_id)
        return self._put(secret_id, tokens, version_id)

    def _put(self, secret_id: str, tokens: TokenSet, version_id: str | None = None) -> str:
        kwargs: dict[str, Any] = {"SecretId": secret_id, "SecretString": tokens.to_json()}
        if version_id:
            kwargs["ClientRequestToken"] = version_id
        with storage("vault.put"):
            return self._client.put_secret_value(**kwargs)["ARN"]

    def save_if_vacant(
        self, connection_id: str, tokens: TokenSet, *, version_id: str, generation: int = 0
    ) -> str | None:
        """Store a pair moved here from the other store (migrate-store) unless a live secret holds another one (a
        sign-in that raced the move): its ARN, or None when it must not be written. A repeat of the same version is
        a no-op. (Between the look and the write a sign-in could still land: a window of one call.)"""
        del generation
        name = self.secret_name(connection_id)
        try:
            with storage("vault.describe"):
                described = self._client.describe_secret(SecretId=name)
        except StorageError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            return self.save(connection_id, tokens, version_id=version_id)
        current = [v for v, stages in described.get("VersionIdsToStages", {}).items() if "AWSCURRENT" in stages]
        if described.get("DeletedDate") is None and current and current != [version_id]:
            return None
        return self.save(connection_id, tokens, version_id=version_id)

    def load(self, secret_id: str) -> TokenSet:
        with storage("vault.load"):
            answer = self._client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        return TokenSet.from_json(answer["SecretString"])

    def schedule_deletion(self, secret_id: str, *, recovery_days: int = 7) -> None:
        """Delete a disconnected connection's secret after a recovery window (7-30 days, Secrets Manager's rule), so
        a mistaken disconnect can still be undone with restore-secret."""
        with storage("vault.delete"):
            self._client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=recovery_days)
