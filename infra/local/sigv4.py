"""AWS Signature Version 4 checks for the local gateway: what API Gateway does before a route with AWS_IAM auth."""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from calendar import timegm
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import strptime
from typing import Final
from urllib.parse import quote, unquote

ALGORITHM: Final = "AWS4-HMAC-SHA256"
SERVICE: Final = "execute-api"
MAX_CLOCK_SKEW_SECONDS: Final = 300  # API Gateway refuses signatures more than 5 minutes off

# API Gateway's own answers (HTTP API, IAM authorization), always 403.
FORBIDDEN: Final = "Forbidden"
UNKNOWN_KEY: Final = "The security token included in the request is invalid."
MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access"
    " Key and signing method. Consult the service documentation for details."
)

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)
_SPACES = re.compile(r"\s+")


class SignatureRejected(Exception):
    """The request is not signed, or not signed right: API Gateway answers 403 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Caller:
    """Who signed: what API Gateway puts under requestContext.authorizer.iam."""

    access_key: str
    account_id: str

    @property
    def user_id(self) -> str:
        return f"AIDALOCAL{self.access_key.upper()}"[:32]

    @property
    def user_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:user/local-{self.access_key}"

    def as_authorizer(self) -> dict[str, object]:
        return {
            "iam": {
                "accessKey": self.access_key,
                "accountId": self.account_id,
                "callerId": self.user_id,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": self.user_arn,
                "userId": self.user_id,
            }
        }


def _canonical_path(raw_path: str) -> str:
    # Every path segment URI-encoded twice (all services but S3): the request line holds it encoded once.
    path = posixpath.normpath(raw_path) if raw_path not in ("", "/") else "/"
    if raw_path.endswith("/") and path != "/":
        path += "/"
    path = re.sub("/+", "/", path)
    return quote(path, safe="/~")


def _canonical_query(raw_query: str) -> str:
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _header_values(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    found = [_SPACES.sub(" ", value.strip()) for key, value in headers if key.lower() == name]
    return ",".join(found) if found else None


def _key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _credential(authorization: str | None, region: str) -> tuple[str, str, str, list[str], str]:
    """(access key, scope, date, signed header names, signature) from the Authorization header."""
    if authorization is None:
        raise SignatureRejected(FORBIDDEN)
    match = _AUTHORIZATION.fullmatch(authorization)
    if match is None:
        raise SignatureRejected(FORBIDDEN)
    access_key, _, scope = match["credential"].partition("/")
    scope_parts = scope.split("/")
    if len(scope_parts) != 4 or scope_parts[3] != "aws4_request":
        raise SignatureRejected(FORBIDDEN)
    date, scope_region, service, _ = scope_parts
    if service != SERVICE:
        raise SignatureRejected(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if scope_region != region:
        raise SignatureRejected("Credential should be scoped to a valid region.")
    signed = match["signed"].split(";")
    if "host" not in signed or signed != sorted(signed):
        raise SignatureRejected(MISMATCH)
    return access_key, scope, date, signed, match["signature"]


def _signed_at(amz_date: str | None, date: str, now: float) -> str:
    if amz_date is None or not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or amz_date[:8] != date:
        raise SignatureRejected(FORBIDDEN)
    if abs(now - timegm(strptime(amz_date, "%Y%m%dT%H%M%SZ"))) > MAX_CLOCK_SKEW_SECONDS:
        raise SignatureRejected(f"Signature expired: {amz_date} is now earlier or later than the allowed 5 minutes.")
    return amz_date


def verify(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    credentials: Mapping[str, str],
    region: str,
    account_id: str,
    now: float,
) -> Caller:
    """Check a header-signed request as API Gateway would; return the caller or raise SignatureRejected."""
    access_key, scope, date, signed, signature = _credential(_header_values(headers, "authorization"), region)
    secret = credentials.get(access_key)
    if secret is None:
        raise SignatureRejected(UNKNOWN_KEY)
    amz_date = _signed_at(_header_values(headers, "x-amz-date"), date, now)
    canonical_headers = []
    for name in signed:
        value = _header_values(headers, name)
        if value is None:
            raise SignatureRejected(MISMATCH)
        canonical_headers.append(f"{name}:{value}\n")
    body_hash = hashlib.sha256(body).hexdigest()
    declared = _header_values(headers, "x-amz-content-sha256")
    if declared is not None and declared != body_hash:
        raise SignatureRejected(MISMATCH)

    canonical_request = "\n".join(
        [
            method.upper(),
            _canonical_path(raw_path),
            _canonical_query(raw_query),
            "".join(canonical_headers),
            ";".join(signed),
            body_hash,
        ]
    )
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    expected = hmac.new(_key(secret, date, region, SERVICE), string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureRejected(MISMATCH)
    return Caller(access_key=access_key, account_id=account_id)
