"""The broker under test, in-process: real handlers, moto's mock_aws, the Smartsheet emulator on loopback."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from smartsheet_oauth import services
from smartsheet_oauth.stores.token_table import is_table_ref

from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator
from tests.support.events import LambdaContext, http_event, scheduled_event

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

NONCE_COOKIE = "__Host-smartsheet-oauth-nonce"
CONNECT_COOKIE = "__Host-smartsheet-oauth-connect"
RESULT_COOKIE = "__Host-smartsheet-oauth-result"
_HIDDEN_FIELD = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: str
    via: Answer | None = None  # the callback's own answer when this is the /result page its 303 led to

    @property
    def location(self) -> str:
        return self.headers["Location"]

    def cookie(self, name: str) -> str | None:
        for raw in self.cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            if name in jar:
                return jar[name].value
        return None


def answer_of(result: dict[str, Any]) -> Answer:
    return Answer(
        status=result["statusCode"],
        headers=dict(result.get("headers") or {}),
        cookies=list(result.get("cookies") or []),
        body=result.get("body") or "",
    )


class Broker:
    """Drives the three real handlers the way API Gateway and EventBridge would."""

    def __init__(
        self, emulator: SmartsheetEmulator, dynamodb: DynamoDBClient, secrets: SecretsManagerClient, env: dict[str, str]
    ) -> None:
        self.emulator = emulator
        self.dynamodb = dynamodb
        self.secrets = secrets
        self.env = env

    # -- handlers ------------------------------------------------------------------------------
    def login(self, query: dict[str, str] | str | None = None, cookies: dict[str, str] | None = None) -> Answer:
        from authorize.app import lambda_handler

        return answer_of(lambda_handler(http_event("/login", query, cookies=cookies), LambdaContext()))

    def post_login(self, form: dict[str, str] | str, cookies: dict[str, str] | None = None) -> Answer:
        """POST /login as a browser submits a form (API Gateway hands HTTP APIs a form body base64-encoded)."""
        from authorize.app import lambda_handler

        body = form if isinstance(form, str) else urlencode(form)
        event = http_event(
            "/login", method="POST", cookies=cookies, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        event["body"], event["isBase64Encoded"] = base64.b64encode(body.encode()).decode(), True
        return answer_of(lambda_handler(event, LambdaContext()))

    def callback(
        self, query: dict[str, str] | str | None, nonce: str | None, *, cookies: dict[str, str] | None = None
    ) -> Answer:
        """GET /callback; a 303 to /result is followed as a browser would, with the result cookie it set: the answer is
        then the result page, and `via` the callback's own."""
        from callback.app import lambda_handler

        sent = {**({NONCE_COOKIE: nonce} if nonce is not None else {}), **(cookies or {})}
        answer = answer_of(lambda_handler(http_event("/callback", query, cookies=sent or None), LambdaContext()))
        if answer.status != 303 or answer.headers.get("Location") != "/result":
            return answer
        kept = {**(cookies or {})}
        result = answer.cookie(RESULT_COOKIE)
        if result:
            kept[RESULT_COOKIE] = result
        page = self.result(kept)
        page.via = answer
        return page

    def result(self, cookies: dict[str, str] | None = None) -> Answer:
        """GET /result, the page a finished sign-in lands on."""
        from callback.app import lambda_handler

        return answer_of(lambda_handler(http_event("/result", cookies=cookies), LambdaContext()))

    def sweep(self, timeout_seconds: float = 60.0) -> dict[str, Any]:
        from refresh.app import lambda_handler

        result: dict[str, Any] = lambda_handler(scheduled_event(), LambdaContext(timeout_seconds=timeout_seconds))
        return result

    # -- flows ---------------------------------------------------------------------------------
    def start(self, **query: str) -> tuple[str, str]:
        """GET /login; returns (Smartsheet authorize URL, nonce cookie)."""
        answer = self.login(query or None)
        assert answer.status == 302, answer.body
        nonce = answer.cookie(NONCE_COOKIE)
        assert nonce
        return answer.location, nonce

    def consent(self, authorize_url: str, *, user_id: int | None = None, allow: bool = True) -> dict[str, str]:
        """The emulated user clicks Allow/Deny; returns the callback's query parameters."""
        redirect = self.emulator.consent(authorize_url, user_id=user_id, allow=allow)
        return {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}

    def press_connect(self, page: Answer) -> Answer:
        """The user's click on a connect page: its form, with the browser key cookie the page set."""
        assert page.status == 200, page.body
        browser_key = page.cookie(CONNECT_COOKIE)
        assert browser_key
        return self.post_login(connect_form(page.body), {CONNECT_COOKIE: browser_key})

    def connect_through(self, session: str, *, user_id: int | str, allow: bool = True) -> Answer:
        """A connect link in a browser: the connect page, its button, Allow (or Deny) at Smartsheet, the callback."""
        started = self.press_connect(self.login({"session": session}))
        assert started.status == 303, started.body
        nonce = started.cookie(NONCE_COOKIE)
        return self.callback(self.consent(started.location, user_id=int(user_id), allow=allow), nonce)

    def sign_in(self, *, user_id: int | None = None) -> Answer:
        location, nonce = self.start()
        return self.callback(self.consent(location, user_id=user_id), nonce)

    # -- state ---------------------------------------------------------------------------------
    @property
    def connections_table(self) -> str:
        return self.env["CONNECTIONS_TABLE_NAME"]

    @property
    def state_table(self) -> str:
        return self.env["STATE_TABLE_NAME"]

    def connection(self, connection_id: str | int) -> dict[str, Any] | None:
        item = self.dynamodb.get_item(
            TableName=self.connections_table, Key={"connection_id": {"S": str(connection_id)}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return {k: (int(v["N"]) if "N" in v else v.get("S")) for k, v in item.items()}

    def connections(self) -> list[dict[str, Any]]:
        items = self.dynamodb.scan(TableName=self.connections_table)["Items"]
        return [{k: (int(v["N"]) if "N" in v else v.get("S")) for k, v in i.items()} for i in items]

    def tokens(self, connection_id: str | int, stage: str = "AWSCURRENT") -> dict[str, Any]:
        """The connection's stored pair (or the one before it: AWSPREVIOUS), from whichever store its record names."""
        record = self.connection(connection_id)
        ref = str(record["secret_arn"]) if record else ""
        if is_table_ref(ref):
            table = services.token_vault().table
            assert table is not None
            pair = table.load(ref) if stage == "AWSCURRENT" else table.load_previous(ref)
            value: dict[str, Any] = json.loads(pair.to_json())
            return value
        name = f"{self.env['TOKEN_SECRET_PREFIX']}{connection_id}"
        stored: dict[str, Any] = json.loads(
            self.secrets.get_secret_value(SecretId=name, VersionStage=stage)["SecretString"]
        )
        return stored

    def make_due(self, connection_id: str | int, *, at: int = 0) -> None:
        """Move a connection's refresh time into the past, as time passing would."""
        self.dynamodb.update_item(
            TableName=self.connections_table,
            Key={"connection_id": {"S": str(connection_id)}},
            UpdateExpression="SET refresh_due_at = :due",
            ExpressionAttributeValues={":due": {"N": str(at)}},
        )


APP = DEFAULT_APP


def connect_form(page: str) -> dict[str, str]:
    """The hidden fields of a connect page's form."""
    return dict(_HIDDEN_FIELD.findall(page))


def completion_code(answer: Answer) -> str:
    """The completion code a connect-session callback sends to return_to."""
    assert answer.status == 303, answer.body
    [code] = parse_qs(urlsplit(answer.location).query)["completion_code"]
    return code


def pending_tokens_key_arn() -> str:
    """The template's pending-tokens KMS key (provisioned by LocalAws), as PENDING_TOKENS_KEY_ID wants it."""
    import boto3

    kms = boto3.client("kms", region_name="us-east-1")
    [key] = [
        metadata["Arn"]
        for metadata in (kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"] for k in kms.list_keys()["Keys"])
        if metadata.get("KeyManager") == "CUSTOMER" and "token pairs" in metadata.get("Description", "")
    ]
    return str(key)
