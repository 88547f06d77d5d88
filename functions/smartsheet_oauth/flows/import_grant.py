"""Importing a grant an integration already holds (its refresh token) as a connection, without its user signing in
again: `make admin ARGS="import FILE"` line by line, and POST /connections/import one grant at a time, both here.

Smartsheet rotates the refresh token on every refresh and kills the old one. So the import proves the grant and makes
it ours with exactly one refresh, and the new pair is made durable before anything else: kept sealed on the grant's
item of the import ledger (stores/imports.py: state table, key = a hash of the imported refresh token), because the
connection it belongs to is not known yet. Only then /users/me names the Smartsheet user (the connection id, as at the
callback), the binding is checked, and under the connection's lease (when it exists already) the pair goes to its
secret and the record is written, as a sign-in writes it. The ledger item then says "imported" and drops the pair.

What a re-run (or a retry of the route) finds on the ledger:
- imported: nothing is sent; the line is "already present" (its refresh token in the file is dead: it is never sent
  again, so a file kept after an import is harmless);
- refused for good (lost in flight, a binding refused and its grant revoked): refused again, nothing sent (a token
  Smartsheet refused is not recorded as final: it is dead, so sending it again on a re-run is harmless, and a wave of
  refusals may be the app's credentials, which a re-run after the fix must be able to import);
- a kept pair: the import goes on from it, without a new refresh;
- an attempt in flight whose refresh may have reached Smartsheet (its process died, or its answer was lost): the
  refresh is sent again; if Smartsheet refuses it, that earlier attempt spent the grant and its answer is lost. That is
  the one window no import can close (as for the sweep: docs/reliability.md), reported as lost_in_flight.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.config import REGIONS
from smartsheet_oauth.domain.errors import (
    BadRequest,
    BindingConflict,
    ConditionFailed,
    Conflict,
    GrantRefused,
    InvalidGrant,
    LineRefused,
    NoTimeToRefresh,
    RefreshLost,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.domain.tags import checked_tags
from smartsheet_oauth.domain.tokens import TokenSet
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.flows import steps
from smartsheet_oauth.flows.connect import check_binding, checked_end_user_id, record_new_pair
from smartsheet_oauth.flows.refresh_window import answer_within
from smartsheet_oauth.flows.refusals import REVOKED_CODE
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores import events
from smartsheet_oauth.stores.imports import IMPORTED, KEPT, REFUSED, LedgerEntry, grant_key, sealed_binding

if TYPE_CHECKING:
    from smartsheet_oauth.config import Config
    from smartsheet_oauth.flows.deps import ManagementDeps
    from smartsheet_oauth.smartsheet.client import SmartsheetClient
    from smartsheet_oauth.stores.connections import Connection
    from smartsheet_oauth.stores.imports import ImportLedger

FIELDS = ("refresh_token", "access_token", "expires_at", "expires_in", "region", "end_user_id", "tags")
MAX_TOKEN_LENGTH = 2048
# How long an import waits for a slot of the pace every refresher shares before it gives up for now.
PACE_WAIT_SECONDS = 10.0
SAVE_RETRY_BASE_SECONDS = 0.2
SAVE_RETRY_CAP_SECONDS = 5.0

# The step boundaries an import passes (steps.py: tests watch them; production passes no watcher).
IMPORT_CLAIMED = "import.claimed"  # the ledger item is this attempt's; nothing reached Smartsheet
IMPORT_SENDING = "import.sending"  # the refresh is about to leave: from here the imported token may be spent
IMPORT_KEPT = "import.kept"  # the new pair is durable, sealed on the ledger item
IMPORT_STORED = "import.stored"  # the pair is in the connection's secret; the record is not written yet
IMPORT_RECORDED = "import.recorded"  # the connection record is written; the ledger does not say imported yet
IMPORT_STEPS = (IMPORT_CLAIMED, IMPORT_SENDING, IMPORT_KEPT, IMPORT_STORED, IMPORT_RECORDED)


@dataclass(frozen=True, slots=True)
class GrantLine:
    """One grant to import, checked. The imported access token and expiry are accepted but not needed: the refresh
    that makes the grant ours kills them and issues a new pair."""

    refresh_token: str
    access_token: str | None = None
    expires_at: int | None = None
    region: str | None = None
    end_user_id: str | None = None
    # Set on the connection once imported (its tags become exactly these); None leaves a known connection's as they are.
    tags: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"GrantLine(region={self.region!r}, end_user_id={self.end_user_id!r}, tokens=<hidden>)"


@dataclass(frozen=True, slots=True)
class Imported:
    """A grant that is a connection now: `already` when an earlier run imported it (nothing was sent this time)."""

    connection: Connection
    is_new: bool
    already: bool


def _token(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    # Never quoted in the message: it is (or may be) a live token.
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_LENGTH:
        raise LineRefused(f"invalid_{name}", f"{name} must be a non-empty string of at most {MAX_TOKEN_LENGTH}")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise LineRefused(f"invalid_{name}", f"{name} must be printable ASCII without spaces")
    return value


def _whole(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LineRefused("invalid_expiry", f"{name} must be a whole number of seconds, 0 or more")
    return value


def checked_grant(body: object, *, config: Config, now: int) -> GrantLine:
    """A line of an import file (or the route's body) as a GrantLine, or LineRefused naming what is wrong (never a
    token's value)."""
    if not isinstance(body, dict):
        raise LineRefused("not_an_object", "a grant is a JSON object")
    unknown = sorted(
        set(body) - {"refresh_token", "access_token", "expires_at", "expires_in", "region", "end_user_id", "tags"}
    )
    if unknown:
        listed = ", ".join(name[:40] for name in unknown[:5])
        raise LineRefused("unknown_field", f"unknown field(s): {listed}; a grant holds {', '.join(FIELDS)}")
    if body.get("refresh_token") in (None, ""):
        raise LineRefused("missing_refresh_token", "refresh_token is required")
    refresh_token = _token(body, "refresh_token")
    access_token = _token(body, "access_token")
    if refresh_token is None:  # pragma: no cover - refused above
        raise LineRefused("missing_refresh_token", "refresh_token is required")
    expires_at, expires_in = _whole(body, "expires_at"), _whole(body, "expires_in")
    if expires_at is not None and expires_in is not None:
        raise LineRefused("invalid_expiry", "give expires_at or expires_in, not both")
    if expires_in is not None:
        expires_at = now + expires_in
    region = _region(body.get("region"), config)
    end_user_id = None
    if body.get("end_user_id") is not None:
        try:
            end_user_id = checked_end_user_id(body["end_user_id"])
        except BadRequest as exc:
            raise LineRefused("invalid_end_user_id", str(exc)) from None
    tags = None
    if body.get("tags") is not None:
        try:
            # The rules of every way tags come in (domain/tags.py); the refusal quotes no key (nor any other value).
            tags = checked_tags(body["tags"], quote_keys=False)
        except BadRequest as exc:
            raise LineRefused("invalid_tags", str(exc)) from None
    return GrantLine(
        refresh_token=refresh_token,
        access_token=access_token,
        expires_at=expires_at,
        region=region,
        end_user_id=end_user_id,
        tags=tags,
    )


def _region(region: object, config: Config) -> str | None:
    if region is not None:
        if not isinstance(region, str) or region.lower() not in REGIONS:
            raise LineRefused("invalid_region", f"region must be one of {', '.join(REGIONS)}")
        region = region.lower()
        # A token works only in the region that issued it: the stack must serve it (SmartsheetRegion, AllowedRegions).
        if region not in config.regions_allowed():
            raise LineRefused(
                "region_not_served",
                f"this stack serves Smartsheet's {', '.join(config.regions_allowed())} region(s) (SmartsheetRegion,"
                f" AllowedRegions); a {region} grant only works where {region} is allowed",
            )
    return region


# ---------------------------------------------------------------------------------------------------- importing
def import_grant(
    deps: ManagementDeps,
    ledger: ImportLedger,
    grant: GrantLine,
    *,
    time_left: Callable[[], float] | None = None,
    watcher: steps.StepWatcher | None = None,
) -> Imported:
    """Import one grant (the module's docstring says how). Returns Imported; raises GrantRefused, Conflict
    (another attempt holds the grant or its connection: retry_after), PaceExhausted, TransientSmartsheetError,
    SmartsheetError (the app's problem, not the grant's), StorageError or RefreshLost (the new pair could not be
    kept: the grant is lost)."""
    key = grant_key(grant.refresh_token)
    owner = f"import-{uuid.uuid4().hex}"
    now = int(deps.clock())
    started = deps.monotonic()
    deadline = started + deps.config.lease_seconds - 15.0
    if time_left is not None:
        deadline = min(deadline, started + time_left())
    try:
        entry = ledger.claim(key, owner=owner, now=now, seconds=deps.config.lease_seconds)
    except ConditionFailed as failed:
        return _done_or_busy(deps, key, failed.item, now)
    steps.passed(watcher, IMPORT_CLAIMED)
    if entry.status == KEPT and entry.sealed is not None:
        try:
            tokens = _open(deps, entry)
        except BaseException:
            _release(ledger, key, owner, settled=False)
            raise
    else:
        tokens = _exchange(
            deps, ledger, entry=entry, grant=grant, owner=owner, deadline=deadline, watcher=watcher
        )  # gives the claim back if it fails
    try:
        return _make_ours(deps, ledger, entry=entry, grant=grant, tokens=tokens, owner=owner, watcher=watcher)
    except GrantRefused:
        raise  # the ledger item says refused already
    except BaseException:
        # The pair stays kept on the ledger item; the next attempt goes on from it.
        _release(ledger, key, owner, settled=False)
        raise


def _done_or_busy(deps: ManagementDeps, key: str, item: dict[str, Any] | None, now: int) -> Imported:
    status = (item or {}).get("status", {}).get("S")
    if status == IMPORTED:
        connection_id = item["connection_id"]["S"] if item and "connection_id" in item else ""
        connection = deps.connections.get(connection_id) if connection_id else None
        if connection is None:
            raise GrantRefused(
                "imported_connection_gone",
                "This grant was imported before, and its connection is gone since: the refresh token in the file is"
                " dead. The user must connect again.",
            )
        return Imported(connection=connection, is_new=False, already=True)
    if status == REFUSED:
        reason = (item or {}).get("reason", {}).get("S", "grant_refused")
        raise _refusal(reason)
    until = int((item or {}).get("claim_until", {}).get("N", now + 1))
    raise Conflict(
        "import_in_progress",
        "Another import of this grant is under way; ask again shortly.",
        retry_after=max(1, until - now),
    )


def _release(ledger: ImportLedger, key: str, owner: str, *, settled: bool) -> None:
    try:
        ledger.release(key, owner=owner, settled=settled)
    except StorageError as exc:  # the claim lapses by itself
        logger.warning("import claim not released", extra={"reason": exc.code})


_REFUSALS = {
    "grant_refused": "Smartsheet refused this refresh token (invalid_grant): it is dead, revoked or not this app's."
    " The user must connect again.",
    "lost_in_flight": "An earlier import of this grant sent its refresh and never received the answer: Smartsheet"
    " rotated the grant and the new pair is lost. The user must connect again.",
    "smartsheet_account_bound_to_another_end_user": "This Smartsheet account is connected to another end user.",
    "end_user_has_another_smartsheet_account": "This end user already has another Smartsheet account connected"
    " (the stack's AccountsPerEndUser is one; many lets an end user connect several).",
    "account_bound_to_an_end_user": "This Smartsheet account is connected to one of your end users: import it with"
    " that end_user_id.",
    "region_conflict": "This Smartsheet user id is already a connection of another region; nothing was connected and"
    " the imported grant was revoked.",
}
_BINDING = ("smartsheet_account_bound_to_another_end_user", "end_user_has_another_smartsheet_account")


def _refusal(reason: str) -> GrantRefused:
    """The refusal a ledger reason answers (the same on every re-run)."""
    message = _REFUSALS.get(reason, "The grant was refused.")
    if reason in _BINDING or reason == "account_bound_to_an_end_user":
        detail = f"{message} Nothing was connected and the imported grant was revoked ({reason})."
        return GrantRefused("binding_conflict", detail, status=409)
    if reason == "region_conflict":
        return GrantRefused("region_conflict", message, status=409)
    if reason == "lost_in_flight":
        return GrantRefused("lost_in_flight", message)
    return GrantRefused("grant_refused", message)


def _open(deps: ManagementDeps, entry: LedgerEntry) -> TokenSet:
    if deps.vault.sealer is None or entry.sealed is None:
        raise StorageError("imports.unseal", "NoSealingKey", transient=False)
    return deps.vault.sealer.open(entry.sealed, binding=sealed_binding(entry.key))


def _exchange(
    deps: ManagementDeps,
    ledger: ImportLedger,
    *,
    entry: LedgerEntry,
    grant: GrantLine,
    owner: str,
    deadline: float,
    watcher: steps.StepWatcher | None,
) -> TokenSet:
    """The one refresh, at the shared pace, and the new pair kept on the ledger item before anything else."""
    sealer = deps.vault.sealer
    if sealer is None:  # without a key the new pair could not be made durable: refresh nothing
        raise StorageError("imports.seal", "NoSealingKey", transient=False)
    own_marker = entry.in_flight_attempt == owner
    region = deps.config.region_of(grant.region)
    try:
        smartsheet = deps.smartsheet()  # reads the app credentials on first use
        sealer.prepare()  # the data key before the send: no KMS call between the answer and the keep
        if deps.pace is not None:
            deps.pace.take_one(max_wait=min(PACE_WAIT_SECONDS, max(0.0, deadline - deps.monotonic() - 10.0)))
    except BaseException:
        _release(ledger, entry.key, owner, settled=own_marker)  # nothing was sent
        raise
    steps.passed(watcher, IMPORT_SENDING)
    try:
        answer = smartsheet.refresh(
            grant.refresh_token, answer_within=answer_within(deadline - deps.monotonic()), region=region
        )
    except NoTimeToRefresh:
        _release(ledger, entry.key, owner, settled=own_marker)  # nothing was sent
        raise
    except InvalidGrant as exc:
        # 1132 names a token revoked at Smartsheet (by its user or an admin): alive until then, so no attempt of
        # ours spent it.
        if entry.in_flight_attempt in (None, owner) or exc.error_code == REVOKED_CODE:
            # Not recorded as final: the token is dead (sending it again is harmless) or, when a wave of these
            # comes, the app's credentials are wrong (1071 for a bad hash: SMARTSHEET.md), and a re-run after the
            # fix imports it. A refusal is an answer: this attempt rotated nothing.
            _release(ledger, entry.key, owner, settled=True)
            logger.warning("import refused by Smartsheet", extra={"reason": exc.reason})
            raise _refusal("grant_refused") from None
        # An earlier attempt may have sent this same token: it spent the grant, and its answer is lost. Final.
        ledger.finish(entry.key, owner=owner, status=REFUSED, reason="lost_in_flight", now=int(deps.clock()))
        logger.warning("import lost in flight", extra={"reason": exc.reason})
        raise _refusal("lost_in_flight") from None
    except TransientSmartsheetError as exc:
        _release(ledger, entry.key, owner, settled=own_marker and not exc.outcome_unknown)
        raise
    except SmartsheetError as exc:
        # invalid_client and other 4xx: the app's problem, not the grant's. A malformed 2xx may hide a rotation.
        _release(ledger, entry.key, owner, settled=own_marker and exc.status is not None and exc.status >= 400)
        raise
    except BaseException:
        _release(ledger, entry.key, owner, settled=False)
        raise
    obtained = int(deps.clock())
    tokens = TokenSet.from_grant(
        answer,
        obtained_at=obtained,
        scope=" ".join(deps.config.scopes),
        region=region,
        user_id="",
        email="",
    )
    _keep(deps, ledger, key=entry.key, owner=owner, tokens=tokens, deadline=deadline)
    steps.passed(watcher, IMPORT_KEPT)
    return tokens


def _keep(
    deps: ManagementDeps, ledger: ImportLedger, *, key: str, owner: str, tokens: TokenSet, deadline: float
) -> None:
    """Seal the new pair onto the ledger item, retrying until the deadline: the imported token is dead now."""
    sealer = deps.vault.sealer
    if sealer is None:  # checked before the send
        raise StorageError("imports.seal", "NoSealingKey", transient=False)
    attempt = 0
    while True:
        try:
            ledger.keep(
                key, owner=owner, sealed=sealer.seal(tokens, binding=sealed_binding(key)), now=int(deps.clock())
            )
            return
        except StorageError as exc:
            reason = exc.code
        delay = min(SAVE_RETRY_CAP_SECONDS, SAVE_RETRY_BASE_SECONDS * 2**attempt)
        if deps.monotonic() + delay >= deadline:
            logger.critical(
                "imported grant's new pair could not be kept: the grant is lost", extra={"reason": f"keep:{reason}"}
            )
            # The claim keeps its in-flight marker: a re-run finds the grant lost (lost_in_flight).
            raise RefreshLost(f"the new pair could not be kept ({reason})")
        deps.sleep(delay)
        attempt += 1


def _make_ours(
    deps: ManagementDeps,
    ledger: ImportLedger,
    *,
    entry: LedgerEntry,
    grant: GrantLine,
    tokens: TokenSet,
    owner: str,
    watcher: steps.StepWatcher | None,
) -> Imported:
    """Learn whose grant it is, check the binding, store the pair under the connection's lease, record the
    connection as a sign-in does, and mark the grant imported."""
    smartsheet = deps.smartsheet()
    region = tokens.region
    user = smartsheet.current_user(tokens.access_token, region=region)
    tokens = replace(tokens, user_id=user.id, email=user.email)
    existing = deps.connections.get(user.id)
    # Connection ids are Smartsheet user ids: one id is never a connection of two regions (sign_in.py).
    _refuse_other_region(deps, ledger, existing, key=entry.key, owner=owner, smartsheet=smartsheet, tokens=tokens)
    try:
        _check_binding(deps, existing, end_user_id=grant.end_user_id, smartsheet_user_id=user.id, region=region)
    except BindingConflict as conflict:
        _refuse_binding(
            deps, ledger, key=entry.key, owner=owner, smartsheet=smartsheet, tokens=tokens, conflict=conflict
        )
    now = int(deps.clock())
    held = None
    if existing is not None:
        try:
            held = deps.connections.hold(user.id, owner=owner, now=now, lease_seconds=deps.config.lease_seconds)
        except ConditionFailed:
            current = deps.connections.get(user.id)
            wait = max(1, ((current.lease_until if current else None) or now) - now)
            raise Conflict(
                "connection_busy",
                "A refresh of this grant's connection is under way; the new pair is kept: ask again shortly.",
                retry_after=wait,
            ) from None
    try:
        try:
            # Named after the ledger item: a retry after a failure writes the same version again, which changes nothing.
            version_id = str(uuid.UUID(hex=hashlib.sha256(entry.key.encode()).hexdigest()[:32]))
            secret_arn = deps.vault.save(
                user.id,
                tokens,
                known_arn=held.secret_arn if held else None,
                version_id=version_id,
                generation=held.generation if held else 0,
            )
            steps.passed(watcher, IMPORT_STORED, user.id)
            # As a sign-in records it (its due time spread, its region kept), with the grant's tags if it has any.
            is_new = record_new_pair(
                deps.connections,
                tokens,
                config=deps.config,
                secret_arn=secret_arn,
                now=now,
                end_user_id=grant.end_user_id,
                tags=grant.tags,
                tag_store=deps.tag_store,
            )
        except ConditionFailed:
            # Another region's sign-in of this id may have won the instant since the look above (the record's condition
            # refused the region change), and this pair has replaced its pair in the secret: refused and revoked as a
            # sign-in is, so that connection never hands out a live token of this grant (it goes needs_reauth at its
            # next refresh and its user signs in again).
            now_there = deps.connections.get(user.id)
            _refuse_other_region(
                deps, ledger, now_there, key=entry.key, owner=owner, smartsheet=smartsheet, tokens=tokens
            )
            # Bound to an end user in the instant since the check: the pair is this same account's and serves it now.
            reason = "account_bound_to_an_end_user" if grant.end_user_id is None else _BINDING[0]
            ledger.finish(entry.key, owner=owner, status=REFUSED, reason=reason, now=int(deps.clock()))
            raise _refusal(reason) from None
    except BaseException:
        # Whatever ends the import here (a refusal above included), a held lease goes back at once.
        if held is not None:
            try:
                deps.connections.release(user.id, owner=owner)
            except StorageError as exc:  # the lease runs out by itself
                logger.warning("import lease not released", extra={"connection_id": user.id, "reason": exc.code})
        raise
    steps.passed(watcher, IMPORT_RECORDED, user.id)
    ledger.finish(entry.key, owner=owner, status=IMPORTED, connection_id=user.id, now=int(deps.clock()))
    connection = deps.connections.get(user.id)
    if connection is None:  # written a moment ago; only a deletion by hand gets here
        raise StorageError("connections.get", "ConnectionMissing", transient=True)
    bound = grant.end_user_id is not None
    transition = ("confirmed_" if bound else "") + ("created" if is_new else "reconnected")
    events.announce(deps.events, transition, connection)
    logger.info("grant imported", extra={"connection_id": user.id, "is_new": is_new})
    return Imported(connection=connection, is_new=is_new, already=False)


def _check_binding(
    deps: ManagementDeps, existing: Connection | None, *, end_user_id: str | None, smartsheet_user_id: str, region: str
) -> None:
    """A bound import checks as a confirmed connect session does; an unbound one may not take a connection bound to
    an end user (only that end user's confirmed connect session, or a bound import for them, may)."""
    if end_user_id is not None:
        check_binding(
            deps.connections,
            end_user_id=end_user_id,
            smartsheet_user_id=smartsheet_user_id,
            accounts_per_end_user=deps.config.accounts_per_end_user,
            region=region,
        )
        return
    if existing is not None and existing.end_user_id and existing.status != ConnectionStatus.REVOKED:
        raise BindingConflict(
            "account_bound_to_an_end_user",
            end_user_id=existing.end_user_id,
            smartsheet_user_id=smartsheet_user_id,
            existing_connection_id=smartsheet_user_id,
            region=region,
        )


def _refuse_other_region(
    deps: ManagementDeps,
    ledger: ImportLedger,
    existing: Connection | None,
    *,
    key: str,
    owner: str,
    smartsheet: SmartsheetClient,
    tokens: TokenSet,
) -> None:
    """Refuse (region_conflict, the grant revoked) when the id is a live connection of another region."""
    if (
        existing is None
        or deps.config.region_of(existing.region) == tokens.region
        or existing.status == ConnectionStatus.REVOKED
    ):
        return
    conflict = BindingConflict(
        "region_conflict",
        end_user_id="",
        smartsheet_user_id=tokens.user_id,
        existing_connection_id=tokens.user_id,
        region=tokens.region,
    )
    _refuse_binding(deps, ledger, key=key, owner=owner, smartsheet=smartsheet, tokens=tokens, conflict=conflict)


def _refuse_binding(
    deps: ManagementDeps,
    ledger: ImportLedger,
    *,
    key: str,
    owner: str,
    smartsheet: SmartsheetClient,
    tokens: TokenSet,
    conflict: BindingConflict,
) -> None:
    """Nothing is bound or stored; the grant this import made ours is revoked (only it: the account's connection,
    if any, keeps its own), so no token outlives the refusal."""
    ledger.finish(key, owner=owner, status=REFUSED, reason=conflict.reason, now=int(deps.clock()))
    try:
        smartsheet.revoke(tokens.access_token, region=tokens.region)
    except SmartsheetError as exc:
        logger.warning("refused import's grant not revoked", extra={"reason": exc.reason})
    raise _refusal(conflict.reason) from None


def retry_after_of(exc: BaseException) -> int | None:
    """Seconds after which a failed import may be tried again, where the failure says."""
    value = getattr(exc, "retry_after", None)
    return math.ceil(value) if isinstance(value, int | float) and value > 0 else None
