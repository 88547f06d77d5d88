"""The embedded AWS: a moto server on loopback holding every table, secret and queue template.yaml defines."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import socket
import string
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any, Final, cast

import boto3
from moto.moto_server import werkzeug_app
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wsgi import LimitedStream

from infra.local.aws import moto_fidelity
from infra.local.request_guard import LoopbackOnlyApplication
from infra.local.template_model import (
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    PhysicalResource,
    Resolver,
    Template,
    TemplateError,
    synthesize_physical,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = logging.getLogger("infra.local.aws")

# moto accepts any credentials; these make it obvious nothing real is used.
LOCAL_CREDENTIALS: Final = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

TABLE_TYPES: Final = ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable", "AWS::Serverless::SimpleTable")
SECRET_TYPE: Final = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type
QUEUE_TYPE: Final = "AWS::SQS::Queue"
KMS_KEY_TYPE: Final = "AWS::KMS::Key"
EVENT_BUS_TYPE: Final = "AWS::Events::EventBus"


def _random_suffix(length: int = 12) -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(length))


# Services whose requests may run concurrently: SQS has no conditional writes, and its ReceiveMessage long-polls
# (waits for a message that another request sends), which one request at a time would deadlock.
CONCURRENT_SERVICES: Final = frozenset({"sqs"})


def _service(environ: WSGIEnvironment) -> str:
    """The service a SigV4-signed request is for (its credential scope: key/date/region/SERVICE/aws4_request)."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    _, found, rest = authorization.partition("Credential=")
    scope = rest.split(",", 1)[0].split("/") if found else []
    return scope[3] if len(scope) == 5 else ""


class OneRequestAtATime:
    """Answers one request at a time (except CONCURRENT_SERVICES'). DynamoDB applies a conditional write atomically;
    moto checks the condition, then writes, so under its threaded server two lease takeovers racing on one item
    could both succeed (seen in the reliability suite: a connection refreshed twice). The broker relies on the real
    guarantee, so the embedded AWS gives it (Secrets Manager's idempotent version writes too)."""

    def __init__(self, app: WSGIApplication) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _service(environ) in CONCURRENT_SERVICES:
            return self._app(environ, start_response)
        with self._lock:
            answer = self._app(environ, start_response)
            try:
                return list(answer)  # the whole body is made under the lock
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()


class _KeepAliveRequestHandler(MotoRequestHandler):
    """moto's handler, answering as AWS does: over a kept-alive connection, each answer in one send.

    werkzeug's dev server closes every connection after its answer (http.server cannot skip a request body the
    application left unread), so each AWS call cost a TCP connection and a server thread. Here a request whose
    body has a declared length is answered on its connection: the body is read through a limited stream, what
    the application left of it is drained, and the answer goes out with its length. A chunked body, an HTTP/1.0
    client or one asking to close takes werkzeug's own path, which closes. Writes are buffered: the status line,
    headers and body leave in one send (unbuffered, each is a system call, CPU work for both ends on loopback)."""

    wbufsize = io.DEFAULT_BUFFER_SIZE

    def setup(self) -> None:
        super().setup()
        _live_connections(self.server).add(self.connection)

    def finish(self) -> None:
        _live_connections(self.server).discard(self.connection)
        super().finish()

    def handle_expect_100(self) -> bool:
        # A client that sent "Expect: 100-continue" waits for this interim answer before sending its body: it
        # must leave at once, not with the final answer.
        answered = super().handle_expect_100()
        self.wfile.flush()
        return answered

    def run_wsgi(self) -> None:
        # http.server answered the Expect header above; werkzeug would write a second "100 Continue".
        del self.headers["Expect"]
        length = self.headers.get("Content-Length", "0").strip()
        if self.close_connection or "Transfer-Encoding" in self.headers or not (length.isascii() and length.isdigit()):
            super().run_wsgi()
            return
        body = LimitedStream(cast("IO[bytes]", self.rfile), int(length))
        try:
            self._answer(body)
            body.exhaust()  # the next request line starts after this body
        except (OSError, ClientDisconnected):
            self.close_connection = True

    def _answer(self, body: LimitedStream) -> None:
        self.environ = environ = self.make_environ()
        environ["wsgi.input"] = body
        started: list[Any] = []
        written: list[bytes] = []  # WSGI's write(), then the iterable: the answer's body in order

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            started[:] = [status, headers]
            return written.append

        try:
            chunks = self.server.app(environ, start_response)
            try:
                written.extend(chunks)
                payload = b"".join(written)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        except (OSError, ClientDisconnected):
            raise
        except Exception:
            log.exception("moto failed to answer %s %s", self.command, self.path)
            started[:] = ["500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain; charset=utf-8")]]
            payload = b"the embedded AWS failed to answer: see its log"
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in _FRAMING_HEADERS:
                self.send_header(name, value)
        bodiless = self.command == "HEAD" or code in ("204", "304")
        if not bodiless:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not bodiless:
            self.wfile.write(payload)
        self.wfile.flush()


_FRAMING_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "keep-alive"})


def _live_connections(server: object) -> set[socket.socket]:
    """The open connections of a server (closed by _MotoServer.stop: a kept-alive one would hold its thread)."""
    live: set[socket.socket] = vars(server).setdefault("_live_connections", set())
    return live


class _MotoServer:
    """moto's server app on a loopback port, in a thread, one request at a time (see OneRequestAtATime), for this
    machine's programs only: moto checks no signature, so any request it serves can read every secret."""

    def __init__(self, host: str, port: int) -> None:
        # moto answers CORS for every origin (flask_cors on each service's app, made on its first request): a page
        # anywhere could then read its answers. No page has any business here (LoopbackOnlyApplication).
        werkzeug_app.DISABLE_GLOBAL_CORS = True  # type: ignore[attr-defined]
        app = LoopbackOnlyApplication(
            OneRequestAtATime(DomainDispatcherApplication(create_backend_app)), pages_elsewhere_link_here=False
        )
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_KeepAliveRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        # Kept-alive connections wait in their threads for a next request: end them (the clients reconnect).
        for connection in list(_live_connections(self._server)):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class LocalAws:
    """Starts moto on 127.0.0.1 and provisions the template's resources from their own definitions.

    Tables, secrets and queues are created from their Properties (keys, attributes, indexes, TTL,
    generated secret strings, queue attributes), so a resource added to template.yaml exists locally
    without code changes. Other resources (functions, APIs) get a local identity for Ref/GetAtt.
    """

    def __init__(
        self,
        template: Template,
        *,
        stack_name: str,
        parameters: Mapping[str, str] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        region: str = LOCAL_REGION,
        secret_values: Mapping[str, str] | None = None,
        in_process: bool = False,
    ) -> None:
        moto_fidelity.apply()  # moto answers like AWS where the broker depends on it
        self.template = template
        # in_process: no server; boto3's default endpoints, for use inside moto's mock_aws (unit/integration tests).
        self._in_process = in_process
        self.stack_name = stack_name
        self.region = region
        self.account_id = LOCAL_ACCOUNT_ID
        self._host = host
        self._requested_port = port
        self._secret_values = dict(secret_values or {})
        self._server: _MotoServer | None = None
        self._port: int | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._created: dict[str, PhysicalResource] = {}
        self._in_progress: set[str] = set()
        self.resolver = Resolver(
            template,
            stack_name=stack_name,
            parameters=parameters,
            region=region,
            account_id=self.account_id,
            physical=self._physical,
        )
        unknown = sorted(set(self._secret_values) - set(template.resources_of_type(SECRET_TYPE)))
        if unknown:
            raise TemplateError(f"secret values given for unknown secret(s): {', '.join(unknown)}")

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> LocalAws:
        if self._in_process:
            self.provision()
            return self
        if self._server is not None:
            return self
        werkzeug = logging.getLogger("werkzeug")
        if werkzeug.level == logging.NOTSET:
            werkzeug.setLevel(logging.WARNING)  # moto's per-request access log is noise here
        server = _MotoServer(self._host, self._requested_port)
        self._server = server
        self._port = server.port
        try:
            self.provision()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the embedded AWS is not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """What a process needs to reach this AWS with boto3 (and never a real one)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **LOCAL_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    # -------------------------------------------------------------------------------------- clients
    def client(self, service: str) -> Any:
        """A boto3 client bound to this embedded AWS (cached; boto3 clients are thread-safe)."""
        with self._clients_lock:
            if service not in self._clients:
                session = boto3.session.Session(
                    aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                    region_name=self.region,
                )
                endpoint = None if self._in_process else self.endpoint_url
                self._clients[service] = session.client(service, endpoint_url=endpoint)  # type: ignore[call-overload]
            return self._clients[service]

    @property
    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self.client("dynamodb")
        return client

    @property
    def secretsmanager(self) -> SecretsManagerClient:
        client: SecretsManagerClient = self.client("secretsmanager")
        return client

    # ------------------------------------------------------------------------------------ resources
    @property
    def resources(self) -> Mapping[str, PhysicalResource]:
        """Every resource this AWS created, by logical id."""
        return dict(self._created)

    def table_name(self, logical_id: str) -> str:
        return self._provisioned(logical_id, TABLE_TYPES).ref

    def secret_arn(self, logical_id: str) -> str:
        return self._provisioned(logical_id, (SECRET_TYPE,)).ref

    def queue_url(self, logical_id: str) -> str:
        return self._provisioned(logical_id, (QUEUE_TYPE,)).ref

    def kms_key_arn(self, logical_id: str) -> str:
        return self._provisioned(logical_id, (KMS_KEY_TYPE,)).attributes["Arn"]

    def _provisioned(self, logical_id: str, types: tuple[str, ...]) -> PhysicalResource:
        resource = self.template.resources.get(logical_id)
        if resource is None or resource.get("Type") not in types or logical_id not in self._created:
            raise KeyError(f"{logical_id} is not a provisioned {' / '.join(types)}")
        return self._created[logical_id]

    def provision(self) -> None:
        """Create every active table, secret and queue of the template (dependencies first)."""
        for logical_id, resource in self.template.resources.items():
            if resource.get("Type") in PROVISIONERS and self.resolver.is_active(logical_id):
                self._physical(logical_id)

    def _physical(self, logical_id: str) -> PhysicalResource:
        if logical_id in self._created:
            return self._created[logical_id]
        resource = self.template.resources.get(logical_id)
        provisioner = PROVISIONERS.get(str(resource.get("Type"))) if resource else None
        if resource is None or provisioner is None:
            return _synthesize(self, logical_id)
        if self._server is None and not self._in_process:
            raise RuntimeError(f"{logical_id} is needed before the embedded AWS started")
        if logical_id in self._in_progress:
            raise TemplateError(f"circular reference through {logical_id}")
        if not self.resolver.is_active(logical_id):
            raise TemplateError(f"{logical_id} is referenced but its Condition is false")
        self._in_progress.add(logical_id)
        try:
            properties = self.resolver.resolve(resource.get("Properties") or {})
            created = provisioner(self, logical_id, properties)
        finally:
            self._in_progress.discard(logical_id)
        self._created[logical_id] = created
        log.debug("provisioned %s -> %s", logical_id, created.ref)
        return created

    def physical_name(self, logical_id: str, limit: int) -> str:
        """CloudFormation's naming of unnamed resources: <stack>-<LogicalId>-<RANDOM>."""
        suffix = _random_suffix()
        return f"{self.stack_name}-{logical_id}"[: limit - len(suffix) - 1] + f"-{suffix}"

    def secret_value(self, logical_id: str, properties: Mapping[str, Any]) -> str:
        if logical_id in self._secret_values:
            return self._secret_values[logical_id]
        if "SecretString" in properties:
            return str(properties["SecretString"])
        generate = properties.get("GenerateSecretString")
        if not isinstance(generate, dict):
            return generate_password({})
        password = generate_password(generate)
        template, key = generate.get("SecretStringTemplate"), generate.get("GenerateStringKey")
        if template is None or key is None:
            return password
        document = json.loads(str(template))
        document[str(key)] = password
        return json.dumps(document)


def _synthesize(aws: LocalAws, logical_id: str) -> PhysicalResource:
    return synthesize_physical(aws.template, logical_id, aws.stack_name, aws.region, aws.account_id)


def generate_password(options: Mapping[str, Any]) -> str:
    """Secrets Manager's GenerateSecretString rules (length, excluded classes/characters), locally."""
    excluded = set(str(options.get("ExcludeCharacters", "")))
    classes = [
        ("ExcludeLowercase", string.ascii_lowercase),
        ("ExcludeUppercase", string.ascii_uppercase),
        ("ExcludeNumbers", string.digits),
        ("ExcludePunctuation", string.punctuation),
    ]
    pools = [[c for c in chars if c not in excluded] for flag, chars in classes if options.get(flag) is not True]
    if options.get("IncludeSpace") is True:
        pools.append([" "])
    pools = [pool for pool in pools if pool]
    if not pools:
        raise TemplateError("GenerateSecretString excludes every character")
    length = int(options.get("PasswordLength", 32))
    alphabet = [c for pool in pools for c in pool]
    while True:
        password = [secrets.choice(alphabet) for _ in range(length)]
        if options.get("RequireEachIncludedType", True) is False or length < len(pools):
            return "".join(password)
        if all(any(c in pool for c in password) for pool in pools):
            return "".join(password)


# -------------------------------------------------------------------------------------- provisioners
def _table_request(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": props.get("TableName") or aws.physical_name(logical_id, 255),
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
    }
    billing = props.get("BillingMode", "PROVISIONED")
    request["BillingMode"] = billing

    def throughput(source: Mapping[str, Any]) -> dict[str, int]:
        given = source.get("ProvisionedThroughput") or {}
        return {
            "ReadCapacityUnits": int(given.get("ReadCapacityUnits", 5)),
            "WriteCapacityUnits": int(given.get("WriteCapacityUnits", 5)),
        }

    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = throughput(props)
    indexes = []
    for index in props.get("GlobalSecondaryIndexes") or []:
        item = {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
        if billing == "PROVISIONED":
            item["ProvisionedThroughput"] = throughput(index)
        indexes.append(item)
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    local_indexes = [
        {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
        for index in props.get("LocalSecondaryIndexes") or []
    ]
    if local_indexes:
        request["LocalSecondaryIndexes"] = local_indexes
    stream = props.get("StreamSpecification")
    if stream and stream.get("StreamViewType"):
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    sse = props.get("SSESpecification")
    if sse and sse.get("SSEEnabled"):
        request["SSESpecification"] = {"Enabled": True} | ({"SSEType": sse["SSEType"]} if sse.get("SSEType") else {})
    if props.get("Tags"):
        request["Tags"] = props["Tags"]
    if props.get("DeletionProtectionEnabled") is not None:
        request["DeletionProtectionEnabled"] = bool(props["DeletionProtectionEnabled"])
    return request


def _provision_table(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    if aws.template.resources[logical_id]["Type"] == "AWS::Serverless::SimpleTable":
        props = _simple_table_as_table(props)
    request = _table_request(aws, logical_id, props)
    description = aws.dynamodb.create_table(**request)["TableDescription"]
    name = request["TableName"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        aws.dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        aws.dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    attributes = {"Arn": description["TableArn"]}
    if description.get("LatestStreamArn"):
        attributes["StreamArn"] = description["LatestStreamArn"]
    return PhysicalResource(ref=name, attributes=attributes)


def _simple_table_as_table(props: Mapping[str, Any]) -> dict[str, Any]:
    key = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
    kind = {"String": "S", "Number": "N", "Binary": "B"}[key.get("Type", "String")]
    table: dict[str, Any] = {
        "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": kind}],
        "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
        "BillingMode": "PROVISIONED" if props.get("ProvisionedThroughput") else "PAY_PER_REQUEST",
    }
    for name in ("TableName", "ProvisionedThroughput", "SSESpecification"):
        if name in props:
            table[name] = props[name]
    if props.get("Tags"):
        table["Tags"] = [{"Key": k, "Value": v} for k, v in props["Tags"].items()]
    return table


def _provision_secret(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    name = props.get("Name") or f"{logical_id}-{_random_suffix()}"
    request: dict[str, Any] = {"Name": name, "SecretString": aws.secret_value(logical_id, props)}
    if props.get("Description"):
        request["Description"] = props["Description"]
    if props.get("Tags"):
        request["Tags"] = props["Tags"]
    arn = aws.secretsmanager.create_secret(**request)["ARN"]
    return PhysicalResource(ref=arn, attributes={"Id": arn})


_QUEUE_ATTRIBUTES: Final = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)


def _provision_queue(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    fifo = props.get("FifoQueue") in {True, "true"}
    name = props.get("QueueName") or aws.physical_name(logical_id, 75 if fifo else 80) + (".fifo" if fifo else "")
    attributes: dict[str, str] = {}
    for key in _QUEUE_ATTRIBUTES:
        if key not in props:
            continue
        value = props[key]
        if isinstance(value, dict):
            attributes[key] = json.dumps(value)
        elif isinstance(value, bool):
            attributes[key] = "true" if value else "false"
        else:
            attributes[key] = str(value)
    request: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
    if props.get("Tags"):
        request["tags"] = {tag["Key"]: tag["Value"] for tag in props["Tags"]}
    sqs = aws.client("sqs")
    url = sqs.create_queue(**request)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return PhysicalResource(ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url})


def _provision_kms_key(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    request: dict[str, Any] = {
        "KeyUsage": props.get("KeyUsage", "ENCRYPT_DECRYPT"),
        "KeySpec": props.get("KeySpec", "SYMMETRIC_DEFAULT"),
    }
    if props.get("Description"):
        request["Description"] = props["Description"]
    if props.get("KeyPolicy"):
        policy = props["KeyPolicy"]
        request["Policy"] = policy if isinstance(policy, str) else json.dumps(policy)
    kms = aws.client("kms")
    metadata = kms.create_key(**request)["KeyMetadata"]
    if props.get("EnableKeyRotation") in {True, "true"}:
        kms.enable_key_rotation(KeyId=metadata["KeyId"])
    return PhysicalResource(ref=metadata["KeyId"], attributes={"Arn": metadata["Arn"], "KeyId": metadata["KeyId"]})


def _provision_event_bus(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    name = props.get("Name") or aws.physical_name(logical_id, 256)
    events = aws.client("events")
    arn = events.create_event_bus(Name=name)["EventBusArn"]
    if props.get("Policy"):
        policy = props["Policy"]
        events.put_permission(EventBusName=name, Policy=policy if isinstance(policy, str) else json.dumps(policy))
    return PhysicalResource(ref=name, attributes={"Arn": arn, "Name": name})


Provisioner = Callable[[LocalAws, str, Mapping[str, Any]], PhysicalResource]
PROVISIONERS: Final[Mapping[str, Provisioner]] = {
    **dict.fromkeys(TABLE_TYPES, _provision_table),
    SECRET_TYPE: _provision_secret,
    QUEUE_TYPE: _provision_queue,
    KMS_KEY_TYPE: _provision_kms_key,
    EVENT_BUS_TYPE: _provision_event_bus,
}
