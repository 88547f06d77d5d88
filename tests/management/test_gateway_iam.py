"""The local gateway's AWS_IAM emulation: SigV4 checked like API Gateway does, for the routes whose template auth
says AWS_IAM, before the function runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from infra.local import sigv4
from infra.local.gateway import Gateway
from infra.local.lambda_runtime import Invocation
from infra.local.template_model import FunctionSpec, Resolver, Template, TemplateError

REGION = "us-east-1"
KEY, SECRET = "testing", "testing"
CREDENTIALS = {KEY: SECRET}

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        EnableIamAuthorizer: true
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      CodeUri: .
      Events:
        Private:
          Type: HttpApi
          Properties:
            ApiId: !Ref Api
            Path: /private/{id}
            Method: POST
            Auth:
              Authorizer: AWS_IAM
        Public:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: /public, Method: GET}
"""


def signed_headers(
    method: str, url: str, body: bytes = b"", *, key: str = KEY, secret: str = SECRET, region: str = REGION
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(key, secret), "execute-api", region).add_auth(request)
    return dict(request.headers.items())


# ------------------------------------------------------------------------------------------------ the checker
def check(method: str, url: str, body: bytes, headers: dict[str, str], *, now: float | None = None) -> sigv4.Caller:
    split = urlsplit(url)
    return sigv4.verify(
        method=method,
        raw_path=split.path,
        raw_query=split.query,
        headers=[*headers.items(), ("host", split.netloc)],
        body=body,
        credentials=CREDENTIALS,
        region=REGION,
        account_id="123456789012",
        now=time.time() if now is None else now,
    )


URL = "http://127.0.0.1:3000/connections/4583173393803140/refresh?b=2&a=x%20y"
BODY = b'{"min_valid_seconds": 600}'


def test_a_request_botocore_signed_passes_and_names_the_caller() -> None:
    caller = check("POST", URL, BODY, signed_headers("POST", URL, BODY))

    assert caller.access_key == KEY
    assert caller.as_authorizer()["iam"]["userArn"] == "arn:aws:iam::123456789012:user/local-testing"  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unsigned", sigv4.FORBIDDEN),
        ("other_secret", sigv4.MISMATCH),
        ("unknown_key", sigv4.UNKNOWN_KEY),
        ("other_region", "valid region"),
        ("other_body", sigv4.MISMATCH),
        ("other_query", sigv4.MISMATCH),
        ("other_path", sigv4.MISMATCH),
        ("other_method", sigv4.MISMATCH),
        ("old", "Signature expired"),
    ],
)
def test_anything_else_is_refused_with_api_gateways_message(change: str, message: str) -> None:
    method, url, body = "POST", URL, BODY
    headers = signed_headers(method, url, body)
    now = None
    if change == "unsigned":
        headers = {"content-type": "application/json"}
    elif change == "other_secret":
        headers = signed_headers(method, url, body, secret="wrong")
    elif change == "unknown_key":
        headers = signed_headers(method, url, body, key="AKIAOTHER")
    elif change == "other_region":
        headers = signed_headers(method, url, body, region="eu-west-1")
    elif change == "other_body":
        body = b'{"min_valid_seconds": 604800}'
    elif change == "other_query":
        url = url.replace("b=2", "b=3")
    elif change == "other_path":
        url = url.replace("4583173393803140", "6812335718217604")
    elif change == "other_method":
        method = "DELETE"
    elif change == "old":
        now = time.time() + 600

    with pytest.raises(sigv4.SignatureRejected) as rejected:
        check(method, url, body, headers, now=now)

    assert message in rejected.value.message


# ---------------------------------------------------------------------------------------------- the gateway
@dataclass
class RecordingFunction:
    """An Invoker that answers 200 and keeps the events it was given."""

    spec: FunctionSpec
    events: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, event: Any, *, timeout: float | None = None) -> Invocation:
        self.events.append(event)
        return Invocation(request_id="r", payload={"statusCode": 200, "body": "ok"})


@pytest.fixture
def iam_gateway(tmp_path: Path) -> Any:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    resolver = Resolver(Template.load(path), stack_name="s")
    [spec] = resolver.functions()
    function = RecordingFunction(spec)
    with Gateway(resolver.http_routes(), credentials=CREDENTIALS, region=REGION).start({"Fn": function}) as gateway:
        yield gateway, function


def test_the_template_decides_which_routes_need_a_signature(iam_gateway: Any) -> None:
    gateway, function = iam_gateway
    url = f"{gateway.url}/private/7?x=1"

    unsigned = requests.post(url, data=BODY, timeout=10)
    public = requests.get(f"{gateway.url}/public", timeout=10)
    signed = requests.post(url, data=BODY, headers=signed_headers("POST", url, BODY), timeout=10)

    assert unsigned.status_code == 403
    assert unsigned.json() == {"message": "Forbidden"}
    assert public.status_code == 200
    assert signed.status_code == 200
    assert len(function.events) == 2  # the refused request never reached the function
    assert "authorizer" not in function.events[0]["requestContext"]
    iam = function.events[1]["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == KEY
    assert iam["userArn"].startswith("arn:aws:iam::123456789012:")
    assert json.loads(function.events[1]["body"]) == json.loads(BODY)


def test_a_signature_replayed_on_another_path_is_refused(iam_gateway: Any) -> None:
    gateway, function = iam_gateway
    headers = signed_headers("POST", f"{gateway.url}/private/7", BODY)

    replayed = requests.post(f"{gateway.url}/private/8", data=BODY, headers=headers, timeout=10)

    assert replayed.status_code == 403
    assert "signature we calculated does not match" in replayed.json()["message"]
    assert function.events == []


def test_aws_iam_without_enable_iam_authorizer_is_a_template_error(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE.replace("EnableIamAuthorizer: true", "EnableIamAuthorizer: false"))

    with pytest.raises(TemplateError, match="EnableIamAuthorizer"):
        Resolver(Template.load(path), stack_name="s").http_routes()
