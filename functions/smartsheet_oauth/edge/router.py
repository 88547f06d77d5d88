"""Routing of API Gateway HTTP API (payload 2.0) events to route functions, and their answers as proxy results.

Our own small router instead of Powertools' event_handler, whose import (every resolver, every event class and
asyncio) cost ~80 ms of each cold start of /login and /callback. It serves what the broker uses: GET/POST/DELETE
routes with `<name>` path segments, a not-found page, exception handlers (the most specific class wins), text
bodies and cookies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar
from urllib.parse import unquote

from smartsheet_oauth.domain.errors import NoSuchRoute

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

RouteFunction = TypeVar("RouteFunction", bound=Callable[..., "Response"])
Handled = TypeVar("Handled", bound=Exception)
ExceptionHandler = Callable[[Handled], "Response"]

_PARAMETER = re.compile(r"<(\w+)>")


class NotFoundError(NoSuchRoute):
    """No route has this method and path (a wrong method is not found too, as API Gateway's own routes are)."""


class Cookie(NamedTuple):
    """A Set-Cookie value; the attributes are the ones the broker sets."""

    name: str
    value: str
    path: str = "/"
    secure: bool = True
    http_only: bool = True
    same_site: Literal["Lax", "Strict", "None"] | None = "Lax"
    max_age: int | None = None

    def __str__(self) -> str:
        parts = [f"{self.name}={self.value}"]
        if self.path:
            parts.append(f"Path={self.path}")
        if self.max_age is not None:
            parts.append(f"Max-Age={max(self.max_age, 0)}")  # zero or less: expire now
        if self.http_only:
            parts.append("HttpOnly")
        if self.secure:
            parts.append("Secure")
        if self.same_site:
            parts.append(f"SameSite={self.same_site}")
        return "; ".join(parts)


@dataclass
class Response:
    """A text answer; `content_type` becomes the Content-Type header unless `headers` sets one."""

    status_code: int
    content_type: str | None = None
    body: str = ""
    headers: Mapping[str, str] | None = None
    cookies: Sequence[Cookie] | None = None

    def proxy_result(self) -> dict[str, Any]:
        """The payload 2.0 result API Gateway turns into the HTTP response (cookies become Set-Cookie headers)."""
        headers = dict(self.headers or {})
        if self.content_type:
            headers.setdefault("Content-Type", self.content_type)
        return {
            "statusCode": self.status_code,
            "body": self.body,
            "isBase64Encoded": False,
            "headers": headers,
            "cookies": [str(cookie) for cookie in self.cookies or ()],
        }


class RequestContext(NamedTuple):
    """The payload 2.0 request context fields the routes use."""

    request_id: str = ""
    domain_name: str = ""
    stage: str = ""


class HttpRequest(NamedTuple):
    """What the routes read of one payload 2.0 event. A missing or mistyped field reads as empty, so a malformed
    event is answered by the routes' own checks (or not found) instead of failing in the router."""

    method: str = ""
    raw_path: str = ""
    raw_query_string: str = ""
    # The empty defaults are shared (a NamedTuple's are): nothing writes into a request's mappings.
    query_string_parameters: dict[str, str] = {}  # noqa: RUF012 (API Gateway comma-joins repeated keys)
    headers: dict[str, str] = {}  # noqa: RUF012 (lower-case names)
    cookies: dict[str, str] = {}  # noqa: RUF012 (the event's `cookies` list, by name)
    body: str | None = None
    is_base64_encoded: bool = False
    request_context: RequestContext = RequestContext()

    @property
    def reference(self) -> str:
        """The id a caller can quote to support: API Gateway's request id, also the logs' correlation id."""
        return self.request_context.request_id or "unknown"

    @classmethod
    def from_event(cls, event: object) -> HttpRequest:
        raw = _mapping(event)
        context = _mapping(raw.get("requestContext"))
        body = raw.get("body")
        return cls(
            method=_text(_mapping(context.get("http")).get("method")).upper(),
            raw_path=_text(raw.get("rawPath")),
            raw_query_string=_text(raw.get("rawQueryString")),
            query_string_parameters=_strings(raw.get("queryStringParameters")),
            headers={name.lower(): value for name, value in _strings(raw.get("headers")).items()},
            cookies=_parse_cookies(raw.get("cookies")),
            body=body if isinstance(body, str) else None,
            is_base64_encoded=raw.get("isBase64Encoded") is True,
            request_context=RequestContext(
                request_id=_text(context.get("requestId")),
                domain_name=_text(context.get("domainName")),
                stage=_text(context.get("stage")),
            ),
        )

    @property
    def path(self) -> str:
        """The path routes match: rawPath without the stage, which a named (non-$default) stage puts first."""
        stage = self.request_context.stage
        if stage and stage != "$default":
            prefix = f"/{stage}"
            if self.raw_path == prefix:
                return "/"
            if self.raw_path.startswith(prefix + "/"):
                return self.raw_path[len(prefix) :]
        return self.raw_path


class _Route(NamedTuple):
    """A registered route: method, path pattern and the function answering it."""

    method: str
    pattern: re.Pattern[str]
    function: Callable[..., Response]


class Router:
    """Routes payload 2.0 events by method and path; failures become answers through the exception handlers."""

    lambda_context: LambdaContext  # set by resolve, for the route being called

    def __init__(self) -> None:
        self.current_event = HttpRequest()
        self._static: dict[tuple[str, str], Callable[..., Response]] = {}
        self._dynamic: list[_Route] = []
        self._exception_handlers: dict[type, Callable[[Any], Response]] = {}
        self._table: list[tuple[str, str, Callable[..., Response]]] = []

    def get(self, path: str) -> Callable[[RouteFunction], RouteFunction]:
        return self._route("GET", path)

    def post(self, path: str) -> Callable[[RouteFunction], RouteFunction]:
        return self._route("POST", path)

    def put(self, path: str) -> Callable[[RouteFunction], RouteFunction]:
        return self._route("PUT", path)

    def delete(self, path: str) -> Callable[[RouteFunction], RouteFunction]:
        return self._route("DELETE", path)

    def routes(self) -> list[tuple[str, str, Callable[..., Response]]]:
        """Every route as registered: (method, path with `<name>` segments, function), in registration order."""
        return list(self._table)

    def exception_handlers(self) -> dict[type, Callable[[Any], Response]]:
        """The registered answers per exception class (NotFoundError's is the not-found page)."""
        return dict(self._exception_handlers)

    def not_found(self, handler: ExceptionHandler[NotFoundError]) -> ExceptionHandler[NotFoundError]:
        """The answer to a path no route serves, or a method the path's routes do not take."""
        return self.exception_handler(NotFoundError)(handler)

    def exception_handler(
        self, exc_class: type[Handled]
    ) -> Callable[[ExceptionHandler[Handled]], ExceptionHandler[Handled]]:
        """Register the answer to exc_class raised by a route; for each exception the handler of the nearest class
        in its MRO answers."""

        def register(handler: ExceptionHandler[Handled]) -> ExceptionHandler[Handled]:
            self._exception_handlers[exc_class] = handler
            return handler

        return register

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        """The proxy result for one event. An exception without a handler propagates (Lambda reports an error)."""
        self.current_event = request = HttpRequest.from_event(event)
        self.lambda_context = context
        try:
            function, arguments = self._match(request.method, request.path)
            response = function(**arguments)
        except Exception as exc:
            response = self._handle(exc)
        return response.proxy_result()

    def answer_for(self, exc: Exception) -> Response:
        """The answer the exception handlers give exc (as if a route had raised it): logged and counted by them."""
        return self._handle(exc)

    def _route(self, method: str, path: str) -> Callable[[RouteFunction], RouteFunction]:
        if not path.startswith("/"):
            raise ValueError(f"route path {path!r} must start with /")
        pieces = _PARAMETER.split(path)  # literal, name, literal, name, ..., literal

        def register(function: RouteFunction) -> RouteFunction:
            if len(pieces) == 1:
                if (method, path) in self._static:
                    raise ValueError(f"{method} {path} is routed twice")
                self._static[(method, path)] = function
            else:
                regex = "".join(
                    re.escape(piece) if index % 2 == 0 else f"(?P<{piece}>[^/]+)" for index, piece in enumerate(pieces)
                )
                self._dynamic.append(_Route(method, re.compile(regex), function))
            self._table.append((method, path, function))
            return function

        return register

    def _match(self, method: str, path: str) -> tuple[Callable[..., Response], dict[str, str]]:
        static = self._static.get((method, path))
        if static is not None:
            return static, {}
        for route in self._dynamic:
            if route.method == method and (found := route.pattern.fullmatch(path)):
                # rawPath keeps the client's percent-encoding; a parameter is its decoded segment, as API Gateway's
                # own pathParameters are.
                return route.function, {name: unquote(value) for name, value in found.groupdict().items()}
        raise NotFoundError(f"{method} {path}")

    def _handle(self, exc: Exception) -> Response:
        for cls in type(exc).__mro__:
            handler = self._exception_handlers.get(cls)
            if handler is not None:
                return handler(exc)
        if isinstance(exc, NotFoundError):
            return Response(404, "application/json", '{"statusCode":404,"message":"Not found"}')
        raise exc


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: object) -> dict[str, str]:
    """A mapping's string-to-string items; anything else in a malformed event is dropped."""
    return {k: v for k, v in _mapping(value).items() if isinstance(k, str) and isinstance(v, str)}


def _parse_cookies(value: object) -> dict[str, str]:
    """The payload 2.0 `cookies` list (["name=value", ...]) by name; the last of a repeated name wins, a piece
    without "=" is skipped."""
    entries = [entry for entry in value if isinstance(entry, str)] if isinstance(value, list) else []
    cookies: dict[str, str] = {}
    for piece in "; ".join(entries).split(";"):
        name, equals, content = piece.strip().partition("=")
        if equals:
            cookies[name.strip()] = content.strip()
    return cookies
