"""The sign-in flow: start (state + nonce, authorize URL) and finish (check, exchange, store)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlencode, urlsplit

from smartsheet_oauth.config import Config, is_loopback
from smartsheet_oauth.domain.errors import (
    AccessDenied,
    BadRequest,
    BindingConflict,
    CodeRefused,
    ConditionFailed,
    InvalidGrant,
    ReconnectWrongAccount,
    RegionConflict,
    RegionNotAllowed,
    SignInRejected,
    SmartsheetError,
    UserDeclined,
)
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.flows import steps
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.smartsheet.client import authorize_url

if TYPE_CHECKING:
    from smartsheet_oauth.flows.connect import AwaitingConfirmation
    from smartsheet_oauth.smartsheet.client import SmartsheetClient
    from smartsheet_oauth.stores.completions import CompletionStore
    from smartsheet_oauth.stores.connections import ConnectionStore
    from smartsheet_oauth.stores.states import StateRecord, StateStore
    from smartsheet_oauth.stores.token_stores import TokenStore

# __Host- : the browser only accepts it Secure, with Path=/ and no Domain, so no subdomain can plant one.
NONCE_COOKIE = "__Host-smartsheet-oauth-nonce"
MAX_CODE_LENGTH = 512
MAX_RETURN_TO_LENGTH = 2048


class LoginRedirect(NamedTuple):
    """Where /login sends the browser, and the nonce cookie it sets (repr hides both)."""

    location: str
    nonce: str
    max_age: int

    def __repr__(self) -> str:
        return "LoginRedirect(<hidden>)"


class SignedIn(NamedTuple):
    """A finished sign-in: the stored connection, whom it is for, its Smartsheet region, and where to send the
    browser."""

    connection_id: str
    email: str
    return_to: str | None
    is_new: bool
    region: str


def checked_return_to(raw: str | None, allowed: tuple[str, ...]) -> str | None:
    """The return_to URL if the allow-list admits it, else BadRequest. An entry without a path admits any
    URL of that exact origin; an entry with a path admits exactly that URL."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_RETURN_TO_LENGTH or any(ord(c) < 0x21 or ord(c) == 0x7F or c == "\\" for c in raw):
        raise BadRequest("return_to is not an allowed address")
    try:
        parts = urlsplit(raw)
        hostname = parts.hostname
    except ValueError:  # "https://[::1", NFKC look-alikes of '/', '#', '@' in the host: not a URL we'd send anyone to
        raise BadRequest("return_to is not an allowed address") from None
    if parts.scheme not in ("https", "http") or not hostname or parts.username or parts.password:
        raise BadRequest("return_to is not an allowed address")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise BadRequest("return_to is not an allowed address")
    origin = f"{parts.scheme}://{parts.netloc.lower()}"
    for entry in allowed:
        entry_parts = urlsplit(entry)
        entry_origin = f"{entry_parts.scheme}://{entry_parts.netloc.lower()}"
        if entry_parts.path in ("", "/") and not entry_parts.query:
            if origin == entry_origin:
                return raw
        elif raw == entry:
            return raw
    raise BadRequest("return_to is not an allowed address")


def checked_region(raw: str | None, config: Config) -> str:
    """The region a sign-in chose (?region=, a connect session's `region`): one of AllowedRegions, else
    RegionNotAllowed naming them. None or "" is the stack's default region."""
    if raw is None or raw == "":
        return config.region
    region = raw.strip().lower()
    if region not in config.regions_allowed():
        raise RegionNotAllowed(raw, config.regions_allowed())
    return region


def begin_sign_in(
    *,
    config: Config,
    client_id: str,
    states: StateStore,
    now: int,
    return_to: str | None = None,
    end_user_id: str | None = None,
    region: str | None = None,
    connection_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> LoginRedirect:
    checked = checked_return_to(return_to, config.allowed_return_to)
    chosen = checked_region(region, config)
    # The default region's state carries no region: an older callback (mid-deploy) finishes it as before.
    pending = states.create(
        now=now,
        return_to=checked,
        end_user_id=end_user_id,
        region=None if chosen == config.region else chosen,
        connection_id=connection_id,
        tags=tags,
    )
    location = authorize_url(
        config.endpoints(chosen)[0],
        client_id=client_id,
        scopes=config.scopes,
        state=pending.state,
        redirect_uri=config.redirect_uri,
    )
    return LoginRedirect(location=location, nonce=pending.nonce, max_age=config.state_ttl_seconds)


def start_again_url(
    *, connect_session: bool, return_to: str | None, anonymous_login: bool, region: str | None = None
) -> str | None:
    """Where a user whose sign-in failed after its state was spent starts a new one like it (its region too). A
    connect session's link was single-use and made by the integrator's app, so its user goes back to the app, never
    to a plain /login (that would connect them unbound, or be refused when anonymous sign-in is off): None."""
    if connect_session or not anonymous_login:
        return None
    params = {name: value for name, value in (("return_to", return_to), ("region", region)) if value}
    return f"/login?{urlencode(params)}" if params else "/login"


def _code(raw: str | None) -> str:
    if not raw:
        raise BadRequest("Smartsheet did not send an authorization code.")
    if len(raw) > MAX_CODE_LENGTH or not raw.isascii() or not raw.isprintable():
        raise BadRequest("The authorization code is not valid.")
    return raw


def refuse_other_region(
    connections: ConnectionStore,
    smartsheet: SmartsheetClient,
    access_token: str,
    *,
    config: Config,
    user_id: str,
    region: str,
) -> None:
    """Before anything is stored: a Smartsheet user id that is already a connection of another region is refused
    (connection ids are Smartsheet user ids, and every consumer keys by them: the secret's name, the token client,
    the API's paths, the events). The grant this sign-in just got is revoked, so no token outlives the refusal; the
    existing connection keeps its tokens, status and binding. A disconnected (revoked) connection holds no grant
    and no binding: the id is free for a sign-in of another region."""
    existing = connections.get(user_id)
    if existing is None or config.region_of(existing.region) == region or existing.status == ConnectionStatus.REVOKED:
        return
    try:
        smartsheet.revoke(access_token, region=region)
    except SmartsheetError as exc:
        logger.warning("could not revoke the refused grant", extra={"reason": exc.reason})
    raise RegionConflict(connection_id=user_id, region=region, existing_region=config.region_of(existing.region))


def finish_sign_in(
    query: dict[str, str],
    nonce: str | None,
    *,
    config: Config,
    states: StateStore,
    smartsheet: SmartsheetClient,
    vault: TokenStore,
    connections: ConnectionStore,
    now: int,
    completions: Callable[[], CompletionStore],
    watcher: steps.StepWatcher | None = None,
    browser_checked: Callable[[StateRecord], None] | None = None,
) -> SignedIn | AwaitingConfirmation:
    """Check the state and the browser binding before anything reaches Smartsheet; then exchange the code,
    learn who signed in, store the pair, and record the connection (in that order: the record never points
    at tokens that were not stored). A connect-session sign-in stores nothing yet: its pair is held for the
    integrator to confirm (flows/connect.py). `browser_checked` hears the spent state's record once this browser is
    known to be the one that started the sign-in: from there, however the sign-in ends, it ended for this browser."""
    # Only the callback finishes a sign-in: /login does not import what finishing needs (cold start, in _finish).
    state = query.get("state")
    if not state:
        raise SignInRejected("missing_state")
    record = states.consume(state, now=now)
    steps.passed(watcher, steps.CALLBACK_STATE_CONSUMED)
    if record.end_user_id is not None and record.return_to is None:
        # Started from a connect session made before return_to was required: its code would have nowhere to go.
        raise SignInRejected("connect_session_without_return_to")
    finish = functools.partial(
        _finish,
        query,
        nonce,
        record,
        config=config,
        smartsheet=smartsheet,
        vault=vault,
        connections=connections,
        now=now,
        completions=completions,
        watcher=watcher,
        browser_checked=browser_checked,
    )
    if record.end_user_id is None or record.return_to is None:
        return finish()
    try:
        return finish()
    except ReconnectWrongAccount:
        raise  # its own page: the user may simply have picked the wrong account (it links back to the app)
    except Exception as exc:
        # A connect session's user goes back to the integrator's app, whatever failed (flows/connect_return.py).
        from smartsheet_oauth.flows.connect_return import ConnectSignInFailed  # noqa: PLC0415

        raise ConnectSignInFailed(exc, return_to=record.return_to) from exc


def _finish(
    query: dict[str, str],
    nonce: str | None,
    record: StateRecord,
    *,
    config: Config,
    smartsheet: SmartsheetClient,
    vault: TokenStore,
    connections: ConnectionStore,
    now: int,
    completions: Callable[[], CompletionStore],
    watcher: steps.StepWatcher | None,
    browser_checked: Callable[[StateRecord], None] | None,
) -> SignedIn | AwaitingConfirmation:
    from smartsheet_oauth.domain.tokens import TokenSet  # noqa: PLC0415
    from smartsheet_oauth.flows.connect import bind_or_refuse, record_new_pair  # noqa: PLC0415

    if not record.matches(nonce):
        raise SignInRejected("nonce_mismatch")
    if browser_checked is not None:
        browser_checked(record)
    if "error" in query:
        error = query["error"][:64]
        raise (UserDeclined if error == "access_denied" else AccessDenied)(error)
    code = _code(query.get("code"))
    region = config.region_of(record.region)

    try:
        grant = smartsheet.exchange_code(code, redirect_uri=config.redirect_uri, region=region)
    except InvalidGrant as exc:  # the code's refusal; a wrong secret (1072, invalid_client) stays the app's
        start_again = start_again_url(
            connect_session=record.end_user_id is not None,
            return_to=record.return_to,
            anonymous_login=config.anonymous_login,
            region=record.region,
        )
        raise CodeRefused(exc.reason, start_again=start_again) from None
    steps.passed(watcher, steps.CALLBACK_CODE_EXCHANGED)
    user = smartsheet.current_user(grant.access_token, region=region)
    if record.connection_id is not None and user.id != record.connection_id:
        from smartsheet_oauth.flows.connect import refuse_wrong_account  # noqa: PLC0415

        refuse_wrong_account(smartsheet, grant.access_token, record, signed_in=user.id, region=region)
    refuse_other_region(connections, smartsheet, grant.access_token, config=config, user_id=user.id, region=region)
    if record.end_user_id is not None:
        bind_or_refuse(
            connections,
            smartsheet,
            grant.access_token,
            end_user_id=record.end_user_id,
            smartsheet_user_id=user.id,
            accounts_per_end_user=config.accounts_per_end_user,
            region=region,
        )
    tokens = TokenSet.from_grant(
        grant, obtained_at=now, scope=" ".join(config.scopes), region=region, user_id=user.id, email=user.email
    )
    if record.end_user_id is not None and record.return_to is not None:
        from smartsheet_oauth.flows.connect import hold_for_confirmation  # noqa: PLC0415

        return hold_for_confirmation(
            completions(),
            smartsheet,
            tokens,
            sealer=vault.sealer,
            end_user_id=record.end_user_id,
            return_to=record.return_to,
            now=now,
            reconnect_of=record.connection_id,
            tags=record.tags,
        )
    secret_arn = vault.save(user.id, tokens)
    steps.passed(watcher, steps.CALLBACK_STORED, user.id)
    try:
        is_new = record_new_pair(connections, tokens, config=config, secret_arn=secret_arn, now=now)
    except ConditionFailed:
        # The account is bound to one of the integrator's end users: only a confirmed connect session of theirs
        # may bring it back or change it, so its status and binding stay as they were. The pair just stored is a
        # grant of this same Smartsheet user (nothing foreign in the secret), so it is not revoked.
        bound = connections.get(user.id)
        if bound is not None and config.region_of(bound.region) != region and bound.status != ConnectionStatus.REVOKED:
            # Another region's sign-in of this id won the instant since refuse_other_region looked, and this pair has
            # replaced its pair in the secret: revoke this grant, so the other connection never hands out a live
            # token of this account (it goes needs_reauth at its next refresh and its user signs in again).
            try:
                smartsheet.revoke(grant.access_token, region=region)
            except SmartsheetError as exc:
                logger.warning("could not revoke the refused grant", extra={"reason": exc.reason})
            raise RegionConflict(
                connection_id=user.id, region=region, existing_region=config.region_of(bound.region)
            ) from None
        raise BindingConflict(
            "account_bound_to_an_end_user",
            end_user_id=(bound.end_user_id if bound else None) or "",
            smartsheet_user_id=user.id,
            existing_connection_id=user.id,
            region=region,
        ) from None
    steps.passed(watcher, steps.CALLBACK_RECORDED, user.id)
    return SignedIn(connection_id=user.id, email=user.email, return_to=record.return_to, is_new=is_new, region=region)
