"""The refresh queue (SQS standard, RefreshQueue): the dispatcher sends due connections to it, ten to a batch, and
asks how much it still holds; the workers get its messages through their event source mapping."""

from __future__ import annotations

import json
from typing import Any, Protocol

from smartsheet_oauth.stores.connections import DueConnection
from smartsheet_oauth.stores.storage_errors import storage

# SendMessageBatch takes at most ten messages.
BATCH_SIZE = 10
MESSAGE_VERSION = 1


def message_of(due: DueConnection) -> str:
    """A due connection as a message body: its id and the generation and due time it was read at (the worker's lease
    refuses it if either moved since: a duplicate or a late message refreshes nothing). No token, no e-mail."""
    return json.dumps(
        {
            "v": MESSAGE_VERSION,
            "connection_id": due.connection_id,
            "generation": due.generation,
            "refresh_due_at": due.refresh_due_at,
            "access_expires_at": due.access_expires_at,
        },
        separators=(",", ":"),
    )


def due_of(body: str) -> DueConnection | None:
    """The due connection a message names; None for a body this version cannot read."""
    try:
        message: Any = json.loads(body)
        if not isinstance(message, dict) or message.get("v") != MESSAGE_VERSION:
            return None
        connection_id = message["connection_id"]
        numbers = [message["generation"], message["refresh_due_at"], message.get("access_expires_at", 0)]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(connection_id, str) or not connection_id or len(connection_id) > 128:
        return None
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in numbers):
        return None
    return DueConnection(
        connection_id=connection_id,
        generation=numbers[0],
        refresh_due_at=numbers[1],
        access_expires_at=numbers[2],
    )


class DueQueue(Protocol):
    """Where the dispatcher sends due connections (RefreshQueue; the tests' in-memory one)."""

    def send(self, batch: list[DueConnection]) -> int: ...

    def waiting(self) -> int: ...


class RefreshQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send(self, batch: list[DueConnection]) -> int:
        """Send up to ten due connections; how many SQS took (those it did not stay due for the next dispatch)."""
        entries = [{"Id": str(index), "MessageBody": message_of(due)} for index, due in enumerate(batch)]
        with storage("refresh_queue.send"):
            answer = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
        return len(answer.get("Successful", []))

    def waiting(self) -> int:
        """Messages in the queue not yet handled: waiting, and received by a worker but not yet deleted."""
        with storage("refresh_queue.waiting"):
            answer = self._client.get_queue_attributes(
                QueueUrl=self._url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )
        attributes = answer.get("Attributes", {})
        return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
            attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
        )
