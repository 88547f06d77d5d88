"""Webhook delivery: each connection event from the delivery queue is POSTed, signed, to the integrator's URL; a
failed attempt comes back after an exponential backoff (longer when a 429 or 503 says Retry-After), and what can never
be delivered goes to the dead-letter queue. Only the event's envelope and its named `detail` fields are sent: never a
token, a code or a state."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.webhook_signature import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores.events import SOURCE

# What a delivery carries: EventBridge's envelope as docs/events.md shows it. Anything else a message holds is
# dropped, so nothing but the publisher's named fields can reach a receiver.
ENVELOPE = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")
# Worth another attempt: the receiver is busy, failing or rate limiting, or answered too slowly.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# The statuses whose Retry-After header is followed (RFC 9110: "Too Many Requests", "Service Unavailable").
RETRY_AFTER_STATUSES = frozenset({429, 503})
# SQS keeps a message invisible for 12 hours at most, counted from its receive (ChangeMessageVisibility refuses a
# timeout that would end later).
MAX_BACKOFF_SECONDS = 43_200
# A Retry-After longer than what is left of those 12 hours is cut to it, less this much for the time between SQS's
# receive and the invocation (Lambda's poller) that the function cannot see.
RECEIVE_MARGIN_SECONDS = 60
# One attempt's longest wait (connect + read); the handler stops taking records when less than this is left.
CONNECT_SECONDS, READ_SECONDS = 3.0, 7.0
ATTEMPT_SECONDS = CONNECT_SECONDS + READ_SECONDS
_MARGIN_SECONDS = 2.0


class Unreachable(Exception):
    """The request got no answer: refused, reset, timed out, TLS failed. The receiver may have seen it."""


@dataclass(frozen=True)
class Answer:
    """What the receiver answered: its status, and its Retry-After header as sent (None: none)."""

    status: int
    retry_after: str | None = None


class Poster(Protocol):
    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST the body; the receiver's answer, or Unreachable."""
        ...


class DeliveryQueue(Protocol):
    """The two queue operations the function makes itself (Lambda's poller receives and deletes)."""

    def retry_later(self, receipt_handle: str, seconds: int) -> None: ...

    def dead_letter(self, body: str, reason: str, attempts: int) -> None: ...


@dataclass(frozen=True)
class Outcome:
    delivered: bool  # the message is done with (delivered or moved to the dead-letter queue): Lambda deletes it
    kind: str  # delivered | retry | dead_letter
    reason: str | None = None


def backoff_seconds(attempt: int, base: int, cap: int, jitter: Callable[[float, float], float] = random.uniform) -> int:
    """How long a message waits after its `attempt`-th failed delivery: base * 2^(attempt-1), at most `cap`, less up
    to a quarter (jitter, so a receiver that comes back is not hit by every retry in the same second)."""
    delay: int = min(cap, MAX_BACKOFF_SECONDS, base * 2 ** max(0, min(attempt - 1, 20)))
    return max(0, round(delay * jitter(0.75, 1.0)))


def signed_post(post: Poster, url: str, event: Mapping[str, Any], *, secret: str, attempt: int, now: int) -> Answer:
    """POST one attempt of an event (its envelope, compact JSON), signed at `now` with the secret: the deliveries'
    path, and the admin CLI's test-webhook. The receiver's answer, or Unreachable."""
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "smartsheet-oauth-broker-webhooks",
        EVENT_ID_HEADER: str(event["id"]),
        EVENT_TYPE_HEADER: str(event["detail-type"]),
        ATTEMPT_HEADER: str(attempt),
        SIGNATURE_HEADER: signature_header(secret, now, body),
    }
    return post(url, body, headers)


def retry_after_seconds(value: str | None, *, now: float) -> int | None:
    """A Retry-After header's wait in whole seconds: delay-seconds (digits) or an HTTP-date (a past one: 0). None
    when it is absent or neither (a negative or fractional number, a date that is not one)."""
    text = (value or "").strip()
    if text.isdigit() and text.isascii():
        # Longer than SQS can wait is the longest it can (and is cut to what is left of it later).
        return min(int(text), MAX_BACKOFF_SECONDS) if len(text) <= 64 else MAX_BACKOFF_SECONDS
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses naive
        return None
    return max(0, math.ceil(when.timestamp() - now))


def envelope(message_body: str) -> dict[str, Any] | None:
    """The event to post, or None when the message is not one of the broker's connection events."""
    try:
        event = json.loads(message_body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("source") != SOURCE or not isinstance(event.get("id"), str):
        return None
    if not isinstance(event.get("detail-type"), str) or not isinstance(event.get("detail"), dict):
        return None
    return {key: event[key] for key in ENVELOPE if key in event}


class WebhookDelivery:
    """Delivers one SQS batch; answers Lambda's partial batch response (the records to keep for another try)."""

    def __init__(
        self,
        url: str,
        *,
        secret: Callable[[], str],
        post: Poster,
        queue: DeliveryQueue,
        retry_base_seconds: int,
        retry_max_seconds: int,
        clock: Callable[[], float],
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._url = url
        self._receiver = urlsplit(url).hostname or ""  # logged instead of the URL, whose query may carry a token
        self._secret = secret
        self._post = post
        self._queue = queue
        self._base = retry_base_seconds
        self._cap = retry_max_seconds
        self._clock = clock
        self._jitter = jitter

    def run(self, event: Mapping[str, Any], time_left: Callable[[], float]) -> dict[str, list[dict[str, str]]]:
        failures: list[dict[str, str]] = []
        received_at = self._clock()  # SQS's 12-hour visibility limit counts from the receive, just before
        for record in event.get("Records") or []:
            message_id = str(record.get("messageId", ""))
            if time_left() < ATTEMPT_SECONDS + _MARGIN_SECONDS:
                # Not attempted: back after the queue's visibility timeout, this receive not counted as a failure.
                failures.append({"itemIdentifier": message_id})
                continue
            outcome = self.deliver(record, received_at=received_at)
            if not outcome.delivered:
                failures.append({"itemIdentifier": message_id})
        return {"batchItemFailures": failures}

    def deliver(self, record: Mapping[str, Any], *, received_at: float | None = None) -> Outcome:
        """Post one record's event. `received_at`: when its batch was received (the clock's time)."""
        received_at = self._clock() if received_at is None else received_at
        body_text = str(record.get("body", ""))
        attempt = _receive_count(record)
        event = envelope(body_text)
        if event is None:
            return self._give_up(record, body_text, attempt, None, "not_a_broker_event")
        facts = {"event_id": event["id"], "detail_type": event["detail-type"], "attempt": attempt}
        try:
            secret = self._secret()
        except StorageError as exc:
            return self._retry(record, attempt, facts, f"signing_secret:{exc.code}")
        try:
            answer = signed_post(self._post, self._url, event, secret=secret, attempt=attempt, now=int(self._clock()))
        except Unreachable as exc:
            return self._retry(record, attempt, facts, f"unreachable:{exc}")
        status = answer.status
        if 200 <= status < 300:
            logger.info("webhook delivered", extra={**facts, "status": status, "receiver": self._receiver})
            return Outcome(delivered=True, kind="delivered")
        if status >= 500 or status in RETRYABLE_STATUSES:
            asked = None
            if status in RETRY_AFTER_STATUSES:
                asked = retry_after_seconds(answer.retry_after, now=self._clock())
            return self._retry(record, attempt, facts, f"http:{status}", retry_after=asked, received_at=received_at)
        # A redirect (never followed: it would re-send the event elsewhere) or a refusal retrying cannot change.
        return self._give_up(record, body_text, attempt, facts, f"http:{status}")

    def _retry(
        self,
        record: Mapping[str, Any],
        attempt: int,
        facts: Mapping[str, Any],
        reason: str,
        *,
        retry_after: int | None = None,
        received_at: float | None = None,
    ) -> Outcome:
        seconds = backoff_seconds(attempt, self._base, self._cap, self._jitter)
        asked: dict[str, int] = {}
        if retry_after is not None:
            # What the receiver asked for, within what SQS still allows this receive, never sooner than the backoff.
            since_receive = 0 if received_at is None else max(0, math.ceil(self._clock() - received_at))
            allowed = max(0, MAX_BACKOFF_SECONDS - RECEIVE_MARGIN_SECONDS - since_receive)
            seconds = max(seconds, min(retry_after, allowed))
            asked = {"retry_after_seconds": retry_after}
        try:
            self._queue.retry_later(str(record.get("receiptHandle", "")), seconds)
        except StorageError as exc:  # it comes back after the queue's visibility timeout instead
            logger.warning("webhook backoff not set", extra={**facts, "reason": f"sqs:{exc.code}"})
        logger.warning(
            "webhook not delivered, retried later",
            extra={**facts, "reason": reason, "retry_in_seconds": seconds, **asked, "receiver": self._receiver},
        )
        return Outcome(delivered=False, kind="retry", reason=reason)

    def _give_up(
        self, record: Mapping[str, Any], body: str, attempt: int, facts: Mapping[str, Any] | None, reason: str
    ) -> Outcome:
        facts = facts or {"message_id": str(record.get("messageId", "")), "attempt": attempt}
        try:
            self._queue.dead_letter(body, reason, attempt)
        except StorageError as exc:  # kept in the delivery queue: retried, and moved by SQS after the last attempt
            logger.error("webhook not dead-lettered", extra={**facts, "reason": reason, "error": f"sqs:{exc.code}"})
            return Outcome(delivered=False, kind="retry", reason=reason)
        logger.error(
            "webhook refused, kept in the dead-letter queue",
            extra={**facts, "reason": reason, "receiver": self._receiver},
        )
        return Outcome(delivered=True, kind="dead_letter", reason=reason)


def _receive_count(record: Mapping[str, Any]) -> int:
    try:
        return max(1, int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1)))
    except (TypeError, ValueError):
        return 1
