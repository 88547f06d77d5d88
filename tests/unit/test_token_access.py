"""Who can read a connection's tokens, decided by an IAM policy simulator over the SAM-translated template's policies.

Reading a token secret is two authorizations: secretsmanager:GetSecretValue on the secret (the caller's identity
policies; the secrets carry no resource policy), then kms:Decrypt on the secret's key, which Secrets Manager asks
KMS for on the caller's behalf (kms:ViaService = secretsmanager.<region>.amazonaws.com). KMS lets a key policy
decide: under the AWS-managed aws/secretsmanager key every principal of the account that may use Secrets Manager
decrypts, so GetSecretValue on "*" (the managed SecretsManagerReadWrite policy) was every user's tokens."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from infra.local.template_model import PhysicalResource, Resolver, Template, synthesize_physical
from infra.scripts.sam_translate import TEMPLATE, translate
from tests.support.iam_simulator import ALLOWED, Request, decide

ACCOUNT = "123456789012"
REGION = "us-east-1"
STACK = "broker-prod"
VIA_SECRETS_MANAGER = f"secretsmanager.{REGION}.amazonaws.com"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}/connections/4583173393803140-AbCdEf"
AWS_MANAGED_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c3d-aws-managed-secretsmanager"
# The key policy AWS gives aws/secretsmanager: "All users and roles in the Amazon Web Services account automatically
# have access to use aws/secretsmanager" (Secrets Manager API reference, UpdateSecret KmsKeyId), through Secrets
# Manager and from this account only.
AWS_MANAGED_KEY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "AnyPrincipalOfTheAccountThroughSecretsManager",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT, "kms:ViaService": VIA_SECRETS_MANAGER}},
        },
        {
            "Sid": "KeyMetadataToTheAccount",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
            "Resource": "*",
        },
    ],
}
# The relevant part of the AWS-managed SecretsManagerReadWrite policy: every Secrets Manager action on every secret.
SECRETS_MANAGER_READ_WRITE = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"},
        {"Effect": "Allow", "Action": ["kms:DescribeKey", "kms:ListAliases", "kms:ListKeys"], "Resource": "*"},
    ],
}
ADMINISTRATOR_ACCESS = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
READER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/integration-worker"
READERS = {"TokenReaderArns": f"{READER_ROLE},arn:aws:iam::{ACCOUNT}:role/reporting-*"}
KEY_ADMINISTRATION = (
    "kms:PutKeyPolicy",
    "kms:GetKeyPolicy",
    "kms:DescribeKey",
    "kms:EnableKeyRotation",
    "kms:DisableKey",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)


def key_arn(logical_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{uuid.UUID(hashlib.sha256(logical_id.encode()).hexdigest()[:32])}"


def physical_of(document: Mapping[str, Any]) -> Callable[[str], PhysicalResource]:
    """Ref/GetAtt answers as one account would give them; KMS keys get a key ARN (the simulator checks ARN types)."""

    def physical(logical_id: str) -> PhysicalResource:
        kind = document["Resources"].get(logical_id, {}).get("Type")
        if kind == "AWS::KMS::Key":
            return PhysicalResource(key_arn(logical_id), {"Arn": key_arn(logical_id), "KeyId": logical_id})
        if kind == "AWS::DynamoDB::Table":
            name = f"{STACK}-{logical_id}-1A2B3C"
            return PhysicalResource(name, {"Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"})
        return synthesize_physical(Template(TEMPLATE, document), logical_id, STACK, REGION, ACCOUNT)

    return physical


class Deployment:
    """The translated template as CloudFormation would resolve it in one account: roles, policies, the token key."""

    def __init__(self, parameters: Mapping[str, str]) -> None:
        self.document = translate(parameters={**parameters, "AWS::StackName": STACK})
        self.resolver = Resolver(
            Template(TEMPLATE, self.document),
            stack_name=STACK,
            region=REGION,
            account_id=ACCOUNT,
            parameters={"SmartsheetClientId": "placeholder-client-id", **parameters},
            physical=physical_of(self.document),
        )

    def resolved(self, logical_id: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.resolver.resolve(self.document["Resources"][logical_id]["Properties"])
        return properties

    def role_arn(self, function: str) -> str:
        return str(self.resolver.get_att(f"{function}Role", "Arn"))

    def role_policies(self, function: str) -> list[dict[str, Any]]:
        return [policy["PolicyDocument"] for policy in self.resolved(f"{function}Role").get("Policies", [])]

    @property
    def token_key(self) -> str:
        """The key new token secrets are created under: TOKEN_KMS_KEY_ID, else Secrets Manager's AWS-managed key."""
        environment = self.resolved("CallbackFunction")["Environment"]["Variables"]
        return str(environment.get("TOKEN_KMS_KEY_ID") or AWS_MANAGED_KEY)

    @property
    def token_key_policy(self) -> dict[str, Any]:
        for logical_id, resource in self.document["Resources"].items():
            if resource["Type"] == "AWS::KMS::Key" and key_arn(logical_id) == self.token_key:
                policy: dict[str, Any] = self.resolved(logical_id)["KeyPolicy"]
                return policy
        assert self.token_key == AWS_MANAGED_KEY, f"{self.token_key} is neither a key of the stack nor AWS's"
        return AWS_MANAGED_KEY_POLICY


@cache
def _deployment(parameters: tuple[tuple[str, str], ...]) -> Deployment:
    return Deployment(dict(parameters))


def deployment(parameters: Mapping[str, str] | None = None) -> Deployment:
    return _deployment(tuple(sorted((parameters or {}).items())))


def session_of(role_arn: str) -> str:
    """The caller a role's credentials make: an assumed-role session (Lambda runs its function so)."""
    name = role_arn.rsplit("/", 1)[1]
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/session-1"


def through_secrets_manager(role_arn: str) -> dict[str, str]:
    return {"kms:ViaService": VIA_SECRETS_MANAGER, "kms:CallerAccount": ACCOUNT, "aws:PrincipalArn": role_arn}


@dataclass(frozen=True)
class Caller:
    name: str
    role_arn: str
    policies: tuple[Mapping[str, Any], ...]


def callers(d: Deployment) -> dict[str, Caller]:
    consumer_policy = d.resolved("TokenConsumerPolicy")["PolicyDocument"]
    found = {
        function: Caller(function, d.role_arn(function), tuple(d.role_policies(function)))
        for function in ("AuthorizeFunction", "CallbackFunction", "RefreshFunction", "ManagementFunction")
    }
    found["named reader (TokenConsumerPolicy, in TokenReaderArns)"] = Caller("reader", READER_ROLE, (consumer_policy,))
    found["unnamed reader (TokenConsumerPolicy only)"] = Caller(
        "unnamed", f"arn:aws:iam::{ACCOUNT}:role/other-app", (consumer_policy,)
    )
    found["secrets admin (SecretsManagerReadWrite)"] = Caller(
        "secrets-admin", f"arn:aws:iam::{ACCOUNT}:role/ops-secrets-admin", (SECRETS_MANAGER_READ_WRITE,)
    )
    found["account administrator (AdministratorAccess)"] = Caller(
        "administrator", f"arn:aws:iam::{ACCOUNT}:role/Admin", (ADMINISTRATOR_ACCESS,)
    )
    return found


def reads_tokens(d: Deployment, callers_: list[Caller]) -> dict[str, tuple[str, str]]:
    """Caller name -> (GetSecretValue decision, kms:Decrypt through Secrets Manager decision)."""
    requests = []
    for caller in callers_:
        session = session_of(caller.role_arn)
        requests.append(
            Request(
                session,
                "secretsmanager:GetSecretValue",
                SECRET,
                caller.policies,
                None,
                {"aws:PrincipalArn": caller.role_arn},
            )
        )
        requests.append(
            Request(
                session,
                "kms:Decrypt",
                d.token_key,
                caller.policies,
                d.token_key_policy,
                through_secrets_manager(caller.role_arn),
            )
        )
    decisions = decide(requests)
    return {caller.name: (decisions[2 * i], decisions[2 * i + 1]) for i, caller in enumerate(callers_)}


# ------------------------------------------------------------------------------------------------------------ tests
# The callback writes pairs and never reads one: its role reads the app credentials secret only. (Until the offline
# identities gave secrets real ARNs, that secret's Resource was a bare name, which the simulator matched against
# every ARN, so the callback looked like a reader.)
TOKEN_READERS = {"RefreshFunction", "ManagementFunction", "reader"}


def test_only_the_broker_and_the_named_readers_can_read_a_connections_tokens() -> None:
    d = deployment(READERS)
    everyone = list(callers(d).values())

    decisions = reads_tokens(d, everyone)

    readers = {name for name, (get, decrypt) in decisions.items() if get == decrypt == ALLOWED}
    assert readers == TOKEN_READERS, (
        f"token secrets under {d.token_key} are readable by {sorted(readers - TOKEN_READERS)} "
        f"and not by {sorted(TOKEN_READERS - readers)}; decisions (GetSecretValue, kms:Decrypt): {decisions}"
    )


def test_an_account_wide_secrets_reader_cannot_read_tokens_with_the_default_parameters() -> None:
    """The reviewer's attack, on the stack as `sam deploy` makes it with every default: a role holding
    SecretsManagerReadWrite (GetSecretValue on every secret) and an administrator reading a user's token secret."""
    d = deployment()
    wide = [c for c in callers(d).values() if c.name in ("secrets-admin", "administrator")]

    decisions = reads_tokens(d, wide)

    for name, (get, decrypt) in decisions.items():
        assert get == ALLOWED, f"{name}: the identity policy allows GetSecretValue; the simulator said {get}"
        assert decrypt != ALLOWED, (
            f"{name} reads every user's tokens: GetSecretValue {get}, and Secrets Manager's kms:Decrypt on the "
            f"token key {d.token_key} {decrypt}"
        )


def test_a_reader_needs_both_the_key_policy_and_its_own_iam_grant() -> None:
    d = deployment(READERS)
    reader = callers(d)["named reader (TokenConsumerPolicy, in TokenReaderArns)"]
    wildcard = Caller("reporting", f"arn:aws:iam::{ACCOUNT}:role/reporting-nightly", reader.policies)
    no_iam_grant = Caller("bare", READER_ROLE, ())

    decisions = reads_tokens(d, [wildcard, no_iam_grant])

    assert decisions["reporting"] == (ALLOWED, ALLOWED)  # "role/reporting-*" in TokenReaderArns
    assert decisions["bare"][1] != ALLOWED, "the key policy alone must not be enough for a reader"


def test_the_broker_writes_token_secrets_under_the_key_only_through_secrets_manager() -> None:
    d = deployment()
    requests = []
    for function in ("CallbackFunction", "RefreshFunction", "ManagementFunction"):
        role, policies = d.role_arn(function), d.role_policies(function)
        for action in ("kms:GenerateDataKey", "kms:Decrypt"):
            requests.append(
                Request(
                    session_of(role), action, d.token_key, policies, d.token_key_policy, through_secrets_manager(role)
                )
            )
        # The same use straight from the function's code, not through Secrets Manager: refused.
        from_code = {"kms:CallerAccount": ACCOUNT, "aws:PrincipalArn": role}
        requests.append(Request(session_of(role), "kms:Decrypt", d.token_key, policies, d.token_key_policy, from_code))

    decisions = decide(requests)

    for index in range(3):
        generate, decrypt, straight = decisions[3 * index : 3 * index + 3]
        assert (generate, decrypt) == (ALLOWED, ALLOWED), requests[3 * index].principal
        assert straight != ALLOWED, requests[3 * index + 2].principal


def test_the_account_administers_the_token_key_but_cannot_use_it() -> None:
    """Never unmanageable: an administrator (and CloudFormation acting as one) may change the key policy, as KMS's
    lockout check requires of whoever sets it, rotate, disable or delete the key; never decrypt or grant."""
    d = deployment()
    administrator = f"arn:aws:iam::{ACCOUNT}:role/Admin"
    context = {"aws:PrincipalArn": administrator, "kms:CallerAccount": ACCOUNT}
    administration = [
        Request(session_of(administrator), action, d.token_key, (ADMINISTRATOR_ACCESS,), d.token_key_policy, context)
        for action in KEY_ADMINISTRATION
    ]
    use = [
        Request(session_of(administrator), action, d.token_key, (ADMINISTRATOR_ACCESS,), d.token_key_policy, context)
        for action in ("kms:Decrypt", "kms:CreateGrant", "kms:ReEncryptFrom")
    ]

    decisions = decide(administration + use)

    assert decisions[: len(administration)] == [ALLOWED] * len(administration), list(
        zip(KEY_ADMINISTRATION, decisions, strict=False)
    )
    assert ALLOWED not in decisions[len(administration) :], decisions


def test_the_token_key_outlives_a_replacement_the_stack_and_a_switch_to_your_own_key() -> None:
    # Token secrets are made by the functions, not by CloudFormation: they stay when the stack goes, and stay
    # encrypted under this key when TokenKmsKeyArn is set later (its condition turns false): the key must stay too.
    key = translate()["Resources"]["TokenSecretsKey"]
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"
    assert key["Condition"] == "UseStackTokenKey"
    assert key["Properties"]["EnableKeyRotation"] is True


def test_with_your_own_key_the_functions_use_it_and_the_stack_key_is_not_made() -> None:
    d = deployment({"TokenKmsKeyArn": key_arn("YourOwnKey")})
    assert d.token_key == key_arn("YourOwnKey")
    assert not d.resolver.is_active("TokenSecretsKey")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("", True),
        (READER_ROLE, True),
        (f"{READER_ROLE},arn:aws:iam::{ACCOUNT}:role/reporting-*", True),
        (f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Ops_0123", True),
        (f"arn:aws:iam::{ACCOUNT}:user/ops", True),
        (f"{READER_ROLE}, arn:aws:iam::{ACCOUNT}:role/b", False),  # a space would be part of the next ARN
        ("integration-worker", False),
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/integration-worker/s", False),  # a session, not the role
        (f"arn:aws:iam::{ACCOUNT}:group/ops", False),
    ],
)
def test_token_readers_are_role_or_user_arns(value: str, valid: bool) -> None:
    pattern = translate()["Parameters"]["TokenReaderArns"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is valid


# -- TokenStore=dynamodb: reading a pair is GetItem on the token table, then kms:Decrypt of its data key directly,
# under the token-pair encryption context. The pinned simulator does not evaluate kms:EncryptionContext:<key>
# conditions (a one-statement key policy with one is ImplicitlyDenied whatever the request's context), so the key
# policy's statements are held to their shape here, and the roles' grants are evaluated in tests/unit/test_iam.py.
DYNAMODB_READERS = {**READERS, "TokenStore": "dynamodb"}
TOKEN_PAIRS_ONLY = {"kms:EncryptionContext:purpose": "token-pair", "kms:CallerAccount": ACCOUNT}


def direct_use(d: Deployment) -> list[dict[str, Any]]:
    """The token key policy's statements that allow a use without Secrets Manager in between."""
    found = []
    for statement in d.token_key_policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
        if {"kms:Decrypt", "kms:GenerateDataKey"} & set(actions) and via is None:
            found.append(statement)
    return found


def test_with_the_dynamodb_store_the_token_key_opens_token_pairs_for_the_broker_and_the_named_readers_only() -> None:
    d = deployment(DYNAMODB_READERS)

    statements = {statement["Sid"]: statement for statement in direct_use(d)}

    assert set(statements) == {"BrokerFunctionsSealTokenPairs", "NamedReadersOpenTokenPairs"}
    broker = statements["BrokerFunctionsSealTokenPairs"]
    assert sorted(broker["Principal"]["AWS"]) == sorted(
        d.role_arn(f) for f in ("CallbackFunction", "RefreshFunction", "RefreshWorkerFunction", "ManagementFunction")
    )
    assert broker["Condition"] == {"StringEquals": TOKEN_PAIRS_ONLY}
    readers = statements["NamedReadersOpenTokenPairs"]
    assert readers["Action"] == "kms:Decrypt"  # readers open pairs, never seal one
    assert readers["Condition"]["StringEquals"] == TOKEN_PAIRS_ONLY
    assert readers["Condition"]["ArnLike"]["aws:PrincipalArn"] == DYNAMODB_READERS["TokenReaderArns"].split(",")


def test_with_the_default_store_nothing_uses_the_token_key_but_through_secrets_manager() -> None:
    assert direct_use(deployment(READERS)) == []
    assert direct_use(deployment()) == []
