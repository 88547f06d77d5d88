"""Counts what a process asks of AWS, by botocore event hooks on boto3's default session (every client made from
it afterwards inherits them): API calls by service and operation, and clients created."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3


@dataclass
class AwsCalls:
    calls: Counter[str] = field(default_factory=Counter)  # "dynamodb.PutItem" -> count
    log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (call, params), when recording
    clients_created: int = 0
    clients: list[str] = field(default_factory=list)  # service of each client created
    record: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        """A fresh default session with the hooks: clients made before this one are not counted."""
        boto3.setup_default_session()
        events = boto3.DEFAULT_SESSION.events  # type: ignore[union-attr]
        events.register("before-call", self._on_call)
        events.register("before-parameter-build", self._on_params)
        events.register("creating-client-class", self._on_client)

    def _on_call(self, event_name: str, **kwargs: Any) -> None:
        # event_name is "before-call.<service>.<Operation>"; fired once per API call, whatever the retries.
        _, service, operation = event_name.split(".", 2)
        with self._lock:
            self.calls[f"{service}.{operation}"] += 1

    def _on_params(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> None:
        if self.record:
            _, service, operation = event_name.split(".", 2)
            with self._lock:
                self.log.append((f"{service}.{operation}", copy.deepcopy(params)))

    def _on_client(self, event_name: str, **kwargs: Any) -> None:
        with self._lock:
            self.clients_created += 1
            self.clients.append(event_name.rsplit(".", 1)[-1])

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.calls)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.log.clear()
            self.clients_created = 0
            self.clients.clear()


def diff(after: Counter[str], before: Counter[str]) -> Counter[str]:
    out = Counter(after)
    out.subtract(before)
    return +out


def describe(calls: Counter[str], *, services: bool = False) -> str:
    """'4 (UpdateItem 2, GetSecretValue 1, PutSecretValue 1)'; with services=True the names stay whole."""
    total = sum(calls.values())
    parts = ", ".join(
        f"{name if services else name.split('.', 1)[-1]} {count}" for name, count in sorted(calls.items())
    )
    return f"{total} ({parts})" if parts else "0"
