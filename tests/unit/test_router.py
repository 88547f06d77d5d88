"""The HTTP router: payload 2.0 events in, proxy results out; routing, path parameters, exception handlers,
malformed events, cookies and query parameters as the routes read them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from smartsheet_oauth.edge.router import Cookie, NotFoundError, Response, Router

from tests.security.support import smartsheet_api_calls
from tests.support.broker import NONCE_COOKIE, Broker, answer_of
from tests.support.events import LambdaContext, http_event


class Refused(Exception):
    pass


class RefusedHard(Refused):
    pass


def echo(app: Router, **extra: str) -> Response:
    event = app.current_event
    seen = {
        "method": event.method,
        "raw_path": event.raw_path,
        "raw_query_string": event.raw_query_string,
        "query": event.query_string_parameters,
        "headers": event.headers,
        "cookies": event.cookies,
        "body": event.body,
        "base64": event.is_base64_encoded,
        "request_id": event.request_context.request_id,
        "domain_name": event.request_context.domain_name,
        **extra,
    }
    return Response(200, "application/json", json.dumps(seen))


@pytest.fixture
def app() -> Router:
    app = Router()

    @app.get("/login")
    def login() -> Response:
        return echo(app, route="login")

    @app.post("/login")
    def login_post() -> Response:
        return echo(app, route="login_post")

    @app.get("/connections/<connection_id>")
    def get_connection(connection_id: str) -> Response:
        return echo(app, route="get_connection", connection_id=connection_id)

    @app.delete("/connections/<connection_id>")
    def delete_connection(connection_id: str) -> Response:
        return echo(app, route="delete_connection", connection_id=connection_id)

    @app.post("/connections/<connection_id>/refresh")
    def refresh(connection_id: str) -> Response:
        return echo(app, route="refresh", connection_id=connection_id)

    @app.get("/fail/<kind>")
    def fail(kind: str) -> Response:
        raise {"hard": RefusedHard("hard"), "soft": Refused("soft"), "other": KeyError("other")}[kind]

    @app.not_found
    def not_found(_: NotFoundError) -> Response:
        return Response(404, "text/plain", "no such page")

    @app.exception_handler(Refused)
    def refused(exc: Refused) -> Response:
        return Response(400, "text/plain", f"refused: {exc}")

    @app.exception_handler(RefusedHard)
    def refused_hard(exc: RefusedHard) -> Response:
        return Response(409, "text/plain", f"refused hard: {exc}")

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response:
        return Response(500, "text/plain", f"unexpected {type(exc).__name__}")

    return app


def resolve(app: Router, event: Any) -> dict[str, Any]:
    return app.resolve(event, LambdaContext())  # type: ignore[arg-type]  # the tests' context stands in for Lambda's


def seen(result: dict[str, Any]) -> dict[str, Any]:
    assert result["statusCode"] == 200, result
    body: dict[str, Any] = json.loads(result["body"])
    return body


# ------------------------------------------------------------------------------------------- routing
def test_routes_by_method_and_path(app: Router) -> None:
    assert seen(resolve(app, http_event("/login")))["route"] == "login"
    assert seen(resolve(app, http_event("/login", method="POST")))["route"] == "login_post"
    assert seen(resolve(app, http_event("/connections/c1", method="DELETE")))["route"] == "delete_connection"
    assert seen(resolve(app, http_event("/connections/c1/refresh", method="POST")))["route"] == "refresh"


def test_a_lower_case_method_is_routed_like_its_upper_case(app: Router) -> None:
    assert seen(resolve(app, http_event("/login", method="get")))["route"] == "login"


def test_path_parameters_are_keyword_arguments_decoded_from_the_raw_path(app: Router) -> None:
    assert seen(resolve(app, http_event("/connections/4583173393803140")))["connection_id"] == "4583173393803140"
    assert seen(resolve(app, http_event("/connections/a%20b%2Fc")))["connection_id"] == "a b/c"
    assert seen(resolve(app, http_event("/connections/x/refresh", method="POST")))["connection_id"] == "x"


def test_a_path_parameter_is_one_whole_segment(app: Router) -> None:
    for path in ("/connections/", "/connections/a/b", "/connections/a/refresh/more", "/connections"):
        result = resolve(app, http_event(path))
        assert (result["statusCode"], result["body"]) == (404, "no such page"), path


@pytest.mark.parametrize("path", ["/nope", "/login/", "/LOGIN", "/", "", "/prefix/login", "/login%2F"])
def test_an_unknown_path_gets_the_not_found_answer(app: Router, path: str) -> None:
    result = resolve(app, http_event(path))
    assert (result["statusCode"], result["body"]) == (404, "no such page")


@pytest.mark.parametrize(("method", "path"), [("PUT", "/login"), ("HEAD", "/login"), ("OPTIONS", "/login"),
                                              ("DELETE", "/login"), ("POST", "/connections/c1")])  # fmt: skip
def test_a_wrong_method_is_not_found_like_an_unknown_path(app: Router, method: str, path: str) -> None:
    result = resolve(app, http_event(path, method=method))
    assert (result["statusCode"], result["body"]) == (404, "no such page")


def test_without_a_not_found_handler_the_exception_handler_of_its_base_class_answers() -> None:
    app = Router()

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response:
        return Response(500, "text/plain", type(exc).__name__)

    result = resolve(app, http_event("/anything"))
    assert (result["statusCode"], result["body"]) == (500, "NotFoundError")


def test_without_any_handler_an_unknown_path_is_a_plain_404() -> None:
    result = resolve(Router(), http_event("/anything"))
    assert result["statusCode"] == 404
    assert result["headers"]["Content-Type"] == "application/json"


def test_a_named_stage_is_not_part_of_the_routed_path(app: Router) -> None:
    event = http_event("/prod/login")
    event["requestContext"]["stage"] = "prod"
    assert seen(resolve(app, event))["route"] == "login"


def test_a_route_is_registered_once() -> None:
    app = Router()
    app.get("/login")(lambda: Response(200))
    with pytest.raises(ValueError, match="twice"):
        app.get("/login")(lambda: Response(200))
    with pytest.raises(ValueError, match="must start with /"):
        app.get("login")


# ------------------------------------------------------------------------------------------- exceptions
def test_the_most_specific_exception_handler_answers(app: Router) -> None:
    hard = resolve(app, http_event("/fail/hard"))
    assert (hard["statusCode"], hard["body"]) == (409, "refused hard: hard")
    assert resolve(app, http_event("/fail/soft"))["body"] == "refused: soft"
    assert resolve(app, http_event("/fail/other"))["body"] == "unexpected KeyError"


def test_the_order_of_registration_does_not_decide_which_handler_answers() -> None:
    app = Router()

    @app.exception_handler(RefusedHard)
    def hard(exc: RefusedHard) -> Response:
        return Response(409, body="hard")

    @app.exception_handler(Exception)
    def anything(exc: Exception) -> Response:
        return Response(500, body="anything")

    @app.exception_handler(Refused)
    def soft(exc: Refused) -> Response:
        return Response(400, body="soft")

    @app.get("/<kind>")
    def fail(kind: str) -> Response:
        raise {"hard": RefusedHard(), "soft": Refused(), "other": ValueError()}[kind]

    assert [resolve(app, http_event(f"/{kind}"))["body"] for kind in ("hard", "soft", "other")] == [
        "hard",
        "soft",
        "anything",
    ]


def test_an_exception_without_a_handler_propagates() -> None:
    app = Router()

    @app.get("/boom")
    def boom() -> Response:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        resolve(app, http_event("/boom"))


# ------------------------------------------------------------------------------------------- the request
def test_the_request_as_the_routes_read_it(app: Router) -> None:
    event = http_event(
        "/login",
        "a=1&a=2&b=&flag&return_to=https%3A%2F%2Fapp.example.com%2F",
        cookies={"nonce": "n1", "theme": "a=b"},
        headers={"x-forwarded-proto": "https"},
    )
    event["headers"]["X-Mixed-Case"] = "yes"
    request = seen(resolve(app, event))

    assert request["method"] == "GET"
    assert request["raw_path"] == "/login"
    assert request["raw_query_string"] == "a=1&a=2&b=&flag&return_to=https%3A%2F%2Fapp.example.com%2F"
    # API Gateway comma-joins a repeated key; the router hands the parameters on as API Gateway gave them.
    assert request["query"] == {"a": "1,2", "b": "", "flag": "", "return_to": "https://app.example.com/"}
    assert request["headers"]["x-forwarded-proto"] == "https"
    assert request["headers"]["x-mixed-case"] == "yes"
    assert request["cookies"] == {"nonce": "n1", "theme": "a=b"}
    assert request["request_id"] == event["requestContext"]["requestId"]
    assert request["domain_name"] == "broker.example.com"
    assert (request["body"], request["base64"]) == (None, False)


def test_the_body_and_its_encoding(app: Router) -> None:
    event = http_event("/connections/c1/refresh", method="POST")
    event["body"], event["isBase64Encoded"] = "eyJhIjoxfQ==", True
    assert (seen(resolve(app, event))["body"], seen(resolve(app, event))["base64"]) == ("eyJhIjoxfQ==", True)
    event["isBase64Encoded"] = "true"  # only the JSON true means base64
    assert seen(resolve(app, event))["base64"] is False


def test_cookies_repeated_or_without_a_value() -> None:
    app = Router()

    @app.get("/c")
    def read() -> Response:
        return Response(200, body=json.dumps(app.current_event.cookies))

    event = http_event("/c")
    event["cookies"] = ["a=1", "flag", "b = 2 ", "a=3", "c=x; d=y", "=empty", 7, None]
    assert json.loads(resolve(app, event)["body"]) == {"a": "3", "b": "2", "c": "x", "d": "y", "": "empty"}


# ------------------------------------------------------------------------------------------- malformed events
def malformed_events() -> list[tuple[str, Any]]:
    def event(**changes: Any) -> dict[str, Any]:
        base = http_event("/login", {"x": "1"}, cookies={"nonce": "n"})
        for key, value in changes.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        return base

    no_http = event()
    del no_http["requestContext"]["http"]
    method_not_text = event()
    method_not_text["requestContext"]["http"]["method"] = 7
    return [
        ("not a dict", ["GET", "/login"]),
        ("empty", {}),
        ("no requestContext", event(requestContext=None)),
        ("requestContext not a dict", event(requestContext="GET")),
        ("no http", no_http),
        ("method not text", method_not_text),
        ("no rawPath", event(rawPath=None)),
        ("rawPath not text", event(rawPath=["/login"])),
    ]


@pytest.mark.parametrize(("name", "event"), malformed_events())
def test_an_event_without_a_usable_method_or_path_is_not_found(app: Router, name: str, event: Any) -> None:
    result = resolve(app, event)
    assert (result["statusCode"], result["body"]) == (404, "no such page"), name


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": "host: x"},
        {"headers": None},
        {"headers": {"host": 7, "accept": ["a", "b"], "x-ok": "1"}},
        {"cookies": "nonce=n"},
        {"cookies": {"nonce": "n"}},
        {"queryStringParameters": ["x=1"]},
        {"queryStringParameters": {"x": ["1", "2"], "y": "2"}},
        {"rawQueryString": 12},
        {"body": {"json": "object"}},
        {"isBase64Encoded": None},
    ],
    ids=repr,
)
def test_mistyped_fields_read_as_empty(app: Router, changes: dict[str, Any]) -> None:
    event = http_event("/login", {"y": "2"}, cookies={"other": "o"})
    event.update(changes)
    for key in [key for key, value in changes.items() if value is None]:
        del event[key]
    request = seen(resolve(app, event))

    assert isinstance(request["raw_query_string"], str)
    assert all(isinstance(v, str) for v in (*request["query"].values(), *request["headers"].values()))
    assert all(isinstance(v, str) for v in request["cookies"].values())
    assert request["body"] is None
    assert request["base64"] is False
    if "headers" in changes:
        assert request["headers"] == ({"x-ok": "1"} if isinstance(changes["headers"], dict) else {})
    if "cookies" in changes:
        assert request["cookies"] == {}
    if "queryStringParameters" in changes:
        assert request["query"] == ({"y": "2"} if isinstance(changes["queryStringParameters"], dict) else {})


def test_a_request_context_without_ids_reads_as_empty(app: Router) -> None:
    event = http_event("/login")
    event["requestContext"]["requestId"] = 12
    del event["requestContext"]["domainName"]
    request = seen(resolve(app, event))
    assert (request["request_id"], request["domain_name"]) == ("", "")


# ------------------------------------------------------------------------------------------- the answer
def test_the_proxy_result() -> None:
    app = Router()

    @app.get("/page")
    def page() -> Response:
        return Response(201, "text/html; charset=utf-8", "<p>hi</p>", headers={"Cache-Control": "no-store"})

    assert resolve(app, http_event("/page")) == {
        "statusCode": 201,
        "body": "<p>hi</p>",
        "isBase64Encoded": False,
        "headers": {"Cache-Control": "no-store", "Content-Type": "text/html; charset=utf-8"},
        "cookies": [],
    }


def test_a_content_type_header_overrides_the_content_type() -> None:
    result = Response(200, "text/html", "x", headers={"Content-Type": "text/plain"}).proxy_result()
    assert result["headers"] == {"Content-Type": "text/plain"}
    assert Response(204).proxy_result()["headers"] == {}


def test_cookies_become_the_cookies_list() -> None:
    nonce = Cookie(name="nonce", value="abc", path="/", secure=True, http_only=True, same_site="Lax", max_age=600)
    cleared = Cookie(name="nonce", value="", max_age=0)
    expired = Cookie(name="old", value="", max_age=-5)
    bare = Cookie(name="b", value="1", path="", secure=False, http_only=False, same_site=None)
    strict = Cookie(name="s", value="2", same_site="Strict")
    result = Response(302, cookies=[nonce, cleared, expired, bare, strict]).proxy_result()

    assert result["cookies"] == [
        "nonce=abc; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax",
        "nonce=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        "old=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        "b=1",
        "s=2; Path=/; HttpOnly; Secure; SameSite=Strict",
    ]
    assert "Set-Cookie" not in result["headers"]


def test_the_route_can_read_the_lambda_context() -> None:
    app = Router()

    @app.get("/time")
    def time_left() -> Response:
        return Response(200, body=str(app.lambda_context.get_remaining_time_in_millis() > 0))

    assert resolve(app, http_event("/time"))["body"] == "True"


# ------------------------------------------------------------------------------------------- the real handlers
def test_the_handlers_answer_an_event_without_a_request_context_with_their_not_found_answer(broker: Broker) -> None:
    from authorize.app import lambda_handler as login
    from callback.app import lambda_handler as callback
    from smartsheet_oauth.edge import pages

    for handler, path in ((login, "/login"), (callback, "/callback")):
        event = http_event(path, {"state": "s", "code": "c"})
        del event["requestContext"]
        answer = answer_of(handler(event, LambdaContext()))
        assert (answer.status, answer.body) == (404, pages.not_found()), path
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert answer.headers["X-Frame-Options"] == "DENY"
    assert smartsheet_api_calls(broker.emulator) == {}


def test_the_handlers_read_around_mistyped_headers_and_cookies(broker: Broker) -> None:
    from authorize.app import lambda_handler as login
    from callback.app import lambda_handler as callback
    from smartsheet_oauth.edge import pages

    event = http_event("/login")
    event["headers"] = ["host: broker.example.com"]
    started = answer_of(login(event, LambdaContext()))
    assert started.status == 302
    nonce = started.cookie(NONCE_COOKIE)
    assert nonce
    query = broker.consent(started.location)

    # The nonce cookie in a `cookies` that is not a list is no cookie: the sign-in is refused, Smartsheet not asked.
    refused = http_event("/callback", query)
    refused["cookies"] = f"{NONCE_COOKIE}={nonce}"
    answer = answer_of(callback(refused, LambdaContext()))
    assert (answer.status, answer.body) == (400, pages.sign_in_rejected("nonce_mismatch", start_again="/login"))
    assert smartsheet_api_calls(broker.emulator) == {}

    # A fresh sign-in whose cookie list carries junk next to the nonce still succeeds.
    location, nonce = broker.start()
    accepted = http_event("/callback", broker.consent(location))
    accepted["cookies"] = [None, 7, "junk", f"{NONCE_COOKIE}={nonce}", {"a": "b"}]
    accepted["headers"] = "not a dict"
    finished = answer_of(callback(accepted, LambdaContext()))
    assert (finished.status, finished.location) == (303, "/result")
