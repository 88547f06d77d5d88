"""Sign-in that one client cannot take down, read from the SAM translation: a token bucket per route with its own
parameters, API Gateway's 429s counted and alarmed, and the optional front door (CloudFront with a WAF web ACL)
off by default and, when on, passing the sign-in through unchanged."""

from __future__ import annotations

import re
from typing import Any

import pytest

from infra.local.template_model import Resolver, Template, load_yaml
from infra.scripts.sam_translate import ROOT, TEMPLATE, translate

DOCUMENT = translate()
RESOURCES: dict[str, dict[str, Any]] = DOCUMENT["Resources"]
WEB_ACL = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/broker-front-door/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
# The AWS-managed CloudFront policies the front door needs: no caching; every viewer cookie, query string and
# header but Host (API Gateway routes on its own host name).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_HEADER = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
SIGN_IN_LIMITS = ("LoginRateLimit", "LoginBurstLimit")
ROUTE_LIMITS = {
    "GET /login": SIGN_IN_LIMITS,
    "POST /login": SIGN_IN_LIMITS,  # the connect page's button
    "GET /callback": ("CallbackRateLimit", "CallbackBurstLimit"),
    "GET /result": ("CallbackRateLimit", "CallbackBurstLimit"),  # the callback's result page
}
MANAGEMENT_LIMITS = ("ManagementRateLimit", "ManagementBurstLimit")


def stage() -> dict[str, Any]:
    [found] = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    properties: dict[str, Any] = found
    return properties


def route_keys() -> set[str]:
    """Every route of the API, as SAM writes them into its OpenAPI body."""
    body = RESOURCES["HttpApi"]["Properties"]["Body"]
    return {f"{method.upper()} {path}" for path, methods in body["paths"].items() for method in methods}


def limits_of(route: str) -> tuple[str, str]:
    """(rate, burst) of a route: the parameters it reads, or the literal numbers."""
    settings = stage().get("RouteSettings", {}).get(route) or stage()["DefaultRouteSettings"]
    rate, burst = settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]
    return tuple(str(v["Ref"]) if isinstance(v, dict) else str(v) for v in (rate, burst))  # type: ignore[return-value]


def resolver(**parameters: str) -> Resolver:
    values = {"SmartsheetClientId": "placeholder-client-id", **parameters}
    return Resolver(Template(TEMPLATE, DOCUMENT), stack_name="broker-prod", region="eu-west-1", parameters=values)


# ------------------------------------------------------------------------------------------------ route limits
def test_login_callback_and_the_management_api_each_have_their_own_limits() -> None:
    """~20 requests a second to /login from anyone used to give every real user a 429 on every route."""
    sharing = {route: limits_of(route) for route in sorted(route_keys())}

    for route, expected in ROUTE_LIMITS.items():
        same_page = {r for r, limits in ROUTE_LIMITS.items() if limits == expected}  # /login's two methods
        others = sorted(r for r, limits in sharing.items() if r not in same_page and limits == sharing[route])
        assert (sharing[route], others) == (expected, []), (
            f"{route} is limited by {sharing[route]}, shared with {others}: a flood of it refuses them too"
        )
    management = {route: limits for route, limits in sharing.items() if route not in ROUTE_LIMITS}
    assert management
    assert set(management.values()) == {MANAGEMENT_LIMITS}, management


def test_every_route_has_its_own_bucket_not_just_the_default() -> None:
    listed = set(stage().get("RouteSettings", {}))
    assert route_keys() <= listed, f"no RouteSettings entry for {sorted(route_keys() - listed)}"
    assert listed <= route_keys(), f"RouteSettings for routes that do not exist: {sorted(listed - route_keys())}"


@pytest.mark.parametrize(("rate", "burst"), sorted({*ROUTE_LIMITS.values(), MANAGEMENT_LIMITS}))
def test_each_limit_is_a_bounded_parameter_with_a_burst_above_its_rate(rate: str, burst: str) -> None:
    parameters = DOCUMENT["Parameters"]
    for name in (rate, burst):
        assert parameters[name]["Type"] == "Number"
        # API Gateway's account-wide default is 10,000 requests a second (burst 5,000) per region, shared.
        assert 1 <= parameters[name]["MinValue"] <= parameters[name]["Default"] <= parameters[name]["MaxValue"] <= 5000
    assert parameters[rate]["Default"] <= parameters[burst]["Default"]


# ------------------------------------------------------------------------------- API Gateway's 429s, alarmed
def test_api_gateways_own_429s_become_the_api_throttled_metric_of_this_stack() -> None:
    log_format = stage()["AccessLogSettings"]["Format"]["Fn::Sub"]
    assert '"status":"$context.status"' in log_format
    assert '"integrationStatus":"$context.integrationStatus"' in log_format
    assert '"service":"${AWS::StackName}"' in log_format  # the dimension, as every broker metric has
    [metric_filter] = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::Logs::MetricFilter"]
    assert metric_filter["LogGroupName"] == {"Ref": "ApiAccessLogGroup"}
    # 429 answered by API Gateway itself: the function's own 429 (refresh_cooldown) came back through Lambda (200).
    assert metric_filter["FilterPattern"] == '{ ($.status = "429") && ($.integrationStatus != "200") }'
    [transformation] = metric_filter["MetricTransformations"]
    assert (transformation["MetricNamespace"], transformation["MetricName"]) == (
        "SmartsheetOAuthBroker",
        "api_throttled",
    )
    assert transformation["Dimensions"] == [{"Key": "service", "Value": "$.service"}]


def test_sustained_429s_fire_an_alarm_that_says_what_to_do() -> None:
    [alarm] = [
        r["Properties"]
        for r in RESOURCES.values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"].get("MetricName") == "api_throttled"
    ]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": {"Ref": "AWS::StackName"}}]
    assert (alarm["Statistic"], alarm["Period"]) == ("Sum", 300)
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] >= 3  # sustained: every period of 15 minutes
    text = alarm["AlarmDescription"]["Fn::Sub"]
    for advice in ("Do:", "FrontDoorWebAclArn", "LoginRateLimit"):
        assert advice in text, advice


# ---------------------------------------------------------------------------------------------- the front door
def test_the_front_door_is_off_by_default() -> None:
    front_door = [lid for lid, r in RESOURCES.items() if r["Type"] == "AWS::CloudFront::Distribution"]
    assert front_door == ["FrontDoor"]
    assert DOCUMENT["Parameters"]["FrontDoorWebAclArn"]["Default"] == ""
    assert not resolver().is_active("FrontDoor")
    outputs = DOCUMENT["Outputs"]
    assert outputs["FrontDoorLoginUrl"]["Condition"] == outputs["FrontDoorCallbackUrl"]["Condition"] == "HasFrontDoor"


def test_the_front_door_passes_the_sign_in_through_unchanged_with_the_web_acl() -> None:
    r = resolver(FrontDoorWebAclArn=WEB_ACL)
    assert r.is_active("FrontDoor")
    config = r.resolve(RESOURCES["FrontDoor"]["Properties"])["DistributionConfig"]
    api_host = f"{r.ref('HttpApi')}.execute-api.eu-west-1.amazonaws.com"

    assert config["WebACLId"] == WEB_ACL
    [origin] = config["Origins"]
    assert origin["DomainName"] == api_host
    assert origin["CustomOriginConfig"] == {"OriginProtocolPolicy": "https-only", "OriginSSLProtocols": ["TLSv1.2"]}
    behavior = config["DefaultCacheBehavior"]
    assert behavior["TargetOriginId"] == origin["Id"]
    assert behavior["ViewerProtocolPolicy"] in ("redirect-to-https", "https-only")
    assert {"GET", "POST"} <= set(behavior["AllowedMethods"])  # /login's connect page posts its form
    assert behavior["CachePolicyId"] == CACHING_DISABLED  # a state, a code or a cookie is never answered twice
    assert behavior["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST_HEADER  # cookies, query strings, headers
    # One behavior for every path, and no legacy ForwardedValues that would override the policies.
    assert "CacheBehaviors" not in config
    assert "ForwardedValues" not in behavior
    assert config["Enabled"] is True


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("", True),
        (WEB_ACL, True),
        (WEB_ACL.replace("us-east-1", "eu-west-1"), False),  # WAF for CloudFront exists in us-east-1 only
        (WEB_ACL.replace(":global/", ":regional/"), False),  # a regional web ACL cannot go on CloudFront
        ("broker-front-door", False),
    ],
)
def test_the_web_acl_must_be_a_cloudfront_one(value: str, valid: bool) -> None:
    assert bool(re.fullmatch(DOCUMENT["Parameters"]["FrontDoorWebAclArn"]["AllowedPattern"], value)) is valid


def test_the_web_acl_template_limits_each_ip_and_only_deploys_in_us_east_1() -> None:
    document = load_yaml((ROOT / "infra" / "front-door" / "web-acl.yaml").read_text(encoding="utf-8"))
    [acl] = [r["Properties"] for r in document["Resources"].values() if r["Type"] == "AWS::WAFv2::WebACL"]
    assert acl["Scope"] == "CLOUDFRONT"
    assert acl["DefaultAction"] == {"Allow": {}}
    [rule] = acl["Rules"]
    statement = rule["Statement"]["RateBasedStatement"]
    assert statement["AggregateKeyType"] == "IP"
    assert statement["Limit"] == {"Ref": "RequestsPerIpPerFiveMinutes"}
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    [assertion] = document["Rules"]["OnlyInUsEast1"]["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
    assert document["Outputs"]["WebAclArn"]["Value"] == {"Fn::GetAtt": ["FrontDoorWebAcl", "Arn"]}
