"""Fixtures every test shares: no real AWS credentials, fresh broker caches for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from smartsheet_oauth import services

# The `broker` (in-process) and `stack`/`local_stack`/`client` (loopback HTTP) fixtures, for every suite.
pytest_plugins = ["tests.support.fixtures"]


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
