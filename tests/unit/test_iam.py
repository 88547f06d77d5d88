"""Least privilege, proven on the SAM-translated template: each function's role grants exactly the actions on
its own resources listed here, and every AWS call the real handlers make is allowed for that function."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

import boto3
import pytest
from smartsheet_oauth import services

from infra.local.template_model import PhysicalResource, Resolver, Template, synthesize_physical
from infra.scripts.sam_translate import TEMPLATE, load_template, translate
from tests.management.conftest import call_management, complete, new_session
from tests.support.broker import NONCE_COOKIE, Broker, completion_code

BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"

# -- the template's resources as its policies name them (after the transform) ------------------------
STATE_TABLE = {"Fn::GetAtt": ["StateTable", "Arn"]}
CONNECTIONS_TABLE = {"Fn::GetAtt": ["ConnectionsTable", "Arn"]}
TAGS_TABLE = {"Fn::GetAtt": ["ConnectionTagsTable", "Arn"]}
DUE_INDEX = {"Fn::Sub": "${ConnectionsTable.Arn}/index/by-refresh-due"}
END_USER_INDEX = {"Fn::Sub": "${ConnectionsTable.Arn}/index/by-end-user"}
APP_CREDENTIALS = {"Ref": "AppCredentialsSecret"}
TOKEN_SECRETS = {
    "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
    "${AWS::StackName}/connections/*"
}
# The configured bus (EventBusName); with StackEventBus the stack's own: tests/unit/test_event_bus.py.
EVENT_BUS = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"}
PENDING_TOKENS_KEY = {"Fn::GetAtt": ["PendingTokensKey", "Arn"]}
FAILED_SWEEP_QUEUE = {"Fn::GetAtt": ["FailedSweepQueue", "Arn"]}
REFRESH_WORK_QUEUE = {"Fn::GetAtt": ["RefreshWorkQueue", "Arn"]}
# Connect sessions share the state table with pending sign-ins; their keys start with "connect-session:".
SESSION_KEYS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["connect-session:*"]}}
# The sweep lease and the shared pace's windows live there too, under keys of their own.
SWEEP_LEASE_ONLY = {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["sweep:lease"]}}
PACE_WINDOWS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["pace:*"]}}
# ...and so do connect-session sign-ins held for the integrator's confirmation ("connect-completion:").
COMPLETION_KEYS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["connect-completion:*"]}}
# ...and the ledger of imported grants ("grant-import:": a hash of each imported refresh token, never the token).
IMPORT_KEYS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["grant-import:*"]}}
ONLY_PENDING_PAIRS = {"StringEquals": {"kms:EncryptionContext:purpose": "pending-token-pair"}}
TOKEN_KEY = {"Ref": "TokenKmsKeyArn"}
VIA_SECRETS_MANAGER = {
    "StringEquals": {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.${AWS::URLSuffix}"}}
}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True, order=True)
class Grant:
    action: str
    resource: str  # canonical JSON of the Resource as the template writes it
    condition: str | None = None

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}" + (f" if {self.condition}" if self.condition else "")


def grants(actions: Iterable[str], resource: Any, condition: Any = None) -> set[Grant]:
    return {Grant(a, canonical(resource), canonical(condition) if condition else None) for a in actions}


# -- what each function needs, and nothing else -------------------------------------------------------
# Only the functions that sign token requests (the hash needs the client secret); /login sends the client id alone.
READ_APP_CREDENTIALS = grants(["secretsmanager:GetSecretValue"], APP_CREDENTIALS)
PUBLISH_EVENTS = grants(["events:PutEvents"], EVENT_BUS)
SHARE_THE_PACE = grants(["dynamodb:UpdateItem"], STATE_TABLE, PACE_WINDOWS_ONLY)
SEAL_PENDING_PAIRS = grants(["kms:GenerateDataKey", "kms:Decrypt"], PENDING_TOKENS_KEY, ONLY_PENDING_PAIRS)
# Only with the TokenKmsKeyArn parameter: Secrets Manager uses the customer key on the function's behalf. The
# stack's own token key needs no IAM grant: its key policy names these roles (tests/unit/test_token_access.py).
CUSTOMER_TOKEN_KEY = grants(["kms:Decrypt", "kms:GenerateDataKey"], TOKEN_KEY, VIA_SECRETS_MANAGER)

EXPECTED: dict[str, set[Grant]] = {
    "AuthorizeFunction": grants(["dynamodb:PutItem"], STATE_TABLE)
    | grants(["dynamodb:GetItem", "dynamodb:DeleteItem"], STATE_TABLE, SESSION_KEYS_ONLY),
    "CallbackFunction": grants(["dynamodb:DeleteItem"], STATE_TABLE)
    | grants(["dynamodb:PutItem"], STATE_TABLE, COMPLETION_KEYS_ONLY)
    | grants(["kms:GenerateDataKey"], PENDING_TOKENS_KEY, ONLY_PENDING_PAIRS)  # seals, never opens
    | grants(["dynamodb:UpdateItem", "dynamodb:GetItem"], CONNECTIONS_TABLE)
    | grants(["dynamodb:Query"], END_USER_INDEX)
    | READ_APP_CREDENTIALS
    | grants(
        [
            "secretsmanager:CreateSecret",
            "secretsmanager:PutSecretValue",
            "secretsmanager:RestoreSecret",
            "secretsmanager:TagResource",  # CreateSecret with Tags
        ],
        TOKEN_SECRETS,
    )
    | PUBLISH_EVENTS,
    # No Scan: no step of the sweep reads the whole table.
    "RefreshFunction": grants(["dynamodb:Query"], DUE_INDEX)
    | grants(["dynamodb:GetItem", "dynamodb:UpdateItem"], CONNECTIONS_TABLE)
    | grants(["dynamodb:PutItem", "dynamodb:DeleteItem"], STATE_TABLE, SWEEP_LEASE_ONLY)
    | SHARE_THE_PACE
    | READ_APP_CREDENTIALS
    | grants(["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"], TOKEN_SECRETS)
    | SEAL_PENDING_PAIRS
    | PUBLISH_EVENTS
    # Lambda sends a failed sweep's record to its on-failure destination with the function's own role.
    | grants(["sqs:SendMessage"], FAILED_SWEEP_QUEUE)
    # The dispatcher: due connections to the refresh queue, and how much it still holds (no flood).
    | grants(["sqs:SendMessage", "sqs:GetQueueAttributes"], REFRESH_WORK_QUEUE),
    # A worker: no due index, no sweep lease; its event source mapping polls the refresh queue, this queue only.
    "RefreshWorkerFunction": grants(
        ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], REFRESH_WORK_QUEUE
    )
    | grants(["dynamodb:GetItem", "dynamodb:UpdateItem"], CONNECTIONS_TABLE)
    | SHARE_THE_PACE
    | READ_APP_CREDENTIALS
    | grants(["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"], TOKEN_SECRETS)
    | SEAL_PENDING_PAIRS
    | PUBLISH_EVENTS,
    "ManagementFunction": grants(
        ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Scan", "dynamodb:BatchGetItem"], CONNECTIONS_TABLE
    )
    | grants(["dynamodb:Query"], END_USER_INDEX)
    # The tag index: its items written with the record's update in one transaction, and queried by tag.
    | grants(["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"], TAGS_TABLE)
    | grants(["dynamodb:PutItem"], STATE_TABLE, SESSION_KEYS_ONLY)
    | SHARE_THE_PACE
    | grants(["dynamodb:UpdateItem", "dynamodb:GetItem"], STATE_TABLE, COMPLETION_KEYS_ONLY)
    | grants(["dynamodb:UpdateItem", "dynamodb:GetItem"], STATE_TABLE, IMPORT_KEYS_ONLY)
    | READ_APP_CREDENTIALS
    | grants(
        [
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue",
            "secretsmanager:DeleteSecret",
            "secretsmanager:CreateSecret",
            "secretsmanager:RestoreSecret",
            "secretsmanager:TagResource",  # CreateSecret with Tags
        ],
        TOKEN_SECRETS,
    )
    | SEAL_PENDING_PAIRS
    | PUBLISH_EVENTS,
}
# WebhookUrl: the delivery function reads its signing secret, takes deliveries from its queue (Lambda's poller acts with
# the function's role: receive, delete, attributes; the function sets a failed delivery's backoff) and sends what it
# cannot deliver to the dead-letter queue. No table, no token, no bus.
EXPECTED["WebhookDeliveryFunction"] = (
    grants(["secretsmanager:GetSecretValue"], {"Ref": "WebhookSigningSecret"})
    | grants(
        ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
        {"Fn::GetAtt": ["WebhookDeliveryQueue", "Arn"]},
    )
    | grants(["sqs:SendMessage"], {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]})
)
USES_TOKEN_SECRETS = frozenset({"CallbackFunction", "RefreshFunction", "RefreshWorkerFunction", "ManagementFunction"})

# TokenStore=dynamodb: the token table and the token key's data keys (this context only) instead of the secrets.
TOKEN_TABLE = {"Fn::GetAtt": ["TokenTable", "Arn"]}
STACK_TOKEN_KEY = {"Fn::GetAtt": ["TokenSecretsKey", "Arn"]}
ONLY_TOKEN_PAIRS = {"StringEquals": {"kms:EncryptionContext:purpose": "token-pair"}}
WITH_DYNAMODB = {"TokenStore": "dynamodb"}
MIGRATING = {"TokenStore": "dynamodb", "TokenStoreMigration": "on"}


def token_secret_grants(function: str) -> set[Grant]:
    return {g for g in EXPECTED[function] if json.loads(g.resource) == TOKEN_SECRETS}


TOKEN_TABLE_GRANTS: dict[str, set[Grant]] = {
    "CallbackFunction": grants(["dynamodb:UpdateItem"], TOKEN_TABLE),
    "RefreshFunction": grants(["dynamodb:GetItem", "dynamodb:UpdateItem"], TOKEN_TABLE),
    "RefreshWorkerFunction": grants(["dynamodb:GetItem", "dynamodb:UpdateItem"], TOKEN_TABLE),
    "ManagementFunction": grants(["dynamodb:GetItem", "dynamodb:UpdateItem"], TOKEN_TABLE),
}
# The stack's token key names the roles in its key policy (tests/unit/test_token_access.py); a customer key needs
# their IAM grant, under the token-pair context only.
CUSTOMER_KEY_PAIR_GRANTS: dict[str, set[Grant]] = {
    "CallbackFunction": grants(["kms:GenerateDataKey"], TOKEN_KEY, ONLY_TOKEN_PAIRS),  # seals, never opens
    "RefreshFunction": grants(["kms:GenerateDataKey", "kms:Decrypt"], TOKEN_KEY, ONLY_TOKEN_PAIRS),
    "RefreshWorkerFunction": grants(["kms:GenerateDataKey", "kms:Decrypt"], TOKEN_KEY, ONLY_TOKEN_PAIRS),
    "ManagementFunction": grants(["kms:GenerateDataKey", "kms:Decrypt"], TOKEN_KEY, ONLY_TOKEN_PAIRS),
}


def expected_grants(function: str, parameters: Mapping[str, str]) -> set[Grant]:
    """A function's list for a stack's parameters: the token store's grants follow TokenStore (both stores while
    TokenStoreMigration is on)."""
    expected = set(EXPECTED[function])
    if function not in USES_TOKEN_SECRETS:
        return expected
    dynamodb = parameters.get("TokenStore") == "dynamodb"
    migrating = parameters.get("TokenStoreMigration") == "on"
    if dynamodb and not migrating:
        expected -= token_secret_grants(function)
    if dynamodb or migrating:
        expected |= TOKEN_TABLE_GRANTS[function]
        if "TokenKmsKeyArn" in parameters:
            expected |= CUSTOMER_KEY_PAIR_GRANTS[function]
    if "TokenKmsKeyArn" in parameters:
        expected |= CUSTOMER_TOKEN_KEY
    return expected


WITH_TOKEN_KEY = {"TokenKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}


# -- reading the translated template ------------------------------------------------------------------
@cache
def _translated(parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return translate(TEMPLATE, dict(parameters))


def translated(parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    return _translated(tuple(sorted((parameters or {}).items())))


def resolver(document: Mapping[str, Any], parameters: Mapping[str, str], **kwargs: Any) -> Resolver:
    values = {"SmartsheetClientId": "placeholder-client-id", **parameters}
    return Resolver(Template(path=TEMPLATE, document=document), parameters=values, **kwargs)


def choose_branches(value: Any, conditions: Resolver) -> Any:
    """Evaluate Fn::If (and drop AWS::NoValue) the way CloudFormation would, leaving every other intrinsic as is."""
    if isinstance(value, list):
        items = [choose_branches(item, conditions) for item in value]
        return [item for item in items if item != {"Ref": "AWS::NoValue"}]
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return choose_branches(when_true if conditions.condition(name) else when_false, conditions)
        return {k: choose_branches(v, conditions) for k, v in value.items() if v != {"Ref": "AWS::NoValue"}}
    return value


def function_roles(document: Mapping[str, Any]) -> dict[str, str]:
    """Function logical id -> the logical id of the role it runs as."""
    roles = {}
    for logical_id, resource in document["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            role = resource["Properties"]["Role"]
            assert set(role) == {"Fn::GetAtt"}, f"{logical_id} must run as a role of this template, not {role}"
            roles[logical_id] = role["Fn::GetAtt"][0]
    return roles


def role_statements(document: Mapping[str, Any], role: str, parameters: Mapping[str, str]) -> list[dict[str, Any]]:
    conditions = resolver(document, parameters, stack_name="any")
    properties = document["Resources"][role]["Properties"]
    statements: list[dict[str, Any]] = []
    for policy in choose_branches(properties.get("Policies", []), conditions):
        found = policy["PolicyDocument"]["Statement"]
        statements += found if isinstance(found, list) else [found]
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted(statements: Iterable[Mapping[str, Any]]) -> set[Grant]:
    found: set[Grant] = set()
    for statement in statements:
        assert statement.get("Effect") == "Allow", statement
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                found |= grants([action], resource, statement.get("Condition"))
    return found


# -- the explicit lists --------------------------------------------------------------------------------
def test_every_function_has_an_explicit_list_and_its_own_role() -> None:
    roles = function_roles(translated())
    assert set(roles) == set(EXPECTED), (
        "a function was added or removed: give it an explicit list of actions and resources in EXPECTED"
    )
    assert len(set(roles.values())) == len(roles), "functions share a role"


@pytest.mark.parametrize(
    "parameters",
    [{}, WITH_TOKEN_KEY, WITH_DYNAMODB, MIGRATING, {**WITH_DYNAMODB, **WITH_TOKEN_KEY}],
    ids=["stack-token-key", "customer-token-key", "dynamodb-store", "migrating", "dynamodb-customer-key"],
)
@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_each_function_is_granted_exactly_its_list(function: str, parameters: dict[str, str]) -> None:
    document = translated(parameters)
    role = function_roles(document)[function]
    expected = expected_grants(function, parameters)

    actual = granted(role_statements(document, role, parameters))

    missing, extra = sorted(map(str, expected - actual)), sorted(map(str, actual - expected))
    assert not missing, f"{function} lacks {missing}"
    assert not extra, f"{function} is granted more than it needs: {extra}"


def test_roles_carry_only_the_basic_logging_policy_and_no_wildcard() -> None:
    document = translated(WITH_TOKEN_KEY)
    for function, role in function_roles(document).items():
        properties = document["Resources"][role]["Properties"]
        # Lambda's own logging policy (CloudWatch Logs only); no managed CRUD or admin policy.
        assert properties.get("ManagedPolicyArns") == [BASIC_EXECUTION], function
        for grant in granted(role_statements(document, role, WITH_TOKEN_KEY)):
            assert "*" not in grant.action, f"{function}: {grant}"
            assert json.loads(grant.resource) != "*", f"{function}: {grant}"


def api_route(route: str) -> dict[str, str]:
    return {
        "Fn::Sub": f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{HttpApi}}/*/{route}"
    }


# The managed policies the integrator attaches to its own roles: exactly these routes and secrets.
INTEGRATOR_POLICIES = {
    "TokenConsumerPolicy": grants(["secretsmanager:GetSecretValue"], TOKEN_SECRETS)
    | grants(["execute-api:Invoke"], api_route("POST/connections/*/refresh"))
    | grants(["execute-api:Invoke"], api_route("GET/connections"))
    # The stack's token key (by default); its own policy must name the role as well (TokenReaderArns:
    # tests/unit/test_token_access.py).
    | grants(["kms:Decrypt"], {"Fn::GetAtt": ["TokenSecretsKey", "Arn"]}, VIA_SECRETS_MANAGER),
    "ConnectSessionPolicy": grants(["execute-api:Invoke"], api_route("POST/connect-sessions"))
    | grants(["execute-api:Invoke"], api_route("POST/connect-sessions/complete")),
}


# TokenStore=dynamodb: the consumer reads the token table's items (never the connections table) and opens their data
# keys with the token key under the token-pair context only; no secret.
DYNAMODB_CONSUMER = (
    INTEGRATOR_POLICIES["TokenConsumerPolicy"]
    - grants(["secretsmanager:GetSecretValue"], TOKEN_SECRETS)
    - grants(["kms:Decrypt"], STACK_TOKEN_KEY, VIA_SECRETS_MANAGER)
) | (grants(["dynamodb:GetItem"], TOKEN_TABLE) | grants(["kms:Decrypt"], STACK_TOKEN_KEY, ONLY_TOKEN_PAIRS))
CONSUMER_BY_STORE = {
    "secretsmanager": ({}, INTEGRATOR_POLICIES["TokenConsumerPolicy"]),
    "dynamodb": (WITH_DYNAMODB, DYNAMODB_CONSUMER),
    # While a migration runs, consumers read either store (the client falls back to the secret).
    "migrating": (MIGRATING, INTEGRATOR_POLICIES["TokenConsumerPolicy"] | DYNAMODB_CONSUMER),
}


@pytest.mark.parametrize("store", sorted(CONSUMER_BY_STORE))
def test_the_token_consumer_policy_reads_exactly_the_stacks_store(store: str) -> None:
    parameters, expected = CONSUMER_BY_STORE[store]
    document = translated(parameters)
    conditions = resolver(document, parameters, stack_name="any")
    statements = choose_branches(
        document["Resources"]["TokenConsumerPolicy"]["Properties"]["PolicyDocument"], conditions
    )

    assert granted(as_list(statements["Statement"])) == expected


@pytest.mark.parametrize("policy", sorted(INTEGRATOR_POLICIES))
def test_the_integrators_managed_policies_grant_exactly_their_routes(policy: str) -> None:
    document = translated()
    conditions = resolver(document, {}, stack_name="any")
    statements = choose_branches(document["Resources"][policy]["Properties"]["PolicyDocument"], conditions)

    actual = granted(as_list(statements["Statement"]))

    assert actual == INTEGRATOR_POLICIES[policy]
    # Completing connect sessions is the backend's (ConnectSessionPolicy) and no token consumer's.
    api = "${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}"
    invokable = [
        json.loads(g.resource)["Fn::Sub"].replace(api, "aws:execute-api:us-east-1:1:api")
        for g in actual
        if g.action == "execute-api:Invoke"
    ]
    completing = "arn:aws:execute-api:us-east-1:1:api/prod/POST/connect-sessions/complete"
    assert any(fnmatchcase(completing, arn) for arn in invokable) == (policy == "ConnectSessionPolicy")


def test_the_source_template_uses_inline_statements_not_sam_policy_templates() -> None:
    for logical_id, resource in load_template()["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for policy in resource["Properties"].get("Policies", []):
            branches = policy["Fn::If"][1:] if isinstance(policy, dict) and "Fn::If" in policy else [policy]
            for branch in branches:
                assert isinstance(branch, dict), f"{logical_id}: managed policy {branch!r}"
                assert set(branch) <= {"Statement", "Version", "Ref"}, f"{logical_id}: policy template {branch!r}"


# -- what the code really calls ------------------------------------------------------------------------
ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
STACK = "test-stack"  # the broker fixture's stack: TOKEN_SECRET_PREFIX is test-stack/connections/

# What Secrets Manager asks KMS for, on the caller's behalf, when a secret is under a customer key.
IMPLIED_KMS = {
    "CreateSecret": ("kms:GenerateDataKey", "kms:Decrypt"),
    "PutSecretValue": ("kms:GenerateDataKey", "kms:Decrypt"),
    "GetSecretValue": ("kms:Decrypt",),
}


@dataclass
class Call:
    function: str
    service: str  # the IAM prefix (the signing name)
    operation: str
    params: dict[str, Any]
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"


class CallRecorder:
    """Records every AWS API call made by boto3 clients created after it starts, per acting function."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.acting: str | None = None  # a plain attribute: the sweep's worker threads act for it too
        self.last: str | None = None
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        self._events = boto3.DEFAULT_SESSION.events

    def start(self) -> None:
        self._events.register("before-call", self._before, unique_id="test-iam-before")
        self._events.register("after-call", self._after, unique_id="test-iam-after")

    def stop(self) -> None:
        self._events.unregister("before-call", unique_id="test-iam-before")
        self._events.unregister("after-call", unique_id="test-iam-after")

    @contextlib.contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        # Each function runs in its own containers: what one cached (the app credentials, clients) the next
        # one has to fetch itself.
        if function != self.last:
            services.reset()
        self.acting = self.last = function
        try:
            yield
        finally:
            self.acting = None

    def _before(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if self.acting is None:
            return  # the test's own set-up and checks
        body = params.get("body") or b"{}"
        call = Call(
            function=self.acting,
            service=model.service_model.signing_name,
            operation=model.name,
            params=json.loads(body) if body else {},
        )
        context["iam_test_call"] = call
        self.calls.append(call)

    def _after(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        call = context.get("iam_test_call")
        if call is not None:
            call.response = {k: v for k, v in parsed.items() if k in ("KeyId", "ARN")}

    def of(self, function: str) -> list[Call]:
        return [c for c in self.calls if c.function == function]


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


def secret_arn(secret_id: str) -> str:
    # A name resolves to the secret's ARN, which ends with "-" and six random characters.
    return (
        secret_id
        if secret_id.startswith("arn:")
        else f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}-AbCdEf"
    )


def key_arn(key_id: str) -> str:
    return key_id if key_id.startswith("arn:") else f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


def resources_of(call: Call) -> list[str]:
    """The ARNs IAM checks the call against."""
    p = call.params
    if call.service == "dynamodb" and "TransactItems" in p:
        return sorted({table_arn(params["TableName"]) for entry in p["TransactItems"] for params in entry.values()})
    if call.service == "dynamodb" and "RequestItems" in p:
        return sorted(table_arn(table) for table in p["RequestItems"])
    if call.service == "dynamodb" and "TableName" in p:
        arn = table_arn(p["TableName"])
        return [f"{arn}/index/{p['IndexName']}" if p.get("IndexName") else arn]
    if call.service == "secretsmanager" and ("SecretId" in p or "Name" in p):
        return [secret_arn(p.get("SecretId") or p["Name"])]
    if call.service == "events" and call.operation == "PutEvents":
        buses = {entry.get("EventBusName") or "default" for entry in p["Entries"]}
        return [b if b.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{b}" for b in buses]
    if call.service == "kms" and (p.get("KeyId") or call.response.get("KeyId")):
        return [key_arn(p.get("KeyId") or call.response["KeyId"])]
    raise AssertionError(f"teach resources_of() which resource {call.action} acts on (params: {sorted(p)})")


CONDITION_MATCHERS = {
    "StringEquals": lambda value, pattern: value == pattern,
    "StringLike": fnmatchcase,
}


def condition_holds(condition: Mapping[str, Any] | None, context: Mapping[str, Any]) -> bool:
    """String(Equals|Like), optionally ForAllValues: over a multi-valued key. Any other operator, or a key the
    call does not carry, denies (the safe answer: the test then fails and the evaluator is taught the rest)."""
    for operator, tests in (condition or {}).items():
        qualifier, _, name = operator.rpartition(":")
        match = CONDITION_MATCHERS.get(name)
        if match is None or qualifier not in ("", "ForAllValues"):
            return False
        for key, wanted in tests.items():
            values = context.get(key)
            if values is None or (qualifier == "" and isinstance(values, list)):
                return False
            if not all(any(match(str(v), str(w)) for w in as_list(wanted)) for v in as_list(values)):
                return False
    return True


def allows(statements: Iterable[Mapping[str, Any]], action: str, resource: str, context: Mapping[str, Any]) -> bool:
    return any(
        statement["Effect"] == "Allow"
        and any(fnmatchcase(action.lower(), str(a).lower()) for a in as_list(statement["Action"]))
        and any(fnmatchcase(resource, str(r)) for r in as_list(statement["Resource"]))
        and condition_holds(statement.get("Condition"), context)
        for statement in statements
    )


def needed(
    call: Call, token_key: str | None, partition_keys: Mapping[str, str] | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, resource, request context) IAM evaluates for the call, including what a service asks KMS for.
    `partition_keys` maps a table name to its partition key attribute (for dynamodb:LeadingKeys). A transaction is
    its actions' own permissions (PutItem, UpdateItem, DeleteItem, ConditionCheckItem: "Using IAM with DynamoDB
    transactions"); a BatchGetItem is dynamodb:BatchGetItem on each table it reads."""
    if call.service == "dynamodb" and call.operation == "TransactWriteItems":
        kinds = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
        }
        return [
            check
            for entry in call.params["TransactItems"]
            for kind, params in entry.items()
            for check in needed(Call(call.function, "dynamodb", kinds[kind], params), token_key, partition_keys)
        ]
    if call.service == "dynamodb" and call.operation == "BatchGetItem":
        return [("dynamodb:BatchGetItem", table_arn(table), {}) for table in call.params["RequestItems"]]
    context: dict[str, Any] = {
        f"kms:EncryptionContext:{k}": str(v) for k, v in (call.params.get("EncryptionContext") or {}).items()
    }
    attribute = (partition_keys or {}).get(call.params.get("TableName", ""))
    item_key = call.params.get("Key") or call.params.get("Item") or {}
    if call.service == "dynamodb" and attribute and attribute in item_key:
        context["dynamodb:LeadingKeys"] = [next(iter(item_key[attribute].values()))]
    checks = [(call.action, resource, context) for resource in resources_of(call)]
    if call.service == "secretsmanager" and call.operation == "CreateSecret" and call.params.get("Tags"):
        checks += [("secretsmanager:TagResource", resource, context) for resource in resources_of(call)]
    secret = call.params.get("SecretId") or call.params.get("Name") or ""
    if token_key and call.service == "secretsmanager" and f"secret:{STACK}/connections/" in secret_arn(secret):
        via = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
        checks += [(action, token_key, via) for action in IMPLIED_KMS.get(call.operation, ())]
    return checks


@dataclass
class Deployed:
    """The moto resources standing in for the stack's, as the function roles' ARNs resolve to."""

    physical: dict[str, PhysicalResource]
    parameters: dict[str, str]
    partition_keys: dict[str, str] = field(default_factory=dict)  # table name -> its partition key attribute

    def statements(self, function: str) -> list[dict[str, Any]]:
        document = translated(self.parameters)
        role = function_roles(document)[function]
        resolved = resolver(
            document,
            self.parameters,
            stack_name=STACK,
            region=REGION,
            account_id=ACCOUNT,
            physical=lambda lid: (
                self.physical.get(lid) or synthesize_physical(Template(TEMPLATE, document), lid, STACK, REGION, ACCOUNT)
            ),
        )
        return [resolved.resolve(s) for s in role_statements(document, role, self.parameters)]


def deploy(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, *, customer_token_key: bool, store: str = "secretsmanager"
) -> Deployed:
    kms = boto3.client("kms", region_name=REGION)
    token_table = broker.env["TOKEN_TABLE_NAME"]
    tags_table = broker.env["CONNECTION_TAGS_TABLE_NAME"]
    physical = {
        "StateTable": PhysicalResource(broker.state_table, {"Arn": table_arn(broker.state_table)}),
        "ConnectionsTable": PhysicalResource(broker.connections_table, {"Arn": table_arn(broker.connections_table)}),
        "TokenTable": PhysicalResource(token_table, {"Arn": table_arn(token_table)}),
        "ConnectionTagsTable": PhysicalResource(tags_table, {"Arn": table_arn(tags_table)}),
        "AppCredentialsSecret": PhysicalResource(broker.env["APP_CREDENTIALS_SECRET_ARN"]),
    }
    # Keys the template creates (PendingTokensKey...) and the environment variables that name them, as deployed.
    environment = translated()["Resources"]["RefreshFunction"]["Properties"]["Environment"]["Variables"]
    for logical_id, resource in translated()["Resources"].items():
        if resource["Type"] == "AWS::KMS::Key":
            key = kms.create_key(Description=logical_id)["KeyMetadata"]
            physical[logical_id] = PhysicalResource(key["KeyId"], {"Arn": key["Arn"], "KeyId": key["KeyId"]})
            for name, value in environment.items():
                if value in ({"Fn::GetAtt": [logical_id, "Arn"]}, {"Ref": logical_id}):
                    monkeypatch.setenv(name, key["Arn"])
    parameters: dict[str, str] = {"TokenStore": store} if store != "secretsmanager" else {}
    if customer_token_key:
        parameters["TokenKmsKeyArn"] = kms.create_key(Description="customer token key")["KeyMetadata"]["Arn"]
    # Token secrets go under the stack's TokenSecretsKey unless TokenKmsKeyArn names another key.
    token_key = parameters.get("TokenKmsKeyArn") or physical["TokenSecretsKey"].attributes["Arn"]
    monkeypatch.setenv("TOKEN_KMS_KEY_ID", token_key)
    if "EVENT_BUS_NAME" in broker.env:
        parameters["EventBusName"] = broker.env["EVENT_BUS_NAME"]
    services.reset()
    partition_keys = {}
    for logical_id, resource in load_template()["Resources"].items():
        if resource["Type"] == "AWS::DynamoDB::Table" and logical_id in physical:
            [hash_key] = [k["AttributeName"] for k in resource["Properties"]["KeySchema"] if k["KeyType"] == "HASH"]
            partition_keys[physical[logical_id].ref] = hash_key
    return Deployed(physical, parameters, partition_keys)


ADA = 4583173393803140
GRACE = 6812335718217604
ALAN = 9007199254740993


def connect_through_a_session(broker: Broker, recorder: CallRecorder, user_id: int, redeemed_for: str) -> None:
    """A connect session for user-1, each step acting as the function that serves it; the code is redeemed for
    `redeemed_for` (another end user's redemption is refused, and its grant revoked)."""
    with recorder.acting_as("ManagementFunction"):
        session = new_session("user-1")
    with recorder.acting_as("AuthorizeFunction"):
        started = broker.press_connect(broker.login({"session": session}))
    query = broker.consent(started.location, user_id=user_id)
    with recorder.acting_as("CallbackFunction"):
        landed = broker.callback(query, started.cookie(NONCE_COOKIE))
    with recorder.acting_as("ManagementFunction"):
        answer = complete(completion_code(landed), redeemed_for)
    assert answer.status == (200 if redeemed_for == "user-1" else 409), answer.body


@pytest.fixture
def recorder() -> Iterator[CallRecorder]:
    recorder = CallRecorder()
    recorder.start()
    yield recorder
    recorder.stop()


@pytest.mark.parametrize("customer_token_key", [False, True], ids=["stack-token-key", "customer-token-key"])
def test_every_call_the_handlers_make_is_allowed_for_that_function(
    broker: Broker, recorder: CallRecorder, monkeypatch: pytest.MonkeyPatch, customer_token_key: bool
) -> None:
    deployed = deploy(broker, monkeypatch, customer_token_key=customer_token_key)

    def sign_in(user_id: int) -> None:
        with recorder.acting_as("AuthorizeFunction"):
            location, nonce = broker.start()
        query = broker.consent(location, user_id=user_id)
        with recorder.acting_as("CallbackFunction"):
            assert broker.callback(query, nonce).status == 200

    sign_in(ADA)  # a new user: the secret is created
    sign_in(ADA)  # a returning user: a new version of the same secret
    sign_in(GRACE)
    sign_in(ALAN)
    broker.emulator.revoke_user(GRACE)
    broker.make_due(ADA)
    broker.make_due(GRACE)
    with recorder.acting_as("RefreshFunction"):
        report = broker.sweep()
    assert report["outcomes"]["refreshed"] == 1, report
    assert report["outcomes"]["needs_reauth"] == 1, report
    with recorder.acting_as("ManagementFunction"):  # an on-demand refresh: the pace, the lease, the secret
        answer = call_management("POST", f"/connections/{ALAN}/refresh", body={"min_valid_seconds": 604800})
    assert answer.body["outcome"] == "refreshed", answer.body
    connect_through_a_session(broker, recorder, ALAN, "user-1")  # held, then redeemed: bound, a new version
    connect_through_a_session(broker, recorder, ALAN, "user-2")  # redeemed for another end user: void, revoked
    with recorder.acting_as("ManagementFunction"):  # tags: replaced (a transaction), listed by one (the index)
        assert call_management("PUT", f"/connections/{ALAN}/tags", body={"tags": {"team": "a"}}).status == 200
        listed = call_management("GET", "/connections", query={"tag": "team=a"})
        assert [c["connection_id"] for c in listed.body["connections"]] == [str(ALAN)]
    with recorder.acting_as("ManagementFunction"):  # a disconnect ends the tags too
        assert call_management("DELETE", f"/connections/{ALAN}").status == 200
    connect_through_a_session(broker, recorder, ALAN, "user-1")  # a disconnected account's secret is restored
    imported = broker.emulator.issue_grant(user_id=ADA)
    # An imported grant: its ledger item, one refresh, the secret, the record, and its tags (the tag index, in one
    # transaction with the record's update).
    with recorder.acting_as("ManagementFunction"):
        body = {"refresh_token": imported["refresh_token"], "tags": {"source": "import"}}
        answer = call_management("POST", "/connections/import", body=body)
    assert answer.status == 201, answer.body
    assert answer.body["connection"]["tags"] == {"source": "import"}

    token_key = deployed.parameters.get("TokenKmsKeyArn")
    seen: dict[str, list[str]] = {}
    for function in ("AuthorizeFunction", "CallbackFunction", "RefreshFunction", "ManagementFunction"):
        calls = recorder.of(function)
        statements = deployed.statements(function)
        seen[function] = sorted({c.action for c in calls})
        for call in calls:
            for action, resource, context in needed(call, token_key, deployed.partition_keys):
                assert allows(statements, action, resource, context), (
                    f"{function} calls {call.action} but its role does not allow {action} on {resource} ({context})"
                )
    # The recording itself works: each function's core calls were seen.
    assert "dynamodb:PutItem" in seen["AuthorizeFunction"]
    assert not [a for a in seen["AuthorizeFunction"] if a.startswith("secretsmanager:")]  # the client id is config
    assert {"dynamodb:DeleteItem", "secretsmanager:CreateSecret", "secretsmanager:PutSecretValue"} <= set(
        seen["CallbackFunction"]
    )
    assert {"dynamodb:Query", "secretsmanager:PutSecretValue"} <= set(seen["RefreshFunction"])
    # New token secrets go under the token key (the stack's, or TokenKmsKeyArn), tagged for consumers' conditions.
    created = [c.params for c in recorder.of("CallbackFunction") if c.operation == "CreateSecret"]
    assert created
    expected_key = token_key or deployed.physical["TokenSecretsKey"].attributes["Arn"]
    assert {params["KmsKeyId"] for params in created} == {expected_key}
    prefix_tag = {"Key": "smartsheet-oauth-broker:secret-prefix", "Value": f"{STACK}/connections/"}
    assert all(prefix_tag in params["Tags"] for params in created)
    # The sweep lease (put, deleted) and the shared pace (updated) in the state table, under their own keys; connect
    # sessions (put) and completion codes (claimed and used up: updated) too.
    state_table = table_arn(broker.state_table)
    for function, actions in (
        ("RefreshFunction", {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"}),
        ("ManagementFunction", {"dynamodb:UpdateItem", "dynamodb:PutItem"}),
    ):
        on_state = {c.action for c in recorder.of(function) if resources_of(c) == [state_table]}
        assert on_state == actions, (function, on_state)
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "kms:GenerateDataKey"} <= set(
        seen["AuthorizeFunction"] + seen["CallbackFunction"]
    )
    assert {"dynamodb:UpdateItem", "kms:Decrypt", "secretsmanager:CreateSecret", "secretsmanager:RestoreSecret"} <= set(
        seen["ManagementFunction"]
    )
    assert {"dynamodb:TransactWriteItems", "dynamodb:BatchGetItem"} <= set(seen["ManagementFunction"])
    counts = {f: dict(Counter(c.action for c in recorder.of(f))) for f in seen}
    print(f"AWS calls per function (4 sign-ins, 1 sweep of 2, 1 refresh, 3 connect sessions): {json.dumps(counts)}")


def test_a_call_outside_the_role_would_be_caught(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: it refuses what the roles do not grant (another table, another secret, a bare KMS use)."""
    deployed = deploy(broker, monkeypatch, customer_token_key=True)
    authorize, refresh = deployed.statements("AuthorizeFunction"), deployed.statements("RefreshFunction")
    token_key = deployed.parameters["TokenKmsKeyArn"]

    assert allows(authorize, "dynamodb:PutItem", table_arn(broker.state_table), {})
    assert not allows(authorize, "dynamodb:PutItem", table_arn(broker.connections_table), {})
    assert not allows(authorize, "dynamodb:DeleteItem", table_arn(broker.state_table), {})
    assert allows(refresh, "secretsmanager:PutSecretValue", secret_arn(f"{STACK}/connections/42"), {})
    assert not allows(refresh, "secretsmanager:PutSecretValue", secret_arn("other-stack/connections/42"), {})
    assert not allows(refresh, "secretsmanager:PutSecretValue", broker.env["APP_CREDENTIALS_SECRET_ARN"], {})
    via = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    assert allows(refresh, "kms:Decrypt", token_key, via)
    assert not allows(refresh, "kms:Decrypt", token_key, {})  # only through Secrets Manager
    assert not allows(authorize, "kms:Decrypt", token_key, via)
    # The state table's reserved keys: the sweep writes its lease and the pace, never a sign-in's state.
    management, state_table = deployed.statements("ManagementFunction"), table_arn(broker.state_table)
    lease, window, state = (
        {"dynamodb:LeadingKeys": ["sweep:lease"]},
        {"dynamodb:LeadingKeys": ["pace:29650000"]},
        {"dynamodb:LeadingKeys": ["a-pending-sign-in-state"]},
    )
    assert allows(refresh, "dynamodb:PutItem", state_table, lease)
    assert allows(refresh, "dynamodb:DeleteItem", state_table, lease)
    assert allows(refresh, "dynamodb:UpdateItem", state_table, window)
    assert allows(management, "dynamodb:UpdateItem", state_table, window)
    assert not allows(refresh, "dynamodb:DeleteItem", state_table, state)
    assert not allows(refresh, "dynamodb:PutItem", state_table, window)
    assert not allows(refresh, "dynamodb:UpdateItem", state_table, lease)
    assert not allows(management, "dynamodb:PutItem", state_table, lease)
    assert not allows(management, "dynamodb:DeleteItem", state_table, lease)
    assert not allows(refresh, "dynamodb:Scan", table_arn(broker.connections_table), {})
    # A transaction is checked action by action: the tag index is the management function's alone.
    tags_table = broker.env["CONNECTION_TAGS_TABLE_NAME"]
    tagging = Call(
        "RefreshFunction",
        "dynamodb",
        "TransactWriteItems",
        {"TransactItems": [{"Put": {"TableName": tags_table, "Item": {"tag": {"S": "a=b"}}}}]},
    )
    [(action, resource, context)] = needed(tagging, None, deployed.partition_keys)
    assert (action, resource) == ("dynamodb:PutItem", table_arn(tags_table))
    assert allows(management, action, resource, context)
    assert not allows(refresh, action, resource, context)


def test_the_condition_evaluator_denies_what_it_cannot_prove() -> None:
    sessions_only = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["connect-session:*"]}}
    assert condition_holds(sessions_only, {"dynamodb:LeadingKeys": ["connect-session:abc"]})
    assert not condition_holds(sessions_only, {"dynamodb:LeadingKeys": ["a-pending-sign-in-state"]})
    assert not condition_holds(sessions_only, {})
    via = {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}
    assert condition_holds(via, {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"})
    assert not condition_holds(via, {"kms:ViaService": "dynamodb.us-east-1.amazonaws.com"})
    assert not condition_holds({"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}, {"x": "1"})


@pytest.mark.parametrize("broker", ["dynamodb"], indirect=True)
@pytest.mark.parametrize("customer_token_key", [False, True], ids=["stack-token-key", "customer-token-key"])
def test_every_call_the_handlers_make_with_the_dynamodb_store_is_allowed(
    broker: Broker, recorder: CallRecorder, monkeypatch: pytest.MonkeyPatch, customer_token_key: bool
) -> None:
    """TokenStore=dynamodb: sign-ins, a sweep, an on-demand refresh, connect sessions and a disconnect, each call
    allowed to the function that makes it; no token secret is touched."""
    deployed = deploy(broker, monkeypatch, customer_token_key=customer_token_key, store="dynamodb")
    for user_id in (ADA, ADA, GRACE, ALAN):
        with recorder.acting_as("AuthorizeFunction"):
            location, nonce = broker.start()
        query = broker.consent(location, user_id=user_id)
        with recorder.acting_as("CallbackFunction"):
            assert broker.callback(query, nonce).status == 200
    broker.emulator.revoke_user(GRACE)
    broker.make_due(ADA)
    broker.make_due(GRACE)
    with recorder.acting_as("RefreshFunction"):
        report = broker.sweep()
    assert (report["outcomes"]["refreshed"], report["outcomes"]["needs_reauth"]) == (1, 1), report
    with recorder.acting_as("ManagementFunction"):
        answer = call_management("POST", f"/connections/{ALAN}/refresh", body={"min_valid_seconds": 604800})
    assert answer.body["outcome"] == "refreshed", answer.body
    connect_through_a_session(broker, recorder, ALAN, "user-1")
    with recorder.acting_as("ManagementFunction"):
        assert call_management("DELETE", f"/connections/{ALAN}").status == 200
    connect_through_a_session(broker, recorder, ALAN, "user-1")  # a retired pair comes back

    token_key = deployed.parameters.get("TokenKmsKeyArn")
    token_table = table_arn(broker.env["TOKEN_TABLE_NAME"])
    stack_key = deployed.physical["TokenSecretsKey"].attributes["Arn"]
    for function in ("AuthorizeFunction", "CallbackFunction", "RefreshFunction", "ManagementFunction"):
        statements = deployed.statements(function)
        for call in recorder.of(function):
            for action, resource, context in needed(call, token_key, deployed.partition_keys):
                if resource == stack_key and token_key is None:
                    continue  # the stack's key policy names the role (tests/unit/test_token_access.py)
                assert allows(statements, action, resource, context), (
                    f"{function} calls {call.action} but its role does not allow {action} on {resource} ({context})"
                )
        secrets = [c.params.get("SecretId") for c in recorder.of(function) if c.service == "secretsmanager"]
        assert set(secrets) <= {broker.env["APP_CREDENTIALS_SECRET_ARN"]}, (function, secrets)
    # The pairs really went through the token table and the token key's token-pair data keys.
    for function in ("CallbackFunction", "RefreshFunction", "ManagementFunction"):
        assert token_table in {r for c in recorder.of(function) for r in resources_of(c)}, function
    contexts = {
        c.params["EncryptionContext"]["purpose"]
        for c in recorder.of("RefreshFunction")
        if c.service == "kms" and "EncryptionContext" in c.params
    }
    assert "token-pair" in contexts


def test_a_token_table_call_outside_the_role_would_be_caught(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = deploy(broker, monkeypatch, customer_token_key=True, store="dynamodb")
    callback, refresh = deployed.statements("CallbackFunction"), deployed.statements("RefreshFunction")
    token_table = table_arn(broker.env["TOKEN_TABLE_NAME"])
    token_key = deployed.parameters["TokenKmsKeyArn"]  # a customer key: the roles' IAM grants decide
    pairs, pending = (
        {"kms:EncryptionContext:purpose": "token-pair"},
        {"kms:EncryptionContext:purpose": "pending-token-pair"},
    )

    assert allows(refresh, "dynamodb:GetItem", token_table, {})
    assert not allows(callback, "dynamodb:GetItem", token_table, {})  # the callback writes pairs, never reads one
    assert not allows(refresh, "dynamodb:Scan", token_table, {})
    assert allows(refresh, "kms:Decrypt", token_key, pairs)
    assert not allows(refresh, "kms:Decrypt", token_key, pending)  # another purpose: not under this grant
    assert not allows(refresh, "kms:Decrypt", token_key, {})
    assert not allows(callback, "kms:Decrypt", token_key, pairs)
    assert not allows(refresh, "secretsmanager:GetSecretValue", secret_arn(f"{STACK}/connections/42"), {})
