"""The HTML pages a browser sees, and the security headers every answer carries."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src {img_src}; form-action {form_action}; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": _CSP.format(img_src="'none'", form_action="'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
}

_STYLE = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:36rem;margin:3rem auto;"
    "padding:0 1rem;color:#1f2933;background:#fff;line-height:1.5;overflow-wrap:anywhere}h1{font-size:1.5rem}"
    "a.button,button{display:inline-block;padding:.6rem 1.1rem;background:#0b5cad;color:#fff;border:0;"
    "border-radius:4px;text-decoration:none;font:inherit;cursor:pointer}a{color:#0b5cad}"
    "a.button:focus,button:focus{outline:3px solid #f59e0b;outline-offset:2px}"
    ".brand{display:flex;align-items:center;gap:.75rem;color:#3e4c59;font-weight:600}.brand img{max-height:2.5rem;"
    "max-width:10rem}.ref,footer{color:#52606d;font-size:.9rem}footer{margin-top:2rem}"
)


@dataclass(frozen=True, slots=True)
class Brand:
    """The integrator's name, support link and logo on every page (the AppName, SupportUrl, LogoUrl parameters)."""

    app_name: str = ""
    support_url: str | None = None
    logo_url: str | None = None

    @property
    def app(self) -> str:
        """How a sentence names the integrator's app."""
        return self.app_name or "the app"


def brand() -> Brand:
    """The deployment's brand (from its configuration; none when there is no valid configuration, e.g. in tests)."""
    from smartsheet_oauth.config import get_config  # noqa: PLC0415
    from smartsheet_oauth.domain.errors import ConfigError  # noqa: PLC0415

    try:
        config = get_config()
    except ConfigError:
        return Brand()
    return Brand(config.app_name, config.support_url, config.logo_url)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(*, form_action: str = "'none'") -> str:
    """The pages' CSP: nothing loads but the integrator's logo (its https origin, when LogoUrl is set)."""
    logo = brand().logo_url
    return _CSP.format(img_src=_origin(logo) if logo else "'none'", form_action=form_action)


def security_headers() -> dict[str, str]:
    """SECURITY_HEADERS with the CSP of this deployment's brand."""
    return {**SECURITY_HEADERS, "Content-Security-Policy": content_security_policy()}


def connect_page_headers(authorize_origin: str) -> dict[str, str]:
    """The connect page's form posts to the broker, whose answer redirects to Smartsheet's authorize page:
    browsers check form-action against every hop of that redirect too, so both are named (and nothing else)."""
    return {"Content-Security-Policy": content_security_policy(form_action=f"'self' {authorize_origin}")}


def _document(title: str, body: list[str]) -> str:
    """A small, self-contained page in the integrator's name. Everything it shows is escaped; it loads nothing but
    the integrator's logo."""
    mark = brand()
    header = []
    if mark.logo_url or mark.app_name:
        logo = (
            f'<img src="{escape(mark.logo_url, quote=True)}" alt="{escape(mark.app_name or "App")} logo">'
            if mark.logo_url
            else ""
        )
        header = [f'<header class="brand">{logo}<span>{escape(mark.app_name)}</span></header>']
    footer = []
    if mark.support_url:
        footer = [
            f'<footer><p>Need help? <a href="{escape(mark.support_url, quote=True)}">Contact'
            f" {escape(mark.app_name or 'the app')} support</a>.</p></footer>"
        ]
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
            *header,
            "<main>",
            f"<h1>{escape(title)}</h1>",
            *body,
            "</main>",
            *footer,
            "</body></html>",
        ]
    )


def page(title: str, message: str, *, link: tuple[str, str] | None = None, reference: str | None = None) -> str:
    """A page with a title, a message, maybe a button and a reference to quote to support."""
    parts = [f"<p>{escape(message)}</p>"]
    if link:
        href, label = link
        parts.append(f'<p><a class="button" href="{escape(href, quote=True)}">{escape(label)}</a></p>')
    if reference:
        parts.append(f'<p class="ref">Reference: <code>{escape(reference)}</code></p>')
    return _document(title, parts)


def signed_in(email: str) -> str:
    return page(
        "Smartsheet connected",
        f"Your Smartsheet account {email} is connected to {brand().app}. You can close this window.",
    )


def no_result(*, start_again: str | None) -> str:
    """GET /result without a result of this browser's to show: its 15 minutes are over, the sign-in ended in another
    browser, or none ended here. True in each case, and it claims nothing about the account."""
    again, link = _again(start_again)
    return page(
        "No sign-in result to show",
        "This page shows how a sign-in in this browser ended, for 15 minutes after it ends, and there is none to"
        f" show now. That does not mean anything went wrong: {brand().app} shows whether your Smartsheet account is"
        f" connected. {again}",
        link=link,
    )


def _again(start_again: str | None) -> tuple[str, tuple[str, str] | None]:
    """The last sentence and button of a page whose sign-in is over: start again here, or in the app."""
    if start_again is None:
        return f"Go back to {brand().app} and connect your Smartsheet account from there.", None
    return "Start again to connect your Smartsheet account.", (start_again, "Start again")


def sign_in_rejected(reason: str, *, start_again: str | None) -> str:
    """The callback could not go on with this sign-in; each reason worded for what it is."""
    again, link = _again(start_again)
    if reason == "missing_state":
        return page(
            "Nothing to finish here",
            f"This address is where Smartsheet sends you back after you sign in, and no sign-in came with it. {again}",
            link=link,
        )
    if reason == "nonce_mismatch":
        return page(
            "Finish in the browser where you started",
            "This sign-in was started in another browser, or this browser's cookies were cleared on the way."
            f" Nothing was connected. {again}",
            link=link,
        )
    if reason == "expired_state":
        return page(
            "This sign-in took too long",
            f"The sign-in expired before you came back from Smartsheet, so nothing was connected. {again}",
            link=link,
        )
    return page(
        "This sign-in link can't be used again",
        "This sign-in link has expired or was already used. If you connected a moment ago, your Smartsheet account"
        f" is connected and you can close this window. {again}",
        link=link,
    )


def expired_or_used() -> str:
    return sign_in_rejected("unknown_or_used_state", start_again="/login")


def declined() -> str:
    return page(
        "You declined access",
        f"You declined access to your Smartsheet account, so nothing was connected to {brand().app}.",
        link=("/login", "Try again"),
    )


def authorization_failed() -> str:
    return page(
        "Smartsheet could not authorize this app",
        f"Smartsheet did not grant {brand().app} access for this sign-in. Start again, or contact support if it"
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
    again = f"Go back to {brand().app} and connect again" if start_again is None else "Start again"
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
    """A malformed link or form. `detail` is for the logs, in a developer's words: the user reads what to do."""
    del detail
    return page(
        "This link is not valid",
        f"The link you followed is incomplete, too long or was changed on the way. Go back to {brand().app} and"
        " start again from there.",
    )


REGION_NAMES = {"us": "US", "eu": "EU", "au": "Australia", "gov": "Smartsheet Gov"}


def region_not_allowed(allowed: tuple[str, ...]) -> str:
    """/login?region= (or a connect session) named a region this deployment does not offer."""
    offered = ", ".join(f"{REGION_NAMES.get(name, name)} (region={name})" for name in allowed)
    return page(
        "This Smartsheet region is not available",
        f"{brand().app} does not connect Smartsheet accounts of the region this link asked for. It offers: {offered}."
        " Nothing was started; go back and choose one of these.",
    )


def region_conflict(existing_region: str, reference: str) -> str:
    """The Smartsheet user id that signed in is already connected from another region."""
    where = REGION_NAMES.get(existing_region, existing_region)
    return page(
        "This Smartsheet account can't be connected from this region",
        f"An account with the same Smartsheet user id is already connected to {brand().app} from Smartsheet"
        f" {where}. Nothing was changed and this sign-in's access was not kept. Connect from Smartsheet {where},"
        " or ask support to remove the other connection first.",
        reference=reference,
    )


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
        f"This link to connect your Smartsheet account has expired or was already used. Go back to {brand().app}"
        " and start connecting again to get a new one.",
    )


def connect(app_host: str, *, session: str, form_token: str, reconnect: bool = False) -> str:
    """The page a connect link opens: nothing happens until the user's click posts the form (a link scanner that
    fetches the link does not use it up). It names where the account will be connected (the app's name and the
    address it returns to), so someone who was sent another person's link can tell. A reconnect link says that only
    the account connected before can sign in (it names no account: the link is a bearer link)."""
    name = brand().app_name
    verb = "Reconnect" if reconnect else "Connect"
    title = f"{verb} your Smartsheet account to {name or app_host}"
    where = f"{name} ({app_host})" if name else app_host
    asked = (
        "asks you to reconnect the Smartsheet account you connected before: its access has stopped working. Sign in"
        " to Smartsheet with that same account."
        if reconnect
        else "asked to connect your Smartsheet account."
    )
    return _document(
        title,
        [
            f"<p>{escape(where)} {asked} Continue only if you started this in"
            f" {escape(name or app_host)} yourself. If someone sent you this link, close this page.</p>",
            '<form method="post" action="login">',
            f'<input type="hidden" name="session" value="{escape(session, quote=True)}">',
            f'<input type="hidden" name="form_token" value="{escape(form_token, quote=True)}">',
            f'<p><button type="submit" id="connect">{verb} Smartsheet</button></p>',
            "</form>",
        ],
    )


def connect_form_rejected() -> str:
    return page(
        "Connect from the connect page",
        "This request did not come from the connect page, so nothing was started. Open the connect link from"
        f" {brand().app} again and use its Connect button.",
    )


def bound_through_app() -> str:
    app = brand().app
    return page(
        f"Reconnect from {app}",
        f"This Smartsheet account is connected to an account in {app}. To reconnect it, go back to {app} and use its"
        " connect button.",
    )


def anonymous_login_disabled() -> str:
    app = brand().app
    return page(
        f"Connect from {app}",
        f"Connecting a Smartsheet account starts in {app}. Go back to {app} and use its connect button.",
    )


def binding_conflict(reason: str = "") -> str:
    """A connect session's sign-in that would merge two identities; `reason` says which of the two cases."""
    app = brand().app
    if reason == "end_user_has_another_smartsheet_account":
        message = (
            f"Your account in {app} is already connected to a different Smartsheet account. Nothing was changed."
            f" Sign in to Smartsheet with the account you connected before, or disconnect it in {app} first."
        )
    elif reason == "smartsheet_account_bound_to_another_end_user":
        message = (
            f"This Smartsheet account is already connected to another account in {app}. Nothing was changed."
            " Sign in to Smartsheet with another account, or disconnect this one from the other account first."
        )
    else:
        message = (
            f"Your account in {app} is already connected to a different Smartsheet account, or this Smartsheet"
            " account is already connected to someone else. Nothing was changed."
        )
    return page("This Smartsheet account can't be connected here", message)


def reconnect_wrong_account(back: str) -> str:
    """A reconnect link finished by another Smartsheet account than the connection's: nothing changed."""
    app = brand().app
    return page(
        "Sign in with the account you connected before",
        f"This link reconnects the Smartsheet account you connected to {app} before, and you signed in to"
        " Smartsheet with a different account. Nothing was changed. Sign out of Smartsheet, then ask"
        f" {app} for a new reconnect link and sign in with the account you connected before.",
        link=(back, f"Back to {app}"),
    )
