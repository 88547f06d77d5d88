"""smartsheet_oauth_client's webhook check against the broker's signer (domain/webhook_signature.py): a genuine
delivery passes; a missing, malformed, tampered, foreign, stale or replayed one is refused with its own error."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from smartsheet_oauth.domain.webhook_signature import signature_header
from smartsheet_oauth_client import (
    WebhookReplayed,
    WebhookSignatureError,
    WebhookSignatureExpired,
    WebhookSignatureInvalid,
    WebhookSignatureMalformed,
    WebhookSignatureMissing,
    WebhookVerifier,
    verify_webhook,
)

SECRET = "Xq3kV9mZ0pL2wR7tY5uB8nC1dF4gH6jK"
NOW = 1_796_300_000
BODY = json.dumps({"id": "e-1", "detail-type": "Connection Created", "detail": {"connection_id": "1"}}).encode()


def signed(body: bytes = BODY, at: int = NOW, secret: str = SECRET) -> str:
    return signature_header(secret, at, body)


def test_a_genuine_delivery_gives_the_event() -> None:
    assert verify_webhook(BODY, signed(), SECRET, now=NOW) == json.loads(BODY)


def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_raw_body() -> None:
    """The format docs/webhooks.md gives to receivers in other languages."""
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signed() == f"t={NOW},v1={expected}"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_a_missing_signature_is_refused(header: str | None) -> None:
    with pytest.raises(WebhookSignatureMissing):
        verify_webhook(BODY, header, SECRET, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "v1=" + "a" * 64,  # no timestamp
        f"t={NOW}",  # no signature
        f"t={NOW},v1=abc",  # too short
        f"t={NOW},v1=" + "G" * 64,  # not hex
        "t=-5,v1=" + "a" * 64,
        "t=soon,v1=" + "a" * 64,
        f"t={NOW},t={NOW},v1=" + "a" * 64,  # two timestamps
        f"t={NOW};v1=" + "a" * 64,
        "garbage",
        f"t={'9' * 40},v1=" + "a" * 64,
    ],
)
def test_a_malformed_signature_is_refused(header: str) -> None:
    with pytest.raises(WebhookSignatureMalformed):
        verify_webhook(BODY, header, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (BODY.replace(b"Created", b"Revoked"), signed()),  # the body changed
        (BODY + b" ", signed()),  # one byte more
        (BODY, signed(at=NOW - 1).replace(f"t={NOW - 1}", f"t={NOW}")),  # the timestamp changed
        (BODY, signed(secret="another stack's secret")),
        (BODY, f"t={NOW},v1=" + "0" * 64),
    ],
    ids=["body", "extra-byte", "timestamp", "foreign-secret", "zeros"],
)
def test_a_tampered_or_foreign_delivery_is_refused(body: bytes, header: str) -> None:
    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(body, header, SECRET, now=NOW)


@pytest.mark.parametrize("skew", [301, -301, 86400])
def test_a_signature_outside_the_tolerance_window_is_refused(skew: int) -> None:
    with pytest.raises(WebhookSignatureExpired):
        verify_webhook(BODY, signed(), SECRET, now=NOW + skew)
    assert verify_webhook(BODY, signed(), SECRET, now=NOW + skew, tolerance_seconds=abs(skew)) == json.loads(BODY)


def test_a_tampered_signature_is_refused_as_invalid_even_when_it_is_also_stale() -> None:
    """The signature is checked before the time: a forged delivery is reported as forged, whatever its timestamp."""
    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(BODY + b"x", signed(), SECRET, now=NOW + 10_000)


def test_while_rotating_either_secret_is_taken() -> None:
    assert verify_webhook(BODY, signed(secret="old"), ["new", "old"], now=NOW)
    assert verify_webhook(BODY, signed(secret="new"), ["new", "old"], now=NOW)
    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(BODY, signed(secret="older"), ["new", "old"], now=NOW)


def test_a_later_scheme_beside_v1_is_ignored_and_any_matching_v1_passes() -> None:
    header = f"{signed()},v2=whatever,v1={'0' * 64}"
    assert verify_webhook(BODY, header, SECRET, now=NOW) == json.loads(BODY)


def test_a_parsed_body_or_an_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        verify_webhook(BODY.decode(), signed(), SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="secret"):
        verify_webhook(BODY, signed(), "", now=NOW)
    with pytest.raises(ValueError, match="secret"):
        verify_webhook(BODY, signed(), [], now=NOW)


def test_a_signed_body_that_is_not_a_json_object_is_refused() -> None:
    for body in (b"not json", b"[1, 2]"):
        with pytest.raises(WebhookSignatureInvalid):
            verify_webhook(body, signed(body), SECRET, now=NOW)


def test_every_refusal_is_a_webhook_signature_error() -> None:
    for error in (
        WebhookSignatureMissing,
        WebhookSignatureMalformed,
        WebhookSignatureInvalid,
        WebhookSignatureExpired,
        WebhookReplayed,
    ):
        assert issubclass(error, WebhookSignatureError)


def test_the_verifier_refuses_the_same_signed_delivery_twice_but_takes_a_retry() -> None:
    clock = [float(NOW)]
    verifier = WebhookVerifier(SECRET, clock=lambda: clock[0])

    verifier.verify(BODY, signed())
    with pytest.raises(WebhookReplayed):
        verifier.verify(BODY, signed())
    clock[0] += 60
    # The broker's retry of the same event is signed anew (a later t): not a replay; the receiver dedups on the id.
    assert verifier.verify(BODY, signed(at=NOW + 60)) == json.loads(BODY)
    clock[0] += 400
    with pytest.raises(WebhookSignatureExpired):  # past the window the timestamp refuses it, no memory needed
        verifier.verify(BODY, signed())
    assert "SECRET" not in repr(verifier)
    assert SECRET not in repr(verifier)


def test_the_verifier_remembers_a_bounded_number_of_deliveries() -> None:
    verifier = WebhookVerifier(SECRET, clock=lambda: float(NOW), max_remembered=3)
    bodies = [json.dumps({"id": f"e-{n}"}).encode() for n in range(5)]
    for body in bodies:
        verifier.verify(body, signed(body))

    assert len(verifier._seen) <= 3
    with pytest.raises(WebhookReplayed):
        verifier.verify(bodies[-1], signed(bodies[-1]))
