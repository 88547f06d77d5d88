"""docs/openapi.yaml is the management API as the code serves it: a valid OpenAPI 3.1 document (checked by openapi-spec-
validator), whose routes, query parameters, body fields, success statuses and (status, `error`) pairs are the code's,
both ways, and whose schemas hold the real answers.

The code's side is read from the code itself, never from a list kept here: the routes from the management function's
router (management.app.app), the accepted query parameters and body fields from the `set(query) - {...}` and
`set(body) - {...}` checks of the functions a route calls, the success statuses from its route functions'
`answer(<status>, ...)` calls, the error answers from the management API's rows of the errors table
(domain/errors.ANSWERS, which the resolver renders) and the exceptions the code raises to them (a row that answers its
exception's own code takes the codes of every `Conflict("...")`, `CompletionRefused("...")`... call in functions/),
and the function's own refusals (management/app.py's lambda_handler)."""

from __future__ import annotations

import ast
import copy
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from smartsheet_oauth.domain import errors

from infra.local.template_model import IAM_AUTHORIZER, Resolver, Template
from tests.management.conftest import call_management, complete, connect, new_session
from tests.support.broker import Broker, completion_code

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "docs" / "openapi.yaml"
FUNCTIONS = REPO / "functions"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
GATEWAY = "api-gateway"  # x-answered-by of a response only API Gateway gives (no broker code runs)
ADA, GRACE = "4583173393803140", "6812335718217604"


def document() -> dict[str, Any]:
    loaded = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resolved(node: Any, doc: dict[str, Any]) -> Any:
    """`node` with every local $ref replaced by what it points at (the document has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolved(target, doc)
        return {key: resolved(value, doc) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(item, doc) for item in node]
    return node


def path_template(router_path: str) -> str:
    """The router's `/connections/<connection_id>` as OpenAPI (and API Gateway) write it."""
    return router_path.replace("<", "{").replace(">", "}")


# ------------------------------------------------------------------------------------------------ the code's side
@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    code: str
    where: str  # file:line of the raise or the handler: where a reader finds it


def _calls(tree: ast.AST, name: str, *, bare: bool = False) -> Iterator[ast.Call]:
    """Calls of `name` (or of `x.name`, unless bare: the resolver's own error(), not logger.error)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if called == name and (isinstance(func, ast.Name) or not bare):
                yield node


def _literal(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _source_tree(function: Callable[..., Any]) -> tuple[ast.AST, str, int]:
    function = inspect.unwrap(function)
    lines, first = inspect.getsourcelines(function)
    path = Path(inspect.getfile(function)).resolve().relative_to(REPO)
    return ast.parse(textwrap.dedent("".join(lines))), str(path), first


def code_routes(app: Any) -> dict[tuple[str, str], Callable[..., Any]]:
    return {(method, path_template(path)): function for method, path, function in app.routes()}


def code_success_statuses(app: Any) -> dict[tuple[str, str], set[int]]:
    statuses: dict[tuple[str, str], set[int]] = {}
    for route, function in code_routes(app).items():
        tree, _, _ = _source_tree(function)
        found = {_literal(call.args[0]) for call in _calls(tree, "answer") if call.args}
        statuses[route] = {status for status in found if isinstance(status, int)}
    return statuses


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class of the broker's modules by name (a name used twice would make this test ambiguous)."""
    classes: dict[str, type[BaseException]] = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith(("smartsheet_oauth", "management")):
            continue
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module_name:
                assert classes.get(value.__name__, value) is value, f"two exception classes named {value.__name__}"
                classes[value.__name__] = value
    return classes


def _table_answers() -> tuple[set[ErrorAnswer], dict[type, int | None]]:
    """The management API's rows of domain/errors.ANSWERS: a row with its own code is a literal (status, code); a row
    marked `own` answers the code its exception carries (and the exception's status where it takes one), so those
    codes come from where the exception is raised: handled class -> the row's status, or None to read it there."""
    answers: set[ErrorAnswer] = set()
    from_exception: dict[type, int | None] = {}
    where = f"{Path(inspect.getfile(errors)).resolve().relative_to(REPO)} (ANSWERS)"
    for row in errors.ANSWERS:
        if errors.API not in row.surfaces:
            continue
        parameters = inspect.signature(row.error).parameters if row.own else {}
        if not row.own or "code" not in parameters:  # the row's code, whatever the exception carries
            answers.add(ErrorAnswer(row.status, row.code, where))
            continue
        from_exception[row.error] = None if "status" in parameters else row.status
    return answers, from_exception


def _raised_answers(from_exception: dict[type, int | None]) -> set[ErrorAnswer]:
    """Every `SomeError("code", ...)` call in functions/ whose nearest handler answers the exception's code."""
    answers: set[ErrorAnswer] = set()
    classes = _exception_classes()
    for source in sorted(FUNCTIONS.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            name = getattr(node.func, "id", getattr(node.func, "attr", "")) if isinstance(node, ast.Call) else ""
            cls = classes.get(name)
            answered = {row.error for row in errors.ANSWERS if errors.API in row.surfaces}
            handled = next((base for base in cls.__mro__ if base in answered), None) if cls else None
            if not isinstance(node, ast.Call) or cls is None or handled not in from_exception:
                continue
            where = f"{source.relative_to(REPO)}:{node.lineno}"
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            code = _literal(node.args[0] if node.args else keywords.get("code"))
            assert isinstance(code, str), f"{where}: {name}(...) must name its error code as a string literal"
            status = from_exception[handled]
            if status is None:
                given = _literal(keywords.get("status"))
                status = given if isinstance(given, int) else inspect.signature(cls).parameters["status"].default
            assert isinstance(status, int), f"{where}: {name}(...) answers no literal status"
            answers.add(ErrorAnswer(status, code, where))
    return answers


def _refusals() -> set[ErrorAnswer]:
    """The function's own refusals before any route runs (management/app.py's lambda_handler):
    `refusal = {"error": ...}` then `answer(<status>, refusal)`."""
    app_file = FUNCTIONS / "management" / "app.py"
    module = ast.parse(app_file.read_text(encoding="utf-8"))
    [handler] = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "lambda_handler"]
    bodies: dict[str, str] = {}
    for node in ast.walk(handler):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and isinstance(node.targets[0], ast.Name):
            fields = {_literal(k): _literal(v) for k, v in zip(node.value.keys, node.value.values, strict=True)}
            if isinstance(fields.get("error"), str):
                bodies[node.targets[0].id] = str(fields["error"])
    answers = set()
    for call in _calls(handler, "answer"):
        status, body = _literal(call.args[0]), call.args[1]
        if isinstance(status, int) and isinstance(body, ast.Name) and body.id in bodies:
            answers.add(ErrorAnswer(status, bodies[body.id], f"{app_file.relative_to(REPO)}:{call.lineno}"))
    return answers


def code_error_answers(app: Any) -> set[ErrorAnswer]:
    literal, from_exception = _table_answers()
    return literal | _raised_answers(from_exception) | _refusals()


def _called_functions(function: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """The broker's own functions a function calls by name (`f(...)`, `module.f(...)`), as its globals resolve them."""
    function = inspect.unwrap(function)
    tree, _, _ = _source_tree(function)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target: Any = None
        if isinstance(node.func, ast.Name):
            target = function.__globals__.get(node.func.id)
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            target = getattr(function.__globals__.get(node.func.value.id), node.func.attr, None)
        module = getattr(target, "__module__", None) or ""
        if inspect.isfunction(target) and module.startswith(("smartsheet_oauth.", "management")):
            yield target


def code_fields(route_function: Callable[..., Any]) -> dict[str, set[str]]:
    """The query parameters and body fields a route accepts, from the `set(query) - {...}` / `set(body) - {...}`
    checks of the functions it calls (every unknown one is a 400): {"query": {...}, "body": {...}}."""
    fields: dict[str, set[str]] = {}
    seen: set[Any] = set()
    todo = [route_function]
    while todo:
        function = todo.pop()
        if function in seen:
            continue
        seen.add(function)
        todo.extend(_called_functions(function))
        tree, _, _ = _source_tree(function)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and isinstance(node.right, ast.Set)):
                continue
            left = node.left
            if isinstance(left, ast.Call) and getattr(left.func, "id", None) == "set" and len(left.args) == 1:
                subject = left.args[0]
                if isinstance(subject, ast.Name) and subject.id in ("query", "body"):
                    names = {_literal(element) for element in node.right.elts}
                    fields.setdefault(subject.id, set()).update(str(name) for name in names)
    return fields


# ------------------------------------------------------------------------------------------- the document's side
def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def _error_codes(schema: Any) -> set[str]:
    """The `error` enum values anywhere in a (resolved) response schema: allOf/oneOf branches included."""
    found: set[str] = set()
    if isinstance(schema, dict):
        error = schema.get("properties", {}).get("error") if isinstance(schema.get("properties"), dict) else None
        if isinstance(error, dict):
            found.update(error.get("enum", []))
        for value in schema.values():
            found |= _error_codes(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= _error_codes(item)
    return found


def documented_responses(doc: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(where, status, resolved response) of every operation, and of requests no route serves (x-unrouted-requests)."""
    sources = [(f"paths.'{path}'.{method.lower()}", op) for (method, path), op in operations(doc).items()]
    sources.append(("x-unrouted-requests", doc.get("x-unrouted-requests", {"responses": {}})))
    for where, holder in sources:
        for status, response in holder["responses"].items():
            yield f"{where}.responses.'{status}'", int(status), resolved(response, doc)


def documented_error_answers(doc: dict[str, Any]) -> dict[tuple[int, str], list[str]]:
    pairs: dict[tuple[int, str], list[str]] = {}
    for where, status, response in documented_responses(doc):
        for code in _error_codes(response.get("content", {})):
            pairs.setdefault((status, code), []).append(where)
    return pairs


# ----------------------------------------------------------------------------------------------------- the tests
def test_the_document_is_valid_openapi_3_1_and_the_validator_catches_a_broken_one() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # raises with the reason when it is not

    broken = copy.deepcopy(doc)
    broken["paths"]["/connections"]["get"]["parameters"][0]["in"] = "body"  # OpenAPI 2's, gone in 3
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_sigv4_is_the_security_scheme_of_every_operation() -> None:
    doc = document()
    scheme = doc["components"]["securitySchemes"]["sigv4"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert scheme["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert doc["security"] == [{"sigv4": []}]
    for route, operation in operations(doc).items():
        assert operation.get("security", doc["security"]) == [{"sigv4": []}], route


def test_every_route_the_code_serves_is_documented_and_nothing_else(broker: Broker) -> None:
    from management.app import app

    served, documented = code_routes(app), set(operations(document()))
    missing = [
        f"add the `{method.lower()}` operation under paths.'{path}' (parameters, requestBody, responses): the router"
        f" serves {method} {path} with {function.__module__}.{function.__name__}"
        for (method, path), function in sorted(served.items())
        if (method, path) not in documented
    ]
    extra = [
        f"remove paths.'{path}'.{method.lower()}: no route of functions/management/app.py serves {method} {path}"
        for method, path in sorted(documented - set(served))
    ]
    assert not missing + extra, "docs/openapi.yaml is out of step with the router:\n" + "\n".join(missing + extra)


def test_the_templates_management_routes_are_the_routers(broker: Broker) -> None:
    from management.app import app

    management = Resolver(Template.load(), stack_name="s", parameters={"SmartsheetClientId": "id"}).function(
        "ManagementFunction"
    )
    in_template = {(route.method, route.path) for route in management.routes}
    assert in_template == set(code_routes(app))
    assert {route.authorizer for route in management.routes} == {IAM_AUTHORIZER}


def test_every_success_status_of_a_route_is_documented_and_nothing_else(broker: Broker) -> None:
    from management.app import app

    doc = document()
    problems = []
    for (method, path), statuses in sorted(code_success_statuses(app).items()):
        assert statuses, f"{method} {path}: no literal answer(<status>, ...) found in its route function"
        operation = operations(doc).get((method, path), {"responses": {}})
        documented = {int(status) for status in operation["responses"] if 200 <= int(status) < 300}
        problems += [f"add response '{s}' to paths.'{path}'.{method.lower()}" for s in sorted(statuses - documented)]
        problems += [
            f"remove response '{s}' from paths.'{path}'.{method.lower()}: the route never answers it"
            for s in sorted(documented - statuses)
        ]
    assert not problems, "docs/openapi.yaml's success answers are out of step with the code:\n" + "\n".join(problems)


def documented_fields(doc: dict[str, Any], operation: dict[str, Any], path: str) -> dict[str, set[str]]:
    parameters = [resolved(p, doc) for p in doc["paths"][path].get("parameters", []) + operation.get("parameters", [])]
    fields = {"query": {p["name"] for p in parameters if p["in"] == "query"}}
    body = resolved(operation.get("requestBody", {}), doc).get("content", {}).get("application/json", {})
    fields["body"] = set(body.get("schema", {}).get("properties", {}))
    return fields


def test_every_query_parameter_and_body_field_a_route_accepts_is_documented_and_nothing_else(broker: Broker) -> None:
    from management.app import app

    doc = document()
    found_any = False
    problems = []
    for (method, path), function in sorted(code_routes(app).items()):
        accepted = code_fields(function)
        found_any = found_any or bool(accepted)
        operation = operations(doc).get((method, path), {"responses": {}})
        documented = documented_fields(doc, operation, path)
        for where in ("query", "body"):
            what = "query parameter" if where == "query" else "requestBody property"
            code_side, doc_side = accepted.get(where, set()), documented[where]
            problems += [
                f"add {what} '{name}' to paths.'{path}'.{method.lower()}" for name in sorted(code_side - doc_side)
            ]
            problems += [
                f"remove {what} '{name}' from paths.'{path}'.{method.lower()}: the route refuses it (400)"
                for name in sorted(doc_side - code_side)
            ]
    assert found_any, "no `set(query) - {...}` / `set(body) - {...}` check found: the derivation is broken"
    assert not problems, "docs/openapi.yaml's parameters and bodies are out of step with the code:\n" + "\n".join(
        problems
    )


def test_every_error_status_and_code_the_code_answers_is_documented_and_nothing_else(broker: Broker) -> None:
    from management.app import app

    answers = code_error_answers(app)
    in_code: dict[tuple[int, str], list[str]] = {}
    for answer in answers:
        in_code.setdefault((answer.status, answer.code), []).append(answer.where)
    documented = documented_error_answers(document())
    # What the code answers today, at least: a reader of this test sees the derivation finds real answers.
    assert {(404, "not_found"), (409, "needs_reauth"), (503, "refresh_failed"), (403, "forbidden")} <= set(in_code)

    missing = [
        f"add '{code}' to the `error` enum of the {status} response of the operation(s) that can answer it"
        f" (raised or answered at {', '.join(sorted(in_code[(status, code)]))})"
        for status, code in sorted(set(in_code) - set(documented))
    ]
    extra = [
        f"remove '{code}' from the `error` enum at {', '.join(documented[(status, code)])}: the code never answers"
        f" {status} {code}"
        for status, code in sorted(set(documented) - set(in_code))
    ]
    assert not missing + extra, "docs/openapi.yaml's errors are out of step with the code:\n" + "\n".join(
        missing + extra
    )


def test_a_documented_error_status_without_a_broker_code_is_api_gateways_own() -> None:
    unexplained = [
        f"{where}: an error answer with no `error` enum must say x-answered-by: {GATEWAY} (API Gateway's own answer)"
        for where, status, response in documented_responses(document())
        if status >= 400 and not _error_codes(response.get("content", {})) and response.get("x-answered-by") != GATEWAY
    ]
    assert not unexplained, "\n".join(unexplained)


def test_every_route_documents_the_answers_any_request_can_get() -> None:
    # The function's refusals, an unexpected failure and AWS storage can end any request.
    anywhere = {(403, "forbidden"), (500, "internal_error"), (503, "storage_unavailable")}
    doc = document()
    for route, operation in operations(doc).items():
        pairs = {
            (int(status), code)
            for status, response in operation["responses"].items()
            for code in _error_codes(resolved(response, doc).get("content", {}))
        }
        assert anywhere <= pairs, f"{route}: document {sorted(anywhere - pairs)}"


# ------------------------------------------------------------------------------- the real answers fit the schemas
def schema_of(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    response = resolved(operations(doc)[(method, path)]["responses"][str(status)], doc)
    schema = response["content"]["application/json"]["schema"]
    assert isinstance(schema, dict)
    return schema


def assert_fits(doc: dict[str, Any], method: str, path: str, answer: Any) -> None:
    OAS31Validator(schema_of(doc, method, path, answer.status)).validate(answer.body)


def test_the_real_answers_fit_the_documented_schemas(broker: Broker) -> None:
    doc = document()
    assert broker.sign_in(user_id=int(ADA)).status == 200
    connected = connect(broker, "user-42", GRACE)
    assert_fits(doc, "POST", "/connect-sessions/complete", connected)
    session = call_management(
        "POST", "/connect-sessions", body={"end_user_id": "user-7", "return_to": "https://app.example.com/connected"}
    )
    assert session.status == 201
    assert_fits(doc, "POST", "/connect-sessions", session)

    cases = [
        ("GET", "/connections", "/connections", {"limit": "1"}, None, 200),
        ("GET", "/connections", "/connections", {"limit": "0"}, None, 400),
        ("GET", "/connections/{connection_id}", f"/connections/{ADA}", None, None, 200),
        ("GET", "/connections/{connection_id}", "/connections/42", None, None, 404),
        ("GET", "/connections/{connection_id}", "/connections/not-digits", None, None, 400),
        ("POST", "/connections/{connection_id}/refresh", f"/connections/{ADA}/refresh", None, {}, 200),
        ("POST", "/connections/{connection_id}/refresh", f"/connections/{ADA}/refresh", None,
         {"min_valid_seconds": 604800}, 200),
        ("POST", "/connections/{connection_id}/refresh", f"/connections/{ADA}/refresh", None,
         {"min_valid_seconds": 604800}, 429),
        ("DELETE", "/connections/{connection_id}", f"/connections/{ADA}", None, None, 200),
        ("POST", "/connections/{connection_id}/refresh", f"/connections/{ADA}/refresh", None, {}, 409),
        ("POST", "/connect-sessions/complete", "/connect-sessions/complete", None,
         {"completion_code": "x" * 43, "end_user_id": "user-42"}, 404),
    ]  # fmt: skip
    for method, route, path, query, body, status in cases:
        answer = call_management(method, path, query=query, body=body)
        assert answer.status == status, (method, path, answer.body)
        assert_fits(doc, method, route, answer)

    used = completion_code(broker.connect_through(new_session("user-9"), user_id=int(ADA)))
    assert complete(used, "user-9").status == 200
    again = complete(used, "user-9")
    assert (again.status, again.error) == (409, "completion_code_used")
    assert_fits(doc, "POST", "/connect-sessions/complete", again)
