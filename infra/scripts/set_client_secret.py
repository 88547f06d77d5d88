"""Puts the Smartsheet app's client secret into a deployed stack's app-credentials secret (make set-client-secret).

The secret is read from a no-echo prompt, or from standard input when that is not a terminal; never from the
command line or the environment, where shell history, `ps` and CI logs would keep it. The stored value is
{"client_secret": "..."}: the client id is the stack's SmartsheetClientId parameter, not part of the secret.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

OUTPUT_KEY = "AppCredentialsSecretArn"
CLIENT_ID_PARAMETER = "SmartsheetClientId"
# The key CloudFormation's generated value carries until the real secret is put in (template.yaml's
# AppCredentialsSecret; smartsheet_oauth.services reads it too).
PLACEHOLDER_KEY = "placeholder"
MAX_SECRET_LENGTH = 1024

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2  # bad arguments or input (argparse uses 2 too)
EXIT_NO_CREDENTIALS = 3  # no AWS credentials, profile or region
EXIT_NOT_FOUND = 4  # no such stack, output or secret
EXIT_ACCESS_DENIED = 5  # the credentials may not do this
EXIT_AWS_ERROR = 6  # AWS unreachable or another AWS error
EXIT_INTERRUPTED = 130

ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException"}
)
BAD_CREDENTIALS_CODES = frozenset(
    {"InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch"}
)

EPILOG = f"""\
The secret is read from a no-echo prompt, or from standard input when it is piped in, e.g.
  op read op://vault/smartsheet/client-secret | make set-client-secret STACK=my-broker

After an upgrade that replaced the secret with CloudFormation's placeholder (docs/operations.md, Upgrade),
  make set-client-secret STACK=my-broker ARGS=--restore-previous
brings back the version before it, without typing the secret again.

Stack name: --stack, else $STACK, else stack_name in samconfig.toml. Region: --region, else
$AWS_REGION / $AWS_DEFAULT_REGION, else region in samconfig.toml, else your AWS profile's.

Exit codes: {EXIT_OK} done, {EXIT_UNEXPECTED} unexpected error, {EXIT_USAGE} bad arguments or input,
{EXIT_NO_CREDENTIALS} no AWS credentials or region, {EXIT_NOT_FOUND} stack/output/secret not found,
{EXIT_ACCESS_DENIED} access denied, {EXIT_AWS_ERROR} other AWS error, {EXIT_INTERRUPTED} interrupted.
"""


class Failure(Exception):
    """A failure the user can act on: a message and an exit code, never a traceback."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Target:
    stack: str
    region: str | None
    profile: str | None


# --------------------------------------------------------------------------------------------- inputs
def read_samconfig(path: Path, environment: str) -> dict[str, Any]:
    """stack_name, region and profile from samconfig.toml: the deploy section wins over the global one."""
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Failure(EXIT_USAGE, f"cannot read {path}: {exc}") from None
    env = document.get(environment)
    if not isinstance(env, dict):
        return {}
    merged: dict[str, Any] = {}
    for command in ("global", "deploy"):
        section = env.get(command)
        parameters = section.get("parameters") if isinstance(section, dict) else None
        if isinstance(parameters, dict):
            merged.update({k: v for k, v in parameters.items() if k in ("stack_name", "region", "profile")})
    return merged


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str]) -> Target:
    config = read_samconfig(Path(args.config_file), args.config_env)
    stack = args.stack or environ.get("STACK", "").strip() or config.get("stack_name")
    if not isinstance(stack, str) or not stack.strip():
        raise Failure(
            EXIT_USAGE,
            f"which stack? Pass --stack NAME (make set-client-secret STACK=NAME), set STACK, or deploy once with "
            f"`make deploy ARGS=--guided` so {args.config_file} names it.",
        )
    region = (
        args.region
        or environ.get("AWS_REGION", "").strip()
        or environ.get("AWS_DEFAULT_REGION", "").strip()
        or config.get("region")
        or None
    )
    profile = args.profile or environ.get("AWS_PROFILE", "").strip() or config.get("profile") or None
    return Target(stack=stack.strip(), region=region, profile=profile)


def read_client_secret(stdin: IO[str], prompt: Callable[[str], str] | None = None) -> str:
    """From a no-echo prompt on a terminal, else the first line of stdin."""
    if stdin.isatty():
        value = (prompt or getpass.getpass)("Smartsheet client secret (input hidden): ")
    else:
        value = stdin.readline(MAX_SECRET_LENGTH + 2)
    value = value.strip()
    if not value:
        raise Failure(EXIT_USAGE, "no client secret given: nothing was changed.")
    if len(value) > MAX_SECRET_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise Failure(
            EXIT_USAGE,
            "that does not look like a client secret (spaces, control characters or too long): nothing was changed.",
        )
    return value


# ----------------------------------------------------------------------------------------------- AWS
def _aws_failure(exc: Exception, doing: str) -> Failure:
    """Translate a boto3/botocore error into a message for a person."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return Failure(
            EXIT_NO_CREDENTIALS,
            "no AWS credentials found. Run `aws configure` (or `aws sso login`), or set AWS_PROFILE, then try again.",
        )
    if isinstance(exc, NoRegionError):
        return Failure(EXIT_NO_CREDENTIALS, "no AWS region: pass --region, or set AWS_REGION.")
    if isinstance(exc, ProfileNotFound):
        return Failure(EXIT_NO_CREDENTIALS, f"AWS profile not found: {exc.kwargs.get('profile')!r}.")
    if isinstance(exc, EndpointConnectionError):
        return Failure(EXIT_AWS_ERROR, f"could not reach AWS while {doing}: check your network and region.")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ACCESS_DENIED_CODES:
            return Failure(EXIT_ACCESS_DENIED, f"access denied while {doing}: your AWS identity may not do this.")
        if code in BAD_CREDENTIALS_CODES:
            return Failure(EXIT_NO_CREDENTIALS, f"AWS rejected your credentials ({code}): refresh them and try again.")
        if code == "ResourceNotFoundException":
            return Failure(EXIT_NOT_FOUND, f"not found while {doing}: the secret no longer exists.")
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
            return Failure(EXIT_ACCESS_DENIED, f"access denied while {doing}: your AWS identity may not do this.")
        return Failure(EXIT_AWS_ERROR, f"AWS error while {doing}: {code or 'unknown'}.")
    return Failure(EXIT_AWS_ERROR, f"AWS error while {doing}: {type(exc).__name__}.")


@dataclass(frozen=True, slots=True)
class Stack:
    secret_arn: str
    client_id: str | None  # the SmartsheetClientId parameter (None: a stack from before it moved out of the secret)


def find_stack(cloudformation: CloudFormationClient, stack: str) -> Stack:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message", "")):
            raise Failure(
                EXIT_NOT_FOUND,
                f"no stack named {stack!r} in this account and region: check --stack and --region.",
            ) from None
        raise _aws_failure(exc, f"reading stack {stack!r}") from None
    outputs = {o.get("OutputKey"): o.get("OutputValue") for s in stacks[:1] for o in s.get("Outputs") or []}
    parameters = {p.get("ParameterKey"): p.get("ParameterValue") for s in stacks[:1] for p in s.get("Parameters") or []}
    arn = outputs.get(OUTPUT_KEY)
    if not arn:
        raise Failure(
            EXIT_NOT_FOUND,
            f"stack {stack!r} has no {OUTPUT_KEY} output: is it a smartsheet-oauth-broker stack, and has its "
            "deployment finished?",
        )
    return Stack(secret_arn=arn, client_id=parameters.get(CLIENT_ID_PARAMETER))


def read_document(secrets: SecretsManagerClient, arn: str, **version: str) -> dict[str, Any]:
    """A version's JSON document (AWSCURRENT unless told; {} when it holds something else: it is replaced whole)."""
    try:
        raw = secrets.get_secret_value(SecretId=arn, **version or {"VersionStage": "AWSCURRENT"}).get("SecretString")
    except ClientError as exc:
        raise _aws_failure(exc, "reading the app-credentials secret") from None
    try:
        document = json.loads(raw or "")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def is_placeholder(document: Mapping[str, Any]) -> bool:
    return bool(document.get(PLACEHOLDER_KEY))


def holds_a_client_secret(document: Mapping[str, Any]) -> bool:
    value = document.get("client_secret")
    return not is_placeholder(document) and isinstance(value, str) and bool(value)


def previous_version(secrets: SecretsManagerClient, arn: str) -> tuple[str, str | None]:
    """(AWSCURRENT's version id, AWSPREVIOUS's or None)."""
    try:
        stages = secrets.describe_secret(SecretId=arn).get("VersionIdsToStages") or {}
    except ClientError as exc:
        raise _aws_failure(exc, "reading the app-credentials secret's versions") from None
    current = next(version for version, labels in stages.items() if "AWSCURRENT" in labels)
    previous = next((version for version, labels in stages.items() if "AWSPREVIOUS" in labels), None)
    return current, previous


def restorable(secrets: SecretsManagerClient, arn: str) -> tuple[str, str] | None:
    """(current, previous) version ids when the version before the current one holds a client secret."""
    current, previous = previous_version(secrets, arn)
    if previous is None or not holds_a_client_secret(read_document(secrets, arn, VersionId=previous)):
        return None
    return current, previous


def restore_previous(secrets: SecretsManagerClient, arn: str, current_document: Mapping[str, Any]) -> str:
    """Point AWSCURRENT back at the version before CloudFormation's placeholder (an upgrade that changed the secret's
    generation input wrote one); AWSPREVIOUS moves to the placeholder. Returns the restored version's id."""
    if not is_placeholder(current_document):
        raise Failure(
            EXIT_USAGE,
            "the current value is not CloudFormation's placeholder: there is nothing to restore (nothing was changed).",
        )
    versions = restorable(secrets, arn)
    if versions is None:
        raise Failure(
            EXIT_NOT_FOUND,
            "the version before the placeholder holds no client secret: put it in again (make set-client-secret, "
            "without --restore-previous). Nothing was changed.",
        )
    current, previous = versions
    try:
        secrets.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=previous, RemoveFromVersionId=current
        )
    except ClientError as exc:
        raise _aws_failure(exc, "restoring the previous version") from None
    return previous


def put_credentials(secrets: SecretsManagerClient, arn: str, document: Mapping[str, Any]) -> str:
    try:
        answer = secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(document, separators=(",", ":")))
    except ClientError as exc:
        raise _aws_failure(exc, "writing the app-credentials secret") from None
    return str(answer.get("VersionId", ""))


# ------------------------------------------------------------------------------------------------ run
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make set-client-secret",
        description="Put your Smartsheet app's client secret into the deployed broker's app-credentials secret.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stack", help="CloudFormation stack name of the broker")
    parser.add_argument("--region", help="AWS region of the stack")
    parser.add_argument("--profile", help="AWS profile to use")
    parser.add_argument(
        "--restore-previous",
        action="store_true",
        help="instead of asking: bring back the client secret an upgrade replaced with CloudFormation's placeholder "
        "(the version before it); see docs/operations.md, Upgrade",
    )
    parser.add_argument("--client-id", help=argparse.SUPPRESS)  # moved to the SmartsheetClientId parameter
    parser.add_argument("--config-file", default="samconfig.toml", help="SAM config to read the stack name from")
    parser.add_argument("--config-env", default="default", help="environment in the SAM config (default: default)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stdin: IO[str], environ: Mapping[str, str]) -> int:
    if args.client_id is not None:
        raise Failure(
            EXIT_USAGE,
            "the client id is the stack's SmartsheetClientId parameter, not part of the secret: change it with a "
            "deploy (make deploy ARGS=--guided asks for it and keeps your other answers). Nothing was changed.",
        )
    target = resolve_target(args, environ)
    try:
        session = boto3.session.Session(profile_name=target.profile, region_name=target.region)
        cloudformation = session.client("cloudformation")
        secrets = session.client("secretsmanager")
        stack = find_stack(cloudformation, target.stack)
        document = read_document(secrets, stack.secret_arn)
        if args.restore_previous:
            version = restore_previous(secrets, stack.secret_arn, document)
            print(f"AWSCURRENT of {stack.secret_arn} is the version before the placeholder again ({version}).")
            print("The functions pick it up within 5 minutes (their credentials cache); no redeploy needed.")
            return EXIT_OK
        if is_placeholder(document) and restorable(secrets, stack.secret_arn):
            print(
                "note: the current value is CloudFormation's placeholder and the version before it holds a client "
                "secret; `make set-client-secret ARGS=--restore-previous` brings that one back without typing it.",
                file=sys.stderr,
            )
    except (BotoCoreError, ClientError) as exc:
        raise _aws_failure(exc, f"looking up stack {target.stack!r}") from None

    # Only now ask, so nobody types a secret for a stack that cannot take it.
    client_secret = read_client_secret(stdin)
    try:
        version = put_credentials(secrets, stack.secret_arn, {"client_secret": client_secret})
    except BotoCoreError as exc:
        raise _aws_failure(exc, "writing the app-credentials secret") from None
    print(f"Stored a new version ({version}) of {stack.secret_arn}")
    client_id = stack.client_id or "the stack's SmartsheetClientId parameter"
    print(f"client_secret: updated (not shown); client id: {client_id} (a template parameter, not in the secret).")
    print("The functions pick it up within 5 minutes (their credentials cache); no redeploy needed.")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, stdin: IO[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args, stdin if stdin is not None else sys.stdin, os.environ)
    except Failure as failure:
        print(f"set-client-secret: {failure.message}", file=sys.stderr)
        return failure.code
    except (KeyboardInterrupt, EOFError):
        print("\nset-client-secret: interrupted: nothing was changed.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        # The last word for a person, not a traceback. Only the type: an exception's text could quote a
        # parameter, and one parameter is the secret.
        print(f"set-client-secret: unexpected {type(exc).__name__}; nothing may have been changed.", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
