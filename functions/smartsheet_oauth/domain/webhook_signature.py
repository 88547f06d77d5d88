"""The webhook signature the broker sends: HMAC-SHA256 over "<unix time>.<body>" with the stack's signing secret.

Receivers check it with smartsheet_oauth_client.verify_webhook (same format, written down in docs/webhooks.md)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Broker-Signature"
EVENT_ID_HEADER = "Broker-Event-Id"
EVENT_TYPE_HEADER = "Broker-Event-Type"
ATTEMPT_HEADER = "Broker-Delivery-Attempt"
SCHEME = "v1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under the secret (its UTF-8 bytes)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The Broker-Signature value of one delivery attempt: `t=<unix seconds>,v1=<hex>`. Each attempt signs anew, so
    a retry after an hour is not refused as stale by the receiver's tolerance window."""
    return f"t={timestamp},{SCHEME}={signature(secret, timestamp, body)}"
