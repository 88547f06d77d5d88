"""Smartsheet's OAuth API as the broker uses it: authorize URL, code exchange, refresh, /users/me, revoke."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlencode

from smartsheet_oauth.domain.errors import (
    MalformedResponse,
    NoTimeToRefresh,
    SmartsheetRejected,
    TransientSmartsheetError,
)
from smartsheet_oauth.domain.tokens import TokenGrant
from smartsheet_oauth.smartsheet.answers import TRANSIENT_STATUSES, error_from, json_object, text, token_grant

# The HTTP client is urllib3, the one botocore already loads: the functions pay no import for it, where requests
# (with its charset detection and cookie jar) cost ~20 ms of each cold start on /callback and refresh. It is
# imported where a call needs it: /login only builds the authorize URL.
if TYPE_CHECKING:
    from urllib3 import PoolManager
    from urllib3.util.retry import Retry

# Bodies larger than this are not a token answer; refuse to parse them.
_MAX_BODY_BYTES = 64 * 1024
_HEADERS = {"Accept": "application/json", "User-Agent": "smartsheet-oauth-broker"}
_FORM = "application/x-www-form-urlencoded"


class SmartsheetUser(NamedTuple):
    """Who signed in: the fields of GET /users/me the broker keeps. The id stays a string (can exceed 2^53)."""

    id: str
    email: str
    first_name: str
    last_name: str


class Timeouts(NamedTuple):
    """Connect and read timeouts of one call to Smartsheet, in seconds."""

    connect: float = 3.05
    read: float = 10.0

    @property
    def attempt_seconds(self) -> float:
        """The longest one attempt can wait for its answer once it is under way: after this it gives up."""
        return self.connect + self.read


class Reply(NamedTuple):
    """What the client keeps of an answer: its status, its body (read up to the size limit), Retry-After, and whether
    an earlier attempt of the same call may have been carried out without its answer reaching us (then a refusal of
    this one may be Smartsheet refusing what it already did). repr leaves the body out: a token answer carries
    tokens."""

    status: int
    content: bytes
    retry_after: str
    after_unknown_attempt: bool = False

    def __repr__(self) -> str:
        return f"Reply(status={self.status}, content=<{len(self.content)} bytes>, retry_after={self.retry_after!r})"


def request_hash(client_secret: str, code_or_refresh_token: str) -> str:
    """The `hash` parameter: hex SHA-256 of "<app secret>|<code or refresh token>", so the secret never travels."""
    return hashlib.sha256(f"{client_secret}|{code_or_refresh_token}".encode()).hexdigest()


def authorize_url(base: str, *, client_id: str, scopes: tuple[str, ...], state: str, redirect_uri: str | None) -> str:
    """The authorize page URL. Scopes are joined with %20 (quote_via=quote), the form Smartsheet documents."""
    params = {"response_type": "code", "client_id": client_id, "scope": " ".join(scopes), "state": state}
    if redirect_uri:
        params["redirect_uri"] = redirect_uri
    return f"{base}?{urlencode(params, quote_via=quote)}"


def https_pool(retry: Retry | bool, base_url: str) -> PoolManager:
    """Keep-alive HTTPS connections: to Smartsheet (shared by the sweep's worker threads, hence the pool size) and
    to a webhook receiver. TLS is verified against AWS_CA_BUNDLE when the function sets one, else the CA bundle
    botocore ships (what the AWS SDK trusts on Lambda). A proxy set for the function (HTTPS_PROXY, NO_PROXY: as
    botocore honours them) is used."""
    from urllib.parse import urlsplit  # noqa: PLC0415
    from urllib.request import getproxies, proxy_bypass  # noqa: PLC0415 (loaded by botocore)

    from botocore.httpsession import DEFAULT_CA_BUNDLE  # noqa: PLC0415 (loaded with boto3's clients)
    from urllib3 import PoolManager, ProxyManager  # noqa: PLC0415

    ca_certs = os.environ.get("AWS_CA_BUNDLE") or DEFAULT_CA_BUNDLE
    options: dict[str, Any] = {"num_pools": 4, "maxsize": 64, "block": False, "retries": retry, "ca_certs": ca_certs}
    target = urlsplit(base_url)
    proxy = getproxies().get(target.scheme)
    if proxy and not proxy_bypass(target.hostname or ""):
        return ProxyManager(proxy, **options)
    return PoolManager(**options)


def _safe_retry() -> Retry:
    """Retries for calls whose repetition is harmless: the code exchange (a used code just fails) and GETs."""
    from urllib3.util.retry import Retry  # noqa: PLC0415 (cold-start cost)

    return Retry(
        total=2,
        connect=2,
        read=1,
        status=2,
        other=0,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        backoff_factor=0.25,
        backoff_max=2.0,
        backoff_jitter=0.25,
        retry_after_max=2,
        raise_on_status=False,
    )


# The refresh's retries: at most this many, each after a pause of at most REFRESH_RETRY_PAUSE_SECONDS (the backoff's
# cap plus its jitter, or Retry-After's cap, whichever is longer).
REFRESH_RETRIES = 2
REFRESH_RETRY_PAUSE_SECONDS = 2.25


def _refresh_retry(total: int = REFRESH_RETRIES) -> Retry:
    """A refresh must not be repeated once Smartsheet may have processed it: it rotates the refresh token, so
    a blind retry after a 5xx or a read timeout could spend the new pair and kill the grant. Retry only
    what Smartsheet cannot have processed: a refused connection and a 429."""
    from urllib3.util.retry import Retry  # noqa: PLC0415 (cold-start cost)

    return Retry(
        total=total,
        connect=min(2, total),
        read=0,
        status=min(1, total),
        other=0,
        status_forcelist=(429,),
        allowed_methods=frozenset({"POST"}),
        backoff_factor=0.25,
        backoff_max=2.0,
        backoff_jitter=0.25,
        retry_after_max=2,
        raise_on_status=False,
    )


class SmartsheetClient:
    """Talks to Smartsheet's API for one app (client id + secret): the default region's (api_base_url), or another
    region's when a call names it (`region=`, one of `region_bases`). Tokens are region-specific, so each call goes
    to the region its code or token came from. The pools serve every region's host."""

    def __init__(
        self,
        *,
        api_base_url: str,
        client_id: str,
        client_secret: str,
        timeouts: Timeouts | None = None,
        pool: PoolManager | None = None,
        refresh_pool: PoolManager | None = None,
        region_bases: Mapping[str, str] | None = None,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._region_bases = {name: base.rstrip("/") for name, base in (region_bases or {}).items()}
        self.client_id = client_id
        self._secret = client_secret
        self._timeouts = timeouts or Timeouts()
        self._pool = pool or https_pool(_safe_retry(), self._base)
        self._refresh_pool = refresh_pool or pool or https_pool(_refresh_retry(), self._base)

    def base_url(self, region: str | None = None) -> str:
        """The API base of a region: None (or a region without a base of its own) is the default one."""
        if not region:
            return self._base
        try:
            return self._region_bases[region]
        except KeyError:
            if not self._region_bases:  # a single-region client (tests, tools): every call is its region's
                return self._base
            raise MalformedResponse(f"no API base for Smartsheet region {region!r}") from None

    def exchange_code(self, code: str, *, redirect_uri: str | None = None, region: str | None = None) -> TokenGrant:
        form = {
            "grant_type": "authorization_code",
            "client_id": self.client_id,
            "code": code,
            "hash": request_hash(self._secret, code),
        }
        if redirect_uri:
            form["redirect_uri"] = redirect_uri
        return token_grant(self._post_token(self._pool, form, base=self.base_url(region)))

    @property
    def timeouts(self) -> Timeouts:
        return self._timeouts

    def refresh(
        self, refresh_token: str, *, answer_within: float | None = None, region: str | None = None
    ) -> TokenGrant:
        """Rotate the pair. With `answer_within` (seconds from now), no attempt is sent that could still be waiting
        for its answer after that: the first must fit (else NoTimeToRefresh, and nothing is sent), and only as many
        retries as fit are allowed (refresh_window.py says why)."""
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "refresh_token": refresh_token,
            "hash": request_hash(self._secret, refresh_token),
        }
        retries = None
        if answer_within is not None:
            attempt = self._timeouts.attempt_seconds
            if answer_within < attempt:
                raise NoTimeToRefresh(f"{answer_within:.1f} s left for an answer; one attempt may need {attempt:.2f} s")
            fit = int((answer_within - attempt) // (attempt + REFRESH_RETRY_PAUSE_SECONDS))
            retries = _refresh_retry(min(REFRESH_RETRIES, fit))
        base = self.base_url(region)
        return token_grant(self._post_token(self._refresh_pool, form, retries=retries, base=base))

    def current_user(self, access_token: str, *, region: str | None = None) -> SmartsheetUser:
        response = self._send(
            self._pool,
            "GET",
            f"{self.base_url(region)}/users/me",
            headers={"Authorization": f"Bearer {access_token}"},
        )
        body = json_object(response)
        user_id = body.get("id")
        # ASCII digits only: str.isdigit() also admits "²" and "٤", which would name a connection and a secret.
        if (
            isinstance(user_id, bool)
            or not isinstance(user_id, int | str)
            or not str(user_id).isascii()
            or not str(user_id).isdigit()
        ):
            raise MalformedResponse("/users/me answered without a numeric id", status=response.status)
        email = body.get("email")
        if not isinstance(email, str):
            raise MalformedResponse("/users/me answered without an email", status=response.status)
        return SmartsheetUser(
            id=str(user_id),
            email=email[:320],
            first_name=text(body.get("firstName")),
            last_name=text(body.get("lastName")),
        )

    def revoke(self, access_token: str, *, all_for_client: bool = False, region: str | None = None) -> None:
        query = "?deleteAllForApiClient=true" if all_for_client else ""
        response = self._send(
            self._pool,
            "DELETE",
            f"{self.base_url(region)}/token{query}",
            headers={"Authorization": f"Bearer {access_token}"},
        )
        json_object(response)

    def _post_token(
        self, pool: PoolManager, form: dict[str, str], *, retries: Retry | None = None, base: str | None = None
    ) -> dict[str, Any]:
        # Form-encoded body: the documented form (never JSON).
        url = f"{base or self._base}/token"
        response = self._send(pool, "POST", url, headers={"Content-Type": _FORM}, body=urlencode(form), retries=retries)
        return json_object(response)

    def _send(
        self,
        pool: PoolManager,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        body: str | None = None,
        retries: Retry | None = None,
    ) -> Reply:
        from urllib3 import Timeout  # noqa: PLC0415 (loaded with the pool; a dict lookup here)
        from urllib3.exceptions import DecodeError, HTTPError, MaxRetryError  # noqa: PLC0415

        options: dict[str, Any] = {} if retries is None else {"retries": retries}
        try:
            # Never follow a redirect: a 307 would re-send the code and its hash, a 302 the bearer token.
            response = pool.request(
                method,
                url,
                body=body,
                headers={**_HEADERS, **headers},
                timeout=Timeout(connect=self._timeouts.connect, read=self._timeouts.read),
                redirect=False,
                preload_content=False,
                **options,
            )
        except MaxRetryError as exc:  # connection refused or reset, timeouts: retried as far as the policy allows
            raise TransientSmartsheetError(
                f"Smartsheet unreachable: {type(exc.reason).__name__}", outcome_unknown=_may_have_been_sent(exc.reason)
            ) from exc
        except (HTTPError, OSError) as exc:
            raise TransientSmartsheetError(
                f"request to Smartsheet failed: {type(exc).__name__}", outcome_unknown=_may_have_been_sent(exc)
            ) from exc
        try:
            content = response.read(_MAX_BODY_BYTES + 1, decode_content=True)
        except DecodeError as exc:  # a Content-Encoding the body does not match
            raise MalformedResponse("Smartsheet's answer could not be decoded", status=response.status) from exc
        except (HTTPError, OSError) as exc:  # short body, broken chunks, a read timeout mid-body
            raise TransientSmartsheetError("Smartsheet's answer was cut off", outcome_unknown=True) from exc
        finally:
            # A body read to its end has already given its connection back to the pool; one left unread closes it.
            response.close()
        if len(content) > _MAX_BODY_BYTES:
            raise MalformedResponse("Smartsheet's answer is too large", status=response.status)
        history = response.retries.history if response.retries is not None else ()
        reply = Reply(
            response.status,
            content,
            response.headers.get("Retry-After", ""),
            after_unknown_attempt=any(_attempt_outcome_unknown(earlier) for earlier in history),
        )
        if reply.status >= 400:
            raise error_from(reply)
        if reply.status >= 300:
            raise SmartsheetRejected(f"Smartsheet answered {reply.status}", status=reply.status)
        return reply


def _may_have_been_sent(error: BaseException | None) -> bool:
    """False only for failures that happen before a request leaves (no connection, no TLS session, no proxy): then
    Smartsheet cannot have carried it out. Anything else (a read timeout, a connection cut while waiting) may have
    reached it, and its outcome is unknown."""
    from urllib3.exceptions import ConnectTimeoutError, ProxyError, SSLError  # noqa: PLC0415

    # NewConnectionError (refused, unresolvable) is a ConnectTimeoutError in urllib3 2.
    return not isinstance(error, ConnectTimeoutError | ProxyError | SSLError)


def _attempt_outcome_unknown(earlier: Any) -> bool:
    """An earlier attempt of a call (urllib3's retry history) that Smartsheet may have carried out: it failed after
    the request may have left, or was answered with a server error, which does not say."""
    if earlier.error is not None:
        return _may_have_been_sent(earlier.error)
    return earlier.status is not None and earlier.status >= 500
