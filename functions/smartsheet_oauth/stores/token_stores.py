"""Where a connection's token pair lives: the TokenStore interface the flows use, and the router over both stores.

New pairs go to the stack's configured store (TokenStore parameter); a pair already stored is read and rewritten
where its record says it is (the record's secret_arn: a Secrets Manager ARN, or a token-table ref). So a stack whose
store changed keeps serving every connection while `make admin ARGS="migrate-store --to ..."` moves them, each
under its lease."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.stores.token_table import TokenTable, is_table_ref
from smartsheet_oauth.stores.token_vault import PairSealer, TokenVault

if TYPE_CHECKING:
    from smartsheet_oauth.config import Config
    from smartsheet_oauth.domain.tokens import TokenSet

SECRETSMANAGER = "secretsmanager"
DYNAMODB = "dynamodb"
STORES = (SECRETSMANAGER, DYNAMODB)


class TokenStore(Protocol):
    """What the flows need from a token store: Secrets Manager's TokenVault, the TokenTable, or the router."""

    sealer: PairSealer | None

    def secret_name(self, connection_id: str) -> str: ...

    def save(
        self,
        connection_id: str,
        tokens: TokenSet,
        *,
        known_arn: str | None = None,
        version_id: str | None = None,
        generation: int = 0,
    ) -> str: ...

    def load(self, secret_id: str) -> TokenSet: ...

    def schedule_deletion(self, secret_id: str, *, recovery_days: int = 7) -> None: ...


def store_of(ref: str) -> str:
    """Which store a record's secret_arn points into."""
    return DYNAMODB if is_table_ref(ref) else SECRETSMANAGER


class TokenStores:
    """Both stores behind one TokenStore: new pairs to `default`, stored ones where their ref points."""

    def __init__(self, default: str, *, secrets: TokenVault, table: TokenTable | None) -> None:
        if default not in STORES:
            raise ValueError(f"unknown token store {default!r}")
        if default == DYNAMODB and table is None:
            raise ValueError("the dynamodb token store needs its table")
        self.default = default
        self.secrets = secrets
        self.table = table
        # The kept-pair sealer (a refreshed pair waiting on its record) is the same whatever the store.
        self.sealer = secrets.sealer

    def store(self, name: str) -> TokenStore:
        if name == DYNAMODB:
            if self.table is None:
                raise StorageError("tokens.route", "NoTokenTable", transient=False)
            return self.table
        return self.secrets

    def secret_name(self, connection_id: str) -> str:
        return self.store(self.default).secret_name(connection_id)

    def save(
        self,
        connection_id: str,
        tokens: TokenSet,
        *,
        known_arn: str | None = None,
        version_id: str | None = None,
        generation: int = 0,
    ) -> str:
        target = self.store(store_of(known_arn) if known_arn else self.default)
        return target.save(connection_id, tokens, known_arn=known_arn, version_id=version_id, generation=generation)

    def load(self, secret_id: str) -> TokenSet:
        return self.store(store_of(secret_id)).load(secret_id)

    def schedule_deletion(self, secret_id: str, *, recovery_days: int = 7) -> None:
        self.store(store_of(secret_id)).schedule_deletion(secret_id, recovery_days=recovery_days)


class _Lazy:
    """A boto3 client made on first attribute use (Secrets Manager's, for a dynamodb stack that never touches it)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    def __getattr__(self, name: str) -> Any:
        return getattr(self._make(), name)


def build_token_stores(
    config: Config,
    *,
    dynamodb: Callable[[], Any],
    secrets: Callable[[], Any],
    kms: Callable[[], Any],
    keep_pairs: bool = True,
) -> TokenStores:
    """The stores as a function's configuration names them (services.py and the admin CLI's targets). keep_pairs:
    seal a pair that cannot be saved onto its record (the functions; the admin CLI has done without)."""
    # The KMS client is made on the first seal (refresh only): sign-in with Secrets Manager never pays for it.
    pending = config.pending_tokens_key_id if keep_pairs else None
    sealer = PairSealer(kms, pending) if pending else None
    vault = TokenVault(
        _Lazy(secrets),  # type: ignore[arg-type]
        config.token_secret_prefix,
        kms_key_id=config.token_kms_key_id,
        sealer=sealer,
    )
    table = None
    if config.token_table_name and config.token_kms_key_id:
        table = TokenTable(
            _Lazy(dynamodb),  # type: ignore[arg-type]
            config.token_table_name,
            kms=kms,
            key_id=config.token_kms_key_id,
            sealer=sealer,
        )
    return TokenStores(config.token_store, secrets=vault, table=table)
