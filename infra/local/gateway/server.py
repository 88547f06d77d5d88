"""The local API Gateway: serves the template's HttpApi routes on loopback and fires its schedules on demand."""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from infra.local.gateway.events import rule_event, scheduler_event
from infra.local.gateway.handler import GatewayServer, RequestHandler
from infra.local.gateway.routes import RouteTable
from infra.local.lambda_runtime import Invocation
from infra.local.template_model import FunctionSpec, HttpRoute, ScheduleSpec

log = logging.getLogger("infra.local.gateway")


class Invoker(Protocol):
    """What the gateway needs from a function: its spec and a synchronous invoke (LocalFunction)."""

    @property
    def spec(self) -> FunctionSpec: ...

    def invoke(self, event: Any, *, timeout: float | None = None) -> Invocation: ...


@dataclass(frozen=True)
class ScheduleRun:
    """One on-demand firing of a schedule."""

    schedule: ScheduleSpec
    event: dict[str, Any]
    invocation: Invocation


class Gateway:
    """Serves the template's HttpApi routes on loopback and fires its schedules on demand.

    The socket is bound at construction (so the port is known before the functions start);
    `start()` begins serving with the functions given by then.
    """

    def __init__(
        self,
        routes: Iterable[HttpRoute],
        *,
        schedules: Iterable[ScheduleSpec] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        api_id: str = "local",
        account_id: str = "123456789012",
        region: str = "us-east-1",
        credentials: Mapping[str, str] | None = None,
        control_token: str | None = None,
        around_schedule: Callable[[Callable[[], ScheduleRun]], ScheduleRun] | None = None,
    ) -> None:
        self.routes = RouteTable(routes)
        self.control_token = control_token or secrets.token_urlsafe(32)
        # access key id -> secret access key: who may call routes with AWS_IAM authorization (SigV4).
        self.credentials = dict(credentials or {})
        self.schedules = list(schedules)
        # What the stack does around a schedule's function, given the call that runs it (the local stack: counts its
        # pollers' batches before, waits for the work the function queued after).
        self.around_schedule = around_schedule
        self.functions: dict[str, Invoker] = {}
        self.api_id = api_id
        self.account_id = account_id
        self.region = region
        self._server = GatewayServer((host, port), RequestHandler)
        self._server.gateway = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, functions: Mapping[str, Invoker] | None = None) -> Gateway:
        if functions is not None:
            self.functions = dict(functions)
        missing = sorted({c.route.function for c in self.routes.routes} - set(self.functions))
        if missing:
            raise ValueError(f"no function to serve route(s) of {', '.join(missing)}")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="gateway", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------------- schedules
    def schedule_event(self, schedule: ScheduleSpec, now: float | None = None) -> dict[str, Any]:
        """The payload the schedule delivers: its Input when set, else the service's default event."""
        if schedule.input is not None:
            parsed: dict[str, Any] = json.loads(schedule.input)
            return parsed
        if schedule.kind == "ScheduleV2":
            arn = f"arn:aws:scheduler:{self.region}:{self.account_id}:schedule/default/{schedule.name}"
            return scheduler_event(schedule_arn=arn, account_id=self.account_id, region=self.region, now=now)
        arn = f"arn:aws:events:{self.region}:{self.account_id}:rule/{schedule.name}"
        return rule_event(rule_arn=arn, account_id=self.account_id, region=self.region, now=now)

    def run_schedules(self, function: str | None = None, event_name: str | None = None) -> list[ScheduleRun]:
        """Fire the matching schedules now (all of them by default), one after another."""
        chosen = [
            s
            for s in self.schedules
            if (function is None or s.function == function) and (event_name is None or s.event == event_name)
        ]
        if not chosen:
            raise LookupError(f"no schedule for function={function} event={event_name}")
        runs = []
        for schedule in chosen:
            run = functools.partial(self._run_schedule, schedule, self.schedule_event(schedule))
            runs.append(self.around_schedule(run) if self.around_schedule is not None else run())
        return runs

    def _run_schedule(self, schedule: ScheduleSpec, event: dict[str, Any]) -> ScheduleRun:
        invocation = self.functions[schedule.function].invoke(event)
        log.info(
            "schedule %s -> %s: %s",
            schedule.name,
            schedule.function,
            "ok" if invocation.ok else f"{invocation.error_type}: {invocation.error_message}",
        )
        return ScheduleRun(schedule, event, invocation)
