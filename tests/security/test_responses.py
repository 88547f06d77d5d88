"""Every answer (redirects, pages, errors, 404s) carries the security headers; pages escape what they echo and
never show a stack trace or an internal error text."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.edge import pages
from smartsheet_oauth.smartsheet.client import SmartsheetClient

from infra.local.smartsheet_emulator import DEFAULT_APP
from tests.management.conftest import complete, new_session
from tests.security.support import assert_security_headers, page_problems, state_of
from tests.support.broker import Answer, Broker, answer_of, completion_code, connect_form
from tests.support.events import LambdaContext, http_event

ADA = 4583173393803140
HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"
INTERNALS = ("Traceback", 'File "', "botocore", "ResourceNotFound", "Exception", "Error:", "boom-7f3e", ".py")


def handler_answer(function: str, event: dict[str, Any]) -> Answer:
    if function == "authorize":
        from authorize.app import lambda_handler as login_handler

        return answer_of(login_handler(event, LambdaContext()))
    from callback.app import lambda_handler as callback_handler

    return answer_of(callback_handler(event, LambdaContext()))


def every_kind_of_answer(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> dict[str, Answer]:
    answers: dict[str, Answer] = {}
    answers["login 302"] = broker.login()
    answers["login 400 return_to"] = broker.login({"return_to": "https://evil.example/"})
    answers["login 400 oversized"] = broker.login("x=" + "y" * 5000)
    location, nonce = broker.start()
    answers["callback 200"] = broker.callback(broker.consent(location, user_id=ADA), nonce)
    location, nonce = broker.start(return_to="https://app.example.com/done")
    answers["callback 303"] = broker.callback(broker.consent(location, user_id=ADA), nonce)
    answers["callback 400 unknown state"] = broker.callback({"state": "x" * 43, "code": "c"}, nonce)
    location, nonce = broker.start()
    answers["callback 400 declined"] = broker.callback(broker.consent(location, allow=False), nonce)
    location, nonce = broker.start()
    answers["callback 400 authorize error"] = broker.callback(
        {"state": state_of(location), "error": HOSTILE, "error_description": HOSTILE}, nonce
    )
    location, nonce = broker.start()
    answers["callback 400 no code"] = broker.callback({"state": state_of(location)}, nonce)
    location, nonce = broker.start()
    refused = broker.consent(location, user_id=ADA)
    refused["code"] = "not-issued"
    answers["callback 400 refused code"] = broker.callback(refused, nonce)
    # Smartsheet refuses the app, not the code: the app-credentials secret holds a wrong client secret (1072).
    broker.secrets.put_secret_value(
        SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"],
        SecretString=json.dumps({"client_id": DEFAULT_APP.client_id, "client_secret": "wrong"}),
    )
    services.reset()
    location, nonce = broker.start()
    answers["callback 502 app refused"] = broker.callback(broker.consent(location, user_id=ADA), nonce)
    broker.secrets.put_secret_value(
        SecretId=broker.env["APP_CREDENTIALS_SECRET_ARN"],
        SecretString=json.dumps({"client_id": DEFAULT_APP.client_id, "client_secret": DEFAULT_APP.client_secret}),
    )
    services.reset()
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    broker.emulator.set_faults(error_rate=1.0, token_only=True)
    answers["callback 503 smartsheet"] = broker.callback(query, nonce)
    broker.emulator.reset_faults()

    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)

    def bug(self: SmartsheetClient, code: str, **_: Any) -> Any:
        raise RuntimeError(f"boom-7f3e {code}")

    with monkeypatch.context() as patch:
        patch.setattr(SmartsheetClient, "exchange_code", bug)
        answers["callback 500"] = broker.callback(query, nonce)
    for function in ("authorize", "callback"):
        answers[f"{function} 404 path"] = handler_answer(function, http_event("/admin/../etc/passwd"))
        answers[f"{function} 404 method"] = handler_answer(
            function, http_event("/login" if function == "authorize" else "/callback", method="DELETE")
        )
    # Connect links: the connect page, its button (and a forged one), the held sign-in, a plain sign-in refused.
    answers["login 200 connect page"] = page = broker.login({"session": new_session("user-1")})
    answers["login 403 connect form"] = broker.post_login(connect_form(page.body))
    answers["login 400 connect form"] = broker.post_login("not a form")
    answers["login 400 connect link"] = broker.login({"session": "A" * 43})
    answers["callback 303 completion"] = broker.connect_through(new_session("user-1"), user_id=ADA)
    assert complete(completion_code(answers["callback 303 completion"]), "user-1").status == 200
    # A connect session's conflict goes back to the integrator's return_to (outcome=failed&error=binding_conflict).
    answers["callback 303 binding"] = broker.connect_through(new_session("user-2"), user_id=ADA)
    answers["callback 409 bound"] = broker.sign_in(user_id=ADA)
    answers["login 303 connect"] = broker.press_connect(broker.login({"session": new_session("user-1")}))
    broker.dynamodb.delete_table(TableName=broker.state_table)
    event = http_event("/login")
    event["requestContext"]["requestId"] = HOSTILE  # the reference a page shows
    answers["login 503 storage"] = handler_answer("authorize", event)
    return answers


def test_every_answer_carries_the_security_headers_and_no_internals(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, subtests: pytest.Subtests
) -> None:
    answers = every_kind_of_answer(broker, monkeypatch)

    expected_status = {name: int(name.split()[1]) for name in answers}
    assert {name: answer.status for name, answer in answers.items()} == expected_status
    for name, answer in answers.items():
        with subtests.test(answer=name):
            assert_security_headers(answer.headers, name, form_action=[broker.emulator.base_url])
            assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
            assert page_problems(answer.body) == []
            for internal in INTERNALS:
                assert internal not in answer.body, internal
            assert "<script" not in answer.body
            assert "onerror=alert" not in answer.body or "&lt;img" in answer.body
    assert "&quot;&#x27;&gt;&lt;script&gt;" in answers["login 503 storage"].body


@pytest.mark.parametrize(
    "render",
    [
        pages.signed_in,
        lambda v: pages.connect(v, session=v, form_token=v),  # bad_request echoes nothing: its detail is logged
        pages.smartsheet_error,
        lambda v: pages.code_refused("/login?" + urlencode({"return_to": v}), v),
        lambda v: pages.code_refused(None, v),
        pages.unavailable,
        pages.internal_error,
        lambda v: pages.page(v, v, link=("/login", v), reference=v),
    ],
)
def test_pages_escape_everything_they_echo(render: Any) -> None:
    body = render(HOSTILE)

    assert page_problems(body) == []
    assert "<script" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&amp;amp;" in body  # escaped once more, never passed through


def test_the_page_checker_sees_markup_that_escaped() -> None:
    assert page_problems('<p onclick="x()">hi</p><script>x()</script><a href="//evil.example">go</a>') == [
        "unexpected attribute onclick on <p>",
        "unexpected <script>",
        "link off the broker: '//evil.example'",
    ]
