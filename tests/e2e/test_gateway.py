"""The local API Gateway against a tiny handler: events and answers as HTTP API (payload 2.0) shapes them."""

from __future__ import annotations

import base64
import http.client
import json
import os
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.local.gateway import CONTROL_TOKEN_HEADER, Gateway
from infra.local.lambda_runtime import LocalFunction
from infra.local.template_model import FunctionSpec, HttpRoute, ScheduleSpec

pytestmark = pytest.mark.e2e

HANDLER = """
import base64
import json
import os
import time

print("cold start with", os.environ.get("GREETING"))


def lambda_handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode", "echo")
    if mode == "raise":
        raise KeyError("the handler broke")
    if mode == "sleep":
        time.sleep(5)
    if mode == "plain":
        return {"hello": "world"}
    if mode == "malformed":
        return {"statusCode": "two hundred"}
    if mode == "binary":
        return {"statusCode": 200, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-greeting": os.environ["GREETING"]},
        "cookies": ["first=1; Path=/", "second=2; Secure; HttpOnly; SameSite=Lax"],
        "body": json.dumps({"event": event, "remaining_ms": context.get_remaining_time_in_millis(),
                            "function": context.function_name}),
    }
"""

ECHO = HttpRoute("ANY", "/echo/{name}", "Echo", "Echo", "Api")
LOGIN = HttpRoute("GET", "/login", "Echo", "Login", "Api")
SCHEDULE = ScheduleSpec("Echo", "Tick", "ScheduleV2", "EchoTick", "rate(1 hour)", None)


def control(gateway: Gateway) -> dict[str, str]:
    """The header the gateway's /_local/ routes need: its run's token."""
    return {CONTROL_TOKEN_HEADER: gateway.control_token}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    code = tmp_path_factory.mktemp("code")
    (code / "echo").mkdir()
    (code / "echo" / "__init__.py").write_text("", encoding="utf-8")
    (code / "echo" / "app.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
    spec = FunctionSpec(
        logical_id="Echo",
        name="echo-function",
        handler="echo.app.lambda_handler",
        code_dir=Path(code),
        runtime="python3.13",
        timeout=2,
        memory_size=128,
        architectures=("arm64",),
        environment={"GREETING": "hello"},
        routes=(ECHO, LOGIN),
        schedules=(SCHEDULE,),
    )
    env = {"PATH": os.environ["PATH"], "GREETING": "hello", "AWS_LAMBDA_FUNCTION_NAME": "echo-function"}
    function = LocalFunction(spec, env, max_concurrency=4, log_sink=lambda _f, _l: None)
    local = Gateway([ECHO, LOGIN], schedules=[SCHEDULE])
    local.start({"Echo": function})
    yield local
    local.stop()
    function.close()


def _echo(gateway: Gateway, path: str = "/echo/x", method: str = "GET", **kwargs: Any) -> tuple[requests.Response, Any]:
    answer = requests.request(method, f"{gateway.url}{path}", timeout=10, **kwargs)
    assert answer.status_code == 201, answer.text
    return answer, answer.json()["event"]


def test_the_event_is_an_http_api_v2_event(gateway: Gateway) -> None:
    # http.client, because requests cannot send one header twice.
    connection = http.client.HTTPConnection(gateway.host, gateway.port, timeout=10)
    connection.putrequest("GET", "/echo/a%20b?x=1&x=2&flag&return_to=https%3A%2F%2Fapp.example.com%2F")
    for name, value in [("X-Dup", "a"), ("X-Dup", "b"), ("Cookie", "one=1; two=2"), ("User-Agent", "pytest")]:
        connection.putheader(name, value)
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 201
    event = json.loads(answer.read())["event"]
    connection.close()

    assert event["version"] == "2.0"
    assert event["routeKey"] == "ANY /echo/{name}"
    assert event["rawPath"] == "/echo/a%20b"
    assert event["rawQueryString"] == "x=1&x=2&flag&return_to=https%3A%2F%2Fapp.example.com%2F"
    assert event["queryStringParameters"] == {"x": "1,2", "flag": "", "return_to": "https://app.example.com/"}
    assert event["pathParameters"] == {"name": "a b"}
    assert event["cookies"] == ["one=1", "two=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-dup"] == "a,b"
    assert all(name == name.lower() for name in event["headers"])
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/echo/a%20b",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "pytest",
    }
    assert context["stage"] == "$default"
    assert context["requestId"] == answer.getheader("Apigw-Requestid")
    assert context["domainName"] == f"127.0.0.1:{gateway.port}"
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 10
    assert event["isBase64Encoded"] is False
    assert "body" not in event


def test_text_bodies_arrive_as_text_and_forms_as_base64(gateway: Gateway) -> None:
    _, event = _echo(gateway, method="POST", json={"a": 1})
    assert event["body"] == '{"a": 1}'
    assert event["isBase64Encoded"] is False

    _, event = _echo(gateway, method="POST", data={"code": "abc"})
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"code=abc"


def test_the_answer_is_returned_faithfully(gateway: Gateway) -> None:
    answer, _ = _echo(gateway)

    assert answer.headers["x-greeting"] == "hello"
    assert answer.raw.headers.getlist("Set-Cookie") == [
        "first=1; Path=/",
        "second=2; Secure; HttpOnly; SameSite=Lax",
    ]
    assert 0 < answer.json()["remaining_ms"] <= 2000
    assert answer.json()["function"] == "echo-function"


def test_a_base64_answer_is_decoded(gateway: Gateway) -> None:
    answer = requests.get(f"{gateway.url}/echo/x?mode=binary", timeout=10)
    assert answer.status_code == 200
    assert answer.content == bytes(range(256))
    assert answer.headers["content-type"] == "image/png"


def test_an_answer_without_status_code_is_a_200_json(gateway: Gateway) -> None:
    answer = requests.get(f"{gateway.url}/echo/x?mode=plain", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"hello": "world"}


@pytest.mark.parametrize("mode", ["raise", "malformed", "sleep"])
def test_a_failing_handler_is_a_500_without_details(gateway: Gateway, mode: str) -> None:
    answer = requests.get(f"{gateway.url}/echo/x?mode={mode}", timeout=20)
    assert answer.status_code == 500
    assert answer.json() == {"message": "Internal Server Error"}


def test_a_handler_exception_is_logged(gateway: Gateway) -> None:
    function = gateway.functions["Echo"]
    assert isinstance(function, LocalFunction)
    requests.get(f"{gateway.url}/echo/x?mode=raise", timeout=10)
    logs = "\n".join(function.logs)
    assert "[ERROR] KeyError" in logs
    assert "Traceback" in logs


def test_unknown_routes_and_methods_are_404(gateway: Gateway) -> None:
    for method, path in [("GET", "/"), ("POST", "/login"), ("GET", "/echo/a/b"), ("GET", "/echo/")]:
        answer = requests.request(method, f"{gateway.url}{path}", timeout=10)
        assert (answer.status_code, answer.json()) == (404, {"message": "Not Found"}), (method, path)


def test_concurrent_requests_get_their_own_environments(gateway: Gateway) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: requests.get(f"{gateway.url}/echo/x", timeout=20), range(8)))
    assert [answer.status_code for answer in answers] == [201] * 8
    ids = {answer.json()["event"]["requestContext"]["requestId"] for answer in answers}
    assert len(ids) == 8


def test_the_schedule_fires_on_demand_through_the_admin_route(gateway: Gateway) -> None:
    answer = requests.post(f"{gateway.url}/_local/schedule?function=Echo", headers=control(gateway), timeout=10)

    assert answer.status_code == 200
    (run,) = answer.json()["runs"]
    assert run["schedule"] == "EchoTick"
    assert run["event"]["source"] == "aws.scheduler"
    assert run["event"]["detail"] == "{}"
    assert run["ok"] is True


def test_the_admin_routes_do_not_shadow_404(gateway: Gateway) -> None:
    answer = requests.get(f"{gateway.url}/_local/nothing", headers=control(gateway), timeout=10)
    assert answer.status_code == 404
    assert json.loads(answer.text) == {"message": "Not Found"}
