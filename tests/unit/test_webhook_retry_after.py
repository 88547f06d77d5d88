"""Retry-After: a receiver that answers 429 or 503 with Retry-After (seconds or an HTTP-date) gets the event again no
sooner than it asked, within SQS's 12-hour visibility limit (counted from the receive) and never sooner than the
backoff; a Retry-After it cannot read, or on another status, leaves the backoff as it was. End to end:
tests/e2e/test_webhooks.py."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from smartsheet_oauth.flows.webhook_delivery import (
    MAX_BACKOFF_SECONDS,
    RECEIVE_MARGIN_SECONDS,
    Answer,
    retry_after_seconds,
)

from tests.ops.support import captured_logs
from tests.unit.test_webhook_delivery import NOW, FakeQueue, FakeReceiver, delivery, event, record, run


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)  # "Wed, 02 Dec 2026 18:40:00 GMT": RFC 9110's IMF-fixdate


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120),
        ("0", 0),
        (" 45 ", 45),
        ("99999999999999999999999", 43_200),  # valid, and more than SQS can wait: its longest
        ("9" * 5000, 43_200),
        (http_date(NOW + 600), 600),
        (http_date(NOW - 600), 0),  # already past: no wait of its own
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        (None, None),
        ("Mon, 99 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str | None, seconds: int | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_in_seconds_sets_the_wait(status: int) -> None:
    receiver, queue = FakeReceiver([Answer(status, "900")]), FakeQueue()

    failures = run(delivery(receiver, queue), record(event(), attempt=1, message_id="m-1"))

    assert failures == ["m-1"]  # a partial batch failure: Lambda keeps it in the queue
    assert queue.backoffs == [("handle-m-1", 900)]  # not the 30 s backoff
    assert queue.dead == []


def test_a_retry_after_http_date_sets_the_wait_from_the_clock() -> None:
    receiver, queue = FakeReceiver([Answer(503, http_date(NOW + 7200))]), FakeQueue()

    assert run(delivery(receiver, queue), record(event(), attempt=2)) == ["m-1"]
    assert queue.backoffs == [("handle-m-1", 7200)]


@pytest.mark.parametrize("value", ["5", http_date(NOW + 5), http_date(NOW - 3600)])
def test_the_wait_is_never_shorter_than_the_backoff(value: str) -> None:
    receiver, queue = FakeReceiver([Answer(429, value)]), FakeQueue()

    run(delivery(receiver, queue), record(event(), attempt=3))

    assert queue.backoffs == [("handle-m-1", 120)]  # the third attempt's backoff


def test_a_retry_after_beyond_sqs_limit_is_clamped_to_what_is_left_since_the_receive() -> None:
    ticks = iter([NOW, NOW + 4, NOW + 4, NOW + 4])  # the batch starts; 4 s later its first answer
    receiver, queue = FakeReceiver([Answer(429, str(10**9))]), FakeQueue()
    d = delivery(receiver, queue)
    d._clock = lambda: next(ticks, NOW + 4)

    run(d, record(event(), attempt=1))

    ((_, seconds),) = queue.backoffs
    assert seconds == MAX_BACKOFF_SECONDS - RECEIVE_MARGIN_SECONDS - 4
    assert seconds < 43_200  # SQS refuses more than 12 hours since the receive


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", "", "Mon, 99 Foo 2026 99:99:99 GMT", None])
def test_an_unreadable_or_absent_retry_after_leaves_the_backoff(value: str | None) -> None:
    receiver, queue = FakeReceiver([Answer(429, value)]), FakeQueue()

    assert run(delivery(receiver, queue), record(event(), attempt=2)) == ["m-1"]
    assert queue.backoffs == [("handle-m-1", 60)]


@pytest.mark.parametrize("status", [500, 502, 408])
def test_retry_after_on_another_status_is_not_followed(status: int) -> None:
    receiver, queue = FakeReceiver([Answer(status, "900")]), FakeQueue()

    run(delivery(receiver, queue), record(event(), attempt=1))

    assert queue.backoffs == [("handle-m-1", 30)]


def test_the_log_says_the_receiver_asked_for_the_wait() -> None:
    receiver, queue = FakeReceiver([Answer(429, "900")]), FakeQueue()
    with captured_logs() as sink:
        run(delivery(receiver, queue), record(event()))

    line = next(line for line in sink.getvalue().splitlines() if "retried later" in line)
    assert '"retry_in_seconds":900' in line
    assert '"retry_after_seconds":900' in line
    assert '"reason":"http:429"' in line
