"""Moving every connection's token pair to the other token store (make admin ARGS="migrate-store --to ..."), one
connection at a time under its lease: no refresh (sweep or on-demand) rotates a pair while it moves.

Per connection: hold the lease; read the pair where the record points; write it to the target store unless a live
pair of another version is there (a sign-in that raced the move); read it back and compare; point the record at it
(conditional on the lease, the generation and the old ref, which gives the lease back); retire the old copy (deleted
after its recovery window). A crash anywhere leaves the record on a readable pair: the old one until the record moves,
the new one after. Run it again to finish: what has moved is skipped (its old copy retired if it was not yet), and a
repeated write of the same pair is a no-op (its version id is derived from the connection, generation and old ref)."""

from __future__ import annotations

import contextlib
import hmac
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from smartsheet_oauth.domain.errors import ConditionFailed, StorageError
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.stores.connections import Connection, ConnectionStore
from smartsheet_oauth.stores.token_stores import DYNAMODB, SECRETSMANAGER, TokenStores, store_of

MOVED, ALREADY, BUSY, REVOKED, FAILED = (
    "moved",
    "already there",
    "busy (run again)",
    "revoked (nothing to move)",
    "failed",
)
# The secret's or the item's answer when the old copy is already gone or already retired.
_GONE = frozenset({"ResourceNotFoundException", "InvalidRequestException"})
_VERSIONS = uuid.UUID("6f1b1d2e-6a53-4b5e-9a43-3c9a7b1f0d11")
LEASE_SECONDS = 60


@dataclass
class MigrationReport:
    target: str
    outcomes: Counter[str] = field(default_factory=Counter)
    # connection id -> why it did not move (no token, only codes)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.outcomes[BUSY] == 0 and self.outcomes[FAILED] == 0


def migrate(
    connections: ConnectionStore,
    stores: TokenStores,
    *,
    to: str,
    ids: Iterable[str] | None = None,
    clock: Callable[[], float] = time.time,
    progress: Callable[[int, str, str], None] | None = None,
) -> MigrationReport:
    """Move every connection's pair (or those of `ids`) to the `to` store. Never prints or returns a token."""
    if to not in (SECRETSMANAGER, DYNAMODB):
        raise ValueError(f"--to must be {SECRETSMANAGER} or {DYNAMODB}")
    report = MigrationReport(to)
    records: Iterable[Connection | str] = ids if ids is not None else connections.scan()
    for n, entry in enumerate(records, start=1):
        connection_id = entry if isinstance(entry, str) else entry.connection_id
        outcome = move_one(connections, stores, connection_id, to=to, clock=clock, report=report)
        report.outcomes[outcome] += 1
        if progress is not None:
            progress(n, connection_id, outcome)
    return report


def move_one(
    connections: ConnectionStore,
    stores: TokenStores,
    connection_id: str,
    *,
    to: str,
    clock: Callable[[], float] = time.time,
    report: MigrationReport | None = None,
) -> str:
    report = report or MigrationReport(to)
    owner = f"migrate-store:{uuid.uuid4().hex}"
    try:
        held = connections.hold(connection_id, owner=owner, now=int(clock()), lease_seconds=LEASE_SECONDS)
    except ConditionFailed:
        report.problems[connection_id] = "its lease is held (a refresh is under way)"
        return BUSY
    except StorageError as exc:
        report.problems[connection_id] = f"lease: {exc.code}"
        return FAILED
    old_ref = held.secret_arn
    try:
        if store_of(old_ref) == to:
            _release(connections, held, owner)
            _retire(stores, _other_copy(stores, connection_id, to))
            return ALREADY
        if held.status == ConnectionStatus.REVOKED:
            _release(connections, held, owner)
            return REVOKED
        if held.pending is not None:
            # A refreshed pair waits sealed on the record: the next refresh stores it first; move after that.
            _release(connections, held, owner)
            report.problems[connection_id] = "a kept pair waits for its save"
            return BUSY
        tokens = stores.load(old_ref)
        version = str(uuid.uuid5(_VERSIONS, f"{connection_id}/{held.generation}/{old_ref}"))
        target = stores.table if to == DYNAMODB else stores.secrets
        if target is None:
            raise StorageError("migrate.target", "NoTokenTable", transient=False)
        new_ref = target.save_if_vacant(connection_id, tokens, version_id=version, generation=held.generation)
        if new_ref is None:
            _release(connections, held, owner)
            report.problems[connection_id] = "the target store holds a newer pair (a sign-in): nothing to move"
            return BUSY
        moved = target.load(new_ref)
        if not (
            hmac.compare_digest(moved.refresh_token, tokens.refresh_token)
            and hmac.compare_digest(moved.access_token, tokens.access_token)
        ):
            _release(connections, held, owner)
            report.problems[connection_id] = "the pair read back differs from the one written"
            return FAILED
        try:
            connections.move_pair(
                connection_id, owner=owner, generation=held.generation, old_ref=old_ref, new_ref=new_ref
            )
        except ConditionFailed:
            # Its lease ran out and it was refreshed, or the user signed in again. If the record still points at
            # the old store, the copy just written is nobody's: retired, so the next run may write the target again.
            now = connections.get(connection_id)
            if now is not None and now.secret_arn == old_ref:
                _retire(stores, new_ref)
            report.problems[connection_id] = "changed while it moved (its lease ran out, or a sign-in)"
            return BUSY
    except StorageError as exc:
        _release(connections, held, owner)
        report.problems[connection_id] = f"{exc.operation}: {exc.code}"
        return FAILED
    _retire(stores, old_ref)
    return MOVED


def _other_copy(stores: TokenStores, connection_id: str, to: str) -> str:
    """Where a moved connection's old copy was: the other store's name for it."""
    if to == DYNAMODB:
        return stores.secrets.secret_name(connection_id)
    return stores.table.ref(connection_id) if stores.table is not None else ""


def _retire(stores: TokenStores, ref: str) -> None:
    """The old copy goes after its recovery window (a secret's deletion, a table item's TTL); already gone is fine."""
    if not ref or (store_of(ref) == DYNAMODB and stores.table is None):
        return
    try:
        stores.schedule_deletion(ref)
    except StorageError as exc:
        if exc.code not in _GONE:
            raise


def _release(connections: ConnectionStore, held: Connection, owner: str) -> None:
    with contextlib.suppress(StorageError):  # the lease runs out by itself
        connections.release(held.connection_id, owner=owner)
