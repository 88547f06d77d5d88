"""What the flows work with, passed in (ports and adapters): a refresh's collaborators and the management API's, with
the production clocks as defaults so tests pass fakes instead of patching."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartsheet_oauth.domain.errors import StorageError

if TYPE_CHECKING:
    from smartsheet_oauth.config import Config
    from smartsheet_oauth.flows.steps import StepWatcher
    from smartsheet_oauth.smartsheet.client import SmartsheetClient
    from smartsheet_oauth.stores.connect_sessions import ConnectSessionStore
    from smartsheet_oauth.stores.connection_tags import ConnectionTagStore
    from smartsheet_oauth.stores.connections import ConnectionStore
    from smartsheet_oauth.stores.events import EventPublisher
    from smartsheet_oauth.stores.pace import SharedPace
    from smartsheet_oauth.stores.token_stores import TokenStore


@dataclass(frozen=True, slots=True)
class RefreshDeps:
    """What a refresh works with: configuration, stores, Smartsheet, events, and the clocks (tests set them)."""

    config: Config
    connections: ConnectionStore
    vault: TokenStore
    smartsheet: SmartsheetClient
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    events: EventPublisher | None = None
    # Measures waits and deadlines; `sleep` must advance it.
    monotonic: Callable[[], float] = time.monotonic
    # Told of each step boundary a refresh passes (steps.py): tests and benchmarks only.
    steps: StepWatcher | None = None


# API Gateway (HTTP API) gives an integration 30 s; a request's work (a failing save's retries included) ends this
# long before that, or before the function's own timeout, whichever comes first.
API_TIMEOUT_SECONDS = 30.0
API_MARGIN_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ManagementDeps:
    """What the management API works with: configuration, stores, Smartsheet (built on first use), events."""

    config: Config
    connections: ConnectionStore
    vault: TokenStore
    sessions: ConnectSessionStore
    smartsheet: Callable[[], SmartsheetClient]  # built on first use: reads the app credentials
    events: EventPublisher | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # Measures waits and deadlines; `sleep` must advance it.
    monotonic: Callable[[], float] = time.monotonic
    # The pace every refresher shares (the sweep too); None only for tools that refresh nothing.
    pace: SharedPace | None = None
    # Connections' tags and their index; None only for tools that change no tags.
    tags: ConnectionTagStore | None = None

    def tag_store(self) -> ConnectionTagStore:
        if self.tags is None:
            raise StorageError("tags.table", "NoTagsTable", transient=False)
        return self.tags

    def refresh_deps(self) -> RefreshDeps:
        return RefreshDeps(
            config=self.config,
            connections=self.connections,
            vault=self.vault,
            smartsheet=self.smartsheet(),
            clock=self.clock,
            sleep=self.sleep,
            events=self.events,
            monotonic=self.monotonic,
        )

    def request_time_left(self, function_time_left: Callable[[], float]) -> Callable[[], float]:
        """Seconds a request started now may still work: the least of API Gateway's 30 s and the function's own
        time left (Lambda's context), less a margin to answer in."""
        started = self.monotonic()

        def time_left() -> float:
            api_left = API_TIMEOUT_SECONDS - (self.monotonic() - started)
            return min(api_left, function_time_left()) - API_MARGIN_SECONDS

        return time_left
