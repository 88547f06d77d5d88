"""template.yaml's hardening, read from the SAM-translated template: API throttling, an access log without query
strings, log retention on every log group, the optional customer key for token secrets, no secret in parameters
or environment variables."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.local.template_model import Resolver, Template
from infra.scripts.sam_translate import TEMPLATE as TEMPLATE_PATH
from infra.scripts.sam_translate import load_template, translate

TEMPLATE = translate()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
# The access log's variables: who, when, which route, how it ended. Nothing that carries the query string
# (the OAuth code and state), cookies (the nonce) or headers.
SAFE_ACCESS_LOG_VARIABLES = {
    "$context.requestId",
    "$context.requestTime",
    "$context.identity.sourceIp",
    "$context.routeKey",
    "$context.status",
    "$context.responseLength",
    "$context.responseLatency",
    "$context.integrationErrorMessage",
    "$context.integrationStatus",  # Lambda's status to API Gateway ("-" when API Gateway answered itself)
}


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in RESOURCES.items() if r["Type"] == kind}


def the_api_stage() -> dict[str, Any]:
    [stage] = of_type("AWS::ApiGatewayV2::Stage").values()
    properties: dict[str, Any] = stage["Properties"]
    return properties


def test_every_route_is_throttled_by_default() -> None:
    # Each route's own limits: tests/unit/test_template_limits.py. A route added without them gets these.
    settings = the_api_stage()["DefaultRouteSettings"]
    assert settings == {
        "ThrottlingBurstLimit": {"Ref": "ManagementBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ManagementRateLimit"},
    }


def test_the_access_log_records_routes_never_query_strings_or_cookies() -> None:
    access_log = the_api_stage()["AccessLogSettings"]
    assert access_log["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    log_format = access_log["Format"]["Fn::Sub"].replace("${AWS::StackName}", "a-stack")
    variables = set(re.findall(r"\$context\.[A-Za-z.]+", log_format))
    assert variables <= SAFE_ACCESS_LOG_VARIABLES, variables - SAFE_ACCESS_LOG_VARIABLES
    assert "$request" not in log_format
    assert "$context.routeKey" in variables
    sample = re.sub(r"\$context\.[A-Za-z.]+", "x", log_format)
    assert set(json.loads(sample)) >= {"requestId", "route", "status"}  # one JSON object per request


def test_every_function_logs_to_its_own_log_group_with_the_retention_parameter() -> None:
    groups = of_type("AWS::Logs::LogGroup")
    used = []
    for logical_id, function in of_type("AWS::Lambda::Function").items():
        target = function["Properties"]["LoggingConfig"]["LogGroup"]
        assert set(target) == {"Ref"}, logical_id
        assert target["Ref"] in groups, logical_id
        used.append(target["Ref"])
    assert len(used) == len(set(used)), "functions share a log group"


def test_every_log_group_expires_its_logs() -> None:
    groups = of_type("AWS::Logs::LogGroup")
    assert groups
    for logical_id, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, logical_id
    retention = TEMPLATE["Parameters"]["LogRetentionDays"]
    assert retention["Default"] in retention["AllowedValues"]


def test_token_secrets_use_the_stack_key_unless_a_customer_key_is_given() -> None:
    parameter = TEMPLATE["Parameters"]["TokenKmsKeyArn"]
    assert parameter["Default"] == ""
    pattern = parameter["AllowedPattern"]
    assert re.fullmatch(pattern, "")
    assert re.fullmatch(pattern, "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert not re.fullmatch(pattern, "alias/aws/secretsmanager")  # IAM cannot scope a grant to an alias
    assert not re.fullmatch(pattern, "arn:aws:kms:eu-west-1:123456789012:alias/mine")
    assert TEMPLATE["Conditions"]["HasTokenKmsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "TokenKmsKeyArn"}, ""]}]}
    for logical_id, function in of_type("AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["TOKEN_KMS_KEY_ID"] == {
            "Fn::If": ["HasTokenKmsKey", {"Ref": "TokenKmsKeyArn"}, {"Fn::GetAtt": ["TokenSecretsKey", "Arn"]}]
        }, logical_id


@pytest.mark.parametrize("logical_id", sorted(load_template()["Parameters"]))
def test_no_parameter_carries_a_secret(logical_id: str) -> None:
    # Parameters end up in the console, change sets and deploy logs: the client secret goes in afterwards.
    parameter = load_template()["Parameters"][logical_id]
    assert "secret" not in logical_id.lower()
    assert not parameter.get("NoEcho"), f"{logical_id}: NoEcho suggests a secret; use Secrets Manager instead"


def test_environment_variables_name_secrets_but_never_hold_them() -> None:
    for logical_id, function in of_type("AWS::Lambda::Function").items():
        for name, value in function["Properties"]["Environment"]["Variables"].items():
            if "SECRET" in name or "TOKEN" in name or "KEY" in name:
                # An ARN, a name prefix or a key id, always from the template: never a literal value.
                assert isinstance(value, dict), f"{logical_id}.{name} is a literal: {value!r}"


# -------------------------------------------------------------------------- two stacks in one account and region
# Properties that name something inside its parent, not in the account and region: they may repeat.
SCOPED_NAMES = {
    ("AWS::Lambda::Alias", "Name"),  # an alias name is per function
    ("AWS::ApiGatewayV2::Stage", "StageName"),  # a stage name is per API
}
# An alarm's metric: what it watches, not what it is called; a rule's bus: where it listens (two stacks may share it).
NOT_NAMES = {"MetricName", "EventBusName"}


def physical_names(stack: str, **parameters: str) -> dict[tuple[str, str], str]:
    """(logical id, property) -> the resolved value of every name-like property the translation gives a resource
    that the stack creates (its Condition true)."""
    document = translate(parameters={"AWS::StackName": stack, **parameters})
    template = Template(path=TEMPLATE_PATH, document=document)
    resolver = Resolver(
        template, stack_name=stack, parameters={"SmartsheetClientId": "placeholder-client-id", **parameters}
    )
    names = {}
    for logical_id, resource in document["Resources"].items():
        if not resolver.is_active(logical_id):
            continue
        for key, value in (resource.get("Properties") or {}).items():
            if not key.endswith("Name") or key in NOT_NAMES or (resource["Type"], key) in SCOPED_NAMES:
                continue
            names[(logical_id, key)] = str(resolver.resolve(value))
    return names


def certificate(stack: str) -> str:
    return f"arn:aws:acm:us-east-1:123456789012:certificate/{stack}-0f1e2d3c-4b5a-6978-8a9b"


# With a custom domain each stack is given its own (CustomDomainName): a domain name is unique in an account and region
# by nature, like a DNS name, so its being the parameter's value is what keeps the stacks apart, not the stack's name.
WITH_OWN_DOMAINS = {
    "staging": {"CustomDomainName": "signin.staging.example.com", "CustomDomainCertificateArn": certificate("staging")},
    "production": {"CustomDomainName": "signin.example.com", "CustomDomainCertificateArn": certificate("production")},
}


# Both with webhooks (WebhookUrl): their secrets, queues, rules, function and alarms too.
WITH_WEBHOOKS = {"WebhookUrl": "https://hooks.example.com/broker"}


@pytest.mark.parametrize(
    ("own_domains", "webhooks"),
    [(False, False), (True, False), (False, True)],
    ids=["default", "each-its-own-custom-domain", "both-with-webhooks"],
)
def test_two_stacks_in_one_account_and_region_share_no_physical_name(own_domains: bool, webhooks: bool) -> None:
    more = WITH_WEBHOOKS if webhooks else {}
    staging = physical_names("staging", **(WITH_OWN_DOMAINS["staging"] if own_domains else {}), **more)
    production = physical_names("production", **(WITH_OWN_DOMAINS["production"] if own_domains else {}), **more)
    assert (("CustomDomain", "DomainName") in staging) is own_domains
    assert (("WebhookDeadLetterAlarm", "AlarmName") in staging) is webhooks

    shared = sorted(
        f"{lid}.{key} = {value!r}" for (lid, key), value in staging.items() if production.get((lid, key)) == value
    )

    assert staging, "no name-like property found: the reading of the translation is stale"
    assert not shared, (
        "a second stack in the same account and region would fail to create, or take over the first one's: "
        f"{shared}. Leave the name out (CloudFormation makes a unique one; SAM events: OmitName: true) or "
        "build it from ${AWS::StackName}."
    )


# ------------------------------------------------------------------------------ a redeploy never wipes a secret
SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def parameters_read(value: Any) -> set[str]:
    """Every parameter or condition an (unresolved) value depends on: a Ref, a ${Name} inside a Sub, an If."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= parameters_read(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::Sub":
                text, variables = (item[0], item[1]) if isinstance(item, list) else (item, {})
                found |= {name for name in SUB_VARIABLE.findall(text) if name not in variables}
                found |= parameters_read(variables)
            elif key == "Fn::If":
                found.add(item[0])
                found |= parameters_read(item[1:])
            else:
                found |= parameters_read(item)
    return found


def test_no_secret_value_cloudformation_generates_depends_on_a_parameter() -> None:
    # CloudFormation writes a new secret version whenever GenerateSecretString (or SecretString) changes: an input
    # that follows a parameter would replace the value an operator put in (make set-client-secret) at the first
    # redeploy that changes the parameter. The SAM translation keeps intrinsics unresolved, so read them here.
    inputs = set(TEMPLATE["Parameters"]) | set(TEMPLATE.get("Conditions", {}))
    secrets = of_type("AWS::SecretsManager::Secret")
    assert secrets
    for logical_id, secret in secrets.items():
        properties = secret["Properties"]
        generation = {key: properties[key] for key in ("GenerateSecretString", "SecretString") if key in properties}
        assert generation, f"{logical_id}: CloudFormation sets no value; the functions would read an empty secret"
        depends_on = sorted(parameters_read(generation) & inputs)
        assert not depends_on, (
            f"{logical_id}'s generated value follows {depends_on}: a deploy that changes them replaces the secret "
            "an operator set. Keep its GenerateSecretString constant and pass the values another way."
        )


def test_the_dependency_reader_sees_every_way_a_value_follows_a_parameter() -> None:
    assert parameters_read({"Fn::Sub": '{"client_id": "${SmartsheetClientId}"}'}) == {"SmartsheetClientId"}
    assert parameters_read({"Fn::Sub": ["${A}-${Local}-${!Literal}", {"Local": {"Ref": "B"}}]}) == {"A", "B"}
    assert parameters_read({"Fn::Join": ["", [{"Ref": "C"}, {"Fn::If": ["HasD", "x", "y"]}]]}) == {"C", "HasD"}
    assert parameters_read({"SecretStringTemplate": '{"placeholder": true}'}) == set()
