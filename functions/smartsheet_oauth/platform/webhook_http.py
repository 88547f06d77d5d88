"""POSTs a webhook delivery with urllib3 (botocore's HTTP client: no import of its own at a cold start)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

from smartsheet_oauth.flows.webhook_delivery import CONNECT_SECONDS, READ_SECONDS, Answer, Unreachable

if TYPE_CHECKING:
    from urllib3 import PoolManager

# A receiver's answer is read only this far (its status is what counts).
_MAX_ANSWER_BYTES = 4096


@cache
def _pool(url: str) -> PoolManager:
    from smartsheet_oauth.smartsheet.client import https_pool  # noqa: PLC0415

    return https_pool(False, url)  # no retries here (the queue retries), redirects never followed


def post(url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
    from urllib3 import Timeout  # noqa: PLC0415
    from urllib3.exceptions import HTTPError  # noqa: PLC0415

    try:
        response = _pool(url).request(
            "POST",
            url,
            body=body,
            headers=dict(headers),
            timeout=Timeout(connect=CONNECT_SECONDS, read=READ_SECONDS),
            redirect=False,
            preload_content=False,
        )
    except (HTTPError, OSError) as exc:
        raise Unreachable(type(exc).__name__) from exc
    try:
        response.read(_MAX_ANSWER_BYTES)
    except (HTTPError, OSError):
        pass  # the status arrived; the body does not matter
    finally:
        response.close()  # a body left unread must not go back to the pool
    return Answer(int(response.status), response.headers.get("Retry-After"))
