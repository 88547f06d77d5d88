"""The client-secret check: the app-credentials secret holds a client secret, not CloudFormation's placeholder.
The value is read to judge it and dropped: neither it nor anything derived from it (its length) is ever shown."""

from __future__ import annotations

import json
from typing import Final

from smartsheet_oauth.domain.errors import ConfigError
from smartsheet_oauth.services import PLACEHOLDER_KEY, client_secret_of

from infra.admin.doctor.checklist import Check, failed, passed, unchecked
from infra.admin.doctor.readings import ReadError, StackReader, reading
from infra.scripts.set_client_secret import Failure, restorable

NAME: Final = "client secret"


def check_client_secret(reader: StackReader) -> Check:
    facts = reader.facts
    arn = facts.outputs.get("AppCredentialsSecretArn")
    if not arn:
        return failed(
            NAME, "the stack has no AppCredentialsSecretArn output", "redeploy from this version (make deploy)"
        )
    secrets = reader.client("secretsmanager")
    try:
        with reading("the app credentials secret", "secretsmanager:GetSecretValue on AppCredentialsSecretArn"):
            text = secrets.get_secret_value(SecretId=arn).get("SecretString")
    except ReadError as exc:
        return unchecked(NAME, str(exc), exc.fix)
    put_in = (
        "stop and start make dev: it puts the emulator's client secret in (or $SMARTSHEET_CLIENT_SECRET with "
        "--real-smartsheet)"
        if facts.local
        else f"make set-client-secret STACK={facts.name} (asks for it without echoing it)"
    )
    try:
        client_secret_of(text)
    except ConfigError:
        if not _is_placeholder(text):
            return failed(NAME, 'the app credentials secret does not hold {"client_secret": "..."}', put_in)
        if not facts.local and _previous_version_holds_one(secrets, arn):
            put_in = (
                f"make set-client-secret STACK={facts.name} ARGS=--restore-previous (the version before the "
                "placeholder holds a client secret: an upgrade replaced it), or run it without the option and paste it"
            )
        return failed(
            NAME,
            "the app credentials secret still holds CloudFormation's placeholder: every callback and sweep fails "
            "before calling Smartsheet",
            put_in,
        )
    return passed(NAME, "the app credentials secret holds a client secret, not the placeholder (never shown)")


def _is_placeholder(text: str | None) -> bool:
    try:
        document = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(document, dict) and bool(document.get(PLACEHOLDER_KEY))


def _previous_version_holds_one(secrets: object, arn: str) -> bool:
    """Whether `make set-client-secret --restore-previous` would bring one back (needs DescribeSecret too: without
    it the plain advice stands)."""
    try:
        return restorable(secrets, arn) is not None  # type: ignore[arg-type]
    except Failure:
        return False
