"""Puts the Smartsheet app's client secret into a deployed stack's app-credentials secret (make set-client-secret).

The secret is read from a no-echo prompt, or from standard input when that is not a terminal; never from the
command line or the environment, where shell history, `ps` and CI logs would keep it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
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
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")  # the template's SmartsheetClientId pattern
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


def find_secret_arn(cloudformation: CloudFormationClient, stack: str) -> str:
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
    outputs = {o.get("OutputKey"): o.get("OutputValue") for o in (stacks[0].get("Outputs") or [])} if stacks else {}
    arn = outputs.get(OUTPUT_KEY)
    if not arn:
        raise Failure(
            EXIT_NOT_FOUND,
            f"stack {stack!r} has no {OUTPUT_KEY} output: is it a smartsheet-oauth-broker stack, and has its "
            "deployment finished?",
        )
    return arn


def current_credentials(secrets: SecretsManagerClient, arn: str) -> dict[str, Any]:
    """The secret's current JSON document ({} when it holds something else: it is replaced whole then)."""
    try:
        raw = secrets.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT").get("SecretString") or ""
    except ClientError as exc:
        raise _aws_failure(exc, "reading the app-credentials secret") from None
    try:
        document = json.loads(raw)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


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
        "--client-id", help="also set the client id (default: keep the one the stack stored from SmartsheetClientId)"
    )
    parser.add_argument("--config-file", default="samconfig.toml", help="SAM config to read the stack name from")
    parser.add_argument("--config-env", default="default", help="environment in the SAM config (default: default)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stdin: IO[str], environ: Mapping[str, str]) -> int:
    if args.client_id is not None and not CLIENT_ID.fullmatch(args.client_id):
        raise Failure(EXIT_USAGE, "--client-id may contain only letters, digits, '_' and '-'.")
    target = resolve_target(args, environ)
    try:
        session = boto3.session.Session(profile_name=target.profile, region_name=target.region)
        cloudformation = session.client("cloudformation")
        secrets = session.client("secretsmanager")
        arn = find_secret_arn(cloudformation, target.stack)
        document = current_credentials(secrets, arn)
    except (BotoCoreError, ClientError) as exc:
        raise _aws_failure(exc, f"looking up stack {target.stack!r}") from None

    client_id = args.client_id or document.get("client_id")
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise Failure(EXIT_USAGE, "the secret holds no valid client_id: pass --client-id (from Developer Tools).")

    # Only now ask, so nobody types a secret for a stack that cannot take it.
    client_secret = read_client_secret(stdin)
    document = {**document, "client_id": client_id, "client_secret": client_secret}
    try:
        version = put_credentials(secrets, arn, document)
    except BotoCoreError as exc:
        raise _aws_failure(exc, "writing the app-credentials secret") from None
    print(f"Stored a new version ({version}) of {arn}")
    print(f"client_id: {client_id}; client_secret: updated (not shown).")
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
