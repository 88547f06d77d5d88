"""The reliability suite's world: moto server (provisioned from template.yaml) in its own process, the Smartsheet
emulator on loopback, the broker's refresh library wired to both, and the figures each scenario reports.

Moto runs in a child process so that the broker's threads and moto's request handling use both cores; refreshers
in other processes reach the same AWS and the same emulator over loopback."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from smartsheet_oauth.config import Config, load_config
from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.tokens import TokenSet
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.flows import fanout, steps
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.flows.sweep import Breaker, SweepReport
from smartsheet_oauth.smartsheet.client import SmartsheetClient, Timeouts
from smartsheet_oauth.stores.connections import ConnectionStore, DueConnection
from smartsheet_oauth.stores.pace import LocalPace
from smartsheet_oauth.stores.refresh_queue import BATCH_SIZE, message_of
from smartsheet_oauth.stores.token_stores import TokenStores, build_token_stores

from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator, User

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

STACK = "reliability"
SECRET_PREFIX = f"{STACK}/connections/"
FIRST_USER_ID = 7_000_000_000_000_001
LEASE_SECONDS = 120
SPAWN = multiprocessing.get_context("spawn")
# Every world-based scenario runs once per token store (conftest.py's token_store fixture sets this).
TOKEN_STORES = ("secretsmanager", "dynamodb")
_store = {"current": "secretsmanager"}
# The call that writes a pair into each store (an outage of it is the save-fails scenario's).
PAIR_WRITE = {"secretsmanager": "PutSecretValue", "dynamodb": "UpdateItem"}


def use_store(name: str) -> None:
    _store["current"] = name


def current_store() -> str:
    return _store["current"]


_BOTO = BotoConfig(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=10, max_pool_connections=64
)


# -- the world ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldSpec:
    """Everything a refresher (in this process or another) needs to reach the world. Picklable."""

    aws_endpoint: str
    connections_table: str
    pending_key_arn: str
    api_base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    state_table: str = "unused"
    token_store: str = "secretsmanager"
    token_table: str = "unused"
    token_key_arn: str = ""

    def environment(self, **overrides: str) -> dict[str, str]:
        return {
            "STATE_TABLE_NAME": self.state_table,
            "CONNECTIONS_TABLE_NAME": self.connections_table,
            "SMARTSHEET_CLIENT_ID": self.client_id,
            "APP_CREDENTIALS_SECRET_ARN": "unused",
            "TOKEN_SECRET_PREFIX": SECRET_PREFIX,
            "SMARTSHEET_API_BASE_URL": self.api_base_url,
            "OAUTH_SCOPES": "READ_SHEETS",
            "PENDING_TOKENS_KEY_ID": self.pending_key_arn,
            "REFRESH_LEASE_SECONDS": str(LEASE_SECONDS),
            "REFRESH_RATE_PER_MINUTE": "100000",
            "TOKEN_STORE": self.token_store,
            "TOKEN_TABLE_NAME": self.token_table,
            "TOKEN_KMS_KEY_ID": self.token_key_arn,
            **overrides,
        }


def _serve_aws(pipe: Pipe) -> None:
    """Child process: moto server on loopback with the template's resources; answers once, stops on a message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        os.environ[name] = value
    from infra.local.aws import LocalAws
    from infra.local.template_model import Template

    # LocalAws answers one AWS request at a time, so moto's conditional writes are atomic as DynamoDB's are.
    aws = LocalAws(Template.load(), stack_name=STACK, parameters={"SmartsheetClientId": DEFAULT_APP.client_id})
    aws.start()
    try:
        pipe.send(
            {
                "endpoint": aws.endpoint_url,
                "table": aws.table_name("ConnectionsTable"),
                "state_table": aws.table_name("StateTable"),
                "key": aws.kms_key_arn("PendingTokensKey"),
                "token_table": aws.table_name("TokenTable"),
                "token_key": aws.kms_key_arn("TokenSecretsKey"),
            }
        )
        pipe.recv()
    except EOFError:
        pass
    finally:
        aws.stop()


@contextmanager
def aws_server() -> Iterator[dict[str, str]]:
    ours, theirs = SPAWN.Pipe()
    process = SPAWN.Process(target=_serve_aws, args=(theirs,), name="moto-server", daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 120
        while not ours.poll(0.2):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded AWS did not start (exit code {process.exitcode})")
        yield ours.recv()
    finally:
        with suppress(OSError):
            ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def users(count: int) -> list[User]:
    return [
        User(FIRST_USER_ID + n, f"user{n}@example.com", "User", str(n), account_id=7_000_000 + n) for n in range(count)
    ]


@dataclass
class World:
    spec: WorldSpec
    emulator: SmartsheetEmulator
    ids: list[str] = field(default_factory=list)

    @property
    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = aws_client("dynamodb", self.spec.aws_endpoint)
        return client

    @property
    def secrets(self) -> SecretsManagerClient:
        client: SecretsManagerClient = aws_client("secretsmanager", self.spec.aws_endpoint)
        return client

    @property
    def stores(self) -> TokenStores:
        """The token stores as the broker's functions see them (new pairs to the scenario's store)."""
        config = load_config(self.spec.environment())
        return build_token_stores(
            config,
            dynamodb=lambda: self.dynamodb,
            secrets=lambda: self.secrets,
            kms=lambda: aws_client("kms", self.spec.aws_endpoint),
        )

    def stored_pair(self, connection_id: str) -> TokenSet | None:
        """The pair the connection's record points at, wherever it is stored; None if there is none."""
        item = self.dynamodb.get_item(
            TableName=self.spec.connections_table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
        ).get("Item")
        ref = item["secret_arn"]["S"] if item else SECRET_PREFIX + connection_id
        try:
            return self.stores.load(ref)
        except StorageError as exc:
            if exc.code in ("ResourceNotFoundException", "InvalidRequestException"):
                return None
            raise


_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def aws_client(service: str, endpoint: str) -> Any:
    """A boto3 client bound to the embedded AWS (never a real one), one per service and endpoint."""
    with _clients_lock:
        key = (service, endpoint)
        if key not in _clients:
            _clients[key] = boto3.session.Session(
                aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
            ).client(service, endpoint_url=endpoint, config=_BOTO)  # type: ignore[call-overload]
        return _clients[key]


@contextmanager
def world(connections: int, *, seed: int = 1, strangers: int = 0) -> Iterator[World]:
    """The embedded AWS, an emulator with `connections` users, and that many signed-in, due connections; plus
    `strangers`, emulator users who have not signed in yet (after the others in `users()`'s order)."""
    with (
        aws_server() as aws,
        SmartsheetEmulator(users=users(connections + strangers), seed=seed).start() as emulator,
    ):
        spec = WorldSpec(
            aws_endpoint=aws["endpoint"],
            connections_table=aws["table"],
            pending_key_arn=aws["key"],
            api_base_url=emulator.api_base_url,
            client_id=DEFAULT_APP.client_id,
            client_secret=DEFAULT_APP.client_secret,
            state_table=aws["state_table"],
            token_store=current_store(),
            token_table=aws["token_table"],
            token_key_arn=aws["token_key"],
        )
        here = World(spec, emulator)
        here.ids = seed_connections(here, connections)
        emulator.reset_stats()
        yield here


def seed_connections(here: World, count: int) -> list[str]:
    """Signed-in connections, all due now: a grant from the emulator, its secret, its record (as the callback
    stores them), written by a few threads."""
    vault = here.stores
    store = ConnectionStore(here.dynamodb, here.spec.connections_table, default_region="us")  # SmartsheetRegion
    now = int(time.time())

    def one(n: int) -> str:
        user = FIRST_USER_ID + n
        grant = here.emulator.issue_grant(user_id=user)
        tokens = TokenSet(
            access_token=grant["access_token"],
            refresh_token=grant["refresh_token"],
            token_type="bearer",
            expires_at=now + 3600,
            scope="READ_SHEETS",
            region="us",
            user_id=str(user),
            email=f"user{n}@example.com",
            obtained_at=now - 600_000,
        )
        arn = vault.save(str(user), tokens)
        store.record_sign_in(
            connection_id=str(user),
            secret_arn=arn,
            email=tokens.email,
            scopes="READ_SHEETS",
            region="us",
            access_expires_at=tokens.expires_at,
            refresh_due_at=now - 3600 + n % 600,
            now=now,
        )
        return str(user)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


# -- refreshers -----------------------------------------------------------------------------------------


class SimClock:
    """Wall-clock time that a scenario moves forward between sweeps (leases, backoffs, due times)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class FakeMonotonic:
    """A monotonic clock that sleeping moves, so retries over minutes pass at once. Each thread's sleeps move its own
    reading only: threads sleep side by side, as they do in real time (a shared sum would make one refresh's retries
    use up the others' leases)."""

    def __init__(self) -> None:
        self._slept = threading.local()

    def __call__(self) -> float:
        slept: float = getattr(self._slept, "seconds", 0.0)
        return slept

    def sleep(self, seconds: float) -> None:
        self._slept.seconds = getattr(self._slept, "seconds", 0.0) + seconds


class StepLog:
    """What a refresher really did, as it did it (its step watcher): the connections whose token request it sent,
    and those whose answer it received. A grant whose request was sent and whose answer never came may have been
    rotated by Smartsheet: such losses are told apart from any other by this record, never by a timing guess."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, step: str, connection_id: str) -> None:
        with self._lock:
            if step == steps.REFRESH_SENDING:
                self.sent[connection_id] += 1
            elif step == steps.REFRESH_ANSWERED:
                self.answered[connection_id] += 1

    def merge(self, sent: dict[str, int], answered: dict[str, int]) -> None:
        """Add what a refresher in another process recorded."""
        with self._lock:
            self.sent.update(sent)
            self.answered.update(answered)


def answers_lost(emulator: SmartsheetEmulator, log: StepLog) -> int:
    """Refreshes Smartsheet carried out (rotating the pair) whose answer never reached the refresher that sent them:
    the emulator's own count less the answers the refreshers recorded."""
    return emulator.counts["token.refresh.ok"] - sum(log.answered.values())


def build_deps(
    spec: WorldSpec,
    *,
    concurrency: int = 8,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    read_timeout: float = 5.0,
    environment: dict[str, str] | None = None,
    watcher: steps.StepWatcher | None = None,
) -> RefreshDeps:
    """The refresh library wired to the world, as the refresh function wires it (its own boto3 clients)."""
    config: Config = load_config(spec.environment(REFRESH_CONCURRENCY=str(concurrency), **(environment or {})))
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    dynamodb = session.client("dynamodb", endpoint_url=spec.aws_endpoint, config=_BOTO)
    secrets = session.client("secretsmanager", endpoint_url=spec.aws_endpoint, config=_BOTO)
    kms: KMSClient = session.client("kms", endpoint_url=spec.aws_endpoint, config=_BOTO)
    # The token table's own client, so an outage can hit the pair writes alone (not the records' UpdateItem).
    pairs = session.client("dynamodb", endpoint_url=spec.aws_endpoint, config=_BOTO)
    assert config.pending_tokens_key_id is not None
    return RefreshDeps(
        config=config,
        connections=ConnectionStore(dynamodb, config.connections_table_name, default_region=config.region),
        vault=build_token_stores(config, dynamodb=lambda: pairs, secrets=lambda: secrets, kms=lambda: kms),
        smartsheet=SmartsheetClient(
            api_base_url=spec.api_base_url,
            client_id=spec.client_id,
            client_secret=spec.client_secret,
            timeouts=Timeouts(connect=2.0, read=read_timeout),
        ),
        clock=clock,
        sleep=sleep,
        monotonic=monotonic,
        steps=watcher,
    )


def store_client_of(deps: RefreshDeps) -> Any:
    """The client that writes the scenario's pairs: Secrets Manager's, or the token table's own DynamoDB client."""
    stores = deps.vault
    assert isinstance(stores, TokenStores)
    if stores.default == "dynamodb":
        assert stores.table is not None
        return stores.table._client._make()  # type: ignore[attr-defined]
    return stores.secrets._client._make()  # type: ignore[attr-defined]


def aws_clients_of(deps: RefreshDeps) -> list[Any]:
    sealer = deps.vault.sealer
    kms = sealer._kms() if sealer is not None else None
    return [c for c in (deps.connections._client, store_client_of(deps), kms) if c is not None]


class AwsThrottle:
    """Answer a share of the broker's AWS calls with ThrottlingException, through botocore's event hooks: the
    call never leaves the client and botocore's own retries are bypassed, so the broker sees every one."""

    def __init__(self, rate: float, *, seed: int = 7, operations: Iterable[str] | None = None) -> None:
        self.rate = rate
        self.operations = set(operations) if operations is not None else None
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def install(self, deps: RefreshDeps, *, store_only: bool = False) -> None:
        for client in [store_client_of(deps)] if store_only else aws_clients_of(deps):
            client.meta.events.register_first("before-call", self._hook, unique_id=f"throttle-{id(self)}")

    def _hook(self, model: Any, **_: Any) -> Any:
        with self._lock:
            self.calls[model.name] += 1
            if self.operations is not None and model.name not in self.operations:
                return None
            if self._rng.random() >= self.rate:
                return None
            self.throttled[model.name] += 1
        body = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        return _Http(400), body | {"ResponseMetadata": {"HTTPStatusCode": 400}}


@dataclass
class _Http:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


class MemoryQueue:
    """The refresh queue, in memory: what the dispatcher sends, in order."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, batch: list[DueConnection]) -> int:
        self.bodies.extend(message_of(due) for due in batch)
        return len(batch)

    def waiting(self) -> int:
        return 0


def run_sweep(deps: RefreshDeps, *, budget_seconds: float = 600.0) -> SweepReport:
    """One run of the refresh through the fan-out, as deployed: the dispatcher queues the due connections, and a
    worker container refreshes them a batch of ten at a time (its breaker kept across its batches) with every batch
    delivered twice (at-least-once delivery). The report is the worker's, summed over its batches; `duplicates`
    counts what the second deliveries did beyond being refused by the lease."""
    deadline = time.monotonic() + budget_seconds

    def time_left() -> float:
        return deadline - time.monotonic()

    queue = MemoryQueue()
    dispatched, _ = fanout.dispatch(deps, queue, time_left=time_left, safety_margin_seconds=30.0)
    report = SweepReport(oldest_due_at=dispatched.oldest_due_at, stopped_early=dispatched.stopped_early)
    report.outcomes.update(dispatched.outcomes)
    breaker = Breaker(deps.monotonic)
    pace = LocalPace(deps.config.refresh_rate_per_minute, deps.monotonic, deps.sleep)
    for start in range(0, len(queue.bodies), BATCH_SIZE):
        records = [
            {"messageId": f"m{start + n}", "body": body}
            for n, body in enumerate(queue.bodies[start : start + BATCH_SIZE])
        ]
        for delivery in (1, 2):
            batch, failed = fanout.work(
                deps, records, pace=pace, time_left=time_left, safety_margin_seconds=30.0, breaker=breaker
            )
            report.crashed.extend(failed)
            report.stopped_early |= batch.stopped_early
            report.breaker_open |= batch.breaker_open
            if delivery == 1:
                report.outcomes.update(batch.outcomes)
                report.dispatched += batch.dispatched
                report.tried.extend(batch.tried)
            else:
                DUPLICATES.update({k: v for k, v in batch.outcomes.items() if v and k != RefreshOutcome.LEASE_BUSY})
    return report


# What second deliveries did other than be refused by the lease (a scenario may look: nothing but what the first
# delivery left due, e.g. deferred for lack of time).
DUPLICATES: Counter[str] = Counter()


def total(reports: Iterable[SweepReport]) -> Counter[str]:
    outcomes: Counter[str] = Counter(dict.fromkeys(RefreshOutcome, 0))
    for report in reports:
        outcomes.update(report.outcomes)
    return outcomes


# -- what the world looks like -----------------------------------------------------------------------


@dataclass
class Audit:
    active: int = 0
    needs_reauth: int = 0
    kept: int = 0  # records still holding a kept pair
    due: int = 0  # active records still due now
    live: int = 0  # connections whose stored refresh token works at Smartsheet
    lost: list[str] = field(default_factory=list)  # active connections whose stored refresh token does not
    generations: Counter[int] = field(default_factory=Counter)
    needs_reauth_ids: set[str] = field(default_factory=set)
    needs_reauth_reasons: Counter[str] = field(default_factory=Counter)
    in_flight: set[str] = field(default_factory=set)  # records marking an attempt in flight


def audit(here: World, *, now: float | None = None) -> Audit:
    """Read every record and secret the broker keeps, and ask the emulator whether each stored refresh token is
    the grant's live one."""
    result = Audit()
    now = time.time() if now is None else now
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": here.spec.connections_table, "ConsistentRead": True}
    while True:
        page = here.dynamodb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def stored_refresh_token(connection_id: str) -> str:
        pair = here.stored_pair(connection_id)
        assert pair is not None, connection_id
        return pair.refresh_token

    with ThreadPoolExecutor(max_workers=8) as pool:
        tokens = dict(zip(here.ids, pool.map(stored_refresh_token, here.ids), strict=True))
    for item in items:
        connection_id = item["connection_id"]["S"]
        status = item["status"]["S"]
        result.generations[int(item["generation"]["N"])] += 1
        if "pending_pair" in item:
            result.kept += 1
        if "in_flight_attempt" in item:
            result.in_flight.add(connection_id)
        if status == "needs_reauth":
            result.needs_reauth += 1
            result.needs_reauth_ids.add(connection_id)
            result.needs_reauth_reasons[item.get("last_error", {}).get("S", "")] += 1
            continue
        result.active += status == "active"
        if status == "active" and "refresh_due_at" in item and int(item["refresh_due_at"]["N"]) <= now:
            result.due += 1
        if here.emulator.refresh_token_is_live(tokens[connection_id]):
            result.live += 1
        else:
            result.lost.append(connection_id)
    return result


def smartsheet_figures(emulator: SmartsheetEmulator) -> dict[str, int]:
    counts = emulator.counts
    return {
        "refresh_calls": counts["token.refresh"],
        "refresh_ok": counts["token.refresh.ok"],
        "refresh_faults": counts["token.refresh"] - counts["token.refresh.ok"],
    }


def outcome_figures(outcomes: Counter[str]) -> dict[str, int]:
    return {name: count for name, count in outcomes.items() if count}


# -- refreshers in other processes ------------------------------------------------------------------


def sweep_in_process(spec: WorldSpec, concurrency: int, start: Any, results: Any, ready: Any) -> None:
    """Child process: get ready, wait for the start signal, sweep once, report the outcomes, how many refreshes it
    dispatched and what its step log recorded."""
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    log = StepLog()
    deps = build_deps(spec, concurrency=concurrency, watcher=log)
    ready.put("process")
    start.wait(120)
    report = run_sweep(deps)
    results.put((dict(report.outcomes), report.dispatched, dict(log.sent), dict(log.answered)))


def spawn(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    process = SPAWN.Process(target=target, args=args, daemon=True)
    process.start()
    return process
