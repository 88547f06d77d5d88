"""Who may talk to the local servers (embedded AWS, Smartsheet emulator, gateway): this machine's programs and the
servers' own pages, never a web page the developer happens to visit.

A page elsewhere can make the browser send requests to 127.0.0.1 (fetch(), forms, images), and through DNS
rebinding (its own host name, re-pointed at 127.0.0.1) even read the answers as its own. Both are told apart from
the stack's own traffic by what browsers put in every request and pages cannot forge:
- `Host`: a rebinding page's requests name the attacker's host; the stack's clients name a loopback address.
- `Origin`: a cross-origin fetch() or form post names the page's origin. A page that sends no referrer (every
  page of the broker and the emulator: Referrer-Policy no-referrer) posts its forms with `Origin: null`; that
  is accepted only with `Sec-Fetch-Site: same-origin`, which a page elsewhere cannot claim.
- `Sec-Fetch-Site`: for a server no page links to (the embedded AWS), a request a page elsewhere started
  (cross-site, or same-site: another loopback port) is refused even without an Origin (an image, a link).
Programs (boto3, urllib, requests, the functions) send none of the browser headers and the loopback Host.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")
# Sec-Fetch-Site values of requests that no page elsewhere started: the user typed the URL or used a bookmark
# ("none"), or a page of this very origin sent it.
_OWN_FETCH_SITES: Final = frozenset({"none", "same-origin"})


def _loopback_authorities(port: int) -> frozenset[str]:
    names = [f"{name}:{port}" for name in LOOPBACK_NAMES]
    if port == 80:  # a client may leave the default port out
        names += LOOPBACK_NAMES
    return frozenset(names)


def refusal(
    *,
    port: int,
    host: str | None,
    origin: str | None,
    fetch_site: str | None,
    pages_elsewhere_link_here: bool,
) -> str | None:
    """Why a request to the local server on `port` is refused, or None when it may be served.

    `pages_elsewhere_link_here`: the server has pages a browser reaches from other sites by navigation (the
    gateway's /login, the emulator's authorize page); for one without (the embedded AWS), requests that a page
    elsewhere started are refused whatever they carry."""
    authorities = _loopback_authorities(port)
    if host is None or host.strip().lower() not in authorities:
        return f"the Host header must name this machine's loopback address with port {port} (127.0.0.1:{port})"
    if origin is not None:
        own_origins = {f"http://{authority}" for authority in authorities}
        from_own_page = origin.strip().lower() == "null" and (fetch_site or "").lower() == "same-origin"
        if origin.strip().lower() not in own_origins and not from_own_page:
            return "requests from web pages of other origins are refused: the local stack serves this machine only"
    if not pages_elsewhere_link_here and fetch_site is not None and fetch_site.lower() not in _OWN_FETCH_SITES:
        return "requests that web pages start are refused: the local stack serves this machine's programs only"
    return None


class _Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


def refusal_of(headers: _Headers, *, port: int, pages_elsewhere_link_here: bool) -> str | None:
    """`refusal` for an http.server request's headers."""
    return refusal(
        port=port,
        host=headers.get("Host"),
        origin=headers.get("Origin"),
        fetch_site=headers.get("Sec-Fetch-Site"),
        pages_elsewhere_link_here=pages_elsewhere_link_here,
    )


class LoopbackOnlyApplication:
    """A WSGI application served only to requests `refusal` lets through; the others get 403 and never reach it."""

    def __init__(self, app: WSGIApplication, *, pages_elsewhere_link_here: bool) -> None:
        self._app = app
        self._pages_elsewhere_link_here = pages_elsewhere_link_here

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reason = refusal(
            port=int(environ["SERVER_PORT"]),
            host=environ.get("HTTP_HOST"),
            origin=environ.get("HTTP_ORIGIN"),
            fetch_site=environ.get("HTTP_SEC_FETCH_SITE"),
            pages_elsewhere_link_here=self._pages_elsewhere_link_here,
        )
        if reason is None:
            return self._app(environ, start_response)
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        start_response("403 FORBIDDEN", headers)
        return [f"Forbidden: {reason}\n".encode()]
