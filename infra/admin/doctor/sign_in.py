"""The sign-in check: GET /login must send the browser to the configured region's authorize page with the stack's
client id, scopes and (only when RedirectUri is set) its callback URL. The state in that redirect is never shown."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

from smartsheet_oauth.config import REGIONS, Config

from infra.admin.doctor.checklist import Check, failed, passed
from infra.admin.stack_facts import StackFacts

NAME: Final = "sign-in"
TIMEOUT_SECONDS: Final = 10


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    location: str | None


class Unreachable(RuntimeError):
    """No HTTP answer at all (DNS, TLS, connection refused, timeout)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None  # the redirect is what is checked, not where it leads


_OPENER: Final = urllib.request.build_opener(_NoRedirects)


def fetch(url: str) -> HttpAnswer:
    """GET `url` without following a redirect. Every HTTP request the doctor makes goes through here, so headers a
    server comes to require (the local gateway's) are added in one place."""
    request = urllib.request.Request(url, method="GET", headers={"Accept": "text/html"})  # noqa: S310 - http(s) only
    if urlsplit(url).scheme not in ("http", "https"):
        raise Unreachable(f"{url} is not an http(s) URL")
    try:
        with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
            return HttpAnswer(response.status, response.headers.get("Location"))
    except urllib.error.HTTPError as answer:  # 3xx (not followed), 4xx, 5xx
        location = answer.headers.get("Location") if answer.headers else None
        answer.close()
        return HttpAnswer(answer.code, location)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{type(reason).__name__}: {reason}") from None


@dataclass(frozen=True)
class SignInSettings:
    """What /login must send, from the stack's own settings."""

    login_url: str
    callback_url: str
    authorize_url: str
    client_id: str
    scopes: frozenset[str]
    redirect_uri: str | None  # sent only when set (the RedirectUri parameter)
    anonymous_login: bool


def settings_of(facts: StackFacts, config: Config) -> SignInSettings:
    """A deployed stack: its parameters (what CloudFormation was told, whatever version runs). The local stack: the
    configuration make dev computed from template.yaml, with the emulator's authorize page."""
    outputs = facts.outputs
    if facts.local:
        return SignInSettings(
            login_url=outputs["LoginUrl"],
            callback_url=outputs["CallbackUrl"],
            authorize_url=config.authorize_url,
            client_id=config.client_id,
            scopes=frozenset(config.scopes),
            redirect_uri=config.redirect_uri,
            anonymous_login=config.anonymous_login,
        )
    parameters = facts.parameters
    region = parameters.get("SmartsheetRegion") or "us"
    return SignInSettings(
        login_url=outputs.get("LoginUrl", ""),
        callback_url=outputs.get("CallbackUrl", ""),
        authorize_url=REGIONS.get(region, REGIONS["us"])[0],
        client_id=parameters.get("SmartsheetClientId", ""),
        scopes=frozenset((parameters.get("OAuthScopes") or " ".join(config.scopes)).split()),
        redirect_uri=parameters.get("RedirectUri") or None,
        anonymous_login=parameters.get("AnonymousLogin", "enabled") != "disabled",
    )


def check_sign_in(settings: SignInSettings, get: Callable[[str], HttpAnswer] = fetch) -> Check:
    if not settings.login_url:
        return failed(NAME, "the stack has no LoginUrl output", "redeploy the stack from this version (make deploy)")
    try:
        answer = get(settings.login_url)
    except Unreachable as exc:
        return failed(
            NAME,
            f"no answer from {settings.login_url} ({exc})",
            "check the LoginUrl output and your network; a stack still deploying answers nothing yet; on a custom "
            "domain (CustomDomainName), its DNS record must point at the CustomDomainTarget output",
        )
    return judge(answer, settings)


def judge(answer: HttpAnswer, settings: SignInSettings) -> Check:
    """The verdict on /login's answer."""
    if not settings.anonymous_login:
        if answer.status == 403:
            return passed(
                NAME,
                "/login refuses a sign-in without a connect session (AnonymousLogin=disabled)",
                "not exercised: the redirect to Smartsheet, which only a connect session starts (its login_url "
                "opens the connect page, whose button does); the doctor makes no connect session: check one by hand",
            )
        if answer.status in (301, 302, 303, 307):
            return failed(
                NAME,
                f"/login started a sign-in without a connect session although AnonymousLogin=disabled "
                f"({answer.status})",
                "the running version is older than the parameter: see the live-alias check below",
            )
    if answer.status != 302 or not answer.location:
        return failed(NAME, f"/login answered {answer.status}, not a 302 redirect to Smartsheet", _status_fix(answer))
    problems = _problems(answer.location, settings)
    redirect = (
        f"redirect_uri {settings.redirect_uri}"
        if settings.redirect_uri
        else "no redirect_uri (Smartsheet uses the app's registered redirect URL)"
    )
    if not problems:
        return passed(
            NAME,
            f"/login answers 302 to {settings.authorize_url} with client id {settings.client_id} and {redirect}",
        )
    (summary, fix), *more = problems
    return failed(NAME, summary, fix, *(f"also: {text} (fix: {how})" for text, how in more))


def _status_fix(answer: HttpAnswer) -> str:
    if answer.status >= 500:
        return "the AuthorizeFunction fails: read its log group (a configuration error names the variable)"
    if answer.status == 403:
        return "AnonymousLogin=disabled on the running version but not in the stack: see the live-alias check"
    if answer.status == 404:
        return "LoginUrl does not reach the broker's API: check the LoginUrl output (a custom domain's mapping?)"
    return "compare the LoginUrl output with the API Gateway console; redeploy (make deploy)"


def _problems(location: str, settings: SignInSettings) -> list[tuple[str, str]]:
    """What is wrong with the redirect, each with its fix (empty: nothing)."""
    found: list[tuple[str, str]] = []
    parts = urlsplit(location)
    page = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = {key: values[0] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    drift = "the running version is older than the stack's parameters: see the live-alias check below"
    if page != settings.authorize_url:
        found.append((f"/login redirects to {page}, not to {settings.authorize_url} (the configured region's)", drift))
    if query.get("response_type") != "code" or not query.get("state"):
        found.append(("the redirect lacks response_type=code or a state", "redeploy the broker (make deploy)"))
    if query.get("client_id") != settings.client_id:
        found.append(
            (
                f"/login sends client id {query.get('client_id') or '(none)'}, the stack's is {settings.client_id}",
                drift,
            )
        )
    if frozenset(query.get("scope", "").split()) != settings.scopes:
        found.append((f"/login asks for scopes {query.get('scope', '(none)')!r}, not the stack's OAuthScopes", drift))
    sent = query.get("redirect_uri")
    if sent != settings.redirect_uri:
        found.append(
            (
                f"/login sends redirect_uri {sent or '(none)'}, the stack's RedirectUri is "
                f"{settings.redirect_uri or '(empty)'}",
                drift,
            )
        )
    if settings.redirect_uri and settings.redirect_uri != settings.callback_url:
        found.append(
            (
                f"RedirectUri is {settings.redirect_uri}, not the stack's callback URL {settings.callback_url}: "
                "Smartsheet sends users back to the former",
                "set RedirectUri to the CallbackUrl output (or leave it empty) and deploy, and register that URL; "
                "if RedirectUri is a custom domain in front of this API, check that its /callback reaches the broker",
            )
        )
    return found
