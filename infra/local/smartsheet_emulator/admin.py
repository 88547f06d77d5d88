"""The emulator's admin and test routes under `/_emulator/` (JSON): faults, settings, resets, users, grants and codes
issued without a browser, token liveness, statistics."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from infra.local.smartsheet_emulator.accounts import known_scopes
from infra.local.smartsheet_emulator.errors import AuthorizeError
from infra.local.smartsheet_emulator.model import SmartsheetModel
from infra.local.smartsheet_emulator.validation import check_bool, check_int
from infra.local.smartsheet_emulator.wire import ADMIN_PREFIX, Reply, first_values, json_reply

if TYPE_CHECKING:
    from infra.local.smartsheet_emulator.emulator import SmartsheetEmulator

AdminRoute = Callable[[dict[str, Any], dict[str, str]], object]


def _grant_args(payload: Mapping[str, Any]) -> tuple[str | None, int | str | None, tuple[str, ...]]:
    scopes = payload.get("scopes", ["READ_SHEETS"])
    if isinstance(scopes, str):
        scopes = scopes.split()
    client_id = payload.get("client_id")
    return (None if client_id is None else str(client_id)), payload.get("user_id"), known_scopes(scopes)


def _routes(emulator: SmartsheetEmulator, model: SmartsheetModel) -> dict[tuple[str, str], AdminRoute]:
    def faults(payload: dict[str, Any], _query: dict[str, str]) -> object:
        return dataclasses.asdict(emulator.set_faults(**payload))

    def settings(payload: dict[str, Any], _query: dict[str, str]) -> object:
        return dataclasses.asdict(emulator.update_settings(**payload))

    def reset(payload: dict[str, Any], query: dict[str, str]) -> object:
        emulator.reset_faults()
        emulator.reset_stats()
        if payload.get("all") is True or query.get("all") == "true":
            emulator.reset_state()
        return {"reset": True}

    def reset_faults(_payload: dict[str, Any], _query: dict[str, str]) -> object:
        emulator.reset_faults()
        return dataclasses.asdict(emulator.faults)

    def grants(payload: dict[str, Any], _query: dict[str, str]) -> object:
        args = _grant_args(payload)
        user = model.user(args[1])
        return {**emulator.issue_grant(*args), "user_id": str(user.id)}

    def codes(payload: dict[str, Any], _query: dict[str, str]) -> object:
        return {"code": emulator.issue_code(*_grant_args(payload))}

    def consent(payload: dict[str, Any], _query: dict[str, str]) -> object:
        allow = payload.get("allow", True)
        check_bool("allow", allow)
        return {"location": emulator.consent(str(payload["authorize_url"]), payload.get("user_id"), allow)}

    def reseed(payload: dict[str, Any], _query: dict[str, str]) -> object:
        seed = payload.get("seed")
        check_int("seed", seed, low=-(2**63), optional=True)
        emulator.reseed(seed)
        return {"seed": seed}

    def token_status(payload: dict[str, Any], _query: dict[str, str]) -> object:
        result = {}
        if "access_token" in payload:
            result["access_token_live"] = emulator.access_token_is_live(str(payload["access_token"]))
        if "refresh_token" in payload:
            result["refresh_token_live"] = emulator.refresh_token_is_live(str(payload["refresh_token"]))
        return result

    def token_lifetime_policy(payload: dict[str, Any], _query: dict[str, str]) -> object:
        unknown = sorted(set(payload) - {"max_age_seconds", "account_id", "user_id"})
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; known: account_id, max_age_seconds, user_id")
        revoked = emulator.enforce_token_lifetime(
            payload.get("max_age_seconds", 0), account_id=payload.get("account_id"), user_id=payload.get("user_id")
        )
        return {"revoked": revoked}

    return {
        ("GET", "/health"): lambda _p, _q: {"ok": True},
        ("GET", "/stats"): lambda _p, _q: emulator.stats(),
        ("GET", "/faults"): lambda _p, _q: dataclasses.asdict(emulator.faults),
        ("POST", "/faults"): faults,
        ("PUT", "/faults"): faults,
        ("DELETE", "/faults"): reset_faults,
        ("GET", "/settings"): lambda _p, _q: dataclasses.asdict(emulator.settings),
        ("POST", "/settings"): settings,
        ("PUT", "/settings"): settings,
        ("POST", "/seed"): reseed,
        ("POST", "/reset"): reset,
        ("POST", "/expire"): lambda p, _q: {
            "expired": emulator.expire_tokens(p.get("user_id"), refresh=p.get("refresh") is True)
        },
        ("POST", "/revoke-user"): lambda p, _q: {"revoked": emulator.revoke_user(p["user_id"])},
        ("POST", "/token-lifetime-policy"): token_lifetime_policy,
        ("POST", "/grants"): grants,
        ("POST", "/codes"): codes,
        ("POST", "/consent"): consent,
        ("POST", "/token-status"): token_status,
        ("GET", "/apps"): lambda _p, _q: [app.public() for app in emulator.apps],
        ("GET", "/users"): lambda _p, _q: [user.profile() for user in emulator.users],
        ("POST", "/users"): lambda p, _q: [
            user.profile() for user in emulator.add_users(p.get("count", 0), first_id=p.get("first_id"))
        ],
    }


class AdminRoutes:
    """`/_emulator/<route>`: a JSON body in (an object, or nothing), a JSON answer out; 400 for a bad value."""

    def __init__(self, emulator: SmartsheetEmulator, model: SmartsheetModel) -> None:
        self._routes = _routes(emulator, model)

    def reply(self, method: str, path: str, query: str, body: bytes) -> Reply:
        route = self._routes.get((method, path.removeprefix(ADMIN_PREFIX)))
        if route is None:
            return json_reply(404, {"error": "not_found", "message": f"no admin route {method} {path}"})
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise TypeError("the body must be a JSON object")
            result = route(payload, first_values(query))
        except AuthorizeError as exc:
            return json_reply(400, {"error": "authorize_error", "errorCode": exc.error_code, "message": exc.message})
        except (ValueError, TypeError, KeyError) as exc:
            return json_reply(400, {"error": "bad_request", "message": str(exc)})
        return json_reply(200, result)
