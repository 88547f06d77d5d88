"""`python -m infra.local.smartsheet_emulator`: the emulator as a program of its own, with its apps, users and faults
from flags or a JSON file; Ctrl-C or SIGTERM stops it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from infra.local.smartsheet_emulator.accounts import DEFAULT_APP, DEFAULT_USERS, App, User
from infra.local.smartsheet_emulator.emulator import SmartsheetEmulator
from infra.local.smartsheet_emulator.faults import Faults
from infra.local.smartsheet_emulator.server import is_loopback_host
from infra.local.smartsheet_emulator.settings import Settings
from infra.local.smartsheet_emulator.wire import ADMIN_PREFIX


def _parse_user(text: str) -> User:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 4 or not parts[0].isdigit():
        raise argparse.ArgumentTypeError(f"expected ID,EMAIL,FIRST,LAST with a numeric id, got {text!r}")
    return User(int(parts[0]), parts[1], parts[2], parts[3])


def _load_config(path: str) -> tuple[list[App], list[User]]:
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    apps = [App(**entry) for entry in config.get("apps", [])]
    users = [User(**{**entry, "id": int(entry["id"])}) for entry in config.get("users", [])]
    return apps, users


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.smartsheet_emulator",
        description="Emulated Smartsheet OAuth (authorize page, token endpoint, /users/me, revoke) on loopback. "
        f"Admin endpoints (JSON) under {ADMIN_PREFIX}/: health, stats, faults, settings, reset, expire, "
        "revoke-user, grants, codes, consent, token-status, users (GET lists, POST {count, first_id} adds).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8700, help="port (default 8700; 0 picks a free one)")
    parser.add_argument(
        "--config", help='JSON file {"apps": [{client_id, client_secret, name, redirect_uri}], "users": [...]}'
    )
    parser.add_argument("--client-id", help=f"client id of the first app (default {DEFAULT_APP.client_id})")
    parser.add_argument("--client-secret", help="client secret of the first app (default: the local one)")
    parser.add_argument("--redirect-uri", help=f"registered redirect URL (default {DEFAULT_APP.redirect_uri})")
    parser.add_argument("--app-name", help=f"app name on the consent page (default {DEFAULT_APP.name!r})")
    parser.add_argument(
        "--user",
        action="append",
        type=_parse_user,
        metavar="ID,EMAIL,FIRST,LAST",
        help="an emulated user (repeatable; replaces the three default users)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share (0..1) of API requests answered 5xx")
    parser.add_argument("--seed", type=int, help="seed for reproducible faults")
    parser.add_argument("--access-lifetime", type=int, default=604799, help="access token lifetime in seconds")
    parser.add_argument("--code-lifetime", type=float, default=600.0, help="authorization code lifetime in seconds")
    parser.add_argument(
        "--auto-consent", choices=("allow", "deny"), help="answer the authorize page at once, without a click"
    )
    parser.add_argument("--verbose", action="store_true", help="log each request (method, path, status)")
    return parser


def _configured(args: argparse.Namespace) -> tuple[list[App], list[User]]:
    apps, users = ([], []) if args.config is None else _load_config(args.config)
    apps = apps or [DEFAULT_APP]
    overrides = {
        "client_id": args.client_id,
        "client_secret": args.client_secret,
        "redirect_uri": args.redirect_uri,
        "name": args.app_name,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if overrides:
        apps[0] = dataclasses.replace(apps[0], **overrides)
    users = args.user or users or list(DEFAULT_USERS)
    return apps, users


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not is_loopback_host(args.host):
        parser.error(f"--host {args.host!r} is not a loopback address: the emulator only listens on this machine")
    try:
        apps, users = _configured(args)
        emulator = SmartsheetEmulator(
            apps,
            users,
            seed=args.seed,
            settings=Settings(
                access_lifetime=args.access_lifetime, code_lifetime=args.code_lifetime, auto_consent=args.auto_consent
            ),
            faults=Faults(latency_ms=args.latency_ms, error_rate=args.error_rate),
            verbose=args.verbose,
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        parser.error(str(exc))
    # Ctrl-C (SIGINT) and SIGTERM only set an event, from before the server starts: a signal that arrives while the
    # banner is still being printed (a loaded machine can deliver it there) stops the emulator the same orderly way.
    stopped = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        emulator.start(args.host, args.port)
    except OSError as exc:
        print(f"smartsheet-emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"Smartsheet emulator listening on {emulator.base_url}")
        print(f"  authorize URL: {emulator.authorize_url}")
        print(f"  API base URL:  {emulator.api_base_url}")
        for app in emulator.apps:
            print(f"  app: {app.name!r} client_id={app.client_id} redirect_uri={app.redirect_uri}")
        for user in emulator.users:
            print(f"  user: {user.id} {user.email}")
        print(f"  admin: {emulator.base_url}{ADMIN_PREFIX}/stats  (Ctrl-C stops)", flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        emulator.stop()
    print("Smartsheet emulator stopped", flush=True)
    return 0
