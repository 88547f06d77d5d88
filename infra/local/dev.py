"""`make dev` / `make refresh`: serve the broker on http://127.0.0.1:3000 and trigger its refresh sweep."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final
from urllib.parse import urlsplit

from infra.local.gateway import CONTROL_TOKEN_HEADER
from infra.local.stack import DEFAULT_STACK_NAME, LocalStack, RealSmartsheet
from infra.local.template_model import DEFAULT_TEMPLATE, TemplateError

STATE_FILE: Final = Path(__file__).resolve().parents[2] / ".local" / "dev.json"
SECRET_VARIABLE: Final = "SMARTSHEET_CLIENT_SECRET"  # noqa: S105 - the name, not a value
REGIONS: Final = ("us", "eu", "gov", "au")
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")  # where the state file's token may be sent

log = logging.getLogger("infra.local.dev")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.dev",
        description=(
            "Run the Smartsheet OAuth broker locally: an embedded AWS (moto, resources created from "
            "template.yaml), the Smartsheet emulator and a local API Gateway on http://127.0.0.1:PORT. "
            "Ctrl-C stops everything it started."
        ),
        epilog=(
            "subcommand:\n"
            "  refresh [--url URL]   fire the scheduled refresh sweep on the running dev stack\n"
            "                        (python -m infra.local.dev refresh, or: make refresh)\n\n"
            f"With --real-smartsheet the client secret is read from ${SECRET_VARIABLE}, never from a flag."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=3000, help="gateway port (default 3000)")
    parser.add_argument("--moto-port", type=int, default=0, help="embedded AWS port (default: any free one)")
    parser.add_argument("--emulator-port", type=int, default=0, help="emulator port (default: any free one)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template to run")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="template parameter override, e.g. --param OAuthScopes='READ_SHEETS WRITE_SHEETS' (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="hide the functions' logs")
    real = parser.add_argument_group("real Smartsheet (instead of the emulator)")
    real.add_argument("--real-smartsheet", action="store_true", help="talk to the real Smartsheet")
    real.add_argument("--region", choices=REGIONS, default="us", help="Smartsheet region (default us)")
    real.add_argument("--client-id", help="your Smartsheet app's client id")
    real.add_argument("--redirect-uri", help="send this redirect_uri (must equal the app's registered URL)")
    return parser


def build_refresh_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.dev refresh",
        description="Fire the scheduled refresh sweep now on the running `make dev` stack.",
    )
    parser.add_argument("--url", help=f"the dev gateway (default: read from {STATE_FILE.name}, as its token is)")
    return parser


def _parameters(pairs: Sequence[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: --param expects NAME=VALUE, got {pair!r}")
        parameters[name] = value
    return parameters


def _function_log_printer(function: str, line: str) -> None:
    print(f"  [{function}] {line}", file=sys.stderr, flush=True)


def your_code_environment(stack: LocalStack) -> dict[str, str]:
    """The environment that points your own code at this stack: boto3 at the embedded AWS (endpoint, region, the
    local credentials), the token client at the gateway and the token secrets, Smartsheet's API at the emulator."""
    variables = {
        **stack.aws.environment(),  # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_*REGION
        "SMARTSHEET_BROKER_API_URL": stack.url,
        "SMARTSHEET_BROKER_SECRET_PREFIX": stack.token_secret_prefix,
    }
    if stack.real_smartsheet is None:
        variables["SMARTSHEET_API_BASE_URL"] = stack.emulator.api_base_url
        default = next(iter(stack.emulators))
        for region, emulator in stack.emulators.items():
            if region != default:  # another region's tokens work only at its own emulator
                variables[f"SMARTSHEET_API_BASE_URL_{region.upper()}"] = emulator.api_base_url
    return variables


def environment_block(stack: LocalStack) -> list[str]:
    """your_code_environment as shell lines to paste (no value needs quoting: URLs, names and `testing`)."""
    variables = your_code_environment(stack)
    lines = ["  unset AWS_PROFILE AWS_SESSION_TOKEN   # never a real account's"]
    lines += [f"  export {name}={value}" for name, value in variables.items()]
    return lines


def _banner(stack: LocalStack) -> str:
    aws = stack.aws
    anonymous = stack.parameters.get("AnonymousLogin", "enabled") != "disabled"
    lines = [
        "",
        f"smartsheet-oauth-broker runs locally (up in {stack.startup_seconds:.1f}s)",
        (
            f"  sign in:     {stack.login_url}      <- open this in a browser"
            if anonymous
            else "  sign in:     through a connect session only (AnonymousLogin=disabled): POST /connect-sessions"
        ),
        f"  callback:    {stack.callback_url}",
        f"  management:  {stack.url}  (IAM-signed: connect sessions, connections; docs/management-api.md)",
    ]
    if stack.real_smartsheet is None:
        emulator = stack.emulator
        users = ", ".join(f"{user.email} ({user.id})" for user in emulator.users)
        lines += [
            f"  Smartsheet:  emulator at {emulator.base_url} (an Allow/Deny page; users: {users})",
            f'               test routes: POST {emulator.base_url}/_emulator/revoke-user {{"user_id": ID}},',
            "               /_emulator/expire, /_emulator/faults, GET /_emulator/stats (docs/local-development.md)",
        ]
        for region, regional in list(stack.emulators.items())[1:]:
            users = ", ".join(f"{user.email} ({user.id})" for user in regional.users)
            start = f"/login?region={region}; " if anonymous else ""
            lines.append(
                f"  region {region}:{' ' * (5 - len(region))}emulator at {regional.base_url} ({start}users: {users})"
            )
    else:
        lines += [
            f"  Smartsheet:  REAL, region {stack.real_smartsheet.region}, client id {stack.real_smartsheet.client_id}",
            "               register the callback above as the app's redirect URL (or an HTTPS tunnel's to it:",
            f"               the tunnel must send Host: 127.0.0.1:{stack.gateway.port}, as the gateway refuses others)",
        ]
    tables = ", ".join(stack.table_name(lid) for lid in aws.resources if lid.endswith("Table"))
    lines += [
        f"  AWS:         moto at {aws.endpoint_url} (credentials testing/testing, region {aws.region})",
        f"               tables: {tables}",
        f"               token secrets: {stack.token_secret_prefix}<connection id>",
        "  refresh now: make refresh   (python -m infra.local.dev refresh)",
        *_webhook_lines(stack),
        "Your own code against this stack (boto3, smartsheet_oauth_client): paste into its shell",
        *environment_block(stack),
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _webhook_lines(stack: LocalStack) -> list[str]:
    """Only with --param WebhookUrl=...: where events go and the secret a receiver checks them with."""
    if "WebhookSigningSecret" not in stack.aws.resources:
        return []
    secret = stack.aws.secret_arn("WebhookSigningSecret")
    return [
        f"  webhooks:    every connection event POSTed, signed, to {stack.parameters.get('WebhookUrl', '')}",
        f"               signing secret: aws secretsmanager get-secret-value --secret-id {secret} (docs/webhooks.md)",
    ]


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    real = None
    if args.real_smartsheet:
        secret = os.environ.get(SECRET_VARIABLE, "")
        if not args.client_id or not secret:
            print(f"error: --real-smartsheet needs --client-id and ${SECRET_VARIABLE}", file=sys.stderr)
            return 2
        real = RealSmartsheet(region=args.region, client_id=args.client_id, client_secret=secret)
    parameters = _parameters(args.param)
    if args.redirect_uri:
        parameters["RedirectUri"] = args.redirect_uri
    stack = LocalStack(
        args.template,
        gateway_port=args.port,
        moto_port=args.moto_port,
        emulator_port=args.emulator_port,
        stack_name=DEFAULT_STACK_NAME,
        parameters=parameters,
        real_smartsheet=real,
        log_sink=(lambda _f, _l: None) if args.quiet else _function_log_printer,
    )
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                print(
                    f"error: a port is already in use ({exc}); is `make dev` running already? "
                    "Choose others with --port / --moto-port / --emulator-port.",
                    file=sys.stderr,
                )
                return 1
            raise
        except TemplateError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _write_state(stack)
        print(_banner(stack), flush=True)
        while not stopping.wait(0.5):
            pass
        print("\nstopping...", flush=True)
    finally:
        stack.stop()
        _remove_state()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped: gateway, functions, emulator and embedded AWS are down.", flush=True)
    return 0


def _write_state(stack: LocalStack) -> None:
    """The running stack's endpoints and its /_local/ token, for make refresh and the admin CLI: readable by this
    user only (written to a new 0600 file, then renamed over any old one, whatever that one's mode was)."""
    STATE_FILE.parent.mkdir(mode=0o700, exist_ok=True)
    state = {
        "pid": os.getpid(),
        "gateway_url": stack.url,
        "local_token": stack.gateway.control_token,
        "moto_url": stack.aws.endpoint_url,
        "emulator_url": stack.emulator.base_url if stack.real_smartsheet is None else None,
        "parameters": stack.parameters,  # the client id and overrides: the admin CLI rebuilds the configuration
        "started_at": int(time.time()),
    }
    fresh = STATE_FILE.with_name(f".{STATE_FILE.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(json.dumps(state, indent=2) + "\n")
    fresh.replace(STATE_FILE)


def _remove_state() -> None:
    with contextlib.suppress(FileNotFoundError):
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
        if state.get("pid") == os.getpid():
            STATE_FILE.unlink()


def _dev_state() -> tuple[str, str] | None:
    """The running dev stack's gateway URL and /_local/ token, from its state file (None without one)."""
    try:
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
        url, token = state["gateway_url"], state["local_token"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not isinstance(token, str):
        return None
    return url, token


def refresh(args: argparse.Namespace) -> int:
    found = _dev_state()
    if found is None:
        print(
            f"error: no running dev stack ({STATE_FILE} is missing or stale); start one with `make dev`",
            file=sys.stderr,
        )
        return 1
    url = (args.url or found[0]).rstrip("/")
    if urlsplit(url).scheme != "http" or urlsplit(url).hostname not in LOOPBACK_HOSTS:
        print(f"error: {url} is not the http://127.0.0.1 URL of a dev stack", file=sys.stderr)
        return 2
    request = urllib.request.Request(  # noqa: S310 - checked above
        f"{url}/_local/schedule", method="POST", data=b"", headers={CONTROL_TOKEN_HEADER: found[1]}
    )
    try:
        with urllib.request.urlopen(request, timeout=660) as response:  # noqa: S310 - a loopback URL
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(
            f"error: the dev stack at {url} refused ({exc.code}): {exc.read().decode(errors='replace')}",
            file=sys.stderr,
        )
        return 1
    except (urllib.error.URLError, ConnectionError) as exc:
        print(f"error: no dev stack answers at {url} ({exc}); start one with `make dev`", file=sys.stderr)
        return 1
    failed = 0
    for run in answer["runs"]:
        if run["ok"]:
            print(f"{run['schedule']} -> {run['function']}: {json.dumps(run['payload'])} ({run['durationMs']} ms)")
        else:
            failed += 1
            print(f"{run['schedule']} -> {run['function']}: FAILED {run['errorType']}: {run['errorMessage']}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["refresh"]:
        return refresh(build_refresh_parser().parse_args(arguments[1:]))
    return serve(build_parser().parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
