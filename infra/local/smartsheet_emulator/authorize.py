"""The emulated authorize page (`/b/authorize`): the request's checks, the consent form with Allow and Deny, the
error pages, and the redirect back to the app with a code or an `error`.

What it accepts between scope names, and the evidence (the sources SMARTSHEET.md names, read for issue 20):
- Smartsheet's reference and OAuth walkthrough document a space-delimited list, shown as
  `scope=READ_SHEETS%20WRITE_SHEETS`; the C# and Ruby SDKs join with a space and percent-encode it (`%20`).
- The official Java SDK (smartsheet-java-sdk, `OAuthFlowImpl.newAuthorizationURL`) joins the names with commas
  (`READ_SHEETS,WRITE_SHEETS`, sent as `%2C`). Smartsheet ships and maintains that SDK; an emulator that refused
  commas would refuse it. So commas are accepted (`Settings.comma_separated_scopes`, on by default; a test turns
  it off to prove a client sends spaces).
- Standard OAuth client libraries (authlib; requests-oauthlib through oauthlib) join with a space and form-encode
  it as `+` (`scope=READ_SHEETS+WRITE_SHEETS`), and integrators use them against Smartsheet (public samples do).
  In application/x-www-form-urlencoded, which is how servlet containers and web frameworks decode a query, `+` is
  a space: a server that decodes its query as forms do cannot tell `+` from `%20`. So `+` is always accepted;
  refusing it would take a raw-query check no real server makes (the emulator made it until issue 20).
- The broker itself sends `%20`, the documented form (tests/unit/test_smartsheet_urls.py holds it to that).
Proved with the official Python SDK's token calls and with authlib running the whole flow
(tests/emulator/test_oauth_libraries.py).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from infra.local.smartsheet_emulator.accounts import SCOPES, App
from infra.local.smartsheet_emulator.errors import ERRORS, AuthorizeError, AuthorizeRedirect
from infra.local.smartsheet_emulator.ledger import Ledger
from infra.local.smartsheet_emulator.model import SmartsheetModel
from infra.local.smartsheet_emulator.wire import (
    AUTHORIZE_PATH,
    Reply,
    first_values,
    html_reply,
    redirect_reply,
    with_query,
)

# Smartsheet reports the code's remaining validity in milliseconds, measured after its own processing,
# so a 10-minute code arrives as expires_in=599135, not 600000. Clients must not assume a round number.
_CALLBACK_EXPIRES_IN_OFFSET_MS = 865


@dataclass(slots=True)
class AuthorizeRequest:
    app: App
    response_type: str
    scopes: tuple[str, ...]
    state: str
    redirect_uri: str | None  # as sent: the consent form carries it back unchanged


def _parse_scopes(decoded: str, *, commas: bool) -> tuple[str, ...] | None:
    """The scope names of an authorize request, as a form-decoding server reads them.

    `decoded` is the query value already form-decoded, so `%20` and `+` are both a space here, as they are to every
    server that decodes its query as forms do: none can tell them apart. Commas separate names too unless `commas`
    is off (the module's docstring has the evidence). Unknown names, or none, are None (the redirect with
    `error=invalid_scope`)."""
    names = (decoded.replace(",", " ") if commas else decoded).split()
    if not names or any(name not in SCOPES for name in names):
        return None
    return tuple(dict.fromkeys(names))


class AuthorizePage:
    """Answers the authorize page over HTTP (`get`, `post`) and as a Python call (`consent`)."""

    def __init__(self, model: SmartsheetModel, ledger: Ledger, *, region: str | None = None) -> None:
        self._model = model
        self._ledger = ledger
        self._region = region

    def consent(self, authorize_url: str, user_id: int | str | None, allow: bool) -> str:
        """Answer the page as the user would; the callback URL the browser is sent to. AuthorizeError where Smartsheet
        shows an error page instead of redirecting."""
        parts = urlsplit(authorize_url)
        if not parts.path.endswith(AUTHORIZE_PATH):
            raise ValueError(f"not an authorize URL (path must end with {AUTHORIZE_PATH}): {parts.path!r}")
        try:
            request = self._validate(first_values(parts.query))
            return self._decide(request, user_id, allow)
        except AuthorizeRedirect as redirect:
            self._ledger.count("authorize", redirect.error)
            return redirect.location
        except AuthorizeError as exc:
            self._ledger.count("authorize", str(exc.error_code or "bad_request"))
            raise

    def get(self, query: str) -> Reply:
        params = first_values(query)
        settings = self._model.settings
        try:
            request = self._validate(params)
            if settings.auto_consent is not None:
                return redirect_reply(
                    self._decide(request, settings.auto_consent_user_id, settings.auto_consent == "allow")
                )
        except AuthorizeError as exc:
            return self._error_page(exc)
        except AuthorizeRedirect as redirect:
            self._ledger.count("authorize", redirect.error)
            return redirect_reply(redirect.location)
        self._ledger.count("authorize", "page")
        return self._consent_page(request)

    def post(self, form: Mapping[str, str]) -> Reply:
        decision = form.get("decision")
        try:
            if decision not in ("allow", "deny"):
                raise AuthorizeError("Choose Allow or Deny.")
            request = self._validate(form)
            return redirect_reply(self._decide(request, form.get("user_id") or None, decision == "allow"))
        except AuthorizeError as exc:
            return self._error_page(exc)
        except AuthorizeRedirect as redirect:
            self._ledger.count("authorize", redirect.error)
            return redirect_reply(redirect.location)

    def _validate(self, params: Mapping[str, str]) -> AuthorizeRequest:
        app = self._model.app_named(params.get("client_id", ""))
        if app is None:
            raise AuthorizeError("The client_id is missing or unknown.", 1067)
        sent_redirect = params.get("redirect_uri")
        if sent_redirect is not None and sent_redirect != app.redirect_uri:
            raise AuthorizeError(ERRORS[1073].message, 1073)
        state = params.get("state", "")
        response_type = params.get("response_type", "")
        if response_type != "code":
            error = "unsupported_response_type"
            raise AuthorizeRedirect(with_query(app.redirect_uri, [("error", error), ("state", state)]), error)
        scopes = _parse_scopes(params.get("scope", ""), commas=self._model.settings.comma_separated_scopes)
        if scopes is None:
            error = "invalid_scope"
            raise AuthorizeRedirect(with_query(app.redirect_uri, [("error", error), ("state", state)]), error)
        return AuthorizeRequest(app, response_type, scopes, state, sent_redirect)

    def _decide(self, request: AuthorizeRequest, user_id: int | str | None, allow: bool) -> str:
        redirect = request.app.redirect_uri
        if not allow:
            self._ledger.count("authorize", "deny")
            return with_query(redirect, [("error", "access_denied"), ("state", request.state)])
        try:
            user = self._model.user(user_id)
        except ValueError as exc:
            raise AuthorizeError(str(exc)) from None
        code = self._model.new_code(request.app, user, request.scopes)
        self._ledger.count("authorize", "allow")
        expires_in_ms = max(0, int(self._model.settings.code_lifetime * 1000) - _CALLBACK_EXPIRES_IN_OFFSET_MS)
        return with_query(redirect, [("code", code), ("expires_in", str(expires_in_ms)), ("state", request.state)])

    def _error_page(self, exc: AuthorizeError) -> Reply:
        self._ledger.count("authorize", str(exc.error_code or "bad_request"))
        code = f"<p>errorCode: <code>{exc.error_code}</code></p>" if exc.error_code else ""
        content = f"<h1>Smartsheet could not authorize this app</h1><p>{html.escape(exc.message)}</p>{code}"
        return html_reply(exc.status, "Authorization error", content)

    def _consent_page(self, request: AuthorizeRequest) -> Reply:
        hidden = [
            ("response_type", request.response_type),
            ("client_id", request.app.client_id),
            ("scope", " ".join(request.scopes)),
            ("state", request.state),
        ]
        if request.redirect_uri is not None:
            hidden.append(("redirect_uri", request.redirect_uri))
        inputs = "".join(f'<input type="hidden" name="{name}" value="{html.escape(value)}">' for name, value in hidden)
        options = "".join(
            f'<option value="{user.id}"{" selected" if index == 0 else ""}>'
            f"{html.escape(f'{user.first_name} {user.last_name} <{user.email}>')}</option>"
            for index, user in enumerate(self._model.users)
        )
        scopes = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in request.scopes)
        region = f'<p id="region">Smartsheet region: {html.escape(self._region)}</p>' if self._region else ""
        content = (
            f'<h1 id="app-name">{html.escape(request.app.name)}</h1>'
            "<p>would like to access your Smartsheet account with these permissions:</p>"
            f'<ul id="scopes">{scopes}</ul>{region}'
            f'<form method="post" action="{AUTHORIZE_PATH}">{inputs}'
            f'<p><label for="user">Signed in as </label><select id="user" name="user_id">{options}</select></p>'
            '<button id="allow" type="submit" name="decision" value="allow">Allow</button>'
            '<button id="deny" type="submit" name="decision" value="deny">Deny</button>'
            "</form>"
        )
        return html_reply(200, f"Authorize {request.app.name}", content)
