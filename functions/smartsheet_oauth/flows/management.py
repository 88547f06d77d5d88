"""The management API's steps: connection views and pages, disconnect, connect sessions (refresh: on_demand.py)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from smartsheet_oauth_client import is_connection_id

from smartsheet_oauth.domain.errors import (
    BadRequest,
    ConditionFailed,
    Conflict,
    InvalidClient,
    InvalidGrant,
    NotFound,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.domain.tags import checked_filter, checked_tags
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.flows.connect import checked_end_user_id
from smartsheet_oauth.flows.deps import ManagementDeps
from smartsheet_oauth.flows.sign_in import checked_region, checked_return_to
from smartsheet_oauth.stores import events
from smartsheet_oauth.stores.connections import Connection

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 100
SECRET_RECOVERY_DAYS = 7
DISCONNECTED = "disconnected"
# Secrets Manager's codes for a secret that is gone or scheduled for deletion.
_SECRET_GONE = frozenset({"ResourceNotFoundException", "InvalidRequestException"})


class SmartsheetRefused(SmartsheetError):
    """Smartsheet refused a management action for good (not a transient failure): answered 502."""


def view(connection: Connection) -> dict[str, Any]:
    """A connection as the API shows it: status and metadata, never a token."""
    return {
        "connection_id": connection.connection_id,
        "smartsheet_user_id": connection.connection_id,
        "end_user_id": connection.end_user_id,
        "status": connection.status,
        "email": connection.email,
        "region": connection.region,
        "scopes": connection.scopes.split(),
        "access_expires_at": connection.access_expires_at,
        "next_refresh_at": connection.refresh_due_at,
        "generation": connection.generation,
        "failures": connection.failures,
        "last_error": connection.last_error,
        "created_at": connection.created_at,
        "updated_at": connection.updated_at,
        "secret_arn": connection.secret_arn,
        "tags": dict(connection.tags),
    }


def checked_connection_id(raw: str) -> str:
    # The token client's rule, so the integrators' side and the API never disagree on what an id is.
    if not is_connection_id(raw):
        raise BadRequest("connection_id must be a Smartsheet user id (digits only)")
    return raw


def existing(deps: ManagementDeps, connection_id: str) -> Connection:
    connection = deps.connections.get(checked_connection_id(connection_id))
    if connection is None:
        raise NotFound(f"No connection {connection_id}.")
    return connection


def get_connection(deps: ManagementDeps, connection_id: str) -> dict[str, Any]:
    return view(existing(deps, connection_id))


# ------------------------------------------------------------------------------------------------------ listing
def _encode_next(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    flat = {name: value["S"] for name, value in key.items()}
    return base64.urlsafe_b64encode(json.dumps(flat, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_next(token: str, *, end_user_id: str | None, tag: str | None = None) -> dict[str, Any]:
    invalid = BadRequest("next is not a token this API handed out")
    if len(token) > 2048:
        raise invalid
    try:
        flat = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise invalid from None
    expected = {"connection_id"} | ({"end_user_id"} if end_user_id is not None else set()) | ({"tag"} if tag else set())
    if not isinstance(flat, dict) or set(flat) != expected or not all(isinstance(v, str) for v in flat.values()):
        raise invalid
    checked_connection_id(flat["connection_id"])
    if end_user_id is not None and flat["end_user_id"] != end_user_id:
        raise invalid
    if tag is not None and flat["tag"] != tag:
        raise invalid
    return {name: {"S": value} for name, value in flat.items()}


def list_connections(deps: ManagementDeps, query: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(set(query) - {"status", "end_user_id", "tag", "limit", "next"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; use status, end_user_id, tag, limit, next")
    status = query.get("status")
    if status is not None and status not in ConnectionStatus:
        raise BadRequest(f"status must be one of {', '.join(ConnectionStatus)}")
    end_user_id = checked_end_user_id(query["end_user_id"]) if "end_user_id" in query else None
    tag = checked_filter(query["tag"]) if "tag" in query else None
    if tag is not None and end_user_id is not None:
        raise BadRequest("filter by end_user_id or by tag, not both")
    raw_limit = query.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
    start_key = (
        _decode_next(query["next"], end_user_id=end_user_id, tag=tag and query["tag"]) if "next" in query else None
    )
    if tag is not None:
        page, last_key = deps.tag_store().page(*tag, limit=int(raw_limit), start_key=start_key)
        page = [c for c in page if status is None or c.status == status]
    else:
        page, last_key = deps.connections.page(
            limit=int(raw_limit), status=status, end_user_id=end_user_id, start_key=start_key
        )
    return {"connections": [view(c) for c in page], "next": _encode_next(last_key)}


# ---------------------------------------------------------------------------------------------------------- tags
TAG_ATTEMPTS = 3  # a concurrent change of the same connection's tags: read again and retry


def set_tags(deps: ManagementDeps, connection_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Replace a connection's tags (PUT /connections/{id}/tags, the admin CLI): its record and the tag index in one
    transaction. A revoked connection's tags cannot change (a disconnect ended them)."""
    unknown = sorted(set(body) - {"tags"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; the body holds tags")
    if "tags" not in body:
        raise BadRequest("tags is required: the connection's tags, all of them ({} removes every tag)")
    tags = checked_tags(body["tags"])
    connection = existing(deps, connection_id)
    for _ in range(TAG_ATTEMPTS):
        if connection.status == ConnectionStatus.REVOKED:
            raise Conflict("revoked", f"Connection {connection_id} was disconnected: its tags cannot change.")
        try:
            return view(deps.tag_store().replace(connection_id, tags, now=int(deps.clock())))
        except ConditionFailed:
            connection = existing(deps, connection_id)
    raise Conflict("changed_meanwhile", "The connection's tags changed while these were being set; ask again.")


# -------------------------------------------------------------------------------------------------- disconnect
def disconnect(deps: ManagementDeps, connection_id: str) -> dict[str, Any]:
    """Revoke the grant at Smartsheet (every token of this user for this app), mark the connection revoked and
    schedule its secret's deletion. The lease is held throughout, so no refresh rotates the tokens meanwhile.
    When Smartsheet cannot confirm the revoke, nothing changes and the failure is reported: ask again later.
    Asking again after a disconnect answers the same way without error."""
    connection_id = checked_connection_id(connection_id)
    owner = f"api-{uuid.uuid4().hex}"
    now = int(deps.clock())
    try:
        held = deps.connections.hold(connection_id, owner=owner, now=now, lease_seconds=deps.config.lease_seconds)
    except ConditionFailed:
        current = existing(deps, connection_id)
        wait = max(1, (current.lease_until or now) - now)
        raise Conflict(
            "refresh_in_progress", "A refresh of this connection is under way; ask again shortly.", retry_after=wait
        ) from None
    try:
        at_smartsheet = _revoke_at_smartsheet(deps, held)
    except BaseException:
        deps.connections.release(connection_id, owner=owner)
        raise
    try:
        deps.connections.mark_revoked(connection_id, owner=owner, reason=DISCONNECTED, now=int(deps.clock()))
    except ConditionFailed:
        raise Conflict(
            "changed_meanwhile",
            "The connection changed while it was being disconnected (its user signed in again?). Its grant at"
            " Smartsheet was revoked; ask again to finish.",
        ) from None
    if held.tags:
        # The tags ended with the binding (the Revoked event still carries them); a retry clears what is left.
        _clear_tags(deps, connection_id)
    try:
        deps.vault.schedule_deletion(held.secret_arn, recovery_days=SECRET_RECOVERY_DAYS)
        stored_tokens = "deletion_scheduled"
    except StorageError as exc:
        if exc.code not in _SECRET_GONE:
            raise
        stored_tokens = "already_deleted"
    after = existing(deps, connection_id)
    if held.status != ConnectionStatus.REVOKED:
        events.announce(deps.events, "revoke", held, reason=DISCONNECTED, smartsheet=at_smartsheet)
    return {
        "outcome": "revoked",
        "smartsheet": at_smartsheet,
        "stored_tokens": stored_tokens,
        "recovery_window_days": SECRET_RECOVERY_DAYS,
        "connection": view(after),
    }


def _clear_tags(deps: ManagementDeps, connection_id: str) -> None:
    for _ in range(TAG_ATTEMPTS):
        try:
            deps.tag_store().replace(connection_id, {}, now=int(deps.clock()), revoked_too=True)
            return
        except ConditionFailed:  # changed by a concurrent PUT: read again
            continue
    raise Conflict("changed_meanwhile", "The connection's tags changed while it was being disconnected; ask again.")


def _revoke_at_smartsheet(deps: ManagementDeps, held: Connection) -> str:
    """'revoked', 'already_invalid' (the grant was dead already) or 'no_tokens' (nothing stored any more)."""
    try:
        tokens = deps.vault.load(held.secret_arn)
    except StorageError as exc:
        if exc.code in _SECRET_GONE:
            return "no_tokens"
        raise
    client = deps.smartsheet()
    region = deps.config.region_of(held.region)  # the connection's tokens work only at its region's API
    try:
        client.revoke(tokens.access_token, all_for_client=True, region=region)
        return "revoked"
    except SmartsheetError as exc:
        if not _access_token_unusable(exc):
            raise _refused(exc) from None
    # The access token is expired or dead; the grant may still live behind the refresh token.
    try:
        grant = client.refresh(tokens.refresh_token, region=region)
    except InvalidGrant:
        return "already_invalid"
    except SmartsheetError as exc:
        raise _refused(exc) from None
    # Rotation killed the stored pair: keep the new one until it is revoked, so a failed revoke loses nothing.
    deps.vault.save(
        held.connection_id,
        tokens.rotated(grant, obtained_at=int(deps.clock())),
        known_arn=held.secret_arn,
        generation=held.generation,
    )
    try:
        client.revoke(grant.access_token, all_for_client=True, region=region)
    except SmartsheetError as exc:
        raise _refused(exc) from None
    return "revoked"


def _access_token_unusable(exc: SmartsheetError) -> bool:
    # 401 (1002/1003): an invalid or expired access token; invalid_grant codes: a revoked one.
    return isinstance(exc, InvalidGrant) or (exc.status == 401 and not isinstance(exc, InvalidClient))


def _refused(exc: SmartsheetError) -> SmartsheetError:
    """Transient failures pass through as they are (503); anything else becomes a 502 naming Smartsheet's code."""
    if isinstance(exc, TransientSmartsheetError):
        return exc
    return SmartsheetRefused(
        f"Smartsheet refused the revoke ({exc.reason}); nothing was changed",
        status=exc.status,
        error_code=exc.error_code,
        oauth_error=exc.oauth_error,
        ref_id=exc.ref_id,
    )


# --------------------------------------------------------------------------------------------- connect sessions
def create_connect_session(deps: ManagementDeps, body: dict[str, Any], *, broker_url: str) -> dict[str, Any]:
    """A one-time login link for an end user; with `connection_id`, a reconnect link for that needs_reauth connection
    (only its own Smartsheet account can finish it: flows/connect.py), in the connection's own region."""
    unknown = sorted(set(body) - {"end_user_id", "return_to", "region", "connection_id", "tags"})
    if unknown:
        raise BadRequest(
            f"unknown field(s): {', '.join(unknown)}; the body holds end_user_id, return_to and (optional) region,"
            " connection_id and tags"
        )
    tags = checked_tags(body["tags"]) if "tags" in body else None
    connection_id = body.get("connection_id")
    if connection_id is None:
        if "end_user_id" not in body:
            raise BadRequest("end_user_id is required")
        checked_end_user_id(body["end_user_id"])
    elif not isinstance(connection_id, str):
        raise BadRequest("connection_id must be a Smartsheet user id (digits only)")
    return_to = body.get("return_to")
    if not isinstance(return_to, str) or not return_to:
        # The sign-in ends there with the completion code your backend redeems: without it nothing can be bound.
        raise BadRequest("return_to is required: the page of your app that receives the completion code")
    return_to = checked_return_to(return_to, deps.config.allowed_return_to)
    if return_to is None:  # checked_return_to answers None only for an empty value, refused above
        raise BadRequest("return_to is required: the page of your app that receives the completion code")
    raw_region = body.get("region")
    if raw_region is not None and not isinstance(raw_region, str):
        raise BadRequest("region must be a string: one of the regions this stack allows")
    if connection_id is None:
        end_user_id = checked_end_user_id(body["end_user_id"])
        region = checked_region(raw_region, deps.config)
    else:
        end_user_id, region = _reconnect_target(deps, connection_id, body.get("end_user_id"), raw_region)
    issued = deps.sessions.create(
        end_user_id=end_user_id,
        return_to=return_to,
        now=int(deps.clock()),
        region=None if region == deps.config.region else region,
        connection_id=connection_id,
        tags=tags,
    )
    return {
        "end_user_id": issued.end_user_id,
        "connection_id": issued.connection_id,
        "tags": tags,
        "login_url": f"{broker_url}/login?session={issued.token}",
        "expires_at": issued.expires_at,
        "return_to": return_to,
        "region": region,
    }


def _reconnect_target(
    deps: ManagementDeps, connection_id: str, raw_end_user_id: object, raw_region: str | None
) -> tuple[str, str]:
    """(end user, region) of a reconnect link of `connection_id`. The end user is the connection's own (`end_user_id`
    may repeat it), or the one given for a connection bound to no one; the region is the one the connection was made
    in (`region` may repeat it: its tokens live there). Only a needs_reauth connection is reconnected: an active one
    works, and a revoked one was disconnected (its user connects again with a plain connect session)."""
    end_user_id = None if raw_end_user_id is None else checked_end_user_id(raw_end_user_id)
    connection = existing(deps, connection_id)
    if connection.status == ConnectionStatus.REVOKED:
        raise Conflict(
            "revoked",
            f"Connection {connection_id} was disconnected: make a connect session without connection_id instead.",
        )
    if connection.status != ConnectionStatus.NEEDS_REAUTH:
        raise Conflict(
            "reconnect_not_needed",
            f"Connection {connection_id} is {connection.status}: only a needs_reauth connection gets a reconnect link.",
        )
    recorded = deps.config.region_of(connection.region)
    if raw_region is not None and raw_region.strip().lower() != recorded:
        raise BadRequest(
            f"region: connection {connection_id} was made in region {recorded} and reconnects there (leave region out)"
        )
    region = checked_region(recorded, deps.config)  # RegionNotAllowed once AllowedRegions no longer offers it
    if connection.end_user_id is None:
        if end_user_id is None:
            raise BadRequest(
                f"end_user_id is required: connection {connection_id} is bound to no end user, and the reconnect binds"
                " it to the one you name"
            )
        return end_user_id, region
    if end_user_id not in (None, connection.end_user_id):
        raise Conflict(
            "end_user_mismatch",
            f"Connection {connection_id} is bound to another end user than {end_user_id}: its reconnect link is"
            " that end user's.",
        )
    return connection.end_user_id, region
