"""The result page's reference: after a sign-in, /callback answers 303 See Other to /result and hands this browser a
short-lived, signed __Host- cookie saying how the sign-in ended. The page reads nothing else (no query, no path
value), so a link cannot make it say something that did not happen, and a reload or the back button reads the same
cookie again instead of spending a used state.

A sign-in of this browser that ended in a final failure (domain/errors.ANSWERS' final rows: declined, a refused code,
a binding conflict...) keeps its own answer at /callback (its status, page and reference are the contract) and sets the
same cookie with that outcome: a reload of the spent URL, back/forward to it, or /result then show that page again
instead of "this sign-in link can't be used again".

The value is `<payload>.<mac>`: the payload is base64url JSON (outcome: `connected` or the final answer's code, the
account's email (connected only), the expiry, a hash of the sign-in's state, so a used-state callback of *this* sign-in
can be told from another one, and for a failure the failed request's reference and what its page is drawn from), the
MAC an HMAC-SHA256 under a key derived from the app's client secret (only the callback function reads it). A rotated
client secret or a changed value opens as nothing: the page then says it has no result to show, which is true."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from smartsheet_oauth.edge.router import Cookie

# __Host-: Secure, Path=/, no Domain, so no other host (a sibling subdomain of execute-api.amazonaws.com) can plant
# one. SameSite=Lax: the 303 from /callback (itself a navigation from Smartsheet's site) still carries it.
RESULT_COOKIE = "__Host-smartsheet-oauth-result"
RESULT_PATH = "/result"
RESULT_SECONDS = 900
CONNECTED = "connected"
_LABEL = b"smartsheet-oauth-broker result page v1"
# A browser keeps a cookie of 4,096 bytes, name and attributes included: a result that does not fit (a refused code's
# start-again link carrying a long return_to) is not kept, and the browser's older result is cleared.
_MAX_VALUE = 3072
_NO_FACTS: Mapping[str, str | None] = MappingProxyType({})


class SignInResult(NamedTuple):
    """How a sign-in in this browser ended, as its signed cookie says."""

    outcome: str  # CONNECTED, or the code of a final callback answer (domain/errors.final_answer)
    email: str  # "" for a failure: no account is named
    expires_at: int
    state_hash: str
    reference: str = ""  # a failure's: the failed request's, which its log lines carry
    facts: Mapping[str, str | None] = _NO_FACTS  # a failure's: what its page is drawn from (edge/web.page_facts)


def _key(client_secret: str) -> bytes:
    # Its own key, derived from the client secret with a label: a MAC of ours is never a value Smartsheet signs.
    return hmac.new(client_secret.encode(), _LABEL, hashlib.sha256).digest()


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def seal(result: SignInResult, *, client_secret: str) -> str:
    fields: dict[str, object] = {"o": result.outcome, "e": result.email, "x": result.expires_at, "s": result.state_hash}
    if result.outcome != CONNECTED:
        fields.update(r=result.reference, f=dict(result.facts))
    payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
    mac = _b64(hmac.new(_key(client_secret), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def open_result(value: str | None, *, client_secret: str, now: int) -> SignInResult | None:
    """The result a cookie value holds, or None: absent, malformed, not ours (a changed value or another key), or
    past its expiry (the browser drops it at Max-Age; a clock or a kept copy does not stretch it)."""
    if not value or len(value) > _MAX_VALUE or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    expected = _b64(hmac.new(_key(client_secret), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        facts = fields.get("f", {})
        if not isinstance(facts, dict) or not all(isinstance(v, str | None) for v in facts.values()):
            return None
        result = SignInResult(
            str(fields["o"]), str(fields["e"]), int(fields["x"]), str(fields["s"]), str(fields.get("r", "")), facts
        )
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        return None
    return result if result.expires_at > now else None


def result_cookie(result: SignInResult, *, client_secret: str, now: int) -> Cookie:
    """The cookie keeping `result`; one that expires this browser's result now when `result` does not fit in one (an
    older sign-in's result is not this one's to show)."""
    value = seal(result, client_secret=client_secret)
    fits = len(value) <= _MAX_VALUE
    return Cookie(
        name=RESULT_COOKIE,
        value=value if fits else "",
        path="/",
        secure=True,
        http_only=True,
        same_site="Lax",
        max_age=result.expires_at - now if fits else 0,
    )
