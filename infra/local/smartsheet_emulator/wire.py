"""What the emulator says over HTTP: its paths, its replies (JSON, HTML pages, redirects, Smartsheet's error bodies)
and the query strings its endpoints read."""

from __future__ import annotations

import html
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from infra.local.smartsheet_emulator.errors import ERRORS, ApiError
from infra.local.smartsheet_emulator.settings import Settings

AUTHORIZE_PATH = "/b/authorize"
API_PREFIX = "/2.0"
TOKEN_PATH = API_PREFIX + "/token"
USERS_ME_PATH = API_PREFIX + "/users/me"
ADMIN_PREFIX = "/_emulator"

FORM = "application/x-www-form-urlencoded"
JSON = "application/json;charset=UTF-8"
HTML = "text/html; charset=utf-8"
_HTML_HEADERS = (
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    # No form-action directive: browsers apply it to the redirect after the consent POST, which
    # leaves for the app's callback on another origin.
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
)


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), JSON, headers)


def html_reply(status: int, title: str, content: str) -> Reply:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:36rem;margin:3rem auto;line-height:1.4}"
        "button{padding:.5rem 1.5rem;margin-right:.5rem}</style></head>"
        f"<body>{content}</body></html>"
    )
    return Reply(status, page.encode(), HTML, _HTML_HEADERS)


def redirect_reply(location: str) -> Reply:
    return Reply(302, b"", HTML, (("Location", location), ("Cache-Control", "no-store")))


def error_reply(exc: ApiError, settings: Settings) -> Reply:
    """Smartsheet's error body for `exc.code`, worded as the settings ask (`message` or `error_description`)."""
    spec = ERRORS[exc.code]
    message = f"{spec.message} {exc.detail}" if exc.detail else spec.message
    body: dict[str, Any] = {"errorCode": exc.code, settings.error_message_field: message}
    body["refId"] = secrets.token_hex(6)
    if spec.oauth_error is not None:
        body["error"] = spec.oauth_error
    headers: tuple[tuple[str, str], ...] = ()
    if exc.code == 4003 and settings.retry_after is not None:
        headers = (("Retry-After", str(settings.retry_after)),)
    return json_reply(spec.status, body, headers)


def first_values(query: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}


def with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    separator = "&" if "?" in url else "?"
    return url + separator + urlencode(params, quote_via=quote)
