"""The HTML pages a browser sees, and the security headers every answer carries."""

from __future__ import annotations

from html import escape

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action {form_action}; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": _CSP.format(form_action="'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
}

_STYLE = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:36rem;margin:4rem auto;"
    "padding:0 1rem;color:#1f2933;line-height:1.5}h1{font-size:1.5rem}a.button,button{display:inline-block;"
    "padding:.5rem 1rem;background:#0b5cad;color:#fff;border:0;border-radius:4px;text-decoration:none;"
    "font:inherit;cursor:pointer}.ref{color:#616e7c;font-size:.85rem}"
)


def connect_page_headers(authorize_origin: str) -> dict[str, str]:
    """The connect page's form posts to the broker, whose answer redirects to Smartsheet's authorize page:
    browsers check form-action against every hop of that redirect too, so both are named (and nothing else)."""
    return {"Content-Security-Policy": _CSP.format(form_action=f"'self' {authorize_origin}")}


def page(title: str, message: str, *, link: tuple[str, str] | None = None, reference: str | None = None) -> str:
    """A small, self-contained page. Everything it shows is escaped; it loads nothing from elsewhere."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(message)}</p>",
    ]
    if link:
        href, label = link
        parts.append(f'<p><a class="button" href="{escape(href, quote=True)}">{escape(label)}</a></p>')
    if reference:
        parts.append(f'<p class="ref">Reference: <code>{escape(reference)}</code></p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def signed_in(email: str) -> str:
    return page(
        "Smartsheet connected",
        f"Your Smartsheet account {email} is connected. You can close this window.",
    )


def expired_or_used() -> str:
    return page(
        "This sign-in link has expired",
        "This sign-in link has expired or was already used. Start again to connect your Smartsheet account.",
        link=("/login", "Start again"),
    )


def declined() -> str:
    return page(
        "You declined access",
        "You declined access to your Smartsheet account, so nothing was connected.",
        link=("/login", "Try again"),
    )


def authorization_failed() -> str:
    return page(
        "Smartsheet could not authorize this app",
        "Smartsheet did not grant access for this sign-in. Start again, or contact the app's support if it"
        " keeps happening.",
        link=("/login", "Start again"),
    )


def smartsheet_error(reference: str) -> str:
    return page(
        "Smartsheet refused the sign-in",
        "Smartsheet did not accept this sign-in. Start again; if it keeps happening, contact support with the"
        " reference below.",
        link=("/login", "Start again"),
        reference=reference,
    )


def code_refused(start_again: str | None, reference: str) -> str:
    """Smartsheet refused the code this sign-in came back with. `start_again` is a /login address that starts a
    sign-in like this one; None when only the app can start one."""
    message = "Smartsheet did not accept this sign-in, perhaps because it took too long. Nothing was connected."
    again = "Go back to the app and connect again" if start_again is None else "Start again"
    return page(
        "This sign-in could not be finished",
        f"{message} {again}; if it keeps happening, contact support with the reference below.",
        link=None if start_again is None else (start_again, "Start again"),
        reference=reference,
    )


def unavailable(reference: str) -> str:
    return page(
        "Smartsheet is not answering right now",
        "We could not finish connecting your Smartsheet account because a service is busy or unavailable."
        " Please try again in a few minutes.",
        link=("/login", "Try again"),
        reference=reference,
    )


def bad_request(detail: str) -> str:
    return page("This request is not valid", detail, link=("/login", "Start again"))


def not_found() -> str:
    return page("Page not found", "There is nothing at this address.")


def internal_error(reference: str) -> str:
    return page(
        "Something went wrong",
        "We could not finish this request. Please try again; if it keeps happening, contact support with the"
        " reference below.",
        link=("/login", "Start again"),
        reference=reference,
    )


def connect_link_expired() -> str:
    return page(
        "This connect link has expired",
        "This link to connect your Smartsheet account has expired or was already used. Go back to the app and"
        " start connecting again to get a new one.",
    )


def connect(app_host: str, *, session: str, form_token: str) -> str:
    """The page a connect link opens: nothing happens until the user's click posts the form (a link scanner that
    fetches the link does not use it up). It names where the account will be connected, so someone who was sent
    another person's link can tell."""
    title = f"Connect your Smartsheet account to {app_host}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f"<p>{escape(app_host)} asked to connect your Smartsheet account. Continue only if you started this in"
            f" {escape(app_host)} yourself. If someone sent you this link, close this page.</p>",
            '<form method="post" action="login">',
            f'<input type="hidden" name="session" value="{escape(session, quote=True)}">',
            f'<input type="hidden" name="form_token" value="{escape(form_token, quote=True)}">',
            '<p><button type="submit" id="connect">Connect Smartsheet</button></p>',
            "</form></body></html>",
        ]
    )


def connect_form_rejected() -> str:
    return page(
        "Connect from the connect page",
        "This request did not come from the connect page, so nothing was started. Open the connect link from the app"
        " again and use its Connect button.",
    )


def bound_through_app() -> str:
    return page(
        "Reconnect from the app",
        "This Smartsheet account is connected to an app account. To reconnect it, go back to the app and use its"
        " connect button.",
    )


def anonymous_login_disabled() -> str:
    return page(
        "Connect from the app",
        "Connecting a Smartsheet account starts in the app you want to connect it to. Go back to the app and use"
        " its connect button.",
    )


def binding_conflict() -> str:
    return page(
        "This Smartsheet account can't be connected here",
        "Your account in the app is already connected to a different Smartsheet account, or this Smartsheet"
        " account is already connected to someone else. Nothing was changed. Disconnect the other connection in"
        " the app first, or sign in to Smartsheet with the account you connected before.",
    )
