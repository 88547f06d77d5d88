"""Connection lifecycle events on EventBridge: one detail-type per change, never a token, never failing the caller."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from smartsheet_oauth.domain.lifecycle import event_of, status_after
from smartsheet_oauth.platform.observability import add_metric_safely, logger

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

    from smartsheet_oauth.domain.vocabulary import DetailType
    from smartsheet_oauth.stores.connections import Connection

SOURCE = "smartsheet-oauth-broker"

# PutEvents itself is retried by botocore (throttling, 5xx, timeouts); these attempts cover what botocore
# does not retry: an entry the bus refused inside a 200 answer (FailedEntryCount > 0).
PUBLISH_ATTEMPTS = 3

Scalar = str | int | bool | None


class ConnectionEvent(NamedTuple):
    """One change of one connection, as integrators receive it in `detail`. Only identifiers and states: the
    fields are named here, so a token cannot slip in by accident."""

    detail_type: DetailType
    connection_id: str
    status: str
    region: str
    email: str = ""
    end_user_id: str | None = None
    reason: str | None = None
    extra: Mapping[str, Scalar] = MappingProxyType({})
    tags: Mapping[str, str] = MappingProxyType({})  # the connection's tags (domain/tags.py)

    def detail(self, occurred_at: int) -> dict[str, Scalar | dict[str, str]]:
        return {
            "connection_id": self.connection_id,
            # Today the connection id is the Smartsheet user id; both are named so consumers need not rely on it.
            "smartsheet_user_id": self.connection_id,
            "end_user_id": self.end_user_id,
            "email": self.email,
            "region": self.region,
            "status": self.status,
            "reason": self.reason,
            "occurred_at": occurred_at,
            "tags": dict(self.tags),
            **self.extra,
        }


def about(
    detail_type: DetailType, connection: Connection, *, status: str, reason: str | None = None, **extra: Scalar
) -> ConnectionEvent:
    """The event for a change of a stored connection (the record as it was read, with its new status)."""
    return ConnectionEvent(
        detail_type=detail_type,
        connection_id=connection.connection_id,
        status=status,
        region=connection.region,
        email=connection.email,
        end_user_id=connection.end_user_id,
        reason=reason,
        extra=extra,
        tags=connection.tags,
    )


class EventPublisher:
    """Puts connection events on one bus. publish() never raises: a lost event is logged and counted
    (metric `events_publish_failed`), and the sign-in or refresh that caused it goes on."""

    def __init__(
        self,
        client: EventBridgeClient,
        bus_name: str,
        *,
        include_email: bool = False,
        resources: tuple[str, ...] = (),
        attempts: int = PUBLISH_ATTEMPTS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._bus = bus_name
        self._include_email = include_email
        self._resources = list(resources)
        self._attempts = max(1, attempts)
        self._clock = clock
        self._sleep = sleep
        # The refresh sweep publishes from several threads.
        self._lock = threading.Lock()
        self.published = 0
        self.failed = 0

    def publish(self, event: ConnectionEvent) -> bool:
        try:
            detail = event.detail(int(self._clock()))
            if not self._include_email:
                detail["email"] = None  # the field stays, so consumers' parsing does not change with the setting
            entry: PutEventsRequestEntryTypeDef = {
                "Source": SOURCE,
                "DetailType": event.detail_type,
                "Detail": json.dumps(detail, separators=(",", ":")),
                "EventBusName": self._bus,
                "Resources": list(self._resources),
            }
            reason = self._put(entry)
        except Exception as exc:  # a bug here must not cost a user their sign-in
            reason = f"error:{type(exc).__name__}"
        self._count(ok=reason is None)
        if reason is None:
            return True
        logger.warning(
            "connection event not published",
            extra={
                "detail_type": event.detail_type,
                "connection_id": event.connection_id,
                "reason": reason,
                "outcome": "event_lost",
            },
        )
        return False

    def _put(self, entry: PutEventsRequestEntryTypeDef) -> str | None:
        """None once the bus took the entry, else why the last attempt failed."""
        reason: str | None = None
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(min(1.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
            try:
                answer = self._client.put_events(Entries=[entry])
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
                if code in ("AccessDeniedException", "ResourceNotFoundException", "ValidationException"):
                    return code  # a wrong bus or a missing permission: retrying cannot help
                reason = code
                continue
            except BotoCoreError as exc:
                reason = type(exc).__name__
                continue
            if not answer.get("FailedEntryCount"):
                return None
            failed = (answer.get("Entries") or [{}])[0]
            reason = str(failed.get("ErrorCode") or "FailedEntry")
        return reason

    def _count(self, *, ok: bool) -> None:
        with self._lock:
            if ok:
                self.published += 1
            else:
                self.failed += 1
        add_metric_safely("events_published" if ok else "events_publish_failed", "Count", 1)


def emit(publisher: EventPublisher | None, event: ConnectionEvent) -> None:
    """Publish when the caller was given a publisher (tests and tools may run without one)."""
    if publisher is not None:
        publisher.publish(event)


def announce(
    publisher: EventPublisher | None,
    transition: str,
    connection: Connection,
    *,
    had_failed: bool = False,
    reason: str | None = None,
    **extra: Scalar,
) -> None:
    """The event a lifecycle transition sends integrators (domain/lifecycle.TRANSITIONS), if it sends one, with the
    status the connection has after it."""
    detail_type = event_of(transition, had_failed=had_failed)
    if detail_type is not None:
        emit(publisher, about(detail_type, connection, status=status_after(transition), reason=reason, **extra))
