"""The embedded AWS: a moto server on loopback holding every table, secret and queue template.yaml defines."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import boto3

from infra.local.aws import moto_fidelity
from infra.local.aws.moto_server import MotoServer
from infra.local.aws.provisioners import (
    KMS_KEY_TYPE,
    PROVISIONERS,
    QUEUE_TYPE,
    SECRET_TYPE,
    TABLE_TYPES,
    generate_password,
    random_suffix,
)
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
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = logging.getLogger("infra.local.aws")

# moto accepts any credentials; these make it obvious nothing real is used.
LOCAL_CREDENTIALS: Final = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


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
        self._server: MotoServer | None = None
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
            loopback_http=True,
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
        server = MotoServer(self._host, self._requested_port)
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
        suffix = random_suffix()
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
