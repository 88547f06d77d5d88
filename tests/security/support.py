"""What the security tests check again and again: the response headers, the emulator's API calls, captured output."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    import pytest

    from infra.local.smartsheet_emulator import SmartsheetEmulator

# The broker's pages load nothing: these are the only source expressions a directive may hold.
FIRST_PARTY_SOURCES = frozenset({"'none'", "'self'", "'unsafe-inline'"})
ONE_YEAR = 365 * 24 * 3600


def header(headers: dict[str, str], name: str) -> str | None:
    """A header by name, whatever its case (Lambda answers keep the case the code chose; HTTP may not)."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def security_header_problems(headers: dict[str, str], form_action: Iterable[str] = ()) -> list[str]:
    """Everything wrong with an answer's security headers (empty when all is well). `form_action`: the origins
    beyond the broker a page's form may lead to (the connect page's: Smartsheet's authorize page)."""
    problems = []
    if "no-store" not in (header(headers, "Cache-Control") or ""):
        problems.append("Cache-Control lacks no-store")
    if header(headers, "Referrer-Policy") != "no-referrer":
        problems.append("Referrer-Policy is not no-referrer")
    if header(headers, "X-Content-Type-Options") != "nosniff":
        problems.append("X-Content-Type-Options is not nosniff")
    hsts = header(headers, "Strict-Transport-Security") or ""
    max_age = re.search(r"max-age=(\d+)", hsts)
    if not max_age or int(max_age.group(1)) < ONE_YEAR:
        problems.append(f"Strict-Transport-Security is weak or missing: {hsts!r}")
    csp = header(headers, "Content-Security-Policy")
    if not csp:
        return [*problems, "no Content-Security-Policy"]
    directives: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    if directives.get("frame-ancestors") != ["'none'"]:
        problems.append("CSP frame-ancestors is not 'none'")
    if directives.get("default-src") != ["'none'"]:
        problems.append("CSP default-src is not 'none'")
    for name, sources in directives.items():
        allowed = FIRST_PARTY_SOURCES | (set(form_action) if name == "form-action" else set())
        foreign = [source for source in sources if source.lower() not in allowed]
        if foreign:
            problems.append(f"CSP {name} allows other sources: {foreign}")
    if "'unsafe-inline'" in directives.get("script-src", []):
        problems.append("CSP allows inline scripts")
    return problems


def assert_security_headers(headers: dict[str, str], what: str = "answer", form_action: Iterable[str] = ()) -> None:
    problems = security_header_problems(headers, form_action)
    assert not problems, f"{what}: {problems}"


def state_of(authorize_url: str) -> str:
    return parse_qs(urlsplit(authorize_url).query)["state"][0]


def b64url_bytes(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def smartsheet_api_calls(emulator: SmartsheetEmulator) -> dict[str, int]:
    """Requests that reached the emulator's API (token endpoint, /users/me, revoke), by endpoint; zeros left out."""
    counts = emulator.counts
    calls = {"token": len(emulator.token_requests), "users_me": counts["users_me"], "revoke": counts["revoke"]}
    return {endpoint: n for endpoint, n in calls.items() if n}


@dataclass
class Capture:
    """Everything the broker writes while a test runs: its JSON log lines, every library's log records,
    and what reaches stdout/stderr (EMF metrics are printed there)."""

    broker_log: io.StringIO
    capsys: pytest.CaptureFixture[str]
    caplog: pytest.LogCaptureFixture
    printed: list[str] = field(default_factory=list)

    def drain(self) -> None:
        out, err = self.capsys.readouterr()
        self.printed.extend([out, err])

    def broker_lines(self) -> list[dict[str, Any]]:
        """The broker's own log lines, parsed (each is one JSON object)."""
        return [json.loads(line) for line in self.broker_log.getvalue().splitlines() if line.strip()]

    def metric_documents(self) -> list[dict[str, Any]]:
        """The EMF documents Powertools Metrics printed."""
        self.drain()
        documents = []
        for chunk in self.printed:
            for line in chunk.splitlines():
                if line.startswith("{") and '"_aws"' in line:
                    documents.append(json.loads(line))
        return documents

    def records(self) -> list[str]:
        """Every other library's log records (botocore, urllib3, Powertools' own modules...), rendered with
        their arguments and any extra fields."""
        rendered = []
        standard = set(vars(logging.makeLogRecord({})))
        for record in self.caplog.records:
            extras = {key: value for key, value in vars(record).items() if key not in standard}
            rendered.append(f"{record.name} {record.levelname} {record.getMessage()} {extras!r}")
        return rendered

    def everything(self) -> str:
        self.drain()
        return "\n".join([self.broker_log.getvalue(), *self.printed, *self.records()])


# What the broker's pages are made of: a handful of tags, a few attributes, links that stay on the broker.
PAGE_TAGS = {
    "html": {"lang"},
    "head": set(),
    "meta": {"charset", "name", "content"},
    "title": set(),
    "style": set(),
    "body": set(),
    "main": set(),
    "header": {"class"},  # the integrator's name and logo (AppName, LogoUrl: none in these tests' stacks)
    "footer": set(),  # its support link (SupportUrl)
    "span": set(),
    "img": {"src", "alt"},
    "h1": set(),
    "p": {"class"},
    "a": {"class", "href"},
    "code": set(),
    "form": {"method", "action"},
    "input": {"type", "name", "value"},
    "button": {"type", "id"},
}


class _PageChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in PAGE_TAGS:
            self.problems.append(f"unexpected <{tag}>")
            return
        for name, value in attrs:
            if name not in PAGE_TAGS[tag]:
                self.problems.append(f"unexpected attribute {name} on <{tag}>")
            if name == "href" and (not value or not value.startswith("/") or value.startswith("//")):
                self.problems.append(f"link off the broker: {value!r}")
            if name == "src" and (not value or not value.startswith("https://")):
                self.problems.append(f"an image that is not the https logo: {value!r}")
            if name == "action" and value != "login":  # the connect page's form posts to /login beside it
                self.problems.append(f"form off the broker: {value!r}")

    def handle_decl(self, decl: str) -> None:
        if decl.lower() != "doctype html":
            self.problems.append(f"unexpected declaration {decl!r}")

    def handle_comment(self, data: str) -> None:
        self.problems.append("a comment")

    def handle_pi(self, data: str) -> None:
        self.problems.append("a processing instruction")


def page_problems(body: str) -> list[str]:
    """Whatever in a page is not the broker's own markup: an echoed value that escaped its escaping shows here."""
    checker = _PageChecker()
    checker.feed(body)
    checker.close()
    return checker.problems
