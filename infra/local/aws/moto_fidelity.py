"""Where moto answers differently from AWS in a way the broker's code depends on, make it answer like AWS.

Secrets Manager refuses every write to a secret scheduled for deletion with InvalidRequestException ("The secret
is scheduled for deletion", the documented cause), CreateSecret with that secret's name included. moto 5 accepts
PutSecretValue on such a secret and answers CreateSecret with ResourceExistsException, so without this the local
stack and the tests would never take the path that restores a disconnected user's secret when they sign in again.

Secrets Manager finds a secret by name or ARN in constant time; moto 5 compares the key with every stored secret,
several times per call, so with thousands of secrets (the refresh bench seeds 10,000) each call costs milliseconds
and the local stack measures moto's scan instead of the broker. The store gets an index by name and ARN; keys it
does not know (partial ARNs, names never stored) take moto's own path, so answers do not change, only their cost.

SNS lists a subscription whose endpoint has not confirmed it (email, email-json, http, https: AWS mails or posts a
link first) with SubscriptionArn "PendingConfirmation"; moto 5 confirms every subscription at once, so a topic nobody
hears would look heard. Such subscriptions stay pending here (moto cannot deliver the confirmation, so they stay so).
CloudWatch starts a new alarm in INSUFFICIENT_DATA and keeps an updated one's state; moto 5 puts both in OK.
`make doctor` reads both.

moto's server dispatcher lists its package folder (listdir + isdir per entry) on every request to tell a service
name from a host name; the installed package does not change while it runs, so it is listed once.

Applied once per process by LocalAws (the moto server and the in-process mock share moto's backends)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto import backends as moto_backends
from moto.cloudwatch.models import CloudWatchBackend
from moto.secretsmanager.exceptions import InvalidRequestException
from moto.secretsmanager.models import FakeSecret, ReplicaSecret, SecretsManagerBackend, SecretsStore
from moto.secretsmanager.utils import get_secret_name_from_partial_arn
from moto.sns.models import SNSBackend, Subscription

_Secret = FakeSecret | ReplicaSecret

_applied = False
_lock = threading.Lock()
CONFIRMED_BY_ENDPOINT = frozenset({"email", "email-json", "http", "https"})
PENDING_CONFIRMATION = "PendingConfirmation"
SCHEDULED_FOR_DELETION = (
    "You can't perform this operation on the secret because it was marked for deletion."  # AWS's wording
)


def _deleted(backend: SecretsManagerBackend, secret_id: str) -> bool:
    if not backend._is_valid_identifier(secret_id):
        return False
    return bool(backend.secrets[secret_id].is_deleted())


def _refuse_if_deleted(method: Callable[..., Any], identifier: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def refusing(self: SecretsManagerBackend, *args: Any, **kwargs: Any) -> Any:
        secret_id = kwargs[identifier] if identifier in kwargs else args[0]
        if _deleted(self, secret_id):
            raise InvalidRequestException(SCHEDULED_FOR_DELETION)
        return method(self, *args, **kwargs)

    return refusing


def _index(store: SecretsStore) -> dict[str, str]:
    """ARN or name -> the key the secret is stored under (kept by __setitem__ and pop)."""
    found: dict[str, str] | None = store.__dict__.get("_fidelity_index")
    if found is None or len(found) < len(store):  # a store filled before the patch: index it once
        found = {}
        for key, secret in dict.items(store):
            found[secret.arn] = key
            found[secret.name] = key
        store.__dict__["_fidelity_index"] = found
    return found


def _lookup(store: SecretsStore, key: str) -> _Secret | None:
    stored_under = _index(store).get(key)
    if stored_under is not None:
        secret = dict.get(store, stored_under)
        if secret is not None and key in (secret.arn, secret.name):
            return secret
    return None


def _indexed_store() -> None:
    # What moto's scan would find for a key that is neither a stored ARN nor a stored name: a partial ARN's name.
    def setitem(self: SecretsStore, key: str, value: _Secret) -> None:
        dict.__setitem__(self, key, value)
        index = _index(self)
        index[value.arn] = key
        index[value.name] = key

    def getitem(self: SecretsStore, key: str) -> _Secret:
        found = _lookup(self, key)
        return found if found is not None else dict.__getitem__(self, get_secret_name_from_partial_arn(key))

    def contains(self: SecretsStore, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return _lookup(self, key) is not None or dict.__contains__(self, get_secret_name_from_partial_arn(key))

    def get(self: SecretsStore, key: str) -> _Secret | None:
        found = _lookup(self, key)
        return found if found is not None else dict.get(self, get_secret_name_from_partial_arn(key))

    def pop(self: SecretsStore, key: str) -> _Secret | None:
        found = _lookup(self, key)
        popped = dict.pop(self, get_secret_name_from_partial_arn(found.name if found is not None else key), None)
        if popped is not None:
            index = _index(self)
            index.pop(popped.arn, None)
            index.pop(popped.name, None)
        return popped

    SecretsStore.__setitem__ = setitem  # type: ignore[method-assign]
    SecretsStore.__getitem__ = getitem  # type: ignore[method-assign]
    SecretsStore.__contains__ = contains  # type: ignore[method-assign]
    SecretsStore.get = get  # type: ignore[method-assign]
    SecretsStore.pop = pop  # type: ignore[method-assign]


def _subscriptions_wait_for_their_endpoint() -> None:
    subscribe = SNSBackend.subscribe

    def subscribing(self: SNSBackend, topic_arn: str, endpoint: str, protocol: str) -> Subscription:
        known = self._find_subscription(topic_arn, endpoint, protocol)
        subscription = subscribe(self, topic_arn, endpoint, protocol)
        if known is None and protocol in CONFIRMED_BY_ENDPOINT:
            subscription.attributes["PendingConfirmation"] = True
        return subscription

    def listed_arn(self: Subscription) -> str:
        # What ListSubscriptions(ByTopic) shows as SubscriptionArn (moto's serializer looks this name up first).
        return PENDING_CONFIRMATION if self.attributes.get("PendingConfirmation") is True else str(self.arn)

    SNSBackend.subscribe = subscribing  # type: ignore[method-assign]
    Subscription.subscription_arn = property(listed_arn)  # type: ignore[attr-defined]


def _new_alarms_lack_data() -> None:
    put = CloudWatchBackend.put_metric_alarm

    def putting(self: CloudWatchBackend, *args: Any, **kwargs: Any) -> Any:
        before = self.alarms.get(kwargs["name"] if "name" in kwargs else args[0])
        alarm = put(self, *args, **kwargs)
        if before is None:
            alarm.state_value = "INSUFFICIENT_DATA"
        else:  # an update keeps the alarm's state (moto 5 makes a new alarm, in OK)
            alarm.state_value, alarm.state_reason = before.state_value, before.state_reason
            alarm.state_updated_timestamp = before.state_updated_timestamp
        return alarm

    CloudWatchBackend.put_metric_alarm = putting  # type: ignore[method-assign]


def apply() -> None:
    """Patch moto's Secrets Manager backend and its server's module listing (idempotent)."""
    global _applied  # noqa: PLW0603 (once per process)
    with _lock:
        if _applied:
            return
        SecretsManagerBackend.put_secret_value = _refuse_if_deleted(  # type: ignore[method-assign]
            SecretsManagerBackend.put_secret_value, "secret_id"
        )
        SecretsManagerBackend.create_secret = _refuse_if_deleted(  # type: ignore[method-assign]
            SecretsManagerBackend.create_secret, "name"
        )
        _indexed_store()
        _subscriptions_wait_for_their_endpoint()
        _new_alarms_lack_data()
        modules = tuple(moto_backends.list_of_moto_modules())
        moto_backends.list_of_moto_modules = lambda: modules
        _applied = True
