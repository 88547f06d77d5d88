"""The emulated Smartsheet's state: its apps and users (accounts.py), the codes and token pairs it issued, and what a
code exchange, a refresh (rotation) or a revocation does to them. Every change happens under the emulator's one lock."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.local.smartsheet_emulator.accounts import App, User, user_id_of
from infra.local.smartsheet_emulator.errors import ApiError
from infra.local.smartsheet_emulator.settings import Settings
from infra.local.smartsheet_emulator.validation import check_int, check_number

_MAX_NEW_USERS = 10_000  # per POST /_emulator/users: a load test's worth, not a way to fill the memory
_RATE_WINDOW_SECONDS = 60.0


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


def _new_token() -> str:
    return secrets.token_hex(13)


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
    issued_at: float  # when the current pair was issued (sign-in or the last rotation)
    revoked: bool = False


@dataclass(slots=True, eq=False)
class _Access:
    grant: _Grant
    expires_at: float


@dataclass(slots=True)
class _Window:
    start: float
    count: int


class SmartsheetModel:
    """Apps, users, codes and grants; each method takes the shared lock for what it reads and changes."""

    def __init__(
        self,
        apps: Iterable[App],
        users: Iterable[User],
        *,
        settings: Settings,
        clock: Callable[[], float],
        lock: threading.RLock,
    ) -> None:
        app_list, user_list = list(apps), list(users)
        if not app_list or not user_list:
            raise ValueError("the emulator needs at least one app and one user")
        self._apps = {app.client_id: app for app in app_list}
        self._users = {user.id: user for user in user_list}
        if len(self._apps) != len(app_list) or len(self._users) != len(user_list):
            raise ValueError("client ids and user ids must be unique")
        self.settings = settings
        self.clock = clock
        self._lock = lock
        self._codes: dict[str, _Code] = {}
        self._grants: list[_Grant] = []
        self._by_access: dict[str, _Access] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._windows: dict[str, _Window] = {}

    # ----- apps and users ---------------------------------------------------------------------------

    @property
    def apps(self) -> tuple[App, ...]:
        return tuple(self._apps.values())

    @property
    def users(self) -> tuple[User, ...]:
        """Read without the lock: add_users replaces the mapping instead of changing it."""
        return tuple(self._users.values())

    def app_named(self, client_id: str) -> App | None:
        return self._apps.get(client_id)

    def app(self, client_id: str | None) -> App:
        if client_id is None:
            return next(iter(self._apps.values()))
        try:
            return self._apps[client_id]
        except KeyError:
            raise ValueError(f"unknown client_id {client_id!r}") from None

    def user(self, user_id: int | str | None) -> User:
        if user_id is None:
            return next(iter(self._users.values()))
        try:
            return self._users[user_id_of(user_id)]
        except KeyError:
            raise ValueError(f"unknown user id {user_id!r}") from None

    def add_users(self, count: int, *, first_id: int | None = None) -> tuple[User, ...]:
        check_int("count", count, low=1)
        check_int("first_id", first_id, low=1, optional=True)
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

    # ----- codes and grants -------------------------------------------------------------------------

    def new_code(self, app: App, user: User, scopes: tuple[str, ...]) -> str:
        with self._lock:
            code = secrets.token_hex(8)
            self._codes[code] = _Code(app.client_id, user.id, scopes, self.clock() + self.settings.code_lifetime)
            return code

    def issue_grant(self, app: App, user: User, scopes: tuple[str, ...]) -> dict[str, Any]:
        """A token pair as if the user had signed in, in the flat token-endpoint shape."""
        with self._lock:
            grant = self._new_grant(app.client_id, user.id, scopes)
        return self._token_body(grant, wrapped=False)

    def exchange(self, app: App, grant_type: str, subject: str) -> dict[str, Any]:
        """The token endpoint's work once the request is checked: redeem a code or rotate a refresh token."""
        with self._lock:
            redeem = self._redeem_code if grant_type == "authorization_code" else self._rotate
            grant = redeem(app, subject)
            return self._token_body(grant, wrapped=self.settings.wrapped_token_response)

    def spend_client_budget(self, client_id: str) -> None:
        with self._lock:
            self._spend("client:" + client_id, self.settings.token_rate_limit_per_minute)

    def user_of(self, authorization: str | None) -> User:
        """The user an API call's bearer token belongs to (its budget spent); ApiError 1001-1003 or 4003 else."""
        with self._lock:
            return self._users[self._authenticate(authorization).grant.user_id]

    def revoke(self, authorization: str | None, *, every_grant_of_the_user: bool) -> None:
        with self._lock:
            grant = self._authenticate(authorization).grant
            if every_grant_of_the_user:
                for other in self._grants:
                    if other.user_id == grant.user_id and other.client_id == grant.client_id:
                        other.revoked = True
            grant.revoked = True

    def expire_tokens(self, user_id: int | str | None = None, *, refresh: bool = False) -> int:
        wanted = None if user_id is None else user_id_of(user_id)
        with self._lock:
            now = self.clock()
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

    def revoke_user(self, user_id: int | str) -> int:
        wanted = user_id_of(user_id)
        with self._lock:
            revoked = 0
            for grant in self._grants:
                if grant.user_id == wanted and not grant.revoked:
                    grant.revoked = True
                    revoked += 1
            return revoked

    def enforce_token_lifetime(
        self, max_age: float, *, account_id: int | None = None, user_id: int | str | None = None
    ) -> int:
        """An organisation's token-lifetime policy, applied now: revoke every live pair issued `max_age` seconds ago
        or earlier (of one account's users, or one user, or everyone), whatever its `expires_in` said. How many.

        SMARTSHEET.md: a System Admin can set an expiry policy on the API tokens of their plan, OAuth tokens
        included, and tokens are revoked when it passes, possibly before `expires_in`. Whether a rotation restarts
        the policy's clock is undocumented: here it does (a rotation issues new tokens). What the client sees then
        is a revocation's: 1002 on API calls, 1132 (invalid_grant) on a refresh."""
        check_number("max_age_seconds", max_age)
        check_int("account_id", account_id, optional=True)
        wanted = None if user_id is None else self.user(user_id).id
        with self._lock:
            cutoff = self.clock() - max_age
            revoked = 0
            for grant in self._grants:
                user = self._users.get(grant.user_id)
                if grant.revoked or grant.issued_at > cutoff or user is None:
                    continue
                in_scope = account_id is None or user.account_id == account_id
                if in_scope and (wanted is None or grant.user_id == wanted):
                    grant.revoked = True
                    revoked += 1
            return revoked

    # ----- observations and resets -------------------------------------------------------------------

    def live_grants(self) -> int:
        """Grants not revoked (whatever their tokens' expiry): what a refused sign-in must not leave behind."""
        with self._lock:
            return sum(1 for grant in self._grants if not grant.revoked)

    def access_token_is_live(self, token: str) -> bool:
        with self._lock:
            access = self._by_access.get(token)
            return access is not None and not access.grant.revoked and self.clock() < access.expires_at

    def refresh_token_is_live(self, token: str) -> bool:
        with self._lock:
            grant = self._by_refresh.get(token)
            return grant is not None and self._refresh_live(grant, self.clock())

    def census(self) -> Mapping[str, int]:
        with self._lock:
            now = self.clock()
            live = sum(1 for grant in self._grants if self._refresh_live(grant, now))
            return {"live_grants": live, "pending_codes": len(self._codes)}

    def forget_rate_windows(self) -> None:
        with self._lock:
            self._windows.clear()

    def forget_grants(self) -> None:
        """Forget every code and grant (as if no one had ever signed in)."""
        with self._lock:
            self._codes.clear()
            self._grants.clear()
            self._by_access.clear()
            self._by_refresh.clear()

    # ----- state changes (callers hold the lock) ---------------------------------------------------

    def _new_grant(self, client_id: str, user_id: int, scopes: tuple[str, ...]) -> _Grant:
        grant = _Grant(client_id, user_id, scopes, _new_token(), _new_token(), self._refresh_deadline(), self.clock())
        self._grants.append(grant)
        self._by_refresh[grant.refresh_token] = grant
        self._by_access[grant.access_token] = _Access(grant, self.clock() + self.settings.access_lifetime)
        return grant

    def _refresh_deadline(self) -> float | None:
        lifetime = self.settings.refresh_lifetime
        return None if lifetime is None else self.clock() + lifetime

    def _refresh_live(self, grant: _Grant, now: float) -> bool:
        return not grant.revoked and (grant.refresh_expires_at is None or now < grant.refresh_expires_at)

    def _redeem_code(self, app: App, code: str) -> _Grant:
        pending = self._codes.get(code)
        if pending is None or pending.client_id != app.client_id:
            raise ApiError(1071)
        # Single use either way: an expired code is gone too.
        del self._codes[code]
        if self.clock() >= pending.expires_at:
            raise ApiError(1069)
        return self._new_grant(app.client_id, pending.user_id, pending.scopes)

    def _rotate(self, app: App, refresh_token: str) -> _Grant:
        grant = self._by_refresh.get(refresh_token)
        if grant is None or grant.client_id != app.client_id:
            raise ApiError(1071)
        if grant.revoked:
            raise ApiError(1132)
        if not self._refresh_live(grant, self.clock()):
            raise ApiError(1071)
        del self._by_refresh[refresh_token]
        if self.settings.revoke_old_access_on_refresh:
            self._by_access.pop(grant.access_token, None)
        grant.refresh_token, grant.access_token = _new_token(), _new_token()
        grant.refresh_expires_at = self._refresh_deadline()
        grant.issued_at = self.clock()
        self._by_refresh[grant.refresh_token] = grant
        self._by_access[grant.access_token] = _Access(grant, self.clock() + self.settings.access_lifetime)
        return grant

    def _spend(self, key: str, limit: int | None) -> None:
        """Fixed one-minute windows: cheap per request, and close enough to Smartsheet's budget."""
        if limit is None:
            return
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= _RATE_WINDOW_SECONDS:
            self._windows[key] = _Window(now, 1)
            return
        window.count += 1
        if window.count > limit:
            raise ApiError(4003)

    def _authenticate(self, authorization: str | None) -> _Access:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(1001)
        access = self._by_access.get(token)
        if access is None or access.grant.revoked:
            raise ApiError(1002)
        if self.clock() >= access.expires_at:
            raise ApiError(1003)
        self._spend("access:" + token, self.settings.rate_limit_per_minute)
        return access

    def _token_body(self, grant: _Grant, *, wrapped: bool) -> dict[str, Any]:
        body = {
            "access_token": grant.access_token,
            "token_type": "bearer",
            "refresh_token": grant.refresh_token,
            "expires_in": self.settings.access_lifetime,
        }
        return {"token": body} if wrapped else body
