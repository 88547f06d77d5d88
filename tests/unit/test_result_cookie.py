"""The result page's cookie (edge/result.py): what it holds opens only with the key it was sealed with, unchanged and
before its expiry; anything else opens as no result."""

from __future__ import annotations

import base64
import json

import pytest
from smartsheet_oauth.edge import result

SECRET = "client-secret-of-the-app"
NOW = 1_800_000_000
ADA = result.SignInResult(result.CONNECTED, "ada@example.com", NOW + result.RESULT_SECONDS, result.state_hash("s1"))


def test_a_sealed_result_opens_with_its_key_until_its_expiry() -> None:
    value = result.seal(ADA, client_secret=SECRET)

    assert result.open_result(value, client_secret=SECRET, now=NOW) == ADA
    assert result.open_result(value, client_secret=SECRET, now=ADA.expires_at - 1) == ADA
    assert result.open_result(value, client_secret=SECRET, now=ADA.expires_at) is None


def test_the_value_holds_no_state_and_is_a_plain_cookie_value() -> None:
    value = result.seal(ADA, client_secret=SECRET)

    assert "s1" not in value
    assert SECRET not in value
    assert all(c.isalnum() or c in "-_." for c in value)  # base64url without padding: nothing a jar would quote
    cookie = result.result_cookie(ADA, client_secret=SECRET, now=NOW)
    assert str(cookie) == (
        f"__Host-smartsheet-oauth-result={value}; Path=/; Max-Age=900; HttpOnly; Secure; SameSite=Lax"
    )


def _payload(value: str) -> dict[str, object]:
    payload = value.split(".", maxsplit=1)[0]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def _with(value: str, **fields: object) -> str:
    payload = {**_payload(value), **fields}
    encoded = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{encoded}.{value.split('.')[1]}"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "1",
        ".",
        "a.b.c",
        "x" * 2000,
        result.seal(ADA, client_secret="another-secret"),
        _with(result.seal(ADA, client_secret=SECRET), e="mallory@evil.example"),
        _with(result.seal(ADA, client_secret=SECRET), x=NOW + 10**9),
        _with(result.seal(ADA, client_secret=SECRET), o="connected", s="0" * 32),
        result.seal(ADA, client_secret=SECRET)[:-1],
    ],
    ids=lambda v: "none" if v is None else str(v)[:12],
)
def test_anything_else_opens_as_no_result(value: str | None) -> None:
    assert result.open_result(value, client_secret=SECRET, now=NOW) is None


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"o": "connected"}', b'{"o":1,"e":2,"x":"soon","s":3}'])
def test_a_signed_payload_of_the_wrong_shape_opens_as_no_result(payload: bytes) -> None:
    """Only the broker signs, but a payload it could not read must not be a 500."""
    import hashlib
    import hmac

    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    key = hmac.new(SECRET.encode(), b"smartsheet-oauth-broker result page v1", hashlib.sha256).digest()
    mac = base64.urlsafe_b64encode(hmac.new(key, encoded.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()

    assert result.open_result(f"{encoded}.{mac}", client_secret=SECRET, now=NOW) is None


def test_the_state_hash_tells_sign_ins_apart() -> None:
    assert result.state_hash("s1") == result.state_hash("s1")
    assert result.state_hash("s1") != result.state_hash("s2")
    assert len(result.state_hash("s1")) == 32


DECLINED = result.SignInResult(
    "denied", "", NOW + result.RESULT_SECONDS, result.state_hash("s2"), reference="req-1", facts={}
)
REFUSED = result.SignInResult(
    "invalid_code",
    "",
    NOW + result.RESULT_SECONDS,
    result.state_hash("s3"),
    reference="req-2",
    facts={"start_again": "/login?return_to=https%3A%2F%2Fapp.example.com%2F"},
)


@pytest.mark.parametrize("kept", [DECLINED, REFUSED, REFUSED._replace(facts={"start_again": None})], ids=str)
def test_a_failures_result_opens_with_its_reference_and_facts(kept: result.SignInResult) -> None:
    value = result.seal(kept, client_secret=SECRET)

    assert result.open_result(value, client_secret=SECRET, now=NOW) == kept
    assert "req-" not in value  # base64: nothing readable at a glance, though nothing in it is secret


def test_a_result_sealed_before_failures_were_kept_still_opens_as_connected() -> None:
    """A browser holding a cookie of the version before this one (no reference, no facts) during a deploy."""
    import hashlib
    import hmac

    old = json.dumps({"o": "connected", "e": "ada@example.com", "x": NOW + 60, "s": "0" * 32}, separators=(",", ":"))
    encoded = base64.urlsafe_b64encode(old.encode()).rstrip(b"=").decode()
    key = hmac.new(SECRET.encode(), b"smartsheet-oauth-broker result page v1", hashlib.sha256).digest()
    mac = base64.urlsafe_b64encode(hmac.new(key, encoded.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()

    opened = result.open_result(f"{encoded}.{mac}", client_secret=SECRET, now=NOW)

    assert opened == result.SignInResult(result.CONNECTED, "ada@example.com", NOW + 60, "0" * 32)
    assert (opened.reference, opened.facts) == ("", {})


@pytest.mark.parametrize("facts", [[], "x", {"start_again": 1}, {"a": ["b"]}, {"a": {"b": "c"}}], ids=str)
def test_signed_facts_of_the_wrong_shape_open_as_no_result(facts: object) -> None:
    import hashlib
    import hmac

    payload = json.dumps({"o": "denied", "e": "", "x": NOW + 60, "s": "0" * 32, "r": "req", "f": facts}).encode()
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    key = hmac.new(SECRET.encode(), b"smartsheet-oauth-broker result page v1", hashlib.sha256).digest()
    mac = base64.urlsafe_b64encode(hmac.new(key, encoded.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()

    assert result.open_result(f"{encoded}.{mac}", client_secret=SECRET, now=NOW) is None


def test_a_result_too_large_for_a_cookie_clears_the_browsers_result_instead() -> None:
    huge = REFUSED._replace(facts={"start_again": "/login?return_to=" + "%25" * 2000})

    cookie = result.result_cookie(huge, client_secret=SECRET, now=NOW)

    assert (cookie.name, cookie.value, cookie.max_age) == (result.RESULT_COOKIE, "", 0)
    fitting = result.result_cookie(REFUSED, client_secret=SECRET, now=NOW)
    assert fitting.value == result.seal(REFUSED, client_secret=SECRET)
    assert len(fitting.value) < 1024
