"""What Smartsheet's answers mean: a token grant, a JSON object, or the error an answer stands for (its errorCodes,
statuses and Retry-After), for smartsheet/client.py."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from smartsheet_oauth.domain.errors import (
    InvalidClient,
    InvalidGrant,
    MalformedResponse,
    SmartsheetError,
    SmartsheetRejected,
    TransientSmartsheetError,
)
from smartsheet_oauth.domain.tokens import TokenGrant

if TYPE_CHECKING:
    from smartsheet_oauth.smartsheet.client import Reply

# Smartsheet's errorCodes that mean "this grant is gone": expired/invalid/used code or refresh token,
# hash mismatch, revoked token.
INVALID_GRANT_CODES = frozenset({1069, 1071, 1132})
# 1072 (invalid hash) carries OAuth error invalid_grant, but the hash is sha256(client secret | token): with a
# live token it means OUR secret is wrong. Treating it as a dead grant would mark every user needs_reauth after
# a bad secret rotation, so it is a credentials problem like 1238.
INVALID_CLIENT_CODES = frozenset({1067, 1072, 1236, 1237, 1238})
TRANSIENT_CODES = frozenset({4001, 4002, 4003, 4004})
SERVER_ERROR_CODES = frozenset({4001, 4002, 4004})
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)


def json_object(response: Reply) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        raise MalformedResponse("Smartsheet answered with a body that is not JSON", status=response.status) from None
    if not isinstance(body, dict):
        raise MalformedResponse("Smartsheet answered with JSON that is not an object", status=response.status)
    return body


def text(value: object) -> str:
    return value[:200] if isinstance(value, str) else ""


def token_grant(body: dict[str, Any]) -> TokenGrant:
    # Some older documentation examples wrap the answer as {"token": {...}}.
    if isinstance(body.get("token"), dict) and "access_token" not in body:
        body = body["token"]
    access, refresh, expires_in = body.get("access_token"), body.get("refresh_token"), body.get("expires_in")
    if not isinstance(access, str) or not access or len(access) > 4096:
        raise MalformedResponse("token answer without a usable access_token")
    if not isinstance(refresh, str) or not refresh or len(refresh) > 4096:
        raise MalformedResponse("token answer without a usable refresh_token")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in <= 10**8:
        raise MalformedResponse("token answer without a usable expires_in")
    token_type = body.get("token_type")
    return TokenGrant(
        access_token=access,
        refresh_token=refresh,
        token_type=token_type if isinstance(token_type, str) and token_type else "bearer",
        expires_in=int(expires_in),
    )


def retry_after_of(response: Reply) -> float | None:
    raw = response.retry_after.strip()
    if raw.isdigit():
        return float(min(int(raw), 3600))
    return None


def error_from(response: Reply) -> SmartsheetError:
    status = response.status
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    raw_code = body.get("errorCode")
    error_code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    oauth_error = body.get("error") if isinstance(body.get("error"), str) else None
    ref_id = body.get("refId") if isinstance(body.get("refId"), str) else None
    # Smartsheet's message text is kept out: it can echo request values. Codes are enough to act on.
    label = f"Smartsheet answered {status}" + (f" (errorCode {error_code})" if error_code else "")
    fields: dict[str, Any] = {
        "status": status,
        "error_code": error_code,
        "oauth_error": oauth_error,
        "ref_id": ref_id,
    }
    if status in TRANSIENT_STATUSES or error_code in TRANSIENT_CODES or status >= 500:
        # A rate limit was refused unprocessed; a server error does not say whether the request was carried out.
        unknown = status >= 500 or error_code in SERVER_ERROR_CODES
        return TransientSmartsheetError(label, retry_after=retry_after_of(response), outcome_unknown=unknown, **fields)
    if error_code in INVALID_GRANT_CODES or (error_code is None and oauth_error == "invalid_grant"):
        if response.after_unknown_attempt:
            # A retried code exchange whose first attempt's answer was lost: Smartsheet refuses the code because it
            # already used it, for a grant whose tokens never reached us. Not the user's code at fault.
            return TransientSmartsheetError(
                f"{label} after an attempt whose answer was lost", outcome_unknown=True, **fields
            )
        return InvalidGrant(label, **fields)
    if error_code in INVALID_CLIENT_CODES or oauth_error == "invalid_client":
        return InvalidClient(label, **fields)
    return SmartsheetRejected(label, **fields)
