"""The emulated API: the token endpoint (code exchange and refresh, with `hash` or `client_secret`), `/users/me` and
revoke. Each answers a (reply, outcome) pair; the HTTP layer adds latency and faults around it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from infra.local.smartsheet_emulator.errors import ApiError
from infra.local.smartsheet_emulator.model import SmartsheetModel
from infra.local.smartsheet_emulator.wire import Reply, error_reply, first_values, json_reply

# The token endpoint's spellings of the (deprecated, optional) redirect URL: the SDKs' and the current reference's.
REDIRECT_FIELDS = ("redirect_uri", "redirect_url")


def token_hash(secret: str, value: str) -> str:
    """The `hash` parameter Smartsheet expects: lowercase hex SHA-256 of `secret|code` or `secret|refresh_token`."""
    return hashlib.sha256(f"{secret}|{value}".encode()).hexdigest()


def auth_method(params: Mapping[str, str]) -> str:
    """How a token request authenticates the client: `hash`, `client_secret`, `both` or `none`."""
    has_hash, has_secret = bool(params.get("hash")), bool(params.get("client_secret"))
    if has_hash and has_secret:
        return "both"
    if has_hash:
        return "hash"
    return "client_secret" if has_secret else "none"


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise ApiError(1070, f"Missing: {name}.")
    return value


class SmartsheetApi:
    """The API's endpoints over the model."""

    def __init__(self, model: SmartsheetModel) -> None:
        self._model = model

    def error_reply(self, exc: ApiError) -> Reply:
        return error_reply(exc, self._model.settings)

    def token(self, params: Mapping[str, str]) -> tuple[Reply, str]:
        try:
            body = self._exchange(params)
        except ApiError as exc:
            return self.error_reply(exc), str(exc.code)
        return json_reply(200, body, (("Cache-Control", "no-store"), ("Pragma", "no-cache"))), "ok"

    def users_me(self, authorization: str | None) -> tuple[Reply, str]:
        try:
            user = self._model.user_of(authorization)
        except ApiError as exc:
            return self.error_reply(exc), str(exc.code)
        return json_reply(200, user.profile()), "ok"

    def revoke(self, authorization: str | None, query: str) -> tuple[Reply, str]:
        delete_all = first_values(query).get("deleteAllForApiClient", "").lower() == "true"
        try:
            self._model.revoke(authorization, every_grant_of_the_user=delete_all)
        except ApiError as exc:
            return self.error_reply(exc), str(exc.code)
        return json_reply(200, {"message": "SUCCESS", "resultCode": 0}), "ok"

    def _exchange(self, params: Mapping[str, str]) -> dict[str, Any]:
        settings = self._model.settings
        if params.get("client_id"):
            self._model.spend_client_budget(params["client_id"])
        grant_type = _required(params, "grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise ApiError(1068)
        app = self._model.app_named(_required(params, "client_id"))
        if app is None:
            raise ApiError(1067)
        method = auth_method(params)
        if method in ("none", "both"):
            raise ApiError(1236 if method == "none" else 1237)
        subject = _required(params, "code" if grant_type == "authorization_code" else "refresh_token")
        # Every SDK sends `redirect_uri`; the current reference (POST /token's parameters) spells it `redirect_url`
        # and marks the parameter itself Deprecated. Whichever is sent must be the registered URL (both, when both are).
        if any(params.get(name) and params[name] != app.redirect_uri for name in REDIRECT_FIELDS):
            raise ApiError(1073)
        if method == "client_secret":
            if not hmac.compare_digest(params["client_secret"].encode(), app.client_secret.encode()):
                raise ApiError(1238)
        elif not hmac.compare_digest(params["hash"].encode(), token_hash(app.client_secret, subject).encode()):
            raise ApiError(settings.hash_mismatch_error_code)
        return self._model.exchange(app, grant_type, subject)
