"""The local stack's reading of template.yaml: short tags, intrinsics, Globals, routes and schedules."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.local.aws import generate_password
from infra.local.gateway import RouteTable, http_api_event, http_api_response, scheduler_event
from infra.local.template_model import (
    NOTHING,
    HttpRoute,
    PhysicalResource,
    Resolver,
    Template,
    TemplateError,
    load_yaml,
    merge_globals,
)

SMALL = """
AWSTemplateFormatVersion: 2010-09-09
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Size: {Type: Number, Default: 3, MinValue: 1, MaxValue: 5}
  Extra: {Type: String, Default: ""}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  HasExtra: !Not [!Equals [!Ref Extra, ""]]
Globals:
  Function:
    Timeout: 5
    CodeUri: code/
    Environment:
      Variables:
        STAGE: !Ref Stage
        TABLE: !Ref Things
Resources:
  Things:
    Type: AWS::DynamoDB::Table
    Properties: {}
  ProdOnly:
    Type: AWS::SQS::Queue
    Condition: IsProd
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: pkg.app.handler
      Timeout: 9
      Environment:
        Variables:
          ARN: !GetAtt Things.Arn
          NAME: !Sub "${AWS::StackName}-${Stage}-${Things.Arn}-${!Literal}"
          EXTRA: !If [HasExtra, !Ref Extra, !Ref AWS::NoValue]
          JOINED: !Join [",", [a, !Select [1, [x, y]], !Ref Size]]
      Events:
        Get:
          Type: HttpApi
          Properties: {Path: "/things/{id}", Method: get}
        Tick:
          Type: ScheduleV2
          Properties: {ScheduleExpression: rate(5 minutes)}
        CatchAll:
          Type: HttpApi
"""


@pytest.fixture
def template(tmp_path: Path) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(SMALL, encoding="utf-8")
    return Template.load(path)


def _physical(logical_id: str) -> PhysicalResource:
    return PhysicalResource(ref=f"{logical_id}-name", attributes={"Arn": f"arn:{logical_id}"})


def test_short_tags_become_long_forms() -> None:
    document = load_yaml("a: !Ref X\nb: !GetAtt T.Arn\nc: !Sub 'x'\nd: !If [C, 1, 2]\ne: 2010-09-09\n")
    assert document == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["T", "Arn"]},
        "c": {"Fn::Sub": "x"},
        "d": {"Fn::If": ["C", 1, 2]},
        "e": "2010-09-09",
    }


def test_a_function_gets_globals_and_resolved_environment(template: Template) -> None:
    resolver = Resolver(template, stack_name="s", physical=_physical)
    (function,) = resolver.functions()

    assert function.handler == "pkg.app.handler"
    assert (function.module, function.attribute) == ("pkg.app", "handler")
    assert function.timeout == 9
    assert function.code_dir == template.directory / "code"
    assert function.environment == {
        "STAGE": "dev",
        "TABLE": "Things-name",
        "ARN": "arn:Things",
        "NAME": "s-dev-arn:Things-${Literal}",
        "JOINED": "a,y,3",
    }


def test_routes_and_schedules_come_from_the_events(template: Template) -> None:
    (function,) = Resolver(template, stack_name="s", physical=_physical).functions()

    assert [route.route_key for route in function.routes] == ["GET /things/{id}", "$default"]
    (schedule,) = function.schedules
    assert (schedule.name, schedule.kind, schedule.expression) == ("FnTick", "ScheduleV2", "rate(5 minutes)")


def test_parameters_and_conditions(template: Template) -> None:
    resolver = Resolver(template, stack_name="s", parameters={"Stage": "prod", "Extra": "x"}, physical=_physical)
    assert resolver.condition("IsProd") is True
    assert resolver.is_active("ProdOnly") is True
    assert resolver.functions()[0].environment["EXTRA"] == "x"
    assert Resolver(template, stack_name="s", physical=_physical).is_active("ProdOnly") is False


@pytest.mark.parametrize(
    ("parameters", "message"),
    [({"Stage": "qa"}, "Stage"), ({"Size": "9"}, "Size"), ({"Nope": "1"}, "Nope")],
)
def test_bad_parameters_are_named(template: Template, parameters: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Resolver(template, stack_name="s", parameters=parameters, physical=_physical).functions()


def test_no_value_removes_keys_and_items(template: Template) -> None:
    resolver = Resolver(template, stack_name="s", physical=_physical)
    assert resolver.resolve({"a": {"Ref": "AWS::NoValue"}, "b": [1, {"Ref": "AWS::NoValue"}]}) == {"b": [1]}
    assert resolver.resolve({"Ref": "AWS::NoValue"}) is NOTHING


def test_globals_merge_like_sam() -> None:
    merged = merge_globals(
        {"Environment": {"Variables": {"A": "1", "B": "2"}}, "Layers": ["x"], "Timeout": 3},
        {"Environment": {"Variables": {"B": "3"}}, "Layers": ["y"], "Timeout": {"Ref": "T"}},
    )
    assert merged == {"Environment": {"Variables": {"A": "1", "B": "3"}}, "Layers": ["x", "y"], "Timeout": {"Ref": "T"}}


def test_the_projects_template_has_the_broker_functions() -> None:
    resolver = Resolver(Template.load(), stack_name="s", parameters={"SmartsheetClientId": "id"})
    functions = {function.logical_id: function for function in resolver.functions()}

    routes = {route.route_key: route.authorizer for f in functions.values() for route in f.routes}
    assert routes == {
        "GET /login": "NONE",
        "POST /login": "NONE",
        "GET /callback": "NONE",
        "GET /result": "NONE",
        "GET /connections": "AWS_IAM",
        "GET /connections/{connection_id}": "AWS_IAM",
        "POST /connections/{connection_id}/refresh": "AWS_IAM",
        "DELETE /connections/{connection_id}": "AWS_IAM",
        "PUT /connections/{connection_id}/tags": "AWS_IAM",
        "POST /connect-sessions": "AWS_IAM",
        "POST /connect-sessions/complete": "AWS_IAM",
        "POST /connections/import": "AWS_IAM",
    }
    assert functions["RefreshFunction"].schedules[0].kind == "ScheduleV2"
    assert "REDIRECT_URI" not in functions["CallbackFunction"].environment  # !If ... AWS::NoValue
    assert functions["CallbackFunction"].environment["TOKEN_SECRET_PREFIX"] == "s/connections/"


def test_generated_passwords_follow_the_rules() -> None:
    password = generate_password({"PasswordLength": 40, "ExcludePunctuation": True, "ExcludeCharacters": "abc"})
    assert len(password) == 40
    assert password.isalnum()
    assert not set(password) & set("abc")


def test_the_most_specific_route_wins() -> None:
    table = RouteTable(
        [
            HttpRoute("GET", "/items/{id}", "A", "a", "Api"),
            HttpRoute("GET", "/items/special", "B", "b", "Api"),
            HttpRoute("ANY", "/items/{proxy+}", "C", "c", "Api"),
            HttpRoute("ANY", "$default", "D", "d", "Api"),
        ]
    )

    def function(method: str, path: str) -> str:
        found = table.match(method, path)
        assert found is not None
        return found[0].function

    assert function("GET", "/items/special") == "B"
    assert function("GET", "/items/7") == "A"
    assert function("POST", "/items/7") == "C"
    assert function("GET", "/items/7/parts") == "C"
    assert function("GET", "/elsewhere") == "D"


def test_events_and_answers_of_payload_format_2() -> None:
    event = http_api_event(
        method="POST",
        target="/x?a=1&a=2",
        headers=[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "n=v")],
        body=b"code=1",
        source_ip="127.0.0.1",
        route=HttpRoute("POST", "/x", "F", "e", "Api"),
    )
    assert event["queryStringParameters"] == {"a": "1,2"}
    assert event["cookies"] == ["n=v"]
    assert (event["body"], event["isBase64Encoded"]) == ("Y29kZT0x", True)

    status, headers, body = http_api_response({"statusCode": 302, "headers": {"Location": "/y"}, "cookies": ["c=1"]})
    assert (status, headers, body) == (302, [("Location", "/y"), ("Set-Cookie", "c=1")], b"")
    assert http_api_response(["anything"]) == (200, [("content-type", "application/json")], b'["anything"]')


def test_scheduler_events_carry_detail_as_a_string() -> None:
    event = scheduler_event(schedule_arn="arn:s", account_id="1", region="r", now=0)
    assert event["detail"] == "{}"
    assert event["time"] == "1970-01-01T00:00:00Z"
