"""The whole broker on one machine: embedded AWS + Smartsheet emulator + local gateway, wired from template.yaml."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from infra.local.aws import LOCAL_CREDENTIALS, LocalAws
from infra.local.event_sources import QueueNotDrained, QueuePoller, read_queue_sources
from infra.local.gateway import Gateway, ScheduleRun
from infra.local.lambda_runtime import LocalFunction, LogSink
from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator, users_of_region
from infra.local.template_model import (
    DEFAULT_TEMPLATE,
    LOCAL_REGION,
    FunctionSpec,
    Template,
    TemplateError,
    merge_globals,
)

log = logging.getLogger("infra.local.stack")

DEFAULT_STACK_NAME: Final = "smartsheet-oauth-broker-local"
# How long a schedule run waits for the work its function queued (the refresh workers draining the refresh queue).
QUEUE_DRAIN_SECONDS: Final = 600.0
APP_CREDENTIALS_VARIABLE: Final = "APP_CREDENTIALS_SECRET_ARN"


@dataclass(frozen=True)
class RealSmartsheet:
    """Use the real Smartsheet instead of the emulator (`make dev ARGS=--real-smartsheet ...`)."""

    region: str
    client_id: str
    client_secret: str = field(repr=False)


def app_credentials_secret(template: Template) -> str:
    """The logical id of the secret the functions read their client id/secret from (a !Ref in their env)."""
    found = set()
    for resource in template.resources_of_type("AWS::Serverless::Function").values():
        props = merge_globals(template.function_globals(), resource.get("Properties") or {})
        value = ((props.get("Environment") or {}).get("Variables") or {}).get(APP_CREDENTIALS_VARIABLE)
        if isinstance(value, dict) and isinstance(value.get("Ref"), str):
            found.add(value["Ref"])
    if len(found) != 1:
        raise TemplateError(f"expected one secret behind {APP_CREDENTIALS_VARIABLE}, found {sorted(found)}")
    return str(found.pop())


class LocalStack:
    """Starts moto (provisioned from the template), the emulator and the gateway; stops all of them.

    Ports are ephemeral unless given. Functions run in their own processes with the template's
    environment plus the local wiring (moto endpoint, dummy credentials, emulator URLs).
    """

    def __init__(
        self,
        template: Path | str = DEFAULT_TEMPLATE,
        *,
        host: str = "127.0.0.1",
        gateway_port: int = 0,
        moto_port: int = 0,
        emulator_port: int = 0,
        stack_name: str = DEFAULT_STACK_NAME,
        parameters: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        real_smartsheet: RealSmartsheet | None = None,
        emulator: SmartsheetEmulator | None = None,
        max_concurrency: int = 8,
        log_sink: LogSink | None = None,
        prewarm: bool = True,
    ) -> None:
        if real_smartsheet is not None and emulator is not None:
            raise ValueError("use either the real Smartsheet or an emulator, not both")
        self.template = Template.load(template)
        self.host = host
        self.stack_name = stack_name
        self._ports = {"gateway": gateway_port, "moto": moto_port, "emulator": emulator_port}
        self._parameters = dict(parameters or {})
        self.parameters: dict[str, str] = {}  # the template parameters the running stack was given (after start)
        self._environment = dict(environment or {})
        self.real_smartsheet = real_smartsheet
        self._emulator = emulator
        self._own_emulator = emulator is None and real_smartsheet is None
        self._started_emulator = False
        # The other regions AllowedRegions names: one emulator each, on its own port (stack.emulators).
        self._regional: dict[str, SmartsheetEmulator] = {}
        self._max_concurrency = max_concurrency
        self._log_sink = log_sink
        self._prewarm = prewarm
        self._aws: LocalAws | None = None
        self._gateway: Gateway | None = None
        self.functions: dict[str, LocalFunction] = {}
        self.pollers: list[QueuePoller] = []  # the template's SQS event source mappings
        self.startup_seconds = 0.0

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        if self._aws is not None:
            return self
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        log.info("local stack up in %.2fs at %s", self.startup_seconds, self.url)
        return self

    def _start(self) -> None:
        client_id, client_secret = self._app_credentials()
        parameters = {"SmartsheetClientId": client_id, **self._parameters}
        if self.real_smartsheet is not None:
            parameters.setdefault("SmartsheetRegion", self.real_smartsheet.region)
        secret_id = app_credentials_secret(self.template)
        self.parameters = parameters
        self._aws = LocalAws(
            self.template,
            stack_name=self.stack_name,
            parameters=parameters,
            port=self._ports["moto"],
            host=self.host,
            # The client id reaches the functions as SMARTSHEET_CLIENT_ID (the parameter); the secret holds the secret.
            secret_values={secret_id: json.dumps({"client_secret": client_secret})},
        ).start()
        resolver = self._aws.resolver
        specs = resolver.functions()
        routes = [route for spec in specs for route in spec.routes]
        api_ids = {route.api for route in routes}
        api_id = resolver.physical(api_ids.pop()).ref if len(api_ids) == 1 else "local"
        self._gateway = Gateway(
            routes,
            schedules=[schedule for spec in specs for schedule in spec.schedules],
            host=self.host,
            port=self._ports["gateway"],
            api_id=api_id,
            account_id=self._aws.account_id,
            region=self._aws.region,
            # Routes with AWS_IAM authorization take requests signed with the local credentials (moto's).
            credentials={LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"]: LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]},
        )
        default_region, others = self._regions(parameters)
        if self._own_emulator:
            app = dataclasses.replace(DEFAULT_APP, redirect_uri=self.callback_url)
            self._emulator = SmartsheetEmulator(apps=[app], region=default_region)
        if self._emulator is not None and not self._emulator.running:
            self._emulator.start(self.host, self._ports["emulator"])
            self._started_emulator = True
        if self._emulator is not None:
            # Each region is its own Smartsheet: its own users, codes and tokens, on its own loopback port.
            for region in others:
                regional = SmartsheetEmulator(
                    apps=self._emulator.apps, users=users_of_region(region, default_region), region=region
                )
                self._regional[region] = regional.start(self.host, 0)
        self.functions = {
            spec.logical_id: LocalFunction(
                spec, self.function_environment(spec), max_concurrency=self._max_concurrency, log_sink=self._log_sink
            )
            for spec in specs
        }
        if self._prewarm:
            threads = [threading.Thread(target=fn.prewarm, daemon=True) for fn in self.functions.values()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        self._gateway.around_schedule = self._drained
        self._gateway.start(self.functions)
        self.pollers = [
            QueuePoller(source, self.functions[source.function], self._aws.client("sqs"), self._aws.region).start()
            for source in read_queue_sources(resolver)
        ]

    @staticmethod
    def _regions(parameters: Mapping[str, str]) -> tuple[str, list[str]]:
        """The stack's default region and the other regions its AllowedRegions names (the functions' config checks
        the names again)."""
        default = (parameters.get("SmartsheetRegion") or "us").strip().lower()
        named = parameters.get("AllowedRegions", "").replace(",", " ").lower().split()
        return default, [region for region in dict.fromkeys(named) if region != default]

    def _app_credentials(self) -> tuple[str, str]:
        if self.real_smartsheet is not None:
            return self.real_smartsheet.client_id, self.real_smartsheet.client_secret
        if self._emulator is not None:
            app = self._emulator.apps[0]
            return app.client_id, app.client_secret
        return DEFAULT_APP.client_id, DEFAULT_APP.client_secret

    def wait_for_queues(self, timeout: float = QUEUE_DRAIN_SECONDS) -> None:
        """Wait until every event source mapping's queue is drained: nothing visible or delayed, no batch being
        delivered, nothing invisible but the messages a function reported failed (they wait out their visibility
        timeout). Raises QueueNotDrained, naming the queues and their counts, if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while True:
            delivered = [poller.snapshot()[0] for poller in self.pollers]
            left = [poller.wait_drained(max(0.0, deadline - time.monotonic())) for poller in self.pollers]
            if not all(backlog.drained for backlog in left):
                raise QueueNotDrained([backlog for backlog in left if not backlog.drained], timeout)
            # Again if a batch ended meanwhile: its function may have queued more on a queue read before (a
            # refresh's events reach the webhook queue).
            if len(self.pollers) < 2 or delivered == [poller.snapshot()[0] for poller in self.pollers]:
                return

    def _drained(self, invoke: Callable[[], ScheduleRun]) -> ScheduleRun:
        """A schedule run once the work it queued is done: the refresh dispatcher's answer with the workers'
        outcomes added (on AWS they are the workers' metrics; locally `make refresh` and `sweep` print them).
        The pollers' counts are taken before the function runs: a worker may finish a batch before it returns."""
        before = [poller.snapshot() for poller in self.pollers]
        run = invoke()
        if not self.pollers or not run.invocation.ok or not isinstance(run.invocation.payload, dict):
            return run
        workers: dict[str, Any] = {"drained": True}
        try:
            self.wait_for_queues()
        except QueueNotDrained as exc:
            log.warning("%s", exc)
            workers = {"drained": False, "not_drained": str(exc)}
        after = [poller.snapshot() for poller in self.pollers]
        outcomes = dict(run.invocation.payload.get("outcomes") or {})
        batches = failed = 0
        for (b0, f0, o0), (b1, f1, o1) in zip(before, after, strict=True):
            batches, failed = batches + b1 - b0, failed + f1 - f0
            for name, count in (o1 - o0).items():
                outcomes[name] = outcomes.get(name, 0) + count
        payload = run.invocation.payload | {
            "outcomes": outcomes,
            "workers": {"batches": batches, "failed_messages": failed} | workers,
        }
        return dataclasses.replace(run, invocation=dataclasses.replace(run.invocation, payload=payload))

    def stop(self) -> None:
        """Stop everything this stack started (safe to call twice, and after a failed start)."""
        pollers, self.pollers = self.pollers, []
        for poller in pollers:
            poller.stop()
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            gateway.stop()
        functions, self.functions = self.functions, {}
        for function in functions.values():
            function.close()
        if self._started_emulator and self._emulator is not None:
            self._emulator.stop()
            self._started_emulator = False
        if self._own_emulator:
            self._emulator = None
        regional, self._regional = self._regional, {}
        for emulator in regional.values():
            emulator.stop()
        aws, self._aws = self._aws, None
        if aws is not None:
            aws.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------- wiring
    def function_environment(self, spec: FunctionSpec) -> dict[str, str]:
        """A function's process environment: Lambda's own variables, the template's, the local wiring."""
        aws = self.aws
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            # Never a developer's ~/.aws: nothing local may reach a real account.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_SAM_LOCAL": "true",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": spec.handler,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{spec.logical_id}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "LOCAL_LAMBDA_FUNCTION_ARN": (f"arn:aws:lambda:{aws.region}:{aws.account_id}:function:{spec.name}"),
            **spec.environment,
            **aws.environment(),
            **LOCAL_CREDENTIALS,
        }
        if self._emulator is not None:
            env["SMARTSHEET_AUTHORIZE_URL"] = self._emulator.authorize_url
            env["SMARTSHEET_API_BASE_URL"] = self._emulator.api_base_url
        for region, emulator in self._regional.items():
            env[f"SMARTSHEET_AUTHORIZE_URL_{region.upper()}"] = emulator.authorize_url
            env[f"SMARTSHEET_API_BASE_URL_{region.upper()}"] = emulator.api_base_url
        env.update(self._environment)
        return env

    # ------------------------------------------------------------------------------------- access
    @property
    def aws(self) -> LocalAws:
        if self._aws is None:
            raise RuntimeError("the local stack is not started")
        return self._aws

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise RuntimeError("the local stack is not started")
        return self._gateway

    @property
    def emulator(self) -> SmartsheetEmulator:
        if self._emulator is None:
            raise RuntimeError("this stack talks to the real Smartsheet (or is not started): no emulator")
        return self._emulator

    @property
    def emulators(self) -> dict[str, SmartsheetEmulator]:
        """Each region's emulator: the default region's (`emulator`) and one per other region in AllowedRegions."""
        default, _ = self._regions(self.parameters)
        return {default: self.emulator, **self._regional}

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def login_url(self) -> str:
        return f"{self.url}/login"

    @property
    def callback_url(self) -> str:
        return f"{self.url}/callback"

    @property
    def region(self) -> str:
        return self._aws.region if self._aws is not None else LOCAL_REGION

    def table_name(self, variable_or_logical_id: str) -> str:
        """A table's local name by its logical id (ConnectionsTable) or env variable (CONNECTIONS_TABLE_NAME)."""
        return self._lookup(variable_or_logical_id, self.aws.table_name)

    def secret_arn(self, variable_or_logical_id: str) -> str:
        return self._lookup(variable_or_logical_id, self.aws.secret_arn)

    def _lookup(self, key: str, by_logical_id: Any) -> str:
        for function in self.functions.values():
            if key in function.spec.environment:
                return function.spec.environment[key]
        result: str = by_logical_id(key)
        return result

    def token_pair(self, connection_id: str) -> dict[str, Any]:
        """A connection's stored token pair, from whichever store its record names (TokenStore: a secret, or a sealed
        item of the token table, opened with the stack's token key), as the functions read it."""
        from smartsheet_oauth.config import load_config  # noqa: PLC0415
        from smartsheet_oauth.stores.token_stores import build_token_stores  # noqa: PLC0415

        item = self.aws.dynamodb.get_item(
            TableName=self.table_name("CONNECTIONS_TABLE_NAME"),
            Key={"connection_id": {"S": connection_id}},
            ConsistentRead=True,
        ).get("Item")
        ref = item["secret_arn"]["S"] if item else f"{self.token_secret_prefix}{connection_id}"
        environment = next(iter(self.functions.values())).spec.environment
        config = load_config(environment)
        stores = build_token_stores(
            config,
            dynamodb=lambda: self.aws.dynamodb,
            secrets=lambda: self.aws.secretsmanager,
            kms=lambda: self.aws.client("kms"),
        )
        pair: dict[str, Any] = json.loads(stores.load(ref).to_json())
        return pair

    @property
    def token_secret_prefix(self) -> str:
        return self._lookup("TOKEN_SECRET_PREFIX", lambda key: f"{self.stack_name}/connections/")

    def run_schedule(self, function: str | None = None) -> list[ScheduleRun]:
        """Fire the template's schedule(s) now, as EventBridge Scheduler would, and wait for the results."""
        return self.gateway.run_schedules(function)

    def function_logs(self, function: str | None = None) -> list[str]:
        """What the functions printed (their JSON logs, EMF metrics, tracebacks), oldest first."""
        chosen = [self.functions[function]] if function else list(self.functions.values())
        return [line for fn in chosen for line in fn.logs]
