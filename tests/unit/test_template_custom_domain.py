"""The optional custom domain (issue 22 item 6), read from the SAM-translated template: CustomDomainName with
CustomDomainCertificateArn makes a regional API Gateway domain (TLS 1.2, the operator's ACM certificate) mapped at its
root to the HTTP API that serves /login and /callback; LoginUrl, CallbackUrl and the management API's login links
follow it. Without them: no domain resource, and the outputs as before. Both or neither (the Rules section)."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest

from infra.local.template_model import Resolver, Template
from infra.local.template_model.document import TemplateError
from infra.scripts.sam_translate import TEMPLATE as TEMPLATE_PATH
from infra.scripts.sam_translate import load_template, translate

DOMAIN = "signin.example.com"
CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
WITH_DOMAIN = (("CustomDomainName", DOMAIN), ("CustomDomainCertificateArn", CERTIFICATE))
PARAMETERS: dict[str, dict[str, Any]] = load_template()["Parameters"]


@cache
def stack(parameters: tuple[tuple[str, str], ...] = ()) -> tuple[dict[str, Any], Resolver]:
    document = translate(parameters=dict(parameters))
    values = {"SmartsheetClientId": "placeholder-client-id", **dict(parameters)}
    return document, Resolver(Template(path=TEMPLATE_PATH, document=document), stack_name="stack", parameters=values)


def active_of_type(parameters: tuple[tuple[str, str], ...], kind: str) -> dict[str, dict[str, Any]]:
    document, resolver = stack(parameters)
    return {
        logical_id: resource
        for logical_id, resource in document["Resources"].items()
        if resource["Type"] == kind and resolver.is_active(logical_id)
    }


def outputs(parameters: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The outputs the stack would have (Condition true), unresolved."""
    document, resolver = stack(parameters)
    return {
        name: output["Value"]
        for name, output in document["Outputs"].items()
        if "Condition" not in output or resolver.condition(output["Condition"])
    }


def management_environment(parameters: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    document, resolver = stack(parameters)
    variables = document["Resources"]["ManagementFunction"]["Properties"]["Environment"]["Variables"]
    return dict(resolver.resolve(variables))


def rule_failures(**parameters: str) -> list[str]:
    """The AssertDescription of every Rules assertion CloudFormation would refuse these values with."""
    document = load_template()
    values = {"SmartsheetClientId": "placeholder-client-id", **parameters}
    resolver = Resolver(Template(path=TEMPLATE_PATH, document=document), stack_name="stack", parameters=values)
    failures = []
    for rule in document.get("Rules", {}).values():
        if "RuleCondition" in rule and not resolver.resolve(rule["RuleCondition"]):
            continue
        failures += [a["AssertDescription"] for a in rule["Assertions"] if not resolver.resolve(a["Assert"])]
    return failures


# ------------------------------------------------------------------------------------------------------ tests
def test_without_a_custom_domain_there_is_no_domain_and_the_urls_are_the_apis_own() -> None:
    assert not active_of_type((), "AWS::ApiGatewayV2::DomainName")
    assert not active_of_type((), "AWS::ApiGatewayV2::ApiMapping")
    found = outputs()
    assert "CustomDomainTarget" not in found
    assert "CustomDomainHostedZoneId" not in found
    _, resolver = stack()
    api = resolver.ref("HttpApi")
    assert resolver.resolve(found["LoginUrl"]) == f"https://{api}.execute-api.{resolver.region}.amazonaws.com/login"
    assert resolver.resolve(found["CallbackUrl"]) == (
        f"https://{api}.execute-api.{resolver.region}.amazonaws.com/callback"
    )
    assert "PUBLIC_BASE_URL" not in management_environment()


def test_a_custom_domain_is_regional_with_tls_1_2_and_the_operators_certificate() -> None:
    [(logical_id, domain)] = active_of_type(WITH_DOMAIN, "AWS::ApiGatewayV2::DomainName").items()
    _, resolver = stack(WITH_DOMAIN)
    properties = resolver.resolve(domain["Properties"])

    assert properties["DomainName"] == DOMAIN
    # A regional endpoint takes a certificate of the stack's own region (an edge one would need us-east-1).
    assert properties["DomainNameConfigurations"] == [
        {"CertificateArn": CERTIFICATE, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"}
    ]
    assert logical_id == "CustomDomain"


def test_the_custom_domain_maps_its_root_to_the_stage_that_serves_login_and_callback() -> None:
    document, _ = stack(WITH_DOMAIN)
    [mapping] = active_of_type(WITH_DOMAIN, "AWS::ApiGatewayV2::ApiMapping").values()
    properties = mapping["Properties"]

    assert properties["DomainName"] == {"Ref": "CustomDomain"}
    assert properties["ApiId"] == {"Ref": "HttpApi"}
    assert "ApiMappingKey" not in properties  # at the root: https://<domain>/login, not /<key>/login
    stage = document["Resources"][properties["Stage"]["Ref"]]
    assert stage["Type"] == "AWS::ApiGatewayV2::Stage"
    assert stage["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    assert stage["Properties"]["StageName"] == "$default"
    # SAM writes the HttpApi's routes into its OpenAPI body.
    paths = document["Resources"]["HttpApi"]["Properties"]["Body"]["paths"]
    assert "get" in paths["/login"]
    assert "get" in paths["/callback"]
    assert "get" in paths["/result"]  # where a finished sign-in lands: on the same domain


def test_with_a_custom_domain_the_outputs_and_the_login_links_are_on_it() -> None:
    found = outputs(WITH_DOMAIN)
    _, resolver = stack(WITH_DOMAIN)

    assert resolver.resolve(found["LoginUrl"]) == f"https://{DOMAIN}/login"
    # What the operator registers at Smartsheet as the app's redirect URL.
    assert resolver.resolve(found["CallbackUrl"]) == f"https://{DOMAIN}/callback"
    # What the operator's DNS record for the domain points at (CNAME, or a Route 53 alias in that zone).
    assert found["CustomDomainTarget"] == {"Fn::GetAtt": ["CustomDomain", "RegionalDomainName"]}
    assert found["CustomDomainHostedZoneId"] == {"Fn::GetAtt": ["CustomDomain", "RegionalHostedZoneId"]}
    assert management_environment(WITH_DOMAIN)["PUBLIC_BASE_URL"] == f"https://{DOMAIN}"


def test_only_the_management_function_reads_the_public_base_url() -> None:
    document, _ = stack(WITH_DOMAIN)
    readers = sorted(
        logical_id
        for logical_id, resource in document["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
        and "PUBLIC_BASE_URL" in resource["Properties"]["Environment"]["Variables"]
    )
    assert readers == ["ManagementFunction"]


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        ({}, []),
        (dict(WITH_DOMAIN), []),
        ({"CustomDomainName": DOMAIN}, ["CustomDomainName needs CustomDomainCertificateArn"]),
        ({"CustomDomainCertificateArn": CERTIFICATE}, ["CustomDomainCertificateArn is set but CustomDomainName"]),
    ],
    ids=["neither", "both", "domain-alone", "certificate-alone"],
)
def test_the_domain_and_its_certificate_come_together_or_not_at_all(
    parameters: dict[str, str], refused: list[str]
) -> None:
    failures = rule_failures(**parameters)
    assert len(failures) == len(refused)
    assert all(failure.startswith(prefix) for failure, prefix in zip(failures, refused, strict=True))


def test_the_rules_survive_the_sam_translation() -> None:
    assert translate()["Rules"] == load_template()["Rules"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CustomDomainName", "https://signin.example.com"),
        ("CustomDomainName", "signin.example.com/login"),
        ("CustomDomainName", "Signin.Example.com"),
        ("CustomDomainName", "localhost"),
        ("CustomDomainName", "-bad.example.com"),
        ("CustomDomainCertificateArn", "arn:aws:iam::123456789012:server-certificate/signin"),
        ("CustomDomainCertificateArn", "signin.example.com"),
    ],
)
def test_a_malformed_domain_or_certificate_is_refused_before_anything_changes(name: str, value: str) -> None:
    assert not re.fullmatch(PARAMETERS[name]["AllowedPattern"], value)
    with pytest.raises(TemplateError):
        Resolver(
            Template(path=TEMPLATE_PATH, document=load_template()), stack_name="stack", parameters={name: value}
        ).parameter(name)


def test_the_domain_and_certificate_patterns_admit_real_values() -> None:
    for value in (DOMAIN, "broker.eu-west-1.acme-corp.co.uk", ""):
        assert re.fullmatch(PARAMETERS["CustomDomainName"]["AllowedPattern"], value), value
    for value in (CERTIFICATE, "arn:aws-us-gov:acm:us-gov-west-1:123456789012:certificate/abc-123", ""):
        assert re.fullmatch(PARAMETERS["CustomDomainCertificateArn"]["AllowedPattern"], value), value
