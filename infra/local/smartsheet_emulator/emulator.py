"""One emulated Smartsheet, as tests, `make dev` and the demo use it: its lifecycle on loopback, its configuration,
what it observed, and the sign-in steps as Python calls. The parts it is made of live beside it."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from infra.local.smartsheet_emulator.accounts import DEFAULT_APP, DEFAULT_USERS, App, User, known_scopes
from infra.local.smartsheet_emulator.admin import AdminRoutes
from infra.local.smartsheet_emulator.api import SmartsheetApi
from infra.local.smartsheet_emulator.authorize import AuthorizePage
from infra.local.smartsheet_emulator.faults import FaultInjector, Faults
from infra.local.smartsheet_emulator.ledger import Ledger
from infra.local.smartsheet_emulator.model import SmartsheetModel
from infra.local.smartsheet_emulator.server import EmulatorServer, Site, is_loopback_host
from infra.local.smartsheet_emulator.settings import Settings
from infra.local.smartsheet_emulator.validation import update_in_place
from infra.local.smartsheet_emulator.wire import API_PREFIX, AUTHORIZE_PATH


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
        region: str | None = None,
    ) -> None:
        """region: the Smartsheet region this instance plays (shown on its authorize page); each region is its own
        instance, with its own users, codes and tokens, as Smartsheet's regions are."""
        changes: dict[str, Any] = {}
        if access_lifetime is not None:
            changes["access_lifetime"] = access_lifetime
        if code_lifetime is not None:
            changes["code_lifetime"] = code_lifetime
        # One lock for every part: a count, a fault draw and a grant change never interleave halfway.
        self._lock = threading.RLock()
        self._model = SmartsheetModel(
            list(apps) if apps is not None else [DEFAULT_APP],
            list(users) if users is not None else list(DEFAULT_USERS),
            settings=dataclasses.replace(settings or Settings(), **changes),
            clock=clock,
            lock=self._lock,
        )
        self._ledger = Ledger(clock=clock, lock=self._lock)
        self._injector = FaultInjector(faults or Faults(), seed=seed, lock=self._lock)
        self.region = region
        self._pages = AuthorizePage(self._model, self._ledger, region=region)
        self._api = SmartsheetApi(self._model)
        self._admin = AdminRoutes(self, self._model)
        self.verbose = verbose
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle -------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        """Listen on loopback (port 0 picks a free port) and serve from a daemon thread."""
        if not is_loopback_host(host):
            raise ValueError(f"refusing to listen on {host!r}: the emulator only serves loopback")
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._injector.stopping.clear()
        site = Site(self._pages, self._api, self._admin, self._ledger, self._injector, lambda: self.verbose)
        server = EmulatorServer((host.strip("[]"), port), site)
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
        self._injector.stopping.set()
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
        return self._model.apps

    @property
    def users(self) -> tuple[User, ...]:
        return self._model.users

    @property
    def faults(self) -> Faults:
        """The live fault settings: assign fields directly, or use `set_faults` for validation."""
        return self._injector.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.set_faults(**dataclasses.asdict(value))

    @property
    def settings(self) -> Settings:
        return self._model.settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self.update_settings(**dataclasses.asdict(value))

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault fields at once (validated); the object stays the same one."""
        return self._injector.change(**changes)

    def update_settings(self, **changes: Any) -> Settings:
        with self._lock:
            update_in_place(self._model.settings, changes)
            return dataclasses.replace(self._model.settings)

    def reset_faults(self) -> None:
        """No faults, and the random sequence starts again from the seed."""
        self._injector.reset()

    def reseed(self, seed: int | None) -> None:
        self._injector.reseed(seed)

    def reset_stats(self) -> None:
        """Clear counters, the token-request log and the rate-limit windows."""
        with self._lock:
            self._ledger.clear()
            self._model.forget_rate_windows()

    def reset_state(self) -> None:
        """Forget every code and grant (as if no one had ever signed in)."""
        self._model.forget_grants()

    # ----- observations ----------------------------------------------------------------------------

    @property
    def counts(self) -> Counter[str]:
        """A copy: `<endpoint>` totals and `<endpoint>.<outcome>` (ok, an errorCode, timeout, ...)."""
        return self._ledger.counts()

    @property
    def in_progress(self) -> Counter[str]:
        """A copy: API requests by operation (`token.refresh`, `users_me`, ...) received and not yet answered. A
        refresh counted here is carried out whether or not its client is still there to read the answer."""
        return self._ledger.unanswered()

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        """Token requests seen (grant type, auth method, content type, ...): never a secret value."""
        return self._ledger.token_requests()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self._ledger.counts()),
                "token_requests": self._ledger.token_requests(),
                **self._model.census(),
            }

    def access_token_is_live(self, token: str) -> bool:
        return self._model.access_token_is_live(token)

    def live_grants(self) -> int:
        return self._model.live_grants()

    def refresh_token_is_live(self, token: str) -> bool:
        return self._model.refresh_token_is_live(token)

    # ----- flows as Python calls -------------------------------------------------------------------

    def consent(self, authorize_url: str, user_id: int | str | None = None, allow: bool = True) -> str:
        """Answer the authorize page as the user would; return the callback URL the browser is sent to.

        Raises AuthorizeError where Smartsheet shows an error page instead of redirecting."""
        return self._pages.consent(authorize_url, user_id, allow)

    def issue_code(
        self, client_id: str | None = None, user_id: int | str | None = None, scopes: Iterable[str] = ("READ_SHEETS",)
    ) -> str:
        """An authorization code as if the user had just clicked Allow."""
        app, user, granted = self._model.app(client_id), self._model.user(user_id), known_scopes(scopes)
        return self._model.new_code(app, user, granted)

    def issue_grant(
        self, client_id: str | None = None, user_id: int | str | None = None, scopes: Iterable[str] = ("READ_SHEETS",)
    ) -> dict[str, Any]:
        """A token pair as if the user had signed in (flat token-endpoint shape); seeds many connections fast."""
        app, user, granted = self._model.app(client_id), self._model.user(user_id), known_scopes(scopes)
        return self._model.issue_grant(app, user, granted)

    def expire_tokens(self, user_id: int | str | None = None, *, refresh: bool = False) -> int:
        """Expire access tokens now (of one user, or everyone); refresh=True expires refresh tokens too."""
        return self._model.expire_tokens(user_id, refresh=refresh)

    def add_users(self, count: int, *, first_id: int | None = None) -> tuple[User, ...]:
        """`count` new users with consecutive ids from `first_id` (default: after the highest id so far), e-mail
        user<id>@example.com: a load test's browsers each sign in as their own Smartsheet user."""
        return self._model.add_users(count, first_id=first_id)

    def revoke_user(self, user_id: int | str) -> int:
        """Revoke every grant of a user (as an admin would): refresh then answers 1132."""
        return self._model.revoke_user(user_id)

    def enforce_token_lifetime(
        self, max_age: float = 0, *, account_id: int | None = None, user_id: int | str | None = None
    ) -> int:
        """An organisation's token-lifetime policy passing now: revoke the live pairs issued at least `max_age`
        seconds ago (of one account, one user, or everyone) before their `expires_in`; how many (model.py)."""
        return self._model.enforce_token_lifetime(max_age, account_id=account_id, user_id=user_id)
