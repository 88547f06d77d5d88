"""Per-connection token secrets in Secrets Manager: one secret per connection, a new version per token pair."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.errors import StorageError
from smartsheet_oauth.storage_errors import storage

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The secret's JSON document. repr hides the tokens."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_at: int
    scope: str
    region: str
    user_id: str
    email: str
    obtained_at: int

    def __repr__(self) -> str:
        return f"TokenSet(user_id={self.user_id!r}, expires_at={self.expires_at}, tokens=<hidden>)"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> TokenSet:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            token_type=str(data.get("token_type", "bearer")),
            expires_at=int(data["expires_at"]),
            scope=str(data.get("scope", "")),
            region=str(data.get("region", "")),
            user_id=str(data.get("user_id", "")),
            email=str(data.get("email", "")),
            obtained_at=int(data.get("obtained_at", 0)),
        )


class TokenVault:
    def __init__(self, client: SecretsManagerClient, prefix: str, *, kms_key_id: str | None = None) -> None:
        self._client = client
        self._prefix = prefix
        self._kms_key_id = kms_key_id

    def secret_name(self, connection_id: str) -> str:
        return f"{self._prefix}{connection_id}"

    def save(self, connection_id: str, tokens: TokenSet, *, known_arn: str | None = None) -> str:
        """Store the pair as the secret's new AWSCURRENT version (the previous one becomes AWSPREVIOUS) and
        return the secret's ARN. A first sign-in creates the secret."""
        if known_arn is not None:
            return self._put(known_arn, tokens)
        name = self.secret_name(connection_id)
        try:
            with storage("vault.create"):
                kwargs: dict[str, Any] = {
                    "Name": name,
                    "SecretString": tokens.to_json(),
                    "Description": f"Smartsheet OAuth tokens of connection {connection_id}",
                }
                if self._kms_key_id:
                    kwargs["KmsKeyId"] = self._kms_key_id
                return self._client.create_secret(**kwargs)["ARN"]
        except StorageError as exc:
            # InvalidRequestException: the name belongs to a secret scheduled for deletion (AWS; moto says exists).
            if exc.code not in ("ResourceExistsException", "InvalidRequestException"):
                raise
        self._restore_if_deleted(name)
        return self._put(name, tokens)

    def _restore_if_deleted(self, secret_id: str) -> None:
        """A disconnected connection's secret waits out its recovery window, and Secrets Manager refuses writes to
        a secret scheduled for deletion: when its user signs in again, cancel the deletion first."""
        with storage("vault.describe"):
            deleted = "DeletedDate" in self._client.describe_secret(SecretId=secret_id)
        if deleted:
            with storage("vault.restore"):
                self._client.restore_secret(SecretId=secret_id)

    def _put(self, secret_id: str, tokens: TokenSet) -> str:
        with storage("vault.put"):
            return self._client.put_secret_value(SecretId=secret_id, SecretString=tokens.to_json())["ARN"]

    def load(self, secret_id: str) -> TokenSet:
        with storage("vault.load"):
            answer = self._client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        return TokenSet.from_json(answer["SecretString"])

    def schedule_deletion(self, secret_id: str, *, recovery_days: int = 7) -> None:
        """Delete a disconnected connection's secret after a recovery window (7-30 days, Secrets Manager's rule), so
        a mistaken disconnect can still be undone with restore-secret."""
        with storage("vault.delete"):
            self._client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=recovery_days)
