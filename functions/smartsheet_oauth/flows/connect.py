"""Completion codes: a connect-session sign-in is held, its token pair sealed, until the integrator's backend confirms
that the browser which finished it is its own signed-in end user; only then is the connection bound and announced.

A connect link is a bearer link: whoever opens it signs in. So the callback binds nothing. It seals the new pair on a
completion item (state table, key = hash of a 256-bit code, lifetime COMPLETION_TTL_SECONDS) and sends the browser
to the session's return_to with the code. The integrator's backend, inside its own authenticated session, redeems the
code for the end user signed in there (POST /connect-sessions/complete); a code redeemed for anyone else than the
session's end user is void and its grant revoked, so a forwarded link never binds the victim's account to the sender.

Until the code is redeemed nothing else changes: no connection record, no secret version, no event. The account's
existing connection (if any) keeps its tokens. A code works once: the first redeem claims it (a conditional write),
and it is used up by a binding or by a refusal; only a failure of AWS storage gives the claim back for a retry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from smartsheet_oauth.domain.errors import (
    BadRequest,
    BindingConflict,
    CompletionRefused,
    ConditionFailed,
    SmartsheetError,
    StorageError,
)
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores import events
from smartsheet_oauth.stores.connect_sessions import check_binding, checked_end_user_id
from smartsheet_oauth.stores.connections import ACTIVE, Connection
from smartsheet_oauth.stores.storage_errors import storage
from smartsheet_oauth.stores.token_vault import PairSealer, TokenSet

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from smartsheet_oauth.flows.management import ManagementDeps
    from smartsheet_oauth.smartsheet.client import SmartsheetClient

COMPLETION_CODE_BYTES = 32  # 256 bits, URL-safe base64: 43 characters
# The browser lands on return_to at once; the integrator may first have to sign its user in again.
COMPLETION_TTL_SECONDS = 600
# A redeem in progress holds the code this long: past API Gateway's 30 s, so a crashed redeem frees it soon after.
CLAIM_SECONDS = 60
# Shares the state table with sign-ins and connect sessions; the ':' keeps the three kinds of key apart.
KEY_PREFIX = "connect-completion:"
KIND = "connect_completion"
CODE_PARAMETER = "completion_code"  # the query parameter of return_to that carries the code
_CODE = re.compile(r"[A-Za-z0-9_-]{43}")
SEAL_FORMAT = 1

BOUND, VOIDED = "bound", "voided"


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
class HeldCompletion:
    """A claimed completion item: whom the sign-in was for, which account finished it, its sealed pair."""

    key: str
    end_user_id: str
    smartsheet_user_id: str
    sealed: bytes
    expires_at: int

    def __repr__(self) -> str:
        return (
            f"HeldCompletion(end_user_id={self.end_user_id!r}, smartsheet_user_id={self.smartsheet_user_id!r},"
            f" expires_at={self.expires_at}, sealed=<hidden>)"
        )

    @property
    def binding(self) -> str:
        return _binding(self.key, self.smartsheet_user_id, self.end_user_id)


@dataclass(frozen=True, slots=True)
class Completed:
    """A redeemed code: the connection now bound to the end user, and whether it is new."""

    connection: Connection
    is_new: bool


def _key(code: str) -> str:
    return KEY_PREFIX + hashlib.sha256(code.encode()).hexdigest()


def _binding(key: str, smartsheet_user_id: str, end_user_id: str) -> str:
    """What a sealed pair is bound to (authenticated, not encrypted): this code, this account, this end user."""
    return f"connect-completion/v{SEAL_FORMAT}/{key}/{smartsheet_user_id}/{end_user_id}"


def completion_url(return_to: str, code: str) -> str:
    """return_to with the code added to its query (its own parameters and fragment kept)."""
    parts = urlsplit(return_to)
    extra = urlencode({CODE_PARAMETER: code})
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


class CompletionStore:
    def __init__(self, client: DynamoDBClient, table_name: str, ttl_seconds: int = COMPLETION_TTL_SECONDS) -> None:
        self._client = client
        self._table = table_name
        self._ttl = ttl_seconds

    def hold(self, tokens: TokenSet, *, end_user_id: str, sealer: PairSealer | None, now: int) -> str:
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
            logger.warning("completion claim not released", extra={"code": exc.code})
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
        _void(deps, completions, held, owner=owner, now=now)
        _announce_refusal(deps, held, reason="completed_by_another_end_user")
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
        check_binding(deps.connections, end_user_id=end_user_id, smartsheet_user_id=held.smartsheet_user_id)
    except BindingConflict as conflict:
        _void(deps, completions, held, owner=owner, now=now, tokens=tokens)
        _announce_refusal(deps, held, reason=conflict.reason, existing_connection_id=conflict.existing_connection_id)
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
        is_new = deps.connections.record_sign_in(
            connection_id=held.smartsheet_user_id,
            secret_arn=secret_arn,
            email=tokens.email,
            scopes=tokens.scope,
            region=tokens.region,
            access_expires_at=tokens.expires_at,
            refresh_due_at=max(now, tokens.expires_at - deps.config.refresh_window_seconds),
            now=now,
            end_user_id=held.end_user_id,
        )
    except ConditionFailed:
        # Bound to another end user in the instant since check_binding looked. The pair is the same Smartsheet
        # account's and now in its secret, serving that connection: it is not revoked, and nothing is rebound.
        completions.finish(held, owner=owner, outcome=VOIDED, now=now)
        reason = "smartsheet_account_bound_to_another_end_user"
        _announce_refusal(deps, held, reason=reason)
        raise _conflict(reason) from None
    try:
        completions.finish(held, owner=owner, outcome=BOUND, now=now)
    except StorageError as exc:
        # Bound already; the code stays claimed until its claim lapses, and a late replay would store the same
        # secret version again (a no-op) for the same end user.
        logger.error("completion code not marked used", extra={"operation": exc.operation, "code": exc.code})
    connection = deps.connections.get(held.smartsheet_user_id)
    if connection is None:  # the record was written a moment ago; only a deletion by hand can get here
        raise StorageError("connections.get", "ConnectionMissing", transient=True)
    events.emit(
        deps.events,
        events.about(events.CREATED if is_new else events.RECONNECTED, connection, status=ACTIVE),
    )
    return Completed(connection=connection, is_new=is_new)


def _void(
    deps: ManagementDeps,
    completions: CompletionStore,
    held: HeldCompletion,
    *,
    owner: str,
    now: int,
    tokens: TokenSet | None = None,
) -> None:
    """Use the code up without binding, and revoke its grant at Smartsheet (only that grant: the account's own
    connection, if any, keeps its tokens), so no token outlives the refusal. The revoke is best effort."""
    if tokens is None and deps.vault.sealer is not None:
        try:
            tokens = deps.vault.sealer.open(held.sealed, binding=held.binding)
        except StorageError as exc:
            logger.warning("refused completion's grant not revoked", extra={"reason": exc.code})
    completions.finish(held, owner=owner, outcome=VOIDED, now=now)
    if tokens is not None:
        _revoke(deps.smartsheet(), tokens.access_token)


def _revoke(smartsheet: SmartsheetClient, access_token: str) -> None:
    try:
        smartsheet.revoke(access_token)
    except SmartsheetError as exc:
        logger.warning("refused completion's grant not revoked", extra={"reason": exc.reason})


def _announce_refusal(
    deps: ManagementDeps, held: HeldCompletion, *, reason: str, existing_connection_id: str | None = None
) -> None:
    events.emit(
        deps.events,
        events.ConnectionEvent(
            detail_type=events.BINDING_CONFLICT,
            connection_id=existing_connection_id or held.smartsheet_user_id,
            status="refused",
            region=deps.config.region,
            end_user_id=held.end_user_id,
            reason=reason,
            extra={"attempted_smartsheet_user_id": held.smartsheet_user_id},
        ),
    )


_CONFLICT_MESSAGES = {
    "smartsheet_account_bound_to_another_end_user": "This Smartsheet account is connected to another end user.",
    "end_user_has_another_smartsheet_account": "This end user already has another Smartsheet account connected.",
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
) -> AwaitingConfirmation:
    """The callback's side: hold the new pair under a completion code and point the browser at return_to with it.
    If it cannot be held, the grant is revoked before the failure is reported, so no token outlives it."""
    try:
        code = completions.hold(tokens, end_user_id=end_user_id, sealer=sealer, now=now)
    except StorageError:
        _revoke(smartsheet, tokens.access_token)
        raise
    return AwaitingConfirmation(
        location=completion_url(return_to, code), smartsheet_user_id=tokens.user_id, end_user_id=end_user_id
    )
