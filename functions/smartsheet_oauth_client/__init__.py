"""A valid Smartsheet access token for your own code: read from the broker's secret (cached), refreshed by the broker.

Copy this one file into your Lambda (or any Python 3.10+ program). It needs only the standard library and
boto3/botocore, which the Lambda runtime already has. It never refreshes by itself: the broker is the only one who
rotates a connection's refresh token, so when the stored access token is expired or about to be, it asks the
broker (SigV4-signed POST /connections/{id}/refresh) and reads the secret again.

    from smartsheet_oauth_client import TokenProvider

    tokens = TokenProvider.from_environment()  # SMARTSHEET_BROKER_API_URL, SMARTSHEET_BROKER_SECRET_PREFIX
    token = tokens.token(end_user_id="user-42")  # or tokens.token("4583173393803140")
    requests.get(f"{token.api_base_url}/sheets", headers={"Authorization": f"Bearer {token.access_token}"})

Your code's role needs secretsmanager:GetSecretValue on <TokenSecretPrefix>* and execute-api:Invoke on the
broker's refresh route (and GET /connections to look up end users): see docs/integrating.md in the broker's
repository.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

__all__ = [
    "AccessToken",
    "BrokerUnavailable",
    "ConnectRefused",
    "ConnectionUnavailable",
    "TokenError",
    "TokenProvider",
    "is_connection_id",
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
_EXECUTE_API_HOST = re.compile(r"[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?")
# Connection ids are Smartsheet user ids: digits, beyond 2^53 but below 2^64. The broker's API holds them to this
# rule too (smartsheet_oauth.flows.management imports it from here, so this file stays one file to copy).
CONNECTION_ID_MAX_DIGITS = 20

# (method, url, headers, body, timeout) -> (status, body)
Send = Callable[[str, str, dict[str, str], bytes, float], tuple[int, bytes]]


class TokenError(Exception):
    """No usable token could be had; the message says why."""


class ConnectionUnavailable(TokenError):
    """The connection cannot give tokens any more: `status` is needs_reauth, revoked or not_found. Send the user
    through your connect flow again (POST /connect-sessions)."""

    def __init__(self, connection_id: str, status: str, message: str) -> None:
        super().__init__(f"connection {connection_id}: {message}")
        self.connection_id = connection_id
        self.status = status


class BrokerUnavailable(TokenError):
    """The broker (or Smartsheet behind it) could not refresh right now and the stored token is expired. Try
    again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConnectRefused(TokenError):
    """The broker bound nothing: `error` is the API's code (end_user_mismatch, completion_code_used,
    completion_code_expired, unknown_completion_code, binding_conflict, invalid_request). Send the user through your
    connect flow again (a new POST /connect-sessions)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error


@dataclass(frozen=True)
class AccessToken:
    """A connection's current access token. repr never shows the token."""

    access_token: str = field(repr=False)
    expires_at: int
    connection_id: str
    email: str
    region: str

    @property
    def api_base_url(self) -> str:
        """The Smartsheet API this token works with (tokens are region-specific)."""
        return API_BASE_URLS.get(self.region, API_BASE_URLS["us"])


@dataclass
class _Cached:
    token: AccessToken
    read_at: float


def is_connection_id(value: object) -> bool:
    """A connection id: the Smartsheet user id as a string of ASCII digits (str.isdigit alone also admits "²")."""
    return isinstance(value, str) and 0 < len(value) <= CONNECTION_ID_MAX_DIGITS and value.isascii() and value.isdigit()


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
        min_valid_seconds: int = DEFAULT_MIN_VALID_SECONDS,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        timeout_seconds: float = 28.0,
        send: Send | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """api_url: the stack's ManagementApiUrl output; secret_prefix: its TokenSecretPrefix output.
        min_valid_seconds: a token valid for less than this is refreshed first. cache_seconds: how long a secret
        read is reused (the broker rotates at most a few times a week, so minutes are safe)."""
        parts = urlsplit(api_url)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise ValueError(f"api_url must be the broker's https:// URL (http only on loopback), got {api_url!r}")
        self._api_url = api_url.rstrip("/")
        self._prefix = secret_prefix
        self._session = session or boto3.session.Session()
        found = _EXECUTE_API_HOST.fullmatch(parts.hostname)
        self._region = region or (found.group(1) if found else None) or self._session.region_name
        if not self._region:
            raise ValueError("region is needed to sign requests to the broker")
        self._secrets = secrets_client or self._session.client("secretsmanager", region_name=self._region)
        if not 0 <= min_valid_seconds <= MAX_MIN_VALID_SECONDS:
            raise ValueError(f"min_valid_seconds must be 0 to {MAX_MIN_VALID_SECONDS} (an access token lives 7 days)")
        self._min_valid = min_valid_seconds
        self._cache_seconds = cache_seconds
        self._timeout = timeout_seconds
        self._send = send or _urllib_send
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._end_users: dict[str, tuple[str, float]] = {}
        # connection id -> when the broker said to ask again (Retry-After of a refresh it could not do then)
        self._ask_again_at: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # connection id -> the access token the caller reported refused (invalidate); never logged
        self._refused: dict[str, str] = {}

    @classmethod
    def from_environment(cls, **kwargs: Any) -> TokenProvider:
        """From SMARTSHEET_BROKER_API_URL and SMARTSHEET_BROKER_SECRET_PREFIX (the stack's outputs)."""
        try:
            api_url = os.environ["SMARTSHEET_BROKER_API_URL"]
            prefix = os.environ["SMARTSHEET_BROKER_SECRET_PREFIX"]
        except KeyError as exc:
            raise ValueError(f"set {exc.args[0]} (an output of the broker's stack)") from None
        return cls(api_url=api_url, secret_prefix=prefix, **kwargs)

    # ----------------------------------------------------------------------------------------------- public
    def token(self, connection_id: str | None = None, *, end_user_id: str | None = None) -> AccessToken:
        """A token valid for at least min_valid_seconds (or, when the broker cannot refresh right now, one that
        is still valid). Give a connection id (the Smartsheet user id) or your own end_user_id."""
        if (connection_id is None) == (end_user_id is None):
            raise ValueError("give either a connection id or an end_user_id")
        if connection_id is None:
            connection_id = self.connection_of(end_user_id or "")
        if not is_connection_id(connection_id):
            # It names a secret and a URL path: refused before either is used.
            raise ValueError("a connection id is the Smartsheet user id: 1 to 20 digits")
        with self._lock(connection_id):
            now = self._clock()
            cached = self._cache.get(connection_id)
            reusable = cached and connection_id not in self._refused and now - cached.read_at < self._cache_seconds
            if cached and reusable and self._fresh(cached.token, now):
                return cached.token
            current = self._read(connection_id)
            if self._refused.get(connection_id) == current.access_token:
                # Smartsheet refused this token before its expiry (revoked: by the user, or by an organisation's
                # token-lifetime policy): only a refresh tells whether the grant lives. A dead grant is needs_reauth.
                self._ask_refresh(connection_id, current, min_valid=MAX_MIN_VALID_SECONDS, usable=False)
                self._refused.pop(connection_id, None)
                return self._read(connection_id)
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
        """Forget the cached token, e.g. after Smartsheet answered 401 with it. If the stored token is still that
        one, the next token() has the broker refresh it first (a token Smartsheet revoked before its expiry, as an
        organisation's token-lifetime policy does): a new token, or ConnectionUnavailable(needs_reauth)."""
        cached = self._cache.pop(connection_id, None)
        if cached is not None:
            self._refused[connection_id] = cached.token.access_token

    def connection_of(self, end_user_id: str) -> str:
        """The active connection bound to your end user (GET /connections?end_user_id=..., cached)."""
        known = self._end_users.get(end_user_id)
        if known and self._clock() - known[1] < self._cache_seconds:
            return known[0]
        query = urlencode({"end_user_id": end_user_id, "status": "active"}, quote_via=quote)
        status, body = self._call("GET", f"/connections?{query}")
        if status != 200:
            raise self._failure(status, body, subject=f"end user {end_user_id}")
        active = [c["connection_id"] for c in body.get("connections", [])]
        if not active:
            raise ConnectionUnavailable(end_user_id, "not_found", "no active connection for this end user")
        if not is_connection_id(active[0]):
            raise TokenError(f"end user {end_user_id}: the broker answered a malformed connection id")
        self._end_users[end_user_id] = (active[0], self._clock())
        return str(active[0])

    def complete_connect_session(self, completion_code: str, *, end_user_id: str) -> str:
        """Redeem the completion_code your return_to page received, for the end user signed in to your app in that
        request (from your own session, never from the link: the broker checks it is the end user the connect
        session was made for). Returns the id of the connection now bound to them."""
        body = {"completion_code": completion_code, "end_user_id": end_user_id}
        status, answer = self._call("POST", "/connect-sessions/complete", body)
        code = str(answer.get("error", ""))
        if status == 200:
            connection_id = str((answer.get("connection") or {}).get("connection_id", ""))
            if connection_id:
                self._end_users[end_user_id] = (connection_id, self._clock())
                return connection_id
        elif status in (400, 404) or (status == 409 and code != "completion_in_progress"):
            raise ConnectRefused(code or "refused", str(answer.get("message", f"the broker answered {status}")))
        raise self._failure(status, answer, subject=f"end user {end_user_id}")

    # ---------------------------------------------------------------------------------------------- internals
    def _lock(self, connection_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(connection_id, threading.Lock())

    def _fresh(self, token: AccessToken, now: float) -> bool:
        return token.expires_at - now >= self._min_valid

    def _read(self, connection_id: str) -> AccessToken:
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
        data = json.loads(answer["SecretString"])
        token = AccessToken(
            access_token=str(data["access_token"]),
            expires_at=int(data["expires_at"]),
            connection_id=connection_id,
            email=str(data.get("email", "")),
            region=str(data.get("region", "us")),
        )
        self._cache[connection_id] = _Cached(token, self._clock())
        return token

    def _ask_refresh(
        self, connection_id: str, current: AccessToken, *, min_valid: int | None = None, usable: bool = True
    ) -> None:
        body = {"min_valid_seconds": self._min_valid if min_valid is None else min_valid}
        status, answer = self._call("POST", f"/connections/{quote(connection_id, safe='')}/refresh", body)
        if status == 200:
            return
        failure = self._failure(status, answer, subject=f"connection {connection_id}")
        # Smartsheet is busy, another refresh is under way, or the connection was refreshed minutes ago (429, its
        # cooldown): a token that still works beats no token, and the broker is not asked again before Retry-After.
        if usable and isinstance(failure, BrokerUnavailable) and current.expires_at > self._clock():
            if failure.retry_after:
                self._ask_again_at[connection_id] = self._clock() + failure.retry_after
            return
        raise failure

    def _failure(self, status: int, body: dict[str, Any], *, subject: str) -> TokenError:
        code = str(body.get("error", ""))
        message = str(body.get("message", f"the broker answered {status}"))
        if status == 404 or code in ("needs_reauth", "revoked", "not_found"):
            return ConnectionUnavailable(subject, code or "not_found", message)
        if status in (409, 429, 502, 503, 504):
            retry_after = body.get("retry_after")
            return BrokerUnavailable(f"{subject}: {message}", retry_after if isinstance(retry_after, int) else None)
        if 300 <= status < 400:
            # Never followed: the request's signature would travel to wherever the redirect points.
            return TokenError(f"{subject}: the broker answered a redirect ({status}), not followed: check api_url")
        if status == 403:
            return TokenError(f"{subject}: the broker refused the caller ({message}): allow execute-api:Invoke")
        return TokenError(f"{subject}: the broker answered {status}: {message}")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        url = f"{self._api_url}{path}"
        data = json.dumps(body).encode() if body is not None else b""
        request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
        credentials = self._session.get_credentials()
        if credentials is None:
            raise TokenError("no AWS credentials to sign the request to the broker")
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self._region).add_auth(request)
        status, raw = self._send(method, url, dict(request.headers.items()), data, self._timeout)
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return status, parsed if isinstance(parsed, dict) else {}
