"""Connect sessions, after the link: the binding checks (one Smartsheet account, one end user, never merged) and
completion codes (a connect-session sign-in is held, its token pair sealed, until the integrator's backend confirms
that the browser which finished it is its own signed-in end user; only then is the connection bound and announced).

A connect link is a bearer link: whoever opens it signs in. So the callback binds nothing. It seals the new pair on a
completion item (stores/completions.py: state table, key = hash of a 256-bit code, lifetime COMPLETION_TTL_SECONDS) and
sends the browser to the session's return_to with the code. The integrator's backend, inside its own authenticated
session, redeems the code for the end user signed in there (POST /connect-sessions/complete); a code redeemed for anyone
else than the session's end user is void and its grant revoked, so a forwarded link never binds the victim's account to
the sender.

Until the code is redeemed nothing else changes: no connection record, no secret version, no event. The account's
existing connection (if any) keeps its tokens. A code works once: the first redeem claims it (a conditional write),
and it is used up by a binding or by a refusal; only a failure of AWS storage gives the claim back for a retry.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.config import MANY_ACCOUNTS
from smartsheet_oauth.domain.errors import (
    BadRequest,
    BindingConflict,
    CompletionRefused,
    ConditionFailed,
    ReconnectWrongAccount,
    SmartsheetError,
    StorageError,
)
from smartsheet_oauth.domain.lifecycle import detail_type, status_after
from smartsheet_oauth.domain.shards import due_jitter
from smartsheet_oauth.domain.tokens import TokenSet, refresh_due_at
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.flows.connect_return import CONNECTED, ERROR, FAILED, OUTCOME, with_params
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores import events
from smartsheet_oauth.stores.completions import BOUND, VOIDED, CompletionStore, HeldCompletion
from smartsheet_oauth.stores.connections import Connection, ConnectionStore
from smartsheet_oauth.stores.token_vault import PairSealer

if TYPE_CHECKING:
    from smartsheet_oauth.config import Config
    from smartsheet_oauth.flows.deps import ManagementDeps
    from smartsheet_oauth.smartsheet.client import SmartsheetClient
    from smartsheet_oauth.stores.connection_tags import ConnectionTagStore
    from smartsheet_oauth.stores.states import StateRecord

CODE_PARAMETER = "completion_code"  # the query parameter of return_to that carries the code
_CODE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class AwaitingConfirmation:
    """A connect-session sign-in held for the integrator: the browser goes to `location` (return_to + the code)."""

    location: str
    smartsheet_user_id: str
    end_user_id: str

    def __repr__(self) -> str:
        return (
            f"AwaitingConfirmation(smartsheet_user_id={self.smartsheet_user_id!r}, end_user_id={self.end_user_id!r},"
            " location=<hidden>)"
        )


@dataclass(frozen=True, slots=True)
class Completed:
    """A redeemed code: the connection now bound to the end user, and whether it is new."""

    connection: Connection
    is_new: bool


def completion_url(return_to: str, code: str) -> str:
    """return_to with outcome=connected and the code added to its query (its own parameters and fragment kept)."""
    return with_params(return_to, {OUTCOME: CONNECTED, CODE_PARAMETER: code})


# ------------------------------------------------------------------------------------------------- binding checks
END_USER_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")


def checked_end_user_id(raw: object) -> str:
    """The integrator's id of its own user: 1-128 characters of letters, digits and . _ : @ + = -"""
    if not isinstance(raw, str) or not END_USER_ID.fullmatch(raw):
        raise BadRequest("end_user_id must be 1 to 128 characters of letters, digits and . _ : @ + = -")
    return raw


def check_binding(
    connections: ConnectionStore, *, end_user_id: str, smartsheet_user_id: str, accounts_per_end_user: str, region: str
) -> None:
    """Refuse to bind when it would merge two identities: the Smartsheet account is bound to another end user (always),
    or, with AccountsPerEndUser=one, the end user already has a different Smartsheet account connected (with `many`
    an end user may own several connections). Revoked connections do not count: their binding ended with them. The
    same end user with the same account simply reconnects. `region` (the signing-in account's) goes on the refusal."""
    existing = connections.get(smartsheet_user_id)
    if (
        existing is not None
        and existing.status != ConnectionStatus.REVOKED
        and existing.end_user_id not in (None, end_user_id)
    ):
        raise BindingConflict(
            "smartsheet_account_bound_to_another_end_user",
            end_user_id=end_user_id,
            smartsheet_user_id=smartsheet_user_id,
            existing_connection_id=existing.connection_id,
            region=region,
        )
    if accounts_per_end_user == MANY_ACCOUNTS:
        return
    start_key = None
    while True:
        page, start_key = connections.page(limit=25, end_user_id=end_user_id, start_key=start_key)
        for other in page:
            if other.connection_id != smartsheet_user_id and other.status != ConnectionStatus.REVOKED:
                raise BindingConflict(
                    "end_user_has_another_smartsheet_account",
                    end_user_id=end_user_id,
                    smartsheet_user_id=smartsheet_user_id,
                    existing_connection_id=other.connection_id,
                    region=region,
                )
        if not start_key:
            return


def bind_or_refuse(
    connections: ConnectionStore,
    smartsheet: SmartsheetClient,
    access_token: str,
    *,
    end_user_id: str,
    smartsheet_user_id: str,
    accounts_per_end_user: str,
    region: str,
) -> None:
    """Before anything is stored: refuse a binding that would merge two identities, and revoke the grant this
    sign-in just got (at its region's API), so no token outlives the refusal. Only that grant: the account's other
    connection (if any) keeps its own."""
    try:
        check_binding(
            connections,
            end_user_id=end_user_id,
            smartsheet_user_id=smartsheet_user_id,
            accounts_per_end_user=accounts_per_end_user,
            region=region,
        )
    except BindingConflict:
        try:
            smartsheet.revoke(access_token, region=region)
        except SmartsheetError as exc:
            logger.warning("could not revoke the refused grant", extra={"reason": exc.reason})
        raise


def refuse_wrong_account(
    smartsheet: SmartsheetClient, access_token: str, record: StateRecord, *, signed_in: str, region: str
) -> None:
    """A reconnect link brings back one connection: any other Smartsheet account that signs in through it is refused
    before anything is held or stored, and the grant it just got is revoked (only that grant)."""
    if record.connection_id is None or record.end_user_id is None or record.return_to is None:
        raise ValueError("not a reconnect link's sign-in")
    try:
        smartsheet.revoke(access_token, region=region)
    except SmartsheetError as exc:
        logger.warning("could not revoke the refused grant", extra={"reason": exc.reason})
    raise ReconnectWrongAccount(
        end_user_id=record.end_user_id,
        smartsheet_user_id=signed_in,
        connection_id=record.connection_id,
        back=with_params(record.return_to, {OUTCOME: FAILED, ERROR: "wrong_account"}),
        region=region,
    )


# ---------------------------------------------------------------------------------------------- redeeming a code
def checked_completion(body: dict[str, Any]) -> tuple[str, str]:
    """(completion_code, end_user_id) from the request body, or BadRequest naming the field."""
    unknown = sorted(set(body) - {"completion_code", "end_user_id"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; the body holds completion_code and end_user_id")
    code = body.get("completion_code")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise BadRequest("completion_code must be the 43-character code return_to received")
    if "end_user_id" not in body:
        raise BadRequest("end_user_id is required: the end user signed in to your app in this request")
    return code, checked_end_user_id(body["end_user_id"])


def complete(deps: ManagementDeps, completions: CompletionStore, body: dict[str, Any]) -> Completed:
    """Redeem a completion code for the end user signed in to the integrator's app: bind the held pair to them, or
    refuse (CompletionRefused) and void the code. A failure of AWS storage gives the code back for a retry."""
    code, end_user_id = checked_completion(body)
    owner = f"api-{uuid.uuid4().hex}"
    held = completions.claim(code, owner=owner, now=int(deps.clock()))
    try:
        return _bind(deps, completions, held, end_user_id=end_user_id, owner=owner)
    except CompletionRefused:
        raise
    except BaseException:
        try:
            completions.release(held, owner=owner)
        except StorageError as exc:  # the claim lapses by itself after CLAIM_SECONDS
            logger.warning("completion claim not released", extra=exc.log_fields())
        raise


def _bind(
    deps: ManagementDeps, completions: CompletionStore, held: HeldCompletion, *, end_user_id: str, owner: str
) -> Completed:
    now = int(deps.clock())
    if held.expires_at <= now:  # TTL deletion is lazy: an expired item can still be there
        _void(deps, completions, held, owner=owner, now=now)
        raise CompletionRefused(
            "completion_code_expired",
            "This completion code expired before it was redeemed; its Smartsheet grant was revoked. The user must"
            " connect again.",
        )
    if held.end_user_id != end_user_id:
        # The browser that finished is not the session's end user: a forwarded (or phished) connect link.
        opened = _void(deps, completions, held, owner=owner, now=now)
        _announce_refusal(deps, held, opened, reason="completed_by_another_end_user")
        raise CompletionRefused(
            "end_user_mismatch",
            "This completion code belongs to a connect session of another end user: the link was opened by someone"
            " else than the user it was made for. Nothing was connected, the code is void and its Smartsheet grant"
            " was revoked.",
        )
    if deps.vault.sealer is None:
        raise StorageError("completions.unseal", "NoSealingKey", transient=False)
    tokens = deps.vault.sealer.open(held.sealed, binding=held.binding)
    try:
        check_binding(
            deps.connections,
            end_user_id=end_user_id,
            smartsheet_user_id=held.smartsheet_user_id,
            accounts_per_end_user=deps.config.accounts_per_end_user,
            region=deps.config.region_of(tokens.region),
        )
    except BindingConflict as conflict:
        _void(deps, completions, held, owner=owner, now=now, tokens=tokens)
        _announce_refusal(
            deps, held, tokens, reason=conflict.reason, existing_connection_id=conflict.existing_connection_id
        )
        raise _conflict(conflict.reason) from None
    return _store(deps, completions, held, tokens, owner=owner, now=now)


def _store(
    deps: ManagementDeps, completions: CompletionStore, held: HeldCompletion, tokens: TokenSet, *, owner: str, now: int
) -> Completed:
    """Secret first, then the record (the record never points at tokens that were not stored). The secret version is
    named after the code, so a retry after a storage failure writes the same version again, which changes nothing."""
    version_id = str(uuid.UUID(hex=hashlib.sha256(held.key.encode()).hexdigest()[:32]))
    secret_arn = deps.vault.save(held.smartsheet_user_id, tokens, version_id=version_id)
    try:
        # The session's tags (if it has any) too, before the code is used up: a storage failure there gives the code
        # back, and the retry binds (again, a no-op) and tags.
        is_new = record_new_pair(
            deps.connections,
            tokens,
            config=deps.config,
            secret_arn=secret_arn,
            now=now,
            end_user_id=held.end_user_id,
            tags=held.tags,
            tag_store=deps.tag_store,
        )
    except ConditionFailed:
        # Bound to another end user in the instant since check_binding looked. The pair is the same Smartsheet
        # account's and now in its secret, serving that connection: it is not revoked, and nothing is rebound.
        completions.finish(held, owner=owner, outcome=VOIDED, now=now)
        reason = "smartsheet_account_bound_to_another_end_user"
        _announce_refusal(deps, held, tokens, reason=reason)
        raise _conflict(reason) from None
    try:
        completions.finish(held, owner=owner, outcome=BOUND, now=now)
    except StorageError as exc:
        # Bound already; the code stays claimed until its claim lapses, and a late replay would store the same
        # secret version again (a no-op) for the same end user.
        logger.error("completion code not marked used", extra=exc.log_fields())
    connection = deps.connections.get(held.smartsheet_user_id)
    if connection is None:  # the record was written a moment ago; only a deletion by hand can get here
        raise StorageError("connections.get", "ConnectionMissing", transient=True)
    # A reconnect link's sign-in recovers its connection (the user came back after needs_reauth): Recovered.
    transition = "confirmed_recovered" if held.reconnect_of else "confirmed_reconnected"
    events.announce(deps.events, "confirmed_created" if is_new else transition, connection)
    return Completed(connection=connection, is_new=is_new)


# ------------------------------------------------------------------------------------------ recording a new pair
def record_new_pair(
    connections: ConnectionStore,
    tokens: TokenSet,
    *,
    config: Config,
    secret_arn: str,
    now: int,
    end_user_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    tag_store: Callable[[], ConnectionTagStore] | None = None,
) -> bool:
    """Record a newly obtained pair, already in its store (`secret_arn`), on its connection (`tokens.user_id`): what
    a sign-in, a confirmed connect session and an import all write, written here once so they cannot drift. The
    connection is active, with the pair's email, scopes, region and expiry; due at the refresh window's start less
    its jitter (domain/shards.due_jitter: pairs obtained together, a batch of imports too, come due spread out, not
    all at once); bound to `end_user_id` when there is one; and a live connection of that id never changes region
    (default_region: the record's own condition, whatever a look before it missed). With `tags` (not None: `{}`
    clears them) the connection's tags become exactly those, its record and the tag index together, after the
    record is written. Returns True when the connection is new; ConditionFailed as record_sign_in raises it (then
    nothing is written, tags neither)."""
    window = config.refresh_window_seconds
    is_new = connections.record_sign_in(
        connection_id=tokens.user_id,
        secret_arn=secret_arn,
        email=tokens.email,
        scopes=tokens.scope,
        region=tokens.region,
        access_expires_at=tokens.expires_at,
        refresh_due_at=refresh_due_at(
            tokens.expires_at, window_seconds=window, now=now, jitter_seconds=due_jitter(tokens.user_id, window)
        ),
        now=now,
        end_user_id=end_user_id,
        default_region=config.region,
    )
    if tags is not None:
        if tag_store is None:
            raise StorageError("tags.table", "NoTagsTable", transient=False)
        _tag(tag_store(), tokens.user_id, tags, now=now)
    return is_new


def _tag(store: ConnectionTagStore, connection_id: str, tags: Mapping[str, str], *, now: int) -> None:
    for _ in range(3):  # a concurrent PUT of its tags: read again (these tags win, they come last)
        try:
            store.replace(connection_id, tags, now=now)
            return
        except ConditionFailed:
            continue
    raise StorageError("tags.write", "ChangedMeanwhile", transient=True)


def _void(
    deps: ManagementDeps,
    completions: CompletionStore,
    held: HeldCompletion,
    *,
    owner: str,
    now: int,
    tokens: TokenSet | None = None,
) -> TokenSet | None:
    """Use the code up without binding, and revoke its grant at Smartsheet (only that grant: the account's own
    connection, if any, keeps its tokens), so no token outlives the refusal. The revoke is best effort. Returns the
    held pair when it could be opened (None: no key, or it would not open)."""
    if tokens is None and deps.vault.sealer is not None:
        try:
            tokens = deps.vault.sealer.open(held.sealed, binding=held.binding)
        except StorageError as exc:
            logger.warning("refused completion's grant not revoked", extra={"reason": exc.code})
    completions.finish(held, owner=owner, outcome=VOIDED, now=now)
    if tokens is not None:
        _revoke(deps.smartsheet(), tokens.access_token, region=tokens.region)
    return tokens


def _revoke(smartsheet: SmartsheetClient, access_token: str, *, region: str | None = None) -> None:
    try:
        smartsheet.revoke(access_token, region=region or None)
    except SmartsheetError as exc:
        logger.warning("refused completion's grant not revoked", extra={"reason": exc.reason})


def _announce_refusal(
    deps: ManagementDeps,
    held: HeldCompletion,
    tokens: TokenSet | None,
    *,
    reason: str,
    existing_connection_id: str | None = None,
) -> None:
    """Binding Conflict for a refused completion, in the region of its held pair (the stack's default when the pair
    could not be opened)."""
    events.emit(
        deps.events,
        events.ConnectionEvent(
            detail_type=detail_type("binding_refused"),
            connection_id=existing_connection_id or held.smartsheet_user_id,
            status=status_after("binding_refused"),
            region=deps.config.region_of(tokens.region if tokens is not None else None),
            end_user_id=held.end_user_id,
            reason=reason,
            extra={"attempted_smartsheet_user_id": held.smartsheet_user_id},
        ),
    )


_CONFLICT_MESSAGES = {
    "smartsheet_account_bound_to_another_end_user": "This Smartsheet account is connected to another end user.",
    "end_user_has_another_smartsheet_account": "This end user already has another Smartsheet account connected"
    " (the stack's AccountsPerEndUser is one; many lets an end user connect several).",
}


def _conflict(reason: str) -> CompletionRefused:
    detail = _CONFLICT_MESSAGES.get(reason, "The binding would merge two identities.")
    return CompletionRefused(
        "binding_conflict",
        f"{detail} Nothing was connected and the code is void; disconnect the other connection first ({reason}).",
    )


def hold_for_confirmation(
    completions: CompletionStore,
    smartsheet: SmartsheetClient,
    tokens: TokenSet,
    *,
    sealer: PairSealer | None,
    end_user_id: str,
    return_to: str,
    now: int,
    reconnect_of: str | None = None,
    tags: dict[str, str] | None = None,
) -> AwaitingConfirmation:
    """The callback's side: hold the new pair under a completion code and point the browser at return_to with it.
    If it cannot be held, the grant is revoked before the failure is reported, so no token outlives it."""
    try:
        code = completions.hold(
            tokens, end_user_id=end_user_id, sealer=sealer, now=now, reconnect_of=reconnect_of, tags=tags
        )
    except StorageError:
        _revoke(smartsheet, tokens.access_token, region=tokens.region)
        raise
    return AwaitingConfirmation(
        location=completion_url(return_to, code), smartsheet_user_id=tokens.user_id, end_user_id=end_user_id
    )
