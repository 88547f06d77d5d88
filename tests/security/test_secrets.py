"""No token, code, state, nonce, hash or client secret in any log line, metric or page, whatever the outcome;
the client secret lives in Secrets Manager only, is cached, and never travels (the token calls use `hash`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from botocore.client import BaseClient
from smartsheet_oauth import services
from smartsheet_oauth.smartsheet.client import SmartsheetClient, request_hash

from infra.local.smartsheet_emulator import DEFAULT_APP
from infra.local.template_model import Template
from tests.security.support import Capture, state_of
from tests.support.broker import NONCE_COOKIE, Answer, Broker

ADA = 4583173393803140
GRACE = 6812335718217604
SECRET_WORDS = ("secret", "password", "credential")


class Flow:
    """Runs sign-ins and remembers every secret value that went by, and every answer a browser got."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.secrets: dict[str, str] = {"client_secret": DEFAULT_APP.client_secret}
        self.pages: list[tuple[str, Answer]] = []
        self.logins: list[tuple[str, Answer]] = []

    def remember(self, kind: str, value: str) -> None:
        self.secrets[f"{kind}#{len(self.secrets)}"] = value

    def start(self, **query: str) -> tuple[str, str]:
        answer = self.broker.login(query or None)
        assert answer.status == 302, answer.body
        nonce = answer.cookie(NONCE_COOKIE)
        assert nonce
        self.remember("state", state_of(answer.location))
        self.remember("nonce", nonce)
        self.logins.append(("login", answer))
        return answer.location, nonce

    def consent(self, location: str, *, user_id: int = ADA, allow: bool = True) -> dict[str, str]:
        query = self.broker.consent(location, user_id=user_id, allow=allow)
        if "code" in query:
            self.remember("code", query["code"])
            self.remember("code_hash", request_hash(DEFAULT_APP.client_secret, query["code"]))
        return query

    def callback(self, name: str, query: dict[str, str], nonce: str | None) -> Answer:
        answer = self.broker.callback(query, nonce)
        self.pages.append((name, answer))
        return answer

    def remember_stored_tokens(self, connection_id: int) -> None:
        """Every token pair ever stored for the connection (every version of its secret)."""
        name = f"{self.broker.env['TOKEN_SECRET_PREFIX']}{connection_id}"
        versions = self.broker.secrets.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
        for version in versions:
            value = json.loads(
                self.broker.secrets.get_secret_value(SecretId=name, VersionId=version["VersionId"])["SecretString"]
            )
            self.remember("access_token", value["access_token"])
            self.remember("refresh_token", value["refresh_token"])
            self.remember("refresh_hash", request_hash(DEFAULT_APP.client_secret, value["refresh_token"]))


def run_every_outcome(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Flow:
    flow = Flow(broker)
    # A new connection, then the same user again (returning, with an allow-listed return_to).
    location, nonce = flow.start()
    first_query = flow.consent(location)
    assert flow.callback("new", first_query, nonce).status == 200
    location, nonce = flow.start(return_to="https://app.example.com/done")
    assert flow.callback("returning", flow.consent(location), nonce).status == 303
    # Replayed, from another browser, declined, a code Smartsheet refuses, Smartsheet down, the app refused.
    assert flow.callback("replay", first_query, nonce).status == 400
    location, _ = flow.start()
    _, other_nonce = flow.start()
    assert flow.callback("foreign", flow.consent(location), other_nonce).status == 400
    location, nonce = flow.start()
    assert flow.callback("declined", flow.consent(location, allow=False), nonce).status == 400
    location, nonce = flow.start()
    refused = flow.consent(location)
    refused["code"] = refused["code"][::-1]
    flow.remember("code", refused["code"])
    assert flow.callback("refused_code", refused, nonce).status == 400
    location, nonce = flow.start()
    query = flow.consent(location)
    broker.emulator.set_faults(error_rate=1.0, token_only=True)
    assert flow.callback("smartsheet_down", query, nonce).status == 503
    broker.emulator.reset_faults()
    # Smartsheet refuses the app, not the code: a wrong client secret in the app-credentials secret (1072).
    credentials = broker.env["APP_CREDENTIALS_SECRET_ARN"]
    wrong = "wrong-client-secret-" + "w" * 16
    flow.remember("client_secret", wrong)
    broker.secrets.put_secret_value(
        SecretId=credentials, SecretString=json.dumps({"client_id": DEFAULT_APP.client_id, "client_secret": wrong})
    )
    services.reset()
    location, nonce = flow.start()
    query = flow.consent(location)
    flow.remember("code_hash", request_hash(wrong, query["code"]))
    assert flow.callback("app_refused", query, nonce).status == 502
    broker.secrets.put_secret_value(
        SecretId=credentials,
        SecretString=json.dumps({"client_id": DEFAULT_APP.client_id, "client_secret": DEFAULT_APP.client_secret}),
    )
    services.reset()
    # A bug whose exception text carries the code: the page and the log keep only its type.
    location, nonce = flow.start()
    query = flow.consent(location)

    def failing_exchange(self: SmartsheetClient, code: str, **_: Any) -> Any:
        raise ValueError(f"cannot exchange {code} with {self._secret}")

    with monkeypatch.context() as patch:
        patch.setattr(SmartsheetClient, "exchange_code", failing_exchange)
        assert flow.callback("bug", query, nonce).status == 500
    # A second user, then the sweep: Ada is refreshed (rotation), Grace's grant was revoked (needs_reauth).
    location, nonce = flow.start()
    assert flow.callback("grace", flow.consent(location, user_id=GRACE), nonce).status == 200
    flow.remember_stored_tokens(GRACE)
    flow.remember_stored_tokens(ADA)  # before the sweep: these get refreshed with `hash`
    broker.emulator.revoke_user(GRACE)
    broker.make_due(ADA)
    broker.make_due(GRACE)
    before = broker.tokens(ADA)["refresh_token"]
    report = broker.sweep()
    assert report["dispatched"] == 2, report
    assert report["outcomes"].get("needs_reauth") == 1, report
    assert broker.tokens(ADA)["refresh_token"] != before, "the sweep did not refresh Ada"
    flow.remember_stored_tokens(ADA)
    return flow


def test_the_whole_flow_at_debug_leaks_no_secret_value(
    broker: Broker, captured: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert broker.env["POWERTOOLS_LOG_LEVEL"] == "DEBUG"
    flow = run_every_outcome(broker, monkeypatch)

    lines = captured.broker_lines()
    outcomes = {line.get("outcome") for line in lines}
    assert {"redirected", "success", "bad_state", "denied", "invalid_code", "smartsheet_unavailable"} <= outcomes
    assert "smartsheet_error" in outcomes
    assert "internal_error" in outcomes
    assert any(line["message"] == "sweep finished" for line in lines)
    assert any(r.levelno == logging.DEBUG for r in captured.caplog.records), "DEBUG records were not captured"
    metrics = captured.metric_documents()
    assert metrics, "no EMF metrics were captured"
    everything = captured.everything()
    assert len(flow.secrets) > 40
    assert all(len(value) >= 16 for value in flow.secrets.values())

    leaks = {kind for kind, value in flow.secrets.items() if value in everything}
    assert not leaks, f"secret values in the captured output: {sorted(leaks)}"
    for name, answer in flow.pages:
        shown = answer.body + json.dumps(answer.headers) + json.dumps(answer.cookies)
        leaks = {kind for kind, value in flow.secrets.items() if value in shown}
        assert not leaks, f"{name} page shows {sorted(leaks)}"
    for _, answer in flow.logins:
        # The state travels to Smartsheet (its own URL) and the nonce to the browser's cookie: nothing else.
        [cookie] = answer.cookies
        leaks_in_location = {k for k, v in flow.secrets.items() if v in answer.location and not k.startswith("state")}
        leaks_in_cookie = {k for k, v in flow.secrets.items() if v in cookie and not k.startswith("nonce")}
        assert not leaks_in_location
        assert not leaks_in_cookie
        assert answer.body == ""


def test_the_client_secret_never_travels_and_is_read_from_secrets_manager_once(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []

    def count_secret_reads(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "GetSecretValue":
            reads.append(params["SecretId"])
        return original(self, operation, params)

    original = BaseClient._make_api_call  # type: ignore[attr-defined]
    monkeypatch.setattr(BaseClient, "_make_api_call", count_secret_reads)
    for user in (ADA, GRACE, ADA):
        location, nonce = broker.start()
        assert broker.callback(broker.consent(location, user_id=user), nonce).status == 200
    broker.make_due(ADA)
    assert broker.sweep()["dispatched"] == 1

    # Cached: one read of the app credentials for three sign-ins and a sweep (the sweep reads Ada's tokens).
    assert reads.count(broker.env["APP_CREDENTIALS_SECRET_ARN"]) == 1
    requests = broker.emulator.token_requests
    assert [r["grant_type"] for r in requests] == ["authorization_code"] * 3 + ["refresh_token"]
    assert {r["auth_method"] for r in requests} == {"hash"}
    assert {r["transport"] for r in requests} == {"form"}


# Switches that make Powertools print whole events (code, state, nonce cookie), or the Lambda runtime pass
# every library's DEBUG records (botocore's include request bodies: token secrets) to CloudWatch.
EVENT_PRINTING_SWITCHES = frozenset(
    {"POWERTOOLS_LOGGER_LOG_EVENT", "POWERTOOLS_DEV", "POWERTOOLS_EVENT_HANDLER_DEBUG", "AWS_LAMBDA_LOG_LEVEL"}
)
# Access-log variables that would carry the query string (code, state) or the request itself.
QUERY_CARRYING_VARIABLES = ("querystring", "$request.", "$input.", "requestoverride")


def test_the_template_keeps_the_secret_out_of_parameters_and_environment() -> None:
    template = Template.load()
    for name in template.parameters:
        assert not any(word in name.lower() for word in SECRET_WORDS), f"{name}: a secret as a parameter"
    environments = [(template.function_globals().get("Environment") or {}).get("Variables") or {}]
    for function in template.resources_of_type("AWS::Serverless::Function").values():
        environments.append(((function.get("Properties") or {}).get("Environment") or {}).get("Variables") or {})
    names = {name for variables in environments for name in variables}
    assert "APP_CREDENTIALS_SECRET_ARN" in names
    for variables in environments:
        for name, value in variables.items():
            # Names and ARNs of secrets, never a value: the webhook's signing secret is a !Ref to its secret resource.
            allowed = ("APP_CREDENTIALS_SECRET_ARN", "TOKEN_SECRET_PREFIX", "WEBHOOK_SIGNING_SECRET_ARN")
            assert "SECRET" not in name or name in allowed, name
            if name == "WEBHOOK_SIGNING_SECRET_ARN":
                assert value == {"Ref": "WebhookSigningSecret"}, value
                assert template.resources["WebhookSigningSecret"]["Type"] == "AWS::SecretsManager::Secret"
            assert "client_secret" not in json.dumps(value), name
            assert name not in EVENT_PRINTING_SWITCHES, name
    secret = template.resources["AppCredentialsSecret"]["Properties"]
    assert "SecretString" not in secret, "the client secret would sit in the template in plain text"
    assert secret["GenerateSecretString"]["GenerateStringKey"] == "client_secret"


def query_logging_problems(resources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    problems = []
    for name, resource in resources.items():
        if resource.get("Type") not in ("AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Stage"):
            continue
        properties = resource.get("Properties") or {}
        settings = properties.get("AccessLogSettings") or properties.get("AccessLogSetting") or {}
        log_format = json.dumps(settings.get("Format", "")).lower()
        problems += [f"{name} logs {v}" for v in QUERY_CARRYING_VARIABLES if v in log_format]
    return problems


def test_api_access_logs_are_off_or_leave_out_the_query_string() -> None:
    assert query_logging_problems(Template.load().resources) == []
    # The check itself sees a format that would log the code and state.
    leaky = {
        "Api": {
            "Type": "AWS::Serverless::HttpApi",
            "Properties": {"AccessLogSettings": {"Format": '{"q": "$request.querystring.code"}'}},
        }
    }
    assert query_logging_problems(leaky) == ["Api logs querystring", "Api logs $request."]


def test_powertools_debug_switches_do_not_print_requests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """POWERTOOLS_DEV / POWERTOOLS_EVENT_HANDLER_DEBUG make a default resolver print every event (with the code,
    the state and the nonce cookie) and put tracebacks in answers: the broker's resolvers stay quiet."""
    from smartsheet_oauth.edge.web import resolver

    from tests.support.events import LambdaContext, http_event

    monkeypatch.setenv("POWERTOOLS_DEV", "true")
    monkeypatch.setenv("POWERTOOLS_EVENT_HANDLER_DEBUG", "true")
    app = resolver(operation="callback")  # a real operation: its metrics are ones the template knows

    @app.get("/probe")
    def probe() -> Any:
        raise RuntimeError("boom")

    secret_code = "code-4f1c9a2b7e6d5c3a"
    event = http_event("/probe", {"code": secret_code, "state": "state-9b8a7c6d5e4f3a2b"}, cookies={"n": "nonce-77"})
    answer = app.resolve(event, LambdaContext())  # type: ignore[arg-type]
    printed = "".join(capsys.readouterr())

    assert answer["statusCode"] == 500
    assert "Traceback" not in answer["body"]
    assert "boom" not in answer["body"]
    for value in (secret_code, "state-9b8a7c6d5e4f3a2b", "nonce-77"):
        assert value not in printed


def test_the_log_event_switch_does_not_print_requests(
    broker: Broker, captured: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POWERTOOLS_LOGGER_LOG_EVENT=true makes Powertools log every incoming event (query string with the code and
    state, the nonce cookie): the handlers opt out explicitly, whatever the environment says."""
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")

    location, nonce = broker.start()
    query = broker.consent(location)
    assert broker.callback(query, nonce).status == 200

    everything = captured.everything()
    assert any(line.get("message") == "connection stored" for line in captured.broker_lines())
    for kind, value in (("code", query["code"]), ("state", query["state"]), ("nonce", nonce)):
        assert value not in everything, f"the {kind} reached the logs"
