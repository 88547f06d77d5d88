"""Smartsheet OAuth emulator on loopback: authorize page, token endpoint, /users/me, revoke, faults, counters."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import hmac
import html
import http.server
import ipaddress
import json
import random
import secrets
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from infra.local import request_guard

__all__ = [
    "DEFAULT_APP",
    "DEFAULT_USERS",
    "SCOPES",
    "App",
    "AuthorizeError",
    "Faults",
    "ManualClock",
    "Settings",
    "SmartsheetEmulator",
    "User",
    "is_loopback_host",
    "main",
    "token_hash",
]

SCOPES: frozenset[str] = frozenset(
    {
        "ADMIN_SHEETS",
        "ADMIN_SIGHTS",
        "ADMIN_USERS",
        "ADMIN_WEBHOOKS",
        "ADMIN_WORKSPACES",
        "CREATE_SHEETS",
        "CREATE_SIGHTS",
        "DELETE_SHEETS",
        "DELETE_SIGHTS",
        "READ_CONTACTS",
        "READ_EVENTS",
        "READ_SHEETS",
        "READ_SIGHTS",
        "READ_USERS",
        "SHARE_SHEETS",
        "SHARE_SIGHTS",
        "WRITE_SHEETS",
    }
)

AUTHORIZE_PATH = "/b/authorize"
API_PREFIX = "/2.0"
TOKEN_PATH = API_PREFIX + "/token"
USERS_ME_PATH = API_PREFIX + "/users/me"
ADMIN_PREFIX = "/_emulator"

# Smartsheet reports the code's remaining validity in milliseconds, measured after its own processing,
# so a 10-minute code arrives as expires_in=599135, not 600000. Clients must not assume a round number.
_CALLBACK_EXPIRES_IN_OFFSET_MS = 865
_MAX_BODY_BYTES = 1 << 20
# The request log is for tests and benchmarks; a cap keeps a long `make dev` session from growing forever.
_TOKEN_LOG_LIMIT = 200_000
_MAX_NEW_USERS = 10_000  # per POST /_emulator/users: a load test's worth, not a way to fill the memory
_RATE_WINDOW_SECONDS = 60.0
_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json;charset=UTF-8"
_HTML = "text/html; charset=utf-8"
_HTML_HEADERS = (
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    # No form-action directive: browsers apply it to the redirect after the consent POST, which
    # leaves for the app's callback on another origin.
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
)


@dataclass(frozen=True, slots=True)
class _ErrorSpec:
    status: int
    oauth_error: str | None
    message: str


# HTTP status and OAuth `error` per errorCode, as SMARTSHEET.md's table gives them.
_ERRORS: dict[int, _ErrorSpec] = {
    1001: _ErrorSpec(401, None, "An Access Token is required."),
    1002: _ErrorSpec(401, None, "Your Access Token is invalid."),
    1003: _ErrorSpec(401, None, "Your Access Token has expired."),
    1006: _ErrorSpec(404, None, "Not Found."),
    1008: _ErrorSpec(400, None, "Unable to parse request."),
    1067: _ErrorSpec(401, "invalid_client", "Invalid client_id."),
    1068: _ErrorSpec(400, "unsupported_grant_type", "Invalid grant type."),
    1069: _ErrorSpec(400, "invalid_grant", "The authorization code has expired."),
    1070: _ErrorSpec(400, "invalid_request", "Required parameter is missing."),
    1071: _ErrorSpec(400, "invalid_grant", "The authorization code or refresh token provided was invalid."),
    1072: _ErrorSpec(400, "invalid_grant", "Invalid hash value."),
    1073: _ErrorSpec(400, "invalid_request", "The redirect_uri did not match the expected value."),
    1132: _ErrorSpec(400, "invalid_grant", "The token provided has previously been revoked."),
    1236: _ErrorSpec(400, "invalid_client", "Client authentication is required: send hash or client_secret."),
    1237: _ErrorSpec(400, "invalid_client", "Send either hash or client_secret, not both."),
    1238: _ErrorSpec(400, "invalid_client", "Invalid client_secret."),
    4001: _ErrorSpec(503, None, "Smartsheet is currently offline for system maintenance."),
    4002: _ErrorSpec(503, None, "Server timeout exceeded. Request has failed."),
    4003: _ErrorSpec(429, None, "Rate limit exceeded."),
    4004: _ErrorSpec(500, None, "An unexpected error has occurred. Please retry your request."),
}
_SERVER_ERROR_CODES = frozenset({4001, 4002, 4004})
_SCRIPTED_OUTCOMES: frozenset[int | str] = frozenset({"ok", "timeout", 4001, 4002, 4003, 4004})


def token_hash(secret: str, value: str) -> str:
    """The `hash` parameter Smartsheet expects: lowercase hex SHA-256 of `secret|code` or `secret|refresh_token`."""
    return hashlib.sha256(f"{secret}|{value}".encode()).hexdigest()


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback addresses: the emulator must never listen beyond this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ManualClock:
    """A clock tests move by hand, so code and token expiry are tested without sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


@dataclass(frozen=True)
class App:
    """A registered Smartsheet app (API client)."""

    client_id: str
    client_secret: str = field(repr=False)  # kept out of reprs so it cannot leak through logs
    name: str
    redirect_uri: str

    def public(self) -> dict[str, str]:
        return {"client_id": self.client_id, "name": self.name, "redirect_uri": self.redirect_uri}


@dataclass(frozen=True)
class User:
    """A Smartsheet user who can sign in on the emulated authorize page."""

    id: int
    email: str
    first_name: str
    last_name: str
    account_id: int = 7254813458524036
    account_name: str = "Local Org"
    locale: str = "en_US"
    time_zone: str = "US/Pacific"
    admin: bool = False

    def profile(self) -> dict[str, Any]:
        """The `/users/me` body; ids stay Python ints so JSON carries every digit of ids above 2^53."""
        return {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "account": {"id": self.account_id, "name": self.account_name},
            "locale": self.locale,
            "timeZone": self.time_zone,
            "admin": self.admin,
        }


DEFAULT_APP = App(
    client_id="local-client-id",
    client_secret="local-client-secret",  # noqa: S106 - a well-known local-only credential
    name="Local Smartsheet Integration",
    redirect_uri="http://127.0.0.1:3000/callback",
)
# Ids above 2^53 on purpose: 9007199254740993 is the first integer a float cannot hold, so any client
# that parses ids as floats (or JavaScript numbers) gets the wrong user.
DEFAULT_USERS: tuple[User, ...] = (
    User(4583173393803140, "ada@example.com", "Ada", "Lovelace", admin=True),
    User(6812335718217604, "grace@example.com", "Grace", "Hopper"),
    User(
        9007199254740993,
        "alan@example.com",
        "Alan",
        "Turing",
        account_id=9223372036854775,
        account_name="Bletchley Park",
        locale="en_GB",
        time_zone="Europe/London",
    ),
)


def _check_number(name: str, value: object, *, low: float = 0.0, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be between {low} and {high if high is not None else 'infinity'}")


def _check_int(name: str, value: object, *, low: int = 0, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{' or null' if optional else ''}, not {value!r}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")


def _check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    allowed = list(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed!r}, not {value!r}")


@dataclass
class Faults:
    """Faults switchable at run time; `reset_faults()` restores these defaults (no faults)."""

    latency_ms: float = 0.0
    latency_token_only: bool = False
    # Shares (0..1) of API requests answered with a 5xx, a forced 429, or held as a timeout.
    error_rate: float = 0.0
    server_error_codes: tuple[int, ...] = (4004, 4001, 4002)
    rate_limit_rate: float = 0.0
    timeout_rate: float = 0.0
    # How long a timed-out request is held; None holds it until the client gives up (or the server stops).
    timeout_ms: float | None = None
    # True: the request is carried out before the hold, so a refresh rotates although the client never
    # sees the answer (the nastiest real-world case: a lost response).
    timeout_processes: bool = False
    # Errors, 429s and timeouts hit only the token endpoint, not /users/me or revoke.
    token_only: bool = False
    # Scripted outcomes for the next API requests, consumed one per request before any random draw:
    # "ok", "timeout", or an errorCode 4001/4002/4003/4004.
    next_outcomes: list[int | str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_number("latency_ms", self.latency_ms)
        _check_bool("latency_token_only", self.latency_token_only)
        for name in ("error_rate", "rate_limit_rate", "timeout_rate"):
            _check_number(name, getattr(self, name), high=1.0)
        if self.error_rate + self.rate_limit_rate + self.timeout_rate > 1.0:
            raise ValueError("error_rate + rate_limit_rate + timeout_rate must not exceed 1")
        codes = tuple(self.server_error_codes)
        if not codes or any(code not in _SERVER_ERROR_CODES for code in codes):
            raise ValueError(f"server_error_codes must be a non-empty list of {sorted(_SERVER_ERROR_CODES)}")
        self.server_error_codes = codes
        if self.timeout_ms is not None:
            _check_number("timeout_ms", self.timeout_ms)
        _check_bool("timeout_processes", self.timeout_processes)
        _check_bool("token_only", self.token_only)
        outcomes = list(self.next_outcomes)
        for outcome in outcomes:
            if isinstance(outcome, bool) or outcome not in _SCRIPTED_OUTCOMES:
                raise ValueError(f"next_outcomes entries must be one of {sorted(map(str, _SCRIPTED_OUTCOMES))}")
        self.next_outcomes = outcomes


@dataclass
class Settings:
    """Behaviour knobs, mostly for what SMARTSHEET.md marks as unconfirmed; changeable at run time."""

    access_lifetime: int = 604799
    code_lifetime: float = 600.0
    # Smartsheet does not document a refresh-token lifetime; None means refresh tokens never expire.
    refresh_lifetime: float | None = None
    # Per access token on /users/me and revoke, as documented; None disables.
    rate_limit_per_minute: int | None = 300
    # Per client_id on the token endpoint: undocumented, so off unless a test asks for it.
    token_rate_limit_per_minute: int | None = None
    retry_after: int | None = None
    wrapped_token_response: bool = False
    error_message_field: str = "message"
    # SMARTSHEET.md lists a hash mismatch under both 1071 and 1072.
    hash_mismatch_error_code: int = 1072
    # Undocumented whether the old access token survives a refresh; the strict answer is the default.
    revoke_old_access_on_refresh: bool = True
    # Only `%20` between scopes is confirmed; lenient also accepts `+` and commas.
    lenient_scope_encoding: bool = False
    # "allow" or "deny": GET /b/authorize answers at once, as if the user had clicked.
    auto_consent: str | None = None
    auto_consent_user_id: int | None = None

    def __post_init__(self) -> None:
        _check_int("access_lifetime", self.access_lifetime, low=1)
        _check_number("code_lifetime", self.code_lifetime)
        if self.refresh_lifetime is not None:
            _check_number("refresh_lifetime", self.refresh_lifetime)
        _check_int("rate_limit_per_minute", self.rate_limit_per_minute, low=1, optional=True)
        _check_int("token_rate_limit_per_minute", self.token_rate_limit_per_minute, low=1, optional=True)
        _check_int("retry_after", self.retry_after, optional=True)
        _check_bool("wrapped_token_response", self.wrapped_token_response)
        _check_choice("error_message_field", self.error_message_field, ("message", "error_description"))
        _check_choice("hash_mismatch_error_code", self.hash_mismatch_error_code, (1071, 1072))
        _check_bool("revoke_old_access_on_refresh", self.revoke_old_access_on_refresh)
        _check_bool("lenient_scope_encoding", self.lenient_scope_encoding)
        _check_choice("auto_consent", self.auto_consent, (None, "allow", "deny"))
        if isinstance(self.auto_consent_user_id, str):
            self.auto_consent_user_id = int(self.auto_consent_user_id)
        _check_int("auto_consent_user_id", self.auto_consent_user_id, optional=True)


class AuthorizeError(ValueError):
    """An authorize request Smartsheet answers with an error page, never with a redirect to the app."""

    def __init__(self, message: str, error_code: int | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.status = status


class _AuthorizeRedirect(Exception):
    """An authorize request answered by redirecting to the app with `error=...`."""

    def __init__(self, location: str, error: str) -> None:
        super().__init__(error)
        self.location = location
        self.error = error


class _ApiError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


@dataclass(slots=True)
class _Code:
    client_id: str
    user_id: int
    scopes: tuple[str, ...]
    expires_at: float


@dataclass(slots=True, eq=False)
class _Grant:
    client_id: str
    user_id: int
    scopes: tuple[str, ...]
    access_token: str
    refresh_token: str
    refresh_expires_at: float | None
    revoked: bool = False


@dataclass(slots=True, eq=False)
class _Access:
    grant: _Grant
    expires_at: float


@dataclass(slots=True)
class _Window:
    start: float
    count: int


@dataclass(slots=True)
class _AuthorizeRequest:
    app: App
    response_type: str
    scopes: tuple[str, ...]
    state: str
    redirect_uri: str | None  # as sent: the consent form carries it back unchanged


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload, separators=(",", ":")).encode(), _JSON, headers)


def _html_reply(status: int, title: str, content: str) -> _Reply:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:36rem;margin:3rem auto;line-height:1.4}"
        "button{padding:.5rem 1.5rem;margin-right:.5rem}</style></head>"
        f"<body>{content}</body></html>"
    )
    return _Reply(status, page.encode(), _HTML, _HTML_HEADERS)


def _redirect_reply(location: str) -> _Reply:
    return _Reply(302, b"", _HTML, (("Location", location), ("Cache-Control", "no-store")))


def _first_values(query: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}


def _raw_query_value(query: str, name: str) -> str | None:
    """The undecoded value, to see whether scopes were separated by `%20` or by `+`."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote(key.replace("+", " ")) == name:
            return value
    return None


def _with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    separator = "&" if "?" in url else "?"
    return url + separator + urlencode(params, quote_via=quote)


def _parse_scopes(decoded: str, raw: str | None, lenient: bool) -> tuple[str, ...] | None:
    if lenient:
        names = decoded.replace(",", " ").split()
    else:
        if (raw is not None and "+" in raw) or "," in decoded:
            return None
        names = [name for name in decoded.split(" ") if name]
    if not names or any(name not in SCOPES for name in names):
        return None
    return tuple(dict.fromkeys(names))


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise _ApiError(1070, f"Missing: {name}.")
    return value


def _auth_method(params: Mapping[str, str]) -> str:
    has_hash, has_secret = bool(params.get("hash")), bool(params.get("client_secret"))
    if has_hash and has_secret:
        return "both"
    if has_hash:
        return "hash"
    return "client_secret" if has_secret else "none"


def _new_token() -> str:
    return secrets.token_hex(13)


def _user_id_of(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"user_id must be an integer or a string of digits, not {value!r}")
    return int(value)


AdminRoute = Callable[[dict[str, Any], dict[str, str]], object]


class SmartsheetEmulator:
    """One emulated Smartsheet (authorize page + API) for in-process tests, `make dev` and the demo."""

    def __init__(
        self,
        apps: Iterable[App] | None = None,
        users: Iterable[User] | None = None,
        *,
        access_lifetime: int | None = None,
        code_lifetime: float | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        settings: Settings | None = None,
        faults: Faults | None = None,
        verbose: bool = False,
    ) -> None:
        app_list = list(apps) if apps is not None else [DEFAULT_APP]
        user_list = list(users) if users is not None else list(DEFAULT_USERS)
        if not app_list or not user_list:
            raise ValueError("the emulator needs at least one app and one user")
        self._apps = {app.client_id: app for app in app_list}
        self._users = {user.id: user for user in user_list}
        if len(self._apps) != len(app_list) or len(self._users) != len(user_list):
            raise ValueError("client ids and user ids must be unique")
        changes: dict[str, Any] = {}
        if access_lifetime is not None:
            changes["access_lifetime"] = access_lifetime
        if code_lifetime is not None:
            changes["code_lifetime"] = code_lifetime
        self._settings = dataclasses.replace(settings or Settings(), **changes)
        self._faults = faults or Faults()
        self._seed = seed
        self._rng = random.Random(seed)
        self._clock = clock
        self.verbose = verbose

        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._grants: list[_Grant] = []
        self._by_access: dict[str, _Access] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._windows: dict[str, _Window] = {}
        self._counts: Counter[str] = Counter()
        # API requests received and not yet answered (waiting out latency, being held, being carried out).
        self._in_progress: Counter[str] = Counter()
        self._token_log: deque[dict[str, Any]] = deque(maxlen=_TOKEN_LOG_LIMIT)

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._admin_routes: dict[tuple[str, str], AdminRoute] = self._build_admin_routes()

    # ----- lifecycle -------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        """Listen on loopback (port 0 picks a free port) and serve from a daemon thread."""
        if not is_loopback_host(host):
            raise ValueError(f"refusing to listen on {host!r}: the emulator only serves loopback")
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        server = _Server((host.strip("[]"), port), self)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="smartsheet-emulator", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving; requests held by a timeout fault are released and dropped."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown_promptly()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        address = self._server.server_address
        host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{address[1]}"

    @property
    def authorize_url(self) -> str:
        return self.base_url + AUTHORIZE_PATH

    @property
    def api_base_url(self) -> str:
        return self.base_url + API_PREFIX

    # ----- configuration ---------------------------------------------------------------------------

    @property
    def apps(self) -> tuple[App, ...]:
        return tuple(self._apps.values())

    @property
    def users(self) -> tuple[User, ...]:
        return tuple(self._users.values())

    @property
    def faults(self) -> Faults:
        """The live fault settings: assign fields directly, or use `set_faults` for validation."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.set_faults(**dataclasses.asdict(value))

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self.update_settings(**dataclasses.asdict(value))

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault fields at once (validated); the object stays the same one."""
        with self._lock:
            _update_in_place(self._faults, changes)
            return dataclasses.replace(self._faults)

    def update_settings(self, **changes: Any) -> Settings:
        with self._lock:
            _update_in_place(self._settings, changes)
            return dataclasses.replace(self._settings)

    def reset_faults(self) -> None:
        """No faults, and the random sequence starts again from the seed."""
        with self._lock:
            _update_in_place(self._faults, dataclasses.asdict(Faults()))
            self._rng = random.Random(self._seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._seed = seed
            self._rng = random.Random(seed)

    def reset_stats(self) -> None:
        """Clear counters, the token-request log and the rate-limit windows."""
        with self._lock:
            self._counts.clear()
            self._token_log.clear()
            self._windows.clear()

    def reset_state(self) -> None:
        """Forget every code and grant (as if no one had ever signed in)."""
        with self._lock:
            self._codes.clear()
            self._grants.clear()
            self._by_access.clear()
            self._by_refresh.clear()

    # ----- observations ----------------------------------------------------------------------------

    @property
    def counts(self) -> Counter[str]:
        """A copy: `<endpoint>` totals and `<endpoint>.<outcome>` (ok, an errorCode, timeout, ...)."""
        with self._lock:
            return Counter(self._counts)

    @property
    def in_progress(self) -> Counter[str]:
        """A copy: API requests by operation (`token.refresh`, `users_me`, ...) received and not yet answered. A
        refresh counted here is carried out whether or not its client is still there to read the answer."""
        with self._lock:
            return +self._in_progress

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        """Token requests seen (grant type, auth method, content type, ...): never a secret value."""
        with self._lock:
            return [dict(entry) for entry in self._token_log]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            live = sum(1 for grant in self._grants if self._refresh_live(grant, now))
            return {
                "counts": dict(self._counts),
                "token_requests": [dict(entry) for entry in self._token_log],
                "live_grants": live,
                "pending_codes": len(self._codes),
            }

    def access_token_is_live(self, token: str) -> bool:
        with self._lock:
            access = self._by_access.get(token)
            return access is not None and not access.grant.revoked and self._clock() < access.expires_at

    def refresh_token_is_live(self, token: str) -> bool:
        with self._lock:
            grant = self._by_refresh.get(token)
            return grant is not None and self._refresh_live(grant, self._clock())

    # ----- flows as Python calls -------------------------------------------------------------------

    def consent(self, authorize_url: str, user_id: int | str | None = None, allow: bool = True) -> str:
        """Answer the authorize page as the user would; return the callback URL the browser is sent to.

        Raises AuthorizeError where Smartsheet shows an error page instead of redirecting."""
        parts = urlsplit(authorize_url)
        if not parts.path.endswith(AUTHORIZE_PATH):
            raise ValueError(f"not an authorize URL (path must end with {AUTHORIZE_PATH}): {parts.path!r}")
        try:
            request = self._validate_authorize(_first_values(parts.query), _raw_query_value(parts.query, "scope"))
            return self._decide(request, user_id, allow)
        except _AuthorizeRedirect as redirect:
            self._count("authorize", redirect.error)
            return redirect.location
        except AuthorizeError as exc:
            self._count("authorize", str(exc.error_code or "bad_request"))
            raise

    def issue_code(
        self, client_id: str | None = None, user_id: int | str | None = None, scopes: Iterable[str] = ("READ_SHEETS",)
    ) -> str:
        """An authorization code as if the user had just clicked Allow."""
        app, user, granted = self._app(client_id), self._user(user_id), _known_scopes(scopes)
        with self._lock:
            return self._new_code(app, user, granted)

    def issue_grant(
        self, client_id: str | None = None, user_id: int | str | None = None, scopes: Iterable[str] = ("READ_SHEETS",)
    ) -> dict[str, Any]:
        """A token pair as if the user had signed in (flat token-endpoint shape); seeds many connections fast."""
        app, user, granted = self._app(client_id), self._user(user_id), _known_scopes(scopes)
        with self._lock:
            grant = self._new_grant(app.client_id, user.id, granted)
        return self._token_body(grant, wrapped=False)

    def expire_tokens(self, user_id: int | str | None = None, *, refresh: bool = False) -> int:
        """Expire access tokens now (of one user, or everyone); refresh=True expires refresh tokens too."""
        wanted = None if user_id is None else _user_id_of(user_id)
        with self._lock:
            now = self._clock()
            expired = 0
            for access in self._by_access.values():
                if (wanted is None or access.grant.user_id == wanted) and access.expires_at > now:
                    access.expires_at = now
                    expired += 1
            if refresh:
                for grant in self._grants:
                    if wanted is None or grant.user_id == wanted:
                        grant.refresh_expires_at = now
            return expired

    def add_users(self, count: int, *, first_id: int | None = None) -> tuple[User, ...]:
        """`count` new users with consecutive ids from `first_id` (default: after the highest id so far), e-mail
        user<id>@example.com: a load test's browsers each sign in as their own Smartsheet user."""
        _check_int("count", count, low=1)
        _check_int("first_id", first_id, low=1, optional=True)
        if count > _MAX_NEW_USERS:
            raise ValueError(f"count must be at most {_MAX_NEW_USERS}")
        with self._lock:
            start = max(self._users) + 1 if first_id is None else first_id
            added = tuple(User(n, f"user{n}@example.com", "User", str(n)) for n in range(start, start + count))
            if any(user.id in self._users for user in added):
                raise ValueError(f"user ids {start}..{start + count - 1} overlap existing users")
            # A new dict, not an update: the consent page iterates the old one without the lock.
            self._users = {**self._users, **{user.id: user for user in added}}
        return added

    def revoke_user(self, user_id: int | str) -> int:
        """Revoke every grant of a user (as an admin would): refresh then answers 1132."""
        wanted = _user_id_of(user_id)
        with self._lock:
            revoked = 0
            for grant in self._grants:
                if grant.user_id == wanted and not grant.revoked:
                    grant.revoked = True
                    revoked += 1
            return revoked

    # ----- state changes (callers hold the lock) ---------------------------------------------------

    def _app(self, client_id: str | None) -> App:
        if client_id is None:
            return next(iter(self._apps.values()))
        try:
            return self._apps[client_id]
        except KeyError:
            raise ValueError(f"unknown client_id {client_id!r}") from None

    def _user(self, user_id: int | str | None) -> User:
        if user_id is None:
            return next(iter(self._users.values()))
        try:
            return self._users[_user_id_of(user_id)]
        except KeyError:
            raise ValueError(f"unknown user id {user_id!r}") from None

    def _new_code(self, app: App, user: User, scopes: tuple[str, ...]) -> str:
        code = secrets.token_hex(8)
        self._codes[code] = _Code(app.client_id, user.id, scopes, self._clock() + self._settings.code_lifetime)
        return code

    def _new_grant(self, client_id: str, user_id: int, scopes: tuple[str, ...]) -> _Grant:
        grant = _Grant(client_id, user_id, scopes, _new_token(), _new_token(), self._refresh_deadline())
        self._grants.append(grant)
        self._by_refresh[grant.refresh_token] = grant
        self._by_access[grant.access_token] = _Access(grant, self._clock() + self._settings.access_lifetime)
        return grant

    def _refresh_deadline(self) -> float | None:
        lifetime = self._settings.refresh_lifetime
        return None if lifetime is None else self._clock() + lifetime

    def _refresh_live(self, grant: _Grant, now: float) -> bool:
        return not grant.revoked and (grant.refresh_expires_at is None or now < grant.refresh_expires_at)

    def _redeem_code(self, app: App, code: str) -> _Grant:
        pending = self._codes.get(code)
        if pending is None or pending.client_id != app.client_id:
            raise _ApiError(1071)
        # Single use either way: an expired code is gone too.
        del self._codes[code]
        if self._clock() >= pending.expires_at:
            raise _ApiError(1069)
        return self._new_grant(app.client_id, pending.user_id, pending.scopes)

    def _rotate(self, app: App, refresh_token: str) -> _Grant:
        grant = self._by_refresh.get(refresh_token)
        if grant is None or grant.client_id != app.client_id:
            raise _ApiError(1071)
        if grant.revoked:
            raise _ApiError(1132)
        if not self._refresh_live(grant, self._clock()):
            raise _ApiError(1071)
        del self._by_refresh[refresh_token]
        if self._settings.revoke_old_access_on_refresh:
            self._by_access.pop(grant.access_token, None)
        grant.refresh_token, grant.access_token = _new_token(), _new_token()
        grant.refresh_expires_at = self._refresh_deadline()
        self._by_refresh[grant.refresh_token] = grant
        self._by_access[grant.access_token] = _Access(grant, self._clock() + self._settings.access_lifetime)
        return grant

    def _spend(self, key: str, limit: int | None) -> None:
        """Fixed one-minute windows: cheap per request, and close enough to Smartsheet's budget."""
        if limit is None:
            return
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= _RATE_WINDOW_SECONDS:
            self._windows[key] = _Window(now, 1)
            return
        window.count += 1
        if window.count > limit:
            raise _ApiError(4003)

    def _authenticate(self, authorization: str | None) -> _Access:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _ApiError(1001)
        access = self._by_access.get(token)
        if access is None or access.grant.revoked:
            raise _ApiError(1002)
        if self._clock() >= access.expires_at:
            raise _ApiError(1003)
        self._spend("access:" + token, self._settings.rate_limit_per_minute)
        return access

    def _token_body(self, grant: _Grant, *, wrapped: bool) -> dict[str, Any]:
        body = {
            "access_token": grant.access_token,
            "token_type": "bearer",
            "refresh_token": grant.refresh_token,
            "expires_in": self._settings.access_lifetime,
        }
        return {"token": body} if wrapped else body

    # ----- the authorize page ----------------------------------------------------------------------

    def _validate_authorize(self, params: Mapping[str, str], raw_scope: str | None) -> _AuthorizeRequest:
        app = self._apps.get(params.get("client_id", ""))
        if app is None:
            raise AuthorizeError("The client_id is missing or unknown.", 1067)
        sent_redirect = params.get("redirect_uri")
        if sent_redirect is not None and sent_redirect != app.redirect_uri:
            raise AuthorizeError(_ERRORS[1073].message, 1073)
        state = params.get("state", "")
        response_type = params.get("response_type", "")
        if response_type != "code":
            error = "unsupported_response_type"
            raise _AuthorizeRedirect(_with_query(app.redirect_uri, [("error", error), ("state", state)]), error)
        scopes = _parse_scopes(params.get("scope", ""), raw_scope, self._settings.lenient_scope_encoding)
        if scopes is None:
            error = "invalid_scope"
            raise _AuthorizeRedirect(_with_query(app.redirect_uri, [("error", error), ("state", state)]), error)
        return _AuthorizeRequest(app, response_type, scopes, state, sent_redirect)

    def _decide(self, request: _AuthorizeRequest, user_id: int | str | None, allow: bool) -> str:
        redirect = request.app.redirect_uri
        if not allow:
            self._count("authorize", "deny")
            return _with_query(redirect, [("error", "access_denied"), ("state", request.state)])
        try:
            user = self._user(user_id)
        except ValueError as exc:
            raise AuthorizeError(str(exc)) from None
        with self._lock:
            code = self._new_code(request.app, user, request.scopes)
        self._count("authorize", "allow")
        expires_in_ms = max(0, int(self._settings.code_lifetime * 1000) - _CALLBACK_EXPIRES_IN_OFFSET_MS)
        return _with_query(redirect, [("code", code), ("expires_in", str(expires_in_ms)), ("state", request.state)])

    def _authorize_get(self, query: str) -> _Reply:
        params = _first_values(query)
        settings = self._settings
        try:
            request = self._validate_authorize(params, _raw_query_value(query, "scope"))
            if settings.auto_consent is not None:
                return _redirect_reply(
                    self._decide(request, settings.auto_consent_user_id, settings.auto_consent == "allow")
                )
        except AuthorizeError as exc:
            return self._authorize_error_page(exc)
        except _AuthorizeRedirect as redirect:
            self._count("authorize", redirect.error)
            return _redirect_reply(redirect.location)
        self._count("authorize", "page")
        return self._consent_page(request)

    def _authorize_post(self, form: Mapping[str, str]) -> _Reply:
        decision = form.get("decision")
        try:
            if decision not in ("allow", "deny"):
                raise AuthorizeError("Choose Allow or Deny.")
            request = self._validate_authorize(form, None)
            return _redirect_reply(self._decide(request, form.get("user_id") or None, decision == "allow"))
        except AuthorizeError as exc:
            return self._authorize_error_page(exc)
        except _AuthorizeRedirect as redirect:
            self._count("authorize", redirect.error)
            return _redirect_reply(redirect.location)

    def _authorize_error_page(self, exc: AuthorizeError) -> _Reply:
        self._count("authorize", str(exc.error_code or "bad_request"))
        code = f"<p>errorCode: <code>{exc.error_code}</code></p>" if exc.error_code else ""
        content = f"<h1>Smartsheet could not authorize this app</h1><p>{html.escape(exc.message)}</p>{code}"
        return _html_reply(exc.status, "Authorization error", content)

    def _consent_page(self, request: _AuthorizeRequest) -> _Reply:
        hidden = [
            ("response_type", request.response_type),
            ("client_id", request.app.client_id),
            ("scope", " ".join(request.scopes)),
            ("state", request.state),
        ]
        if request.redirect_uri is not None:
            hidden.append(("redirect_uri", request.redirect_uri))
        inputs = "".join(f'<input type="hidden" name="{name}" value="{html.escape(value)}">' for name, value in hidden)
        options = "".join(
            f'<option value="{user.id}"{" selected" if index == 0 else ""}>'
            f"{html.escape(f'{user.first_name} {user.last_name} <{user.email}>')}</option>"
            for index, user in enumerate(self._users.values())
        )
        scopes = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in request.scopes)
        content = (
            f'<h1 id="app-name">{html.escape(request.app.name)}</h1>'
            "<p>would like to access your Smartsheet account with these permissions:</p>"
            f'<ul id="scopes">{scopes}</ul>'
            f'<form method="post" action="{AUTHORIZE_PATH}">{inputs}'
            f'<p><label for="user">Signed in as </label><select id="user" name="user_id">{options}</select></p>'
            '<button id="allow" type="submit" name="decision" value="allow">Allow</button>'
            '<button id="deny" type="submit" name="decision" value="deny">Deny</button>'
            "</form>"
        )
        return _html_reply(200, f"Authorize {request.app.name}", content)

    # ----- the API ---------------------------------------------------------------------------------

    def _token(self, params: Mapping[str, str]) -> tuple[_Reply, str]:
        try:
            body = self._exchange(params)
        except _ApiError as exc:
            return self._error_reply(exc), str(exc.code)
        return _json_reply(200, body, (("Cache-Control", "no-store"), ("Pragma", "no-cache"))), "ok"

    def _exchange(self, params: Mapping[str, str]) -> dict[str, Any]:
        settings = self._settings
        if params.get("client_id"):
            with self._lock:
                self._spend("client:" + params["client_id"], settings.token_rate_limit_per_minute)
        grant_type = _required(params, "grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise _ApiError(1068)
        app = self._apps.get(_required(params, "client_id"))
        if app is None:
            raise _ApiError(1067)
        method = _auth_method(params)
        if method in ("none", "both"):
            raise _ApiError(1236 if method == "none" else 1237)
        subject = _required(params, "code" if grant_type == "authorization_code" else "refresh_token")
        if params.get("redirect_uri") and params["redirect_uri"] != app.redirect_uri:
            raise _ApiError(1073)
        if method == "client_secret":
            if not hmac.compare_digest(params["client_secret"].encode(), app.client_secret.encode()):
                raise _ApiError(1238)
        elif not hmac.compare_digest(params["hash"].encode(), token_hash(app.client_secret, subject).encode()):
            raise _ApiError(settings.hash_mismatch_error_code)
        with self._lock:
            grant = (
                self._redeem_code(app, subject) if grant_type == "authorization_code" else self._rotate(app, subject)
            )
            return self._token_body(grant, wrapped=settings.wrapped_token_response)

    def _users_me(self, authorization: str | None) -> tuple[_Reply, str]:
        try:
            with self._lock:
                user = self._users[self._authenticate(authorization).grant.user_id]
        except _ApiError as exc:
            return self._error_reply(exc), str(exc.code)
        return _json_reply(200, user.profile()), "ok"

    def _revoke(self, authorization: str | None, query: str) -> tuple[_Reply, str]:
        delete_all = _first_values(query).get("deleteAllForApiClient", "").lower() == "true"
        try:
            with self._lock:
                grant = self._authenticate(authorization).grant
                if delete_all:
                    for other in self._grants:
                        if other.user_id == grant.user_id and other.client_id == grant.client_id:
                            other.revoked = True
                grant.revoked = True
        except _ApiError as exc:
            return self._error_reply(exc), str(exc.code)
        return _json_reply(200, {"message": "SUCCESS", "resultCode": 0}), "ok"

    def _error_reply(self, exc: _ApiError) -> _Reply:
        spec = _ERRORS[exc.code]
        settings = self._settings
        message = f"{spec.message} {exc.detail}" if exc.detail else spec.message
        body: dict[str, Any] = {"errorCode": exc.code, settings.error_message_field: message}
        body["refId"] = secrets.token_hex(6)
        if spec.oauth_error is not None:
            body["error"] = spec.oauth_error
        headers: tuple[tuple[str, str], ...] = ()
        if exc.code == 4003 and settings.retry_after is not None:
            headers = (("Retry-After", str(settings.retry_after)),)
        return _json_reply(spec.status, body, headers)

    # ----- faults and bookkeeping ------------------------------------------------------------------

    def _latency_seconds(self, endpoint: str) -> float:
        faults = self._faults
        if faults.latency_ms <= 0 or (faults.latency_token_only and endpoint != "token"):
            return 0.0
        return faults.latency_ms / 1000.0

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _draw_fault(self, endpoint: str) -> int | str | None:
        """None, "timeout", or the errorCode to answer with; one draw per request keeps seeds reproducible."""
        with self._lock:
            faults = self._faults
            if faults.token_only and endpoint != "token":
                return None
            if faults.next_outcomes:
                outcome = faults.next_outcomes.pop(0)
                return None if outcome == "ok" else outcome
            if faults.timeout_rate <= 0 and faults.error_rate <= 0 and faults.rate_limit_rate <= 0:
                return None
            draw = self._rng.random()
            if draw < faults.timeout_rate:
                return "timeout"
            draw -= faults.timeout_rate
            if draw < faults.error_rate:
                return self._rng.choice(faults.server_error_codes)
            draw -= faults.error_rate
            return 4003 if draw < faults.rate_limit_rate else None

    def _count(self, endpoint: str, outcome: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1
            self._counts[f"{endpoint}.{outcome}"] += 1

    def _count_extra(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _log_token_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry["at"] = self._clock()
            self._token_log.append(entry)

    # ----- admin endpoints -------------------------------------------------------------------------

    def _build_admin_routes(self) -> dict[tuple[str, str], AdminRoute]:
        def faults(payload: dict[str, Any], _query: dict[str, str]) -> object:
            return dataclasses.asdict(self.set_faults(**payload))

        def settings(payload: dict[str, Any], _query: dict[str, str]) -> object:
            return dataclasses.asdict(self.update_settings(**payload))

        def reset(payload: dict[str, Any], query: dict[str, str]) -> object:
            self.reset_faults()
            self.reset_stats()
            if payload.get("all") is True or query.get("all") == "true":
                self.reset_state()
            return {"reset": True}

        def reset_faults(_payload: dict[str, Any], _query: dict[str, str]) -> object:
            self.reset_faults()
            return dataclasses.asdict(self._faults)

        def grants(payload: dict[str, Any], _query: dict[str, str]) -> object:
            args = _grant_args(payload)
            user = self._user(args[1])
            return {**self.issue_grant(*args), "user_id": str(user.id)}

        def codes(payload: dict[str, Any], _query: dict[str, str]) -> object:
            return {"code": self.issue_code(*_grant_args(payload))}

        def consent(payload: dict[str, Any], _query: dict[str, str]) -> object:
            allow = payload.get("allow", True)
            _check_bool("allow", allow)
            return {"location": self.consent(str(payload["authorize_url"]), payload.get("user_id"), allow)}

        def reseed(payload: dict[str, Any], _query: dict[str, str]) -> object:
            seed = payload.get("seed")
            _check_int("seed", seed, low=-(2**63), optional=True)
            self.reseed(seed)
            return {"seed": seed}

        def token_status(payload: dict[str, Any], _query: dict[str, str]) -> object:
            result = {}
            if "access_token" in payload:
                result["access_token_live"] = self.access_token_is_live(str(payload["access_token"]))
            if "refresh_token" in payload:
                result["refresh_token_live"] = self.refresh_token_is_live(str(payload["refresh_token"]))
            return result

        return {
            ("GET", "/health"): lambda _p, _q: {"ok": True},
            ("GET", "/stats"): lambda _p, _q: self.stats(),
            ("GET", "/faults"): lambda _p, _q: dataclasses.asdict(self._faults),
            ("POST", "/faults"): faults,
            ("PUT", "/faults"): faults,
            ("DELETE", "/faults"): reset_faults,
            ("GET", "/settings"): lambda _p, _q: dataclasses.asdict(self._settings),
            ("POST", "/settings"): settings,
            ("PUT", "/settings"): settings,
            ("POST", "/seed"): reseed,
            ("POST", "/reset"): reset,
            ("POST", "/expire"): lambda p, _q: {
                "expired": self.expire_tokens(p.get("user_id"), refresh=p.get("refresh") is True)
            },
            ("POST", "/revoke-user"): lambda p, _q: {"revoked": self.revoke_user(p["user_id"])},
            ("POST", "/grants"): grants,
            ("POST", "/codes"): codes,
            ("POST", "/consent"): consent,
            ("POST", "/token-status"): token_status,
            ("GET", "/apps"): lambda _p, _q: [app.public() for app in self._apps.values()],
            ("GET", "/users"): lambda _p, _q: [user.profile() for user in self._users.values()],
            ("POST", "/users"): lambda p, _q: [
                user.profile() for user in self.add_users(p.get("count", 0), first_id=p.get("first_id"))
            ],
        }

    def _admin(self, method: str, path: str, query: str, body: bytes) -> _Reply:
        route = self._admin_routes.get((method, path.removeprefix(ADMIN_PREFIX)))
        if route is None:
            return _json_reply(404, {"error": "not_found", "message": f"no admin route {method} {path}"})
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise TypeError("the body must be a JSON object")
            result = route(payload, _first_values(query))
        except AuthorizeError as exc:
            return _json_reply(400, {"error": "authorize_error", "errorCode": exc.error_code, "message": exc.message})
        except (ValueError, TypeError, KeyError) as exc:
            return _json_reply(400, {"error": "bad_request", "message": str(exc)})
        return _json_reply(200, result)


def _update_in_place(target: Faults | Settings, changes: Mapping[str, Any]) -> None:
    """Validate a whole new value first, then copy it over, so a bad change leaves the old one intact."""
    known = {f.name for f in dataclasses.fields(target)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; known: {sorted(known)}")
    candidate = dataclasses.replace(target, **changes)
    for name in known:
        setattr(target, name, getattr(candidate, name))


def _known_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    granted = tuple(scopes)
    unknown = [scope for scope in granted if scope not in SCOPES]
    if unknown or not granted:
        raise ValueError(f"scopes must be a non-empty list of Smartsheet scopes; unknown: {unknown}")
    return granted


def _grant_args(payload: Mapping[str, Any]) -> tuple[str | None, int | str | None, tuple[str, ...]]:
    scopes = payload.get("scopes", ["READ_SHEETS"])
    if isinstance(scopes, str):
        scopes = scopes.split()
    client_id = payload.get("client_id")
    return (None if client_id is None else str(client_id)), payload.get("user_id"), _known_scopes(scopes)


# ----- HTTP ------------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5 would refuse some.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: SmartsheetEmulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def shutdown_promptly(self) -> None:
        """shutdown(), without waiting out the serve loop's poll interval: a connection wakes it."""
        stopper = threading.Thread(target=self.shutdown, daemon=True)
        stopper.start()
        while stopper.is_alive():
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.server_name, self.server_port), timeout=0.5),
            ):
                pass
            stopper.join(0.01)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout it chose, a stop()) is normal here, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Wake keep-alive threads blocked on reads, so no request is served after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    # Keep-alive: benchmarks run thousands of refreshes through a few pooled connections.
    protocol_version = "HTTP/1.1"
    server_version = "SmartsheetEmulator/1.0"
    sys_version = ""
    # Idle keep-alive connections give up their thread after this many seconds.
    timeout = 60
    # Headers and body leave in one buffered write (flushed per request by the base class), with Nagle
    # off: separate small writes meet the client's delayed ACK and cost ~40 ms per request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line can carry secrets (token parameters as a query string): log the path only.
        self.log_message("%s %s %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            sys.stderr.write(f"smartsheet-emulator: {format % args}\n")

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        try:
            reply = self._route(emulator)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        except Exception:
            traceback.print_exc(file=sys.stderr)
            reply = emulator._error_reply(_ApiError(4004))
        if reply is None:
            # A timeout fault whose client went away: nothing to answer.
            self.close_connection = True
            return
        self._send(reply)

    def _route(self, emulator: SmartsheetEmulator) -> _Reply | None:
        parts = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return _json_reply(413, {"errorCode": 1008, "message": "Request body too large."})
        # The broker's /login redirects browsers to the authorize page: pages elsewhere link here.
        refused = request_guard.refusal_of(self.headers, port=self.server.server_port, pages_elsewhere_link_here=True)
        if refused is not None:
            return _json_reply(403, {"errorCode": 1004, "message": refused})
        if parts.path.startswith(ADMIN_PREFIX + "/"):
            return emulator._admin(self.command, parts.path, parts.query, body)
        serve = _ROUTES.get((self.command, parts.path))
        if serve is None:
            emulator._count("unknown", "1006")
            return emulator._error_reply(_ApiError(1006))
        return serve(self, emulator, parts.query, body)

    def _serve_authorize_get(self, emulator: SmartsheetEmulator, query: str, _body: bytes) -> _Reply | None:
        emulator._pause(emulator._latency_seconds("authorize"))
        return emulator._authorize_get(query)

    def _serve_authorize_post(self, emulator: SmartsheetEmulator, _query: str, body: bytes) -> _Reply | None:
        emulator._pause(emulator._latency_seconds("authorize"))
        form = _first_values(body.decode("utf-8", "replace")) if self._mime() == _FORM else {}
        return emulator._authorize_post(form)

    def _serve_users_me(self, emulator: SmartsheetEmulator, _query: str, _body: bytes) -> _Reply | None:
        authorization = self.headers.get("Authorization")
        return self._api(emulator, "users_me", "users_me", lambda: emulator._users_me(authorization))[0]

    def _serve_revoke(self, emulator: SmartsheetEmulator, query: str, _body: bytes) -> _Reply | None:
        authorization = self.headers.get("Authorization")
        return self._api(emulator, "revoke", "revoke", lambda: emulator._revoke(authorization, query))[0]

    def _mime(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > _MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve_token(self, emulator: SmartsheetEmulator, query: str, body: bytes) -> _Reply | None:
        mime = self._mime()
        from_query = _first_values(query)
        # Only a form body counts, as at Smartsheet: a JSON body's fields are simply not seen.
        from_body = _first_values(body.decode("utf-8", "replace")) if mime == _FORM else {}
        params = {**from_query, **from_body}
        grant_type = params.get("grant_type", "")
        operation = {"authorization_code": "token.code", "refresh_token": "token.refresh"}.get(
            grant_type, "token.other"
        )
        reply, outcome = self._api(emulator, "token", operation, lambda: emulator._token(params))
        transport = "+".join(name for name, seen in (("form", from_body), ("query", from_query)) if seen) or "none"
        emulator._log_token_request(
            {
                "grant_type": grant_type or None,
                "auth_method": _auth_method(params),
                "content_type": mime,
                "transport": transport,
                "client_id": params.get("client_id"),
                "redirect_uri_sent": "redirect_uri" in params,
                "outcome": outcome,
            }
        )
        return reply

    def _api(
        self,
        emulator: SmartsheetEmulator,
        endpoint: str,
        operation: str,
        process: Callable[[], tuple[_Reply, str]],
    ) -> tuple[_Reply | None, str]:
        """Latency, then the fault draw, then the real work; counts one outcome per request."""
        with emulator._lock:
            emulator._in_progress[operation] += 1
        try:
            return self._api_in_progress(emulator, endpoint, operation, process)
        finally:
            with emulator._lock:
                emulator._in_progress[operation] -= 1

    def _api_in_progress(
        self,
        emulator: SmartsheetEmulator,
        endpoint: str,
        operation: str,
        process: Callable[[], tuple[_Reply, str]],
    ) -> tuple[_Reply | None, str]:
        emulator._pause(emulator._latency_seconds(endpoint))
        fault = emulator._draw_fault(endpoint)
        if isinstance(fault, int):
            emulator._count(operation, str(fault))
            return emulator._error_reply(_ApiError(fault)), str(fault)
        if fault is None:
            reply, outcome = process()
            emulator._count(operation, outcome)
            return reply, outcome
        faults = emulator.faults
        processed = process() if faults.timeout_processes else None
        if processed is not None:
            emulator._count(operation, processed[1])
        if not self._hold(emulator, faults.timeout_ms):
            # Counted beside the outcome (if processed): the answer never reached the client.
            emulator._count_extra(f"{operation}.timeout")
            if processed is None:
                emulator._count_extra(operation)
            return None, "timeout"
        if processed is None:
            processed = process()
            emulator._count(operation, processed[1])
        return processed

    def _hold(self, emulator: SmartsheetEmulator, timeout_ms: float | None) -> bool:
        """Hold the request; True if the client is still waiting at the end, False if it gave up."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while not emulator._stopping.is_set():
            if self._client_gone():
                return False
            step = 0.02
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                step = min(step, remaining)
            emulator._stopping.wait(step)
        return False

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


_Route = Callable[[_Handler, SmartsheetEmulator, str, bytes], _Reply | None]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", AUTHORIZE_PATH): _Handler._serve_authorize_get,
    ("POST", AUTHORIZE_PATH): _Handler._serve_authorize_post,
    ("POST", TOKEN_PATH): _Handler._serve_token,
    ("DELETE", TOKEN_PATH): _Handler._serve_revoke,
    ("GET", USERS_ME_PATH): _Handler._serve_users_me,
}


# ----- command line ----------------------------------------------------------------------------------


def _parse_user(text: str) -> User:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 4 or not parts[0].isdigit():
        raise argparse.ArgumentTypeError(f"expected ID,EMAIL,FIRST,LAST with a numeric id, got {text!r}")
    return User(int(parts[0]), parts[1], parts[2], parts[3])


def _load_config(path: str) -> tuple[list[App], list[User]]:
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    apps = [App(**entry) for entry in config.get("apps", [])]
    users = [User(**{**entry, "id": int(entry["id"])}) for entry in config.get("users", [])]
    return apps, users


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.smartsheet_emulator",
        description="Emulated Smartsheet OAuth (authorize page, token endpoint, /users/me, revoke) on loopback. "
        f"Admin endpoints (JSON) under {ADMIN_PREFIX}/: health, stats, faults, settings, reset, expire, "
        "revoke-user, grants, codes, consent, token-status, users (GET lists, POST {count, first_id} adds).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8700, help="port (default 8700; 0 picks a free one)")
    parser.add_argument(
        "--config", help='JSON file {"apps": [{client_id, client_secret, name, redirect_uri}], "users": [...]}'
    )
    parser.add_argument("--client-id", help=f"client id of the first app (default {DEFAULT_APP.client_id})")
    parser.add_argument("--client-secret", help="client secret of the first app (default: the local one)")
    parser.add_argument("--redirect-uri", help=f"registered redirect URL (default {DEFAULT_APP.redirect_uri})")
    parser.add_argument("--app-name", help=f"app name on the consent page (default {DEFAULT_APP.name!r})")
    parser.add_argument(
        "--user",
        action="append",
        type=_parse_user,
        metavar="ID,EMAIL,FIRST,LAST",
        help="an emulated user (repeatable; replaces the three default users)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share (0..1) of API requests answered 5xx")
    parser.add_argument("--seed", type=int, help="seed for reproducible faults")
    parser.add_argument("--access-lifetime", type=int, default=604799, help="access token lifetime in seconds")
    parser.add_argument("--code-lifetime", type=float, default=600.0, help="authorization code lifetime in seconds")
    parser.add_argument(
        "--auto-consent", choices=("allow", "deny"), help="answer the authorize page at once, without a click"
    )
    parser.add_argument("--verbose", action="store_true", help="log each request (method, path, status)")
    return parser


def _configured(args: argparse.Namespace) -> tuple[list[App], list[User]]:
    apps, users = ([], []) if args.config is None else _load_config(args.config)
    apps = apps or [DEFAULT_APP]
    overrides = {
        "client_id": args.client_id,
        "client_secret": args.client_secret,
        "redirect_uri": args.redirect_uri,
        "name": args.app_name,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if overrides:
        apps[0] = dataclasses.replace(apps[0], **overrides)
    users = args.user or users or list(DEFAULT_USERS)
    return apps, users


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not is_loopback_host(args.host):
        parser.error(f"--host {args.host!r} is not a loopback address: the emulator only listens on this machine")
    try:
        apps, users = _configured(args)
        emulator = SmartsheetEmulator(
            apps,
            users,
            seed=args.seed,
            settings=Settings(
                access_lifetime=args.access_lifetime, code_lifetime=args.code_lifetime, auto_consent=args.auto_consent
            ),
            faults=Faults(latency_ms=args.latency_ms, error_rate=args.error_rate),
            verbose=args.verbose,
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        parser.error(str(exc))
    try:
        emulator.start(args.host, args.port)
    except OSError as exc:
        print(f"smartsheet-emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Smartsheet emulator listening on {emulator.base_url}")
    print(f"  authorize URL: {emulator.authorize_url}")
    print(f"  API base URL:  {emulator.api_base_url}")
    for app in emulator.apps:
        print(f"  app: {app.name!r} client_id={app.client_id} redirect_uri={app.redirect_uri}")
    for user in emulator.users:
        print(f"  user: {user.id} {user.email}")
    print(f"  admin: {emulator.base_url}{ADMIN_PREFIX}/stats  (Ctrl-C stops)", flush=True)

    stopped = threading.Event()

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    print("Smartsheet emulator stopped", flush=True)
    return 0

