"""template.yaml's hardening, read from the SAM-translated template: API throttling, an access log without query
strings, log retention on every log group, the optional customer key for token secrets, no secret in parameters
or environment variables."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

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
}


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in RESOURCES.items() if r["Type"] == kind}


def the_api_stage() -> dict[str, Any]:
    [stage] = of_type("AWS::ApiGatewayV2::Stage").values()
    properties: dict[str, Any] = stage["Properties"]
    return properties


def test_every_route_is_throttled_by_default() -> None:
    settings = the_api_stage()["DefaultRouteSettings"]
    assert 0 < settings["ThrottlingRateLimit"] <= settings["ThrottlingBurstLimit"]


def test_the_access_log_records_routes_never_query_strings_or_cookies() -> None:
    access_log = the_api_stage()["AccessLogSettings"]
    assert access_log["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    log_format = access_log["Format"]
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


def test_token_secrets_use_the_customer_key_only_when_one_is_given() -> None:
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
            "Fn::If": ["HasTokenKmsKey", {"Ref": "TokenKmsKeyArn"}, {"Ref": "AWS::NoValue"}]
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
