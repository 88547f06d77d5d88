"""Fixtures every test shares: no real AWS credentials, fresh broker caches for each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.platform.observability import metrics

# The `broker` (in-process) and `stack`/`local_stack`/`client` (loopback HTTP) fixtures, for every suite.
pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(autouse=True)
def _only_catalogued_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test during which the code emitted a metric the catalog does not list (its alarms and dashboard are
    held to the catalog: a metric outside it would be watched by nothing)."""
    from tests.support.metric_catalog import EMITTED, WHERE_TO_ADD

    unknown: list[str] = []
    emit = metrics.add_metric

    def checked(*args: Any, **kwargs: Any) -> None:
        name = kwargs.get("name", args[0] if args else None)
        if name not in EMITTED:
            unknown.append(str(name))
        emit(*args, **kwargs)

    monkeypatch.setattr(metrics, "add_metric", checked)
    yield
    if unknown:
        pytest.fail(
            f"the code emitted metric(s) {sorted(set(unknown))} that no alarm or dashboard knows: {WHERE_TO_ADD}"
        )


@pytest.fixture(autouse=True)
def _isolated_aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Whatever the developer's shell holds, tests never sign requests with real credentials.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "SmartsheetOAuthBrokerTest")
    services.reset()
    yield
    services.reset()


def reset_moto_backends() -> None:
    """Empty moto's backends. They are the process's: mock_aws (the in-process broker) and every local stack's moto
    server read and write the same ones. mock_aws empties them when it starts and stops; a server does not."""
    from moto.core.base_backend import BackendDict
    from moto.core.model_instances import reset_model_data

    BackendDict.reset()
    reset_model_data()


@pytest.fixture(scope="module")
def empty_moto_backends() -> Iterator[None]:
    """moto's backends empty for a module's own local stack, and emptied again after it. Without it a stack still
    running (the session's e2e `stack`) or left behind shows up in this one's embedded AWS: the admin CLI finds two
    broker stacks there and refuses. The session stack, emptied so, is provisioned again when next used
    (tests/support/fixtures.local_stack), as after any in-process test."""
    reset_moto_backends()
    yield
    reset_moto_backends()
