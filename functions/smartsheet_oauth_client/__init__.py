"""Your code's side of the broker: a valid Smartsheet access token (read from the broker's secret, cached, refreshed
by the broker) and the management API (connect sessions, connections, disconnect), signed with your AWS credentials.

Copy this one file into your Lambda (or any Python 3.10+ program). It needs only the standard library and
boto3/botocore, which the Lambda runtime already has. It never refreshes by itself: the broker is the only one who
rotates a connection's refresh token, so when the stored access token is expired or about to be, it asks the
broker (SigV4-signed POST /connections/{id}/refresh) and reads the secret again.

    import requests
    from smartsheet_oauth_client import ManagementClient, TokenProvider

    tokens = TokenProvider.from_environment()  # SMARTSHEET_BROKER_API_URL, SMARTSHEET_BROKER_SECRET_PREFIX
    token = tokens.token(end_user_id="user-42")  # or tokens.token("4583173393803140")
    requests.get(f"{token.api_base_url}/sheets", headers={"Authorization": f"Bearer {token.access_token}"})

    broker = ManagementClient.from_environment()  # SMARTSHEET_BROKER_API_URL
    link = broker.create_connect_session("user-42", return_to="https://app.example.com/connected").login_url

Your code's role needs secretsmanager:GetSecretValue on <TokenSecretPrefix>* and execute-api:Invoke on the
broker's refresh route (and GET /connections to look up end users): the stack's TokenConsumerPolicyArn output; see
docs/integrating.md in the broker's repository.

A stack with TokenStore=dynamodb keeps each pair sealed in its token table: set SMARTSHEET_BROKER_TOKEN_TABLE (its
TokenTableName output) and this reads the item and opens it (a KMS Decrypt per data key, cached, then AES-256-GCM,
which needs the `cryptography` package). A pair not in the table (a migration under way) is read from its secret.

A stack with WebhookUrl POSTs each connection event to your URL, signed; check it before you trust the body:

    event = verify_webhook(request_body_bytes, headers["Broker-Signature"], signing_secret)  # raises if not genuine
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

__all__ = [
    "AccessToken",
    "AmbiguousEndUser",
    "BrokerApiError",
    "BrokerUnavailable",
    "ConnectRefused",
    "ConnectResult",
    "ConnectReturn",
    "ConnectSession",
    "Connection",
    "ConnectionUnavailable",
    "Disconnected",
    "ManagementClient",
    "RefreshResult",
    "TokenError",
    "TokenProvider",
    "WebhookReplayed",
    "WebhookSignatureError",
    "WebhookSignatureExpired",
    "WebhookSignatureInvalid",
    "WebhookSignatureMalformed",
    "WebhookSignatureMissing",
    "WebhookVerifier",
    "is_connection_id",
    "verify_webhook",
]

API_BASE_URLS = {
    "us": "https://api.smartsheet.com/2.0",
    "eu": "https://api.smartsheet.eu/2.0",
    "gov": "https://api.smartsheetgov.com/2.0",
    "au": "https://api.smartsheet.au/2.0",
}
DEFAULT_MIN_VALID_SECONDS = 300
DEFAULT_CACHE_SECONDS = 300.0
MAX_MIN_VALID_SECONDS = 7 * 24 * 3600
# The broker's sealed pairs (TokenStore=dynamodb), as smartsheet_oauth.stores.token_table writes them: format byte,
# encrypted data key's length (2 bytes) and the key, a 12-byte nonce, AES-256-GCM of the pair's JSON with the
# binding below as associated data. tests/management/test_token_client_store.py holds this copy to the broker's.
PAIR_FORMAT = 1
TOKEN_PAIR_CONTEXT = {"purpose": "token-pair", "service": "smartsheet-oauth-broker"}
_NONCE_BYTES = 12
_DATA_KEYS_MAX = 64
_EXECUTE_API_HOST = re.compile(r"[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?")
# Connection ids are Smartsheet user ids: digits, beyond 2^53 but below 2^64. The broker's API holds them to this
# rule too (smartsheet_oauth.flows.management imports it from here, so this file stays one file to copy).
CONNECTION_ID_MAX_DIGITS = 20
# The integrator's id of its own user, as the broker's API checks it (flows/connect.py holds the two to one).
_END_USER_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
_UNUSABLE = ("needs_reauth", "revoked")
# An end user's connections are listed in pages this size (the API's largest): a consultant's few fit in one.
_END_USER_PAGE_SIZE = 100
# What the broker adds to return_to when a connect session's sign-in ends (docs/management-api.md).
OUTCOME_PARAMETER, CODE_PARAMETER, ERROR_PARAMETER = "outcome", "completion_code", "error"

# (method, url, headers, body, timeout) -> (status, body)
Send = Callable[[str, str, dict[str, str], bytes, float], tuple[int, bytes]]


class TokenError(Exception):
    """No usable token could be had, or the broker refused a request; the message says why."""


class ConnectionUnavailable(TokenError):
    """The connection cannot give tokens any more: `status` is needs_reauth, revoked or not_found. Send the user
    through your connect flow again (POST /connect-sessions). `connection_id` is None when an end user has no
    connection at all (`end_user_id` says which)."""

    def __init__(self, connection_id: str | None, status: str, message: str, *, end_user_id: str | None = None) -> None:
        subject = f"connection {connection_id}" if connection_id else f"end user {end_user_id}"
        super().__init__(f"{subject}: {message}")
        self.connection_id = connection_id
        self.end_user_id = end_user_id
        self.status = status


class AmbiguousEndUser(TokenError):
    """Your end user has several active connections (a stack with AccountsPerEndUser=many) and you asked for "the"
    one: ask for one by its connection id, or for all of them (TokenProvider.tokens_of,
    ManagementClient.connections_of). `connection_ids` lists them (as GET /connections does), `count` says how
    many."""

    def __init__(self, end_user_id: str, connection_ids: Sequence[str], *, one: str, every: str) -> None:
        super().__init__(
            f"end user {end_user_id} has {len(connection_ids)} active connections: ask for one by its connection id"
            f" ({one}), or for all of them ({every})"
        )
        self.end_user_id = end_user_id
        self.connection_ids = tuple(connection_ids)
        self.count = len(self.connection_ids)


class BrokerUnavailable(TokenError):
    """The broker (or Smartsheet behind it) could not answer or refresh right now and no usable token is stored.
    Try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BrokerApiError(TokenError):
    """The management API answered an error: `status` (HTTP), `error` (the API's code, e.g. not_found,
    invalid_request, refresh_cooldown; "forbidden" for API Gateway's own 403), its `message`, the `reference` to
    quote to support, and `retry_after` seconds when asking again later makes sense."""

    def __init__(
        self, status: int, error: str, message: str, *, reference: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(f"{error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.reference = reference
        self.retry_after = retry_after


class ConnectRefused(BrokerApiError):
    """The broker bound nothing: `error` is the API's code (end_user_mismatch, completion_code_used,
    completion_code_expired, unknown_completion_code, binding_conflict, invalid_request). Send the user through your
    connect flow again (a new POST /connect-sessions)."""

    def __init__(self, error: str, message: str, *, status: int = 409, reference: str | None = None) -> None:
        super().__init__(status, error, message, reference=reference)


@dataclass(frozen=True)
class AccessToken:
    """A connection's current access token. repr never shows the token."""

    access_token: str = field(repr=False)
    expires_at: int
    connection_id: str
    email: str
    region: str
    api_base_override: str | None = field(default=None, repr=False, compare=False)

    @property
    def api_base_url(self) -> str:
        """The Smartsheet API this token works with (tokens are region-specific), or the client's override (e.g. the
        local stack's emulator)."""
        return self.api_base_override or API_BASE_URLS.get(self.region, API_BASE_URLS["us"])


# ----------------------------------------------------------------------------------------- the API's typed answers
@dataclass(frozen=True)
class Connection:
    """A connection as GET /connections/{id} shows it (never a token)."""

    connection_id: str
    end_user_id: str | None
    status: str  # active, needs_reauth or revoked
    email: str
    region: str
    scopes: tuple[str, ...]
    access_expires_at: int
    next_refresh_at: int | None
    generation: int
    failures: int
    last_error: str | None
    created_at: int
    updated_at: int
    secret_arn: str
    tags: Mapping[str, str] = field(default_factory=dict)  # your labels (PUT /connections/{id}/tags)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Connection:
        return cls(
            connection_id=str(raw["connection_id"]),
            end_user_id=raw.get("end_user_id"),
            status=str(raw.get("status") or ""),
            email=str(raw.get("email") or ""),
            region=str(raw.get("region") or "us"),
            scopes=tuple(raw.get("scopes") or ()),
            access_expires_at=int(raw.get("access_expires_at") or 0),
            next_refresh_at=raw.get("next_refresh_at"),
            generation=int(raw.get("generation") or 0),
            failures=int(raw.get("failures") or 0),
            last_error=raw.get("last_error"),
            created_at=int(raw.get("created_at") or 0),
            updated_at=int(raw.get("updated_at") or 0),
            secret_arn=str(raw.get("secret_arn") or ""),
            tags={str(k): str(v) for k, v in (raw.get("tags") or {}).items()},
        )


@dataclass(frozen=True)
class ConnectSession:
    """POST /connect-sessions: send your user to `login_url` (one use, until `expires_at`)."""

    end_user_id: str
    login_url: str = field(repr=False)  # a bearer link
    expires_at: int
    return_to: str
    region: str | None = None  # the Smartsheet region the sign-in goes to (the broker's answer names it)
    connection_id: str | None = None  # a reconnect link's connection


@dataclass(frozen=True)
class ConnectResult:
    """POST /connect-sessions/complete: `outcome` is created or reconnected; the connection now bound."""

    outcome: str
    connection: Connection


@dataclass(frozen=True)
class ConnectReturn:
    """What happened to a connect session, as your return_to page learns it in one call
    (ManagementClient.finish_connect): `outcome` is connected (then `connection` is bound to your end user),
    declined (the user said no at Smartsheet) or failed (`error` names why: the broker's code in return_to's query,
    or the API's refusal of the completion code)."""

    outcome: str
    connection: Connection | None = None
    error: str | None = None
    message: str = ""
    is_new: bool = False


@dataclass(frozen=True)
class RefreshResult:
    """POST /connections/{id}/refresh: `outcome` is fresh, refreshed or resumed."""

    outcome: str
    connection: Connection


@dataclass(frozen=True)
class Disconnected:
    """DELETE /connections/{id}: `smartsheet` is revoked, already_invalid or no_tokens."""

    outcome: str
    smartsheet: str
    stored_tokens: str
    recovery_window_days: int
    connection: Connection


@dataclass
class _Cached:
    token: AccessToken
    read_at: float


def is_connection_id(value: object) -> bool:
    """A connection id: the Smartsheet user id as a string of ASCII digits (str.isdigit alone also admits "²")."""
    return isinstance(value, str) and 0 < len(value) <= CONNECTION_ID_MAX_DIGITS and value.isascii() and value.isdigit()


def _checked_connection_id(value: object) -> str:
    if not is_connection_id(value):
        # It names a secret and a URL path: refused before either is used.
        raise ValueError("a connection id is the Smartsheet user id: 1 to 20 digits")
    return str(value)


def _checked_end_user_id(value: object) -> str:
    if not isinstance(value, str) or not _END_USER_ID.fullmatch(value):
        raise ValueError("an end_user_id is 1 to 128 characters of letters, digits and . _ : @ + = -")
    return value


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The broker never redirects. urllib would follow a redirect with the request's headers, the SigV4 signature
    and session token among them, to wherever it points: a 3xx is answered to the caller instead."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _urllib_send(method: str, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)  # noqa: S310 (https, or loopback)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:  # the broker's own URL, never a redirect's
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"the broker did not answer: {type(exc).__name__}") from exc


def _environment(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise ValueError(f"set {name} (an output of the broker's stack)") from None


class _SignedApi:
    """Requests to the broker's management API, SigV4-signed (service execute-api) with the session's credentials."""

    def __init__(
        self,
        api_url: str,
        *,
        region: str | None,
        session: boto3.session.Session | None,
        timeout_seconds: float,
        send: Send | None,
    ) -> None:
        parts = urlsplit(api_url)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise ValueError(f"api_url must be the broker's https:// URL (http only on loopback), got {api_url!r}")
        self.url = api_url.rstrip("/")
        self.session = session or boto3.session.Session()
        found = _EXECUTE_API_HOST.fullmatch(parts.hostname)
        self.region = region or (found.group(1) if found else None) or self.session.region_name
        if not self.region:
            raise ValueError("region is needed to sign requests to the broker")
        self.timeout = timeout_seconds
        self.send = send or _urllib_send

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        url = f"{self.url}{path}"
        data = json.dumps(body).encode() if body is not None else b""
        request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
        credentials = self.session.get_credentials()
        if credentials is None:
            raise TokenError("no AWS credentials to sign the request to the broker")
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(request)
        status, raw = self.send(method, url, dict(request.headers.items()), data, self.timeout)
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return status, parsed if isinstance(parsed, dict) else {}


def _api_error(status: int, body: Mapping[str, Any]) -> BrokerApiError:
    """The API's error answer as an exception. API Gateway's own answers have no `error`: a 403 is its refusal of the
    signature or the caller's permissions; a 404 `{"message": "Not Found"}` is a route it does not have."""
    retry_after = body.get("retry_after")
    retry = retry_after if isinstance(retry_after, int) and not isinstance(retry_after, bool) else None
    reference = body.get("reference") if isinstance(body.get("reference"), str) else None
    code = body.get("error")
    if isinstance(code, str) and code:
        return BrokerApiError(status, code, str(body.get("message", "")), reference=reference, retry_after=retry)
    message = str(body.get("message") or f"the broker answered {status}")
    if 300 <= status < 400:
        # Never followed: the request's signature would travel to wherever the redirect points.
        moved = f"the broker answered a redirect ({status}), not followed: check api_url"
        return BrokerApiError(status, "redirect", moved)
    if status == 403:
        return BrokerApiError(status, "forbidden", f"{message}: {_forbidden_hint(message)}")
    if status == 404:
        return BrokerApiError(status, "no_such_route", f"{message}: no such route at this URL (the broker's?)")
    return BrokerApiError(status, "http_error", message, retry_after=retry)


def _forbidden_hint(message: str) -> str:
    """API Gateway's 403 messages tell a bad signature or key from a missing permission: say which to fix."""
    lowered = message.lower()
    if "security token" in lowered or "signature" in lowered or "credential" in lowered or "access key" in lowered:
        return "the request's AWS credentials are not valid (check the access key, secret and session token)"
    return "the caller's credentials are valid but not allowed: give its role execute-api:Invoke on this route"


class ManagementClient:
    """The broker's management API from Python: connect sessions, connections, refresh, disconnect. Typed answers;
    every error answer raises BrokerApiError (ConnectRefused for a completion code that binds nothing), a broker that
    does not answer BrokerUnavailable. Thread-safe; keep one per process."""

    def __init__(
        self,
        *,
        api_url: str,
        region: str | None = None,
        session: boto3.session.Session | None = None,
        timeout_seconds: float = 28.0,
        send: Send | None = None,
    ) -> None:
        """api_url: the stack's ManagementApiUrl output. region: where the API is (default: from an execute-api
        URL, else the session's)."""
        self._api = _SignedApi(api_url, region=region, session=session, timeout_seconds=timeout_seconds, send=send)

    @classmethod
    def from_environment(cls, **kwargs: Any) -> ManagementClient:
        """From SMARTSHEET_BROKER_API_URL (the stack's ManagementApiUrl output)."""
        return cls(api_url=_environment("SMARTSHEET_BROKER_API_URL"), **kwargs)

    def _ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, answer = self._api.call(method, path, body)
        if 200 <= status < 300:
            return answer
        raise _api_error(status, answer)

    # ------------------------------------------------------------------------------------------ connect sessions
    def create_connect_session(
        self,
        end_user_id: str,
        *,
        return_to: str,
        region: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ConnectSession:
        """A one-time link (login_url) that connects your end user's Smartsheet account; the sign-in ends at
        return_to with outcome=connected&completion_code=... (or outcome=declined / failed&error=...). region: the
        Smartsheet region to sign in to (one of the stack's AllowedRegions; None: its SmartsheetRegion). `tags`: set
        on the connection when it is bound."""
        body: dict[str, Any] = {"end_user_id": _checked_end_user_id(end_user_id), "return_to": return_to}
        if region is not None:
            body["region"] = region
        if tags is not None:
            body["tags"] = dict(tags)
        return self._session(body)

    def create_reconnect_session(
        self,
        connection_id: str,
        *,
        return_to: str,
        end_user_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ConnectSession:
        """A one-time reconnect link for a needs_reauth connection: only that connection's Smartsheet account can
        finish it, in the region the connection was made in; redeemed like any connect session (finish_connect), the
        connection is active again. end_user_id: the connection's own by default (required for a connection bound to
        no end user). BrokerApiError reconnect_not_needed / revoked / end_user_mismatch (409) when there is nothing
        to reconnect."""
        body: dict[str, Any] = {"connection_id": _checked_connection_id(connection_id), "return_to": return_to}
        if end_user_id is not None:
            body["end_user_id"] = _checked_end_user_id(end_user_id)
        if tags is not None:
            body["tags"] = dict(tags)
        return self._session(body)

    def _session(self, body: dict[str, Any]) -> ConnectSession:
        answer = self._ok("POST", "/connect-sessions", body)
        return ConnectSession(
            end_user_id=str(answer["end_user_id"]),
            login_url=str(answer["login_url"]),
            expires_at=int(answer["expires_at"]),
            return_to=str(answer["return_to"]),
            region=str(answer["region"]) if answer.get("region") else None,
            connection_id=answer.get("connection_id"),
        )

    def complete_connect_session(self, completion_code: str, *, end_user_id: str) -> ConnectResult:
        """Redeem the completion_code your return_to page received, for the end user signed in to your app in that
        request (from your own session, never from the link). Binds the connection and answers it."""
        body = {"completion_code": completion_code, "end_user_id": _checked_end_user_id(end_user_id)}
        status, answer = self._api.call("POST", "/connect-sessions/complete", body)
        if status == 200:
            return ConnectResult(outcome=str(answer["outcome"]), connection=Connection.from_api(answer["connection"]))
        failure = _api_error(status, answer)
        if status in (400, 404) or (status == 409 and failure.error != "completion_in_progress"):
            raise ConnectRefused(failure.error, failure.message, status=status, reference=failure.reference)
        raise failure

    def finish_connect(self, query: Mapping[str, str] | str, *, end_user_id: str) -> ConnectReturn:
        """Your return_to page in one call: read what the broker added to its query (a mapping, or the raw query
        string) and, when the user connected, bind the connection to `end_user_id` (the user signed in to your app
        in this request) and answer it. Declined and failed sign-ins, and completion codes the broker refuses
        (a reload of the page, another user's link), come back as outcome declined / failed with `error`."""
        params = dict(parse_qsl(query, keep_blank_values=True)) if isinstance(query, str) else dict(query)
        outcome = params.get(OUTCOME_PARAMETER, "")
        code = params.get(CODE_PARAMETER)
        if code and outcome in ("", "connected"):
            try:
                result = self.complete_connect_session(code, end_user_id=end_user_id)
            except ConnectRefused as refused:
                return ConnectReturn("failed", error=refused.error, message=refused.message)
            return ConnectReturn(
                "connected", connection=result.connection, is_new=result.outcome == "created", message=result.outcome
            )
        error = params.get(ERROR_PARAMETER) or "no_outcome"
        if outcome == "declined":
            return ConnectReturn("declined", error=error, message="the user declined access at Smartsheet")
        return ConnectReturn("failed", error=error, message=params.get("error_description", ""))

    # ------------------------------------------------------------------------------------------------ connections
    def get_connection(self, connection_id: str) -> Connection:
        """One connection (BrokerApiError not_found when there is none)."""
        path = f"/connections/{quote(_checked_connection_id(connection_id), safe='')}"
        return Connection.from_api(self._ok("GET", path))

    def list_connections(
        self,
        *,
        status: str | None = None,
        end_user_id: str | None = None,
        tag: tuple[str, str] | None = None,
        page_size: int = 50,
    ) -> Iterator[Connection]:
        """Every connection (of a status; of an end user or of one tag, (key, value)), page after page as you
        iterate."""
        query: dict[str, str] = {"limit": str(page_size)}
        if status is not None:
            query["status"] = status
        if end_user_id is not None:
            query["end_user_id"] = _checked_end_user_id(end_user_id)
        if tag is not None:
            query["tag"] = f"{tag[0]}={tag[1]}"
        while True:
            answer = self._ok("GET", f"/connections?{urlencode(query, quote_via=quote)}")
            for raw in answer.get("connections", []):
                yield Connection.from_api(raw)
            following = answer.get("next")
            if not following:
                return
            query["next"] = str(following)

    def connections_of(self, end_user_id: str) -> list[Connection]:
        """Every active connection of your end user (several with AccountsPerEndUser=many), as the API lists them."""
        return list(self.list_connections(status="active", end_user_id=end_user_id, page_size=_END_USER_PAGE_SIZE))

    def connection_of(self, end_user_id: str) -> Connection | None:
        """The end user's active connection, or None. AmbiguousEndUser when they have several: use connections_of."""
        found = self.connections_of(end_user_id)
        if len(found) > 1:
            raise AmbiguousEndUser(
                end_user_id,
                [c.connection_id for c in found],
                one="get_connection(connection_id)",
                every="connections_of(end_user_id)",
            )
        return found[0] if found else None

    def refresh(self, connection_id: str, *, min_valid_seconds: int = DEFAULT_MIN_VALID_SECONDS) -> RefreshResult:
        """Have the broker refresh now unless the token stays valid for min_valid_seconds (then outcome fresh).
        BrokerApiError refresh_cooldown / refresh_rate_limited (429) carry retry_after."""
        path = f"/connections/{quote(_checked_connection_id(connection_id), safe='')}/refresh"
        answer = self._ok("POST", path, {"min_valid_seconds": min_valid_seconds})
        return RefreshResult(outcome=str(answer["outcome"]), connection=Connection.from_api(answer["connection"]))

    def set_tags(self, connection_id: str, tags: Mapping[str, str]) -> Connection:
        """Replace the connection's tags with `tags` (an empty mapping removes them all); answers the connection."""
        path = f"/connections/{quote(_checked_connection_id(connection_id), safe='')}/tags"
        return Connection.from_api(self._ok("PUT", path, {"tags": dict(tags)}))

    def disconnect(self, connection_id: str) -> Disconnected:
        """Revoke the grant at Smartsheet, mark the connection revoked, schedule its secret's deletion."""
        answer = self._ok("DELETE", f"/connections/{quote(_checked_connection_id(connection_id), safe='')}")
        return Disconnected(
            outcome=str(answer["outcome"]),
            smartsheet=str(answer["smartsheet"]),
            stored_tokens=str(answer["stored_tokens"]),
            recovery_window_days=int(answer["recovery_window_days"]),
            connection=Connection.from_api(answer["connection"]),
        )


def _digest(access_token: str) -> str:
    return hashlib.sha256(access_token.encode()).hexdigest()


class TokenProvider:
    """Gives a valid access token per connection. Thread-safe; keep one per process (module level in a Lambda)."""

    def __init__(
        self,
        *,
        api_url: str,
        secret_prefix: str,
        region: str | None = None,
        session: boto3.session.Session | None = None,
        secrets_client: Any = None,
        token_table: str | None = None,
        dynamodb_client: Any = None,
        kms_client: Any = None,
        min_valid_seconds: int = DEFAULT_MIN_VALID_SECONDS,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        timeout_seconds: float = 28.0,
        send: Send | None = None,
        clock: Callable[[], float] = time.time,
        api_base_url: str | None = None,
        api_base_urls: Mapping[str, str] | None = None,
    ) -> None:
        """api_url: the stack's ManagementApiUrl output; secret_prefix: its TokenSecretPrefix output; token_table: its
        TokenTableName output, with TokenStore=dynamodb (None: the pairs are secrets).
        min_valid_seconds: a token valid for less than this is refreshed first. cache_seconds: how long a secret
        read is reused (the broker rotates at most a few times a week, so minutes are safe). api_base_url: the
        Smartsheet API your tokens' api_base_url names instead of their region's (the local stack's emulator).
        api_base_urls: the same for one region each ({"eu": ...}), ahead of api_base_url: a token's api_base_url is
        its connection's region's (tokens work only in the region that issued them)."""
        self._api = _SignedApi(api_url, region=region, session=session, timeout_seconds=timeout_seconds, send=send)
        self.management = ManagementClient.__new__(ManagementClient)
        self.management._api = self._api  # one signer, one connection setup, for both
        self._prefix = secret_prefix
        self._secrets = secrets_client or self._api.session.client("secretsmanager", region_name=self._api.region)
        self._table = token_table or None
        self._dynamodb = dynamodb_client or (
            self._api.session.client("dynamodb", region_name=self._api.region) if self._table else None
        )
        self._kms = kms_client or (
            self._api.session.client("kms", region_name=self._api.region) if self._table else None
        )
        self._data_keys: dict[bytes, bytes] = {}  # encrypted data key -> opened (bounded; see _open_pair)
        if not 0 <= min_valid_seconds <= MAX_MIN_VALID_SECONDS:
            raise ValueError(f"min_valid_seconds must be 0 to {MAX_MIN_VALID_SECONDS} (an access token lives 7 days)")
        if api_base_url is not None:
            base = urlsplit(api_base_url)
            if base.scheme not in ("https", "http") or not base.hostname:
                raise ValueError(f"api_base_url must be an http(s) URL, got {api_base_url!r}")
        self._api_base = api_base_url.rstrip("/") if api_base_url else None
        self._api_bases: dict[str, str] = {}
        for name, url in (api_base_urls or {}).items():
            parts = urlsplit(url)
            if name not in API_BASE_URLS or parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError(f"api_base_urls takes {', '.join(API_BASE_URLS)} to http(s) URLs, got {name!r}")
            self._api_bases[name] = url.rstrip("/")
        self._min_valid = min_valid_seconds
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        # end user -> (their active connections' ids, when the broker was asked)
        self._end_users: dict[str, tuple[tuple[str, ...], float]] = {}
        # connection id -> when the broker said to ask again (Retry-After of a refresh it could not do then)
        self._ask_again_at: dict[str, float] = {}
        # connection id -> the hash of the token the caller reported refused ("" when it had none cached): the next
        # token() learns the connection's state from the broker before handing anything out.
        self._suspect: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @classmethod
    def from_environment(cls, **kwargs: Any) -> TokenProvider:
        """From SMARTSHEET_BROKER_API_URL and SMARTSHEET_BROKER_SECRET_PREFIX (the stack's outputs),
        SMARTSHEET_BROKER_TOKEN_TABLE with TokenStore=dynamodb (its TokenTableName output), and SMARTSHEET_API_BASE_URL
        (and SMARTSHEET_API_BASE_URL_<REGION>, e.g. _EU) when set: the Smartsheet API to use instead of the token's
        region's."""
        api_url = _environment("SMARTSHEET_BROKER_API_URL")
        prefix = _environment("SMARTSHEET_BROKER_SECRET_PREFIX")
        kwargs.setdefault("api_base_url", os.environ.get("SMARTSHEET_API_BASE_URL") or None)
        regional = {name: os.environ.get(f"SMARTSHEET_API_BASE_URL_{name.upper()}", "") for name in API_BASE_URLS}
        kwargs.setdefault("api_base_urls", {name: url for name, url in regional.items() if url})
        kwargs.setdefault("token_table", os.environ.get("SMARTSHEET_BROKER_TOKEN_TABLE") or None)
        return cls(api_url=api_url, secret_prefix=prefix, **kwargs)

    # ----------------------------------------------------------------------------------------------- public
    def token(self, connection_id: str | None = None, *, end_user_id: str | None = None) -> AccessToken:
        """A token valid for at least min_valid_seconds (or, when the broker cannot refresh right now, one that
        is still valid). Give a connection id (the Smartsheet user id) or your own end_user_id (AmbiguousEndUser when
        they have several active connections: give the connection id, or use tokens_of). After invalidate(), the
        broker is asked for the connection's state first: needs_reauth or revoked raise ConnectionUnavailable."""
        if (connection_id is None) == (end_user_id is None):
            raise ValueError("give either a connection id or an end_user_id")
        if connection_id is None:
            connection_id = self.connection_of(end_user_id or "")
        connection_id = _checked_connection_id(connection_id)
        with self._lock(connection_id):
            if connection_id in self._suspect:
                return self._recheck(connection_id, self._suspect[connection_id])
            now = self._clock()
            cached = self._cache.get(connection_id)
            if cached and now - cached.read_at < self._cache_seconds and self._fresh(cached.token, now):
                return cached.token
            current = self._read(connection_id)
            if self._fresh(current, now):
                return current
            if now < self._ask_again_at.get(connection_id, 0.0) and current.expires_at > now:
                return current  # the broker asked us to wait (a refresh cooldown, its pace): the token still works
            self._ask_refresh(connection_id, current)
            current = self._read(connection_id)
            if current.expires_at <= self._clock():
                raise BrokerUnavailable(f"connection {connection_id}: the stored token is expired")
            return current

    def access_token(self, connection_id: str | None = None, *, end_user_id: str | None = None) -> str:
        return self.token(connection_id, end_user_id=end_user_id).access_token

    def invalidate(self, connection_id: str) -> None:
        """Report that Smartsheet answered 401 with this connection's token. The next token() does not trust the
        cache or the stored token: it asks the broker for the connection's state (needs_reauth or revoked raise
        ConnectionUnavailable) and, when the stored token is still the refused one, has the broker refresh it, which
        also tells whether the user revoked the grant at Smartsheet."""
        if not is_connection_id(connection_id):
            return  # never read under such an id: nothing to forget
        with self._lock(connection_id):
            cached = self._cache.pop(connection_id, None)
            refused = _digest(cached.token.access_token) if cached else self._suspect.get(connection_id, "")
            self._suspect[connection_id] = refused
            self._ask_again_at.pop(connection_id, None)

    def tokens_of(self, end_user_id: str) -> dict[str, AccessToken]:
        """A token of each active connection of your end user (several with AccountsPerEndUser=many): connection id ->
        token, in the order GET /connections lists them; {} when they have none. Each is token(connection_id)'s, so
        the same cache and refresh rules apply; a connection found unusable since the lookup (needs_reauth, revoked)
        is left out, and the lookup is made again next time."""
        found: dict[str, AccessToken] = {}
        for connection_id in self._active_of(end_user_id):
            try:
                found[connection_id] = self.token(connection_id)
            except ConnectionUnavailable:
                continue
        return found

    def connection_of(self, end_user_id: str) -> str:
        """The active connection bound to your end user (GET /connections?end_user_id=..., cached).
        ConnectionUnavailable when there is none, AmbiguousEndUser when there are several (give a connection id, or use
        tokens_of)."""
        active = self._active_of(end_user_id)
        if not active:
            raise ConnectionUnavailable(
                None, "not_found", "has no active connection (connect them first)", end_user_id=end_user_id
            )
        if len(active) > 1:
            raise AmbiguousEndUser(end_user_id, active, one="token(connection_id)", every="tokens_of(end_user_id)")
        return active[0]

    def _active_of(self, end_user_id: str) -> tuple[str, ...]:
        """The ids of the end user's active connections, every page of GET /connections?end_user_id= (a page can be
        empty and still have a next one: the status filter applies after the table's limit); cached when there are
        any."""
        known = self._end_users.get(end_user_id)
        if known and self._clock() - known[1] < self._cache_seconds:
            return known[0]
        query = {"end_user_id": end_user_id, "status": "active", "limit": str(_END_USER_PAGE_SIZE)}
        active: list[str] = []
        while True:
            status, body = self._api.call("GET", f"/connections?{urlencode(query, quote_via=quote)}")
            if status != 200:
                raise self._failure(status, body, connection_id=None, end_user_id=end_user_id)
            for connection in body.get("connections", []):
                if not is_connection_id(connection.get("connection_id")):
                    raise TokenError(f"end user {end_user_id}: the broker answered a malformed connection id")
                active.append(str(connection["connection_id"]))
            following = body.get("next")
            if not following:
                break
            query["next"] = str(following)
        found = tuple(dict.fromkeys(active))
        if found:  # none is not remembered: the user may connect in another process any moment
            self._end_users[end_user_id] = (found, self._clock())
        return found

    def complete_connect_session(self, completion_code: str, *, end_user_id: str) -> str:
        """Redeem the completion_code your return_to page received, for the end user signed in to your app in that
        request (from your own session, never from the link: the broker checks it is the end user the connect
        session was made for). Returns the id of the connection now bound to them (ManagementClient's
        complete_connect_session and finish_connect answer the whole connection)."""
        try:
            result = self.management.complete_connect_session(completion_code, end_user_id=end_user_id)
        except ConnectRefused:
            raise
        except BrokerApiError as failure:
            body = _as_body(failure)
            raise self._failure(failure.status, body, connection_id=None, end_user_id=end_user_id) from None
        connection_id = result.connection.connection_id
        # The end user's lookup is made again: the bound connection may be one of several (AccountsPerEndUser=many).
        self._end_users.pop(end_user_id, None)
        self._suspect.pop(connection_id, None)
        return connection_id

    # ---------------------------------------------------------------------------------------------- internals
    def _lock(self, connection_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(connection_id, threading.Lock())

    def _fresh(self, token: AccessToken, now: float) -> bool:
        return token.expires_at - now >= self._min_valid

    def _recheck(self, connection_id: str, refused: str) -> AccessToken:
        """After invalidate(): the broker's word on the connection, then a token other than the refused one."""
        status, body = self._api.call("GET", f"/connections/{quote(connection_id, safe='')}")
        if status != 200:
            raise self._failure(status, body, connection_id=connection_id)
        state = str(body.get("status", ""))
        if state in _UNUSABLE:
            self._forget(connection_id)
            raise ConnectionUnavailable(connection_id, state, _UNUSABLE_MESSAGES[state])
        current = self._read(connection_id)
        if refused and _digest(current.access_token) == refused:
            # The stored token is the one Smartsheet just refused: have the broker refresh it now. A grant the user
            # revoked at Smartsheet makes that refresh fail with invalid_grant: the broker marks the connection
            # needs_reauth and answers 409 needs_reauth, raised here as ConnectionUnavailable.
            try:
                self._ask_refresh(connection_id, current, min_valid=MAX_MIN_VALID_SECONDS, keep_usable=False)
            except ConnectionUnavailable:
                self._forget(connection_id)
                raise
            current = self._read(connection_id)
            if _digest(current.access_token) == refused:
                raise BrokerUnavailable(f"connection {connection_id}: the broker holds no token but the refused one")
        if current.expires_at <= self._clock():
            raise BrokerUnavailable(f"connection {connection_id}: the stored token is expired")
        self._suspect.pop(connection_id, None)
        return current

    def _forget(self, connection_id: str) -> None:
        """A dead connection: its token leaves the cache, and every token() asks the broker again (one GET each)
        until the connection is active with another token (its user connected again)."""
        self._cache.pop(connection_id, None)
        for end_user_id, (known, _) in list(self._end_users.items()):
            if connection_id in known:
                self._end_users.pop(end_user_id, None)

    def _read(self, connection_id: str) -> AccessToken:
        data, retired = self._read_table(connection_id) if self._table else (None, False)
        if data is None:
            try:
                data = self._read_secret(connection_id)
            except ConnectionUnavailable as exc:
                if retired and exc.status == "not_found":  # its pair retired with the disconnect
                    raise ConnectionUnavailable(connection_id, "revoked", "the connection was disconnected") from None
                raise
        region = str(data.get("region") or "us")
        token = AccessToken(
            access_token=str(data["access_token"]),
            expires_at=int(data["expires_at"]),
            connection_id=connection_id,
            email=str(data.get("email", "")),
            region=region,
            api_base_override=self._api_bases.get(region) or self._api_base,
        )
        self._cache[connection_id] = _Cached(token, self._clock())
        return token

    def _read_table(self, connection_id: str) -> tuple[dict[str, Any] | None, bool]:
        """The pair from the token table, and whether it was retired. No pair when it is not there (still a secret,
        or a secret again: a migration) or retired (a disconnect, or moved back to Secrets Manager)."""
        assert self._dynamodb is not None
        assert self._table is not None
        item = self._dynamodb.get_item(
            TableName=self._table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
        ).get("Item")
        if not item or "sealed_pair" not in item or "retired_at" in item:
            return None, bool(item and "retired_at" in item)
        generation, version = item["pair_generation"]["N"], item["pair_version"]["S"]
        binding = f"token-pair/v{PAIR_FORMAT}/{connection_id}/{generation}/{version}"
        data: dict[str, Any] = json.loads(self._open_pair(bytes(item["sealed_pair"]["B"]), binding))
        return data, False

    def _open_pair(self, sealed: bytes, binding: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 (TokenStore=dynamodb only)

        if len(sealed) < 3 or sealed[0] != PAIR_FORMAT:
            raise TokenError("the broker's token table holds a pair in an unknown format: update this file")
        key_length = int.from_bytes(sealed[1:3], "big")
        encrypted_key = sealed[3 : 3 + key_length]
        nonce = sealed[3 + key_length : 3 + key_length + _NONCE_BYTES]
        key = self._data_keys.get(encrypted_key)
        if key is None:
            assert self._kms is not None
            key = self._kms.decrypt(CiphertextBlob=encrypted_key, EncryptionContext=TOKEN_PAIR_CONTEXT)["Plaintext"]
            if len(self._data_keys) >= _DATA_KEYS_MAX:
                self._data_keys.pop(next(iter(self._data_keys)))
            self._data_keys[encrypted_key] = key
        try:
            opened: bytes = AESGCM(key).decrypt(nonce, sealed[3 + key_length + _NONCE_BYTES :], binding.encode())
        except Exception:  # InvalidTag: altered, or moved from another connection
            raise TokenError("a sealed token pair did not open (altered, or not this connection's)") from None
        return opened

    def _read_secret(self, connection_id: str) -> dict[str, Any]:
        try:
            answer = self._secrets.get_secret_value(
                SecretId=f"{self._prefix}{connection_id}", VersionStage="AWSCURRENT"
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "ResourceNotFoundException":
                raise ConnectionUnavailable(connection_id, "not_found", "no such connection") from None
            if code == "InvalidRequestException":  # scheduled for deletion: disconnected
                raise ConnectionUnavailable(connection_id, "revoked", "the connection was disconnected") from None
            raise
        data: dict[str, Any] = json.loads(answer["SecretString"])
        return data

    def _ask_refresh(
        self, connection_id: str, current: AccessToken, *, min_valid: int | None = None, keep_usable: bool = True
    ) -> None:
        body = {"min_valid_seconds": self._min_valid if min_valid is None else min_valid}
        status, answer = self._api.call("POST", f"/connections/{quote(connection_id, safe='')}/refresh", body)
        if status == 200:
            return
        failure = self._failure(status, answer, connection_id=connection_id)
        # Smartsheet is busy, another refresh is under way, or the connection was refreshed minutes ago (429, its
        # cooldown): a token that still works beats no token, and the broker is not asked again before Retry-After.
        if isinstance(failure, BrokerUnavailable) and failure.retry_after:
            self._ask_again_at[connection_id] = self._clock() + failure.retry_after
        if keep_usable and isinstance(failure, BrokerUnavailable) and current.expires_at > self._clock():
            return
        raise failure

    def _failure(
        self, status: int, body: dict[str, Any], *, connection_id: str | None, end_user_id: str | None = None
    ) -> TokenError:
        code = str(body.get("error", ""))
        message = str(body.get("message", f"the broker answered {status}"))
        subject = f"connection {connection_id}" if connection_id else f"end user {end_user_id}"
        if code in ("needs_reauth", "revoked", "not_found") or (status == 404 and code != "no_such_route" and code):
            return ConnectionUnavailable(connection_id, code or "not_found", message, end_user_id=end_user_id)
        if status in (409, 429, 502, 503, 504):
            retry_after = body.get("retry_after")
            return BrokerUnavailable(f"{subject}: {message}", retry_after if isinstance(retry_after, int) else None)
        return TokenError(f"{subject}: {_api_error(status, body)}")


_UNUSABLE_MESSAGES = {
    "needs_reauth": "Smartsheet no longer honours this connection's grant; its user must connect again",
    "revoked": "the connection was disconnected; its user must connect again",
}


def _as_body(failure: BrokerApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"message": failure.message}
    if failure.error not in ("forbidden", "no_such_route", "redirect", "http_error"):
        body["error"] = failure.error
    if failure.retry_after is not None:
        body["retry_after"] = failure.retry_after
    return body


# -- webhooks: checking a delivery is the broker's ------------------------------------------------------------------
# The headers of a delivery (docs/webhooks.md). Broker-Signature is `t=<unix seconds>,v1=<hex HMAC-SHA256 of
# "<t>.<raw body>" under the signing secret>`; Broker-Event-Id stays the same across retries of one event.
WEBHOOK_SIGNATURE_HEADER = "Broker-Signature"
WEBHOOK_EVENT_ID_HEADER = "Broker-Event-Id"
DEFAULT_WEBHOOK_TOLERANCE_SECONDS = 300
_SIGNATURE_PART = re.compile(r"([a-z0-9]+)=([^,=\s]*)")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class WebhookSignatureError(Exception):
    """A delivery that is not proven to be the broker's, as sent: answer it 400 (or 401) and do not act on it."""


class WebhookSignatureMissing(WebhookSignatureError):
    """No Broker-Signature header (or an empty one)."""


class WebhookSignatureMalformed(WebhookSignatureError):
    """The header is not `t=<unix seconds>,v1=<64 hex digits>`."""


class WebhookSignatureInvalid(WebhookSignatureError):
    """No v1 signature matches the body under the secret(s): a tampered body or timestamp, or the wrong secret."""


class WebhookSignatureExpired(WebhookSignatureError):
    """A genuine signature made outside the tolerance window: an old delivery replayed (or a clock far off)."""


class WebhookReplayed(WebhookSignatureError):
    """The very same signed delivery seen before within the tolerance window (WebhookVerifier only)."""


def _signature_parts(header: str | None) -> tuple[int, list[str]]:
    if header is None or not header.strip():
        raise WebhookSignatureMissing(f"no {WEBHOOK_SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        match = _SIGNATURE_PART.fullmatch(part.strip())
        if match is None:
            raise WebhookSignatureMalformed(f"{WEBHOOK_SIGNATURE_HEADER} is not t=<seconds>,v1=<hex>")
        name, value = match.groups()
        if name == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                raise WebhookSignatureMalformed(f"{WEBHOOK_SIGNATURE_HEADER} has a bad timestamp")
            timestamp = int(value)
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise WebhookSignatureMalformed(f"{WEBHOOK_SIGNATURE_HEADER} has a v1 that is not 64 hex digits")
            signatures.append(value)
        # Other schemes (a later v2) are skipped: a receiver keeps working while the broker adds one.
    if timestamp is None or not signatures:
        raise WebhookSignatureMalformed(f"{WEBHOOK_SIGNATURE_HEADER} lacks t= or v1=")
    return timestamp, signatures


def verify_webhook(
    body: bytes,
    signature_header: str | None,
    secret: str | Sequence[str],
    *,
    tolerance_seconds: float = DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivered event (the parsed body) once its signature proves the broker sent this body at a time within
    `tolerance_seconds` of now; else WebhookSignatureMissing / Malformed / Invalid / Expired.

    `body` is the raw request body, byte for byte (not a re-serialized parse). `secret` is the stack's signing
    secret, or several while you rotate it. Deduplicate on the event's `id` (Broker-Event-Id): a retry of a delivery
    whose answer was lost brings the same event again, freshly signed."""
    if not isinstance(body, bytes | bytearray):
        raise TypeError("body must be the raw request body (bytes)")
    timestamp, signatures = _signature_parts(signature_header)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("secret must be the webhook signing secret (a non-empty string), or a list of them")
    signed = f"{timestamp}.".encode() + bytes(body)
    expected = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    # Every pair is compared, in constant time, whatever matches first.
    matched = [hmac.compare_digest(e, given) for e in expected for given in signatures]
    if not any(matched):
        raise WebhookSignatureInvalid("the signature does not match the body")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureExpired(
            f"signed {int(current - timestamp)} s from now, beyond the {int(tolerance_seconds)} s tolerance"
        )
    try:
        event = json.loads(body)
    except ValueError as exc:  # signed by the broker but not JSON: never sent by it
        raise WebhookSignatureInvalid("the signed body is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookSignatureInvalid("the signed body is not a JSON object")
    return event


class WebhookVerifier:
    """verify_webhook, and refusing the very same signed delivery twice within the tolerance window (a captured
    request replayed at once). One per process; a fleet of receivers deduplicates on the event id instead."""

    def __init__(
        self,
        secret: str | Sequence[str],
        *,
        tolerance_seconds: float = DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
        clock: Callable[[], float] = time.time,
        max_remembered: int = 100_000,
    ) -> None:
        self._secret = secret
        self._tolerance = tolerance_seconds
        self._clock = clock
        self._max = max_remembered
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature header -> its timestamp
        self._lock = threading.Lock()

    def verify(self, body: bytes, signature_header: str | None) -> dict[str, Any]:
        now = self._clock()
        event = verify_webhook(body, signature_header, self._secret, tolerance_seconds=self._tolerance, now=now)
        key = hashlib.sha256(str(signature_header).encode()).hexdigest()
        with self._lock:
            while self._seen and (
                len(self._seen) >= self._max or now - next(iter(self._seen.values())) > self._tolerance
            ):
                self._seen.popitem(last=False)
            if key in self._seen:
                raise WebhookReplayed("this signed delivery was already received")
            self._seen[key] = now
        return event

    def __repr__(self) -> str:
        return "WebhookVerifier(<secret hidden>)"
