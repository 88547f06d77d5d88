"""The broker's configuration: every environment variable, validated once at cold start."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from smartsheet_oauth.domain.errors import ConfigError
from smartsheet_oauth.domain.shards import MAX_DUE_SHARDS
from smartsheet_oauth.flows.refresh_window import MIN_LEASE_SECONDS

KNOWN_SCOPES = frozenset(
    {
        "ADMIN_SHEETS",
        "ADMIN_SIGHTS",
        "ADMIN_USERS",
        "ADMIN_WEBHOOKS",
        "ADMIN_WORKSPACES",
        "CREATE_SHEETS",
        "CREATE_SIGHTS",
        "DELETE_SHEETS",
        "DELETE_SIGHTS",
        "READ_CONTACTS",
        "READ_EVENTS",
        "READ_SHEETS",
        "READ_SIGHTS",
        "READ_USERS",
        "SHARE_SHEETS",
        "SHARE_SIGHTS",
        "WRITE_SHEETS",
    }
)

# region -> (authorize page, API base). The token endpoint is <API base>/token.
REGIONS: dict[str, tuple[str, str]] = {
    "us": ("https://app.smartsheet.com/b/authorize", "https://api.smartsheet.com/2.0"),
    "eu": ("https://app.smartsheet.eu/b/authorize", "https://api.smartsheet.eu/2.0"),
    "gov": ("https://app.smartsheetgov.com/b/authorize", "https://api.smartsheetgov.com/2.0"),
    "au": ("https://app.smartsheet.au/b/authorize", "https://api.smartsheet.au/2.0"),
}

REQUIRED = (
    "STATE_TABLE_NAME",
    "CONNECTIONS_TABLE_NAME",
    "SMARTSHEET_CLIENT_ID",
    "APP_CREDENTIALS_SECRET_ARN",
    "TOKEN_SECRET_PREFIX",
)
# The template's SmartsheetClientId pattern: the client id is not secret and travels in the environment, so /login
# never reads the app credentials secret (only the functions that sign token requests do).
# The pace's default (RefreshRatePerMinute): refreshes a minute, all refreshers together. Smartsheet documents 300
# requests a minute per access token and each refresh uses its own, so the app-wide pace is the broker's own choice:
# 360 a minute keeps 2.3 million connections alive (2x headroom at a million; docs/performance.md).
DEFAULT_REFRESH_RATE_PER_MINUTE = 360
# With TOKEN_STORE=secretsmanager every refresh writes a secret version (PutSecretValue): 600 a minute is 10 a
# second, a fifth of the Region's 50-a-second quota that PutSecretValue shares with UpdateSecret and others (not
# adjustable). The dynamodb store writes no secret, so it may go up to the parameter's maximum. The template passes
# the ceiling for its store (REFRESH_RATE_CEILING); a cold start above it fails with a clear error.
SECRETS_MANAGER_MAX_REFRESH_RATE_PER_MINUTE = 600
MAX_REFRESH_RATE_PER_MINUTE = 6000

_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# AccountsPerEndUser: how many Smartsheet accounts one of the integrator's end users may have connected. `one` (the
# default) refuses a second one; `many` binds each (agencies, consultants). One Smartsheet account is never bound to
# two end users, whichever it is (flows/connect.check_binding).
ONE_ACCOUNT, MANY_ACCOUNTS = "one", "many"
ACCOUNTS_PER_END_USER = (ONE_ACCOUNT, MANY_ACCOUNTS)


@dataclass(frozen=True, slots=True)
class Config:
    """The broker's settings, read once per container from the environment the template sets."""

    state_table_name: str
    connections_table_name: str
    client_id: str
    app_credentials_secret_arn: str
    token_secret_prefix: str
    region: str
    authorize_url: str
    api_base_url: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    state_ttl_seconds: int
    refresh_window_seconds: int
    refresh_concurrency: int
    allowed_return_to: tuple[str, ...]
    lease_seconds: int
    app_credentials_max_age_seconds: int
    token_kms_key_id: str | None
    # Connections as a product (events, management API, connect sessions): defaults keep older callers working.
    event_bus_name: str = "default"
    # Off unless the stack says so: events fan out to every rule's targets, and code that needs a connection's e-mail
    # can ask the IAM-authorized API (EventsIncludeEmail parameter).
    events_include_email: bool = False
    anonymous_login: bool = True
    connect_session_ttl_seconds: int = 600
    # Refresh: the KMS key a new pair is sealed with while it waits on the record for its secret, and the
    # sweep's pace towards Smartsheet (a storm after an outage is spread out, not fired at once).
    pending_tokens_key_id: str | None = None
    refresh_rate_per_minute: int = DEFAULT_REFRESH_RATE_PER_MINUTE
    # The integrator's name, support link and logo on every page the end user sees (edge/pages.py).
    app_name: str = ""
    support_url: str | None = None
    logo_url: str | None = None
    # Where new token pairs go (TokenStore parameter): secretsmanager, or dynamodb (sealed pairs in the token table,
    # under TOKEN_KMS_KEY_ID). Stored pairs are read where their record says, whichever this is.
    token_store: str = "secretsmanager"  # noqa: S105 (a store's name, not a secret)
    token_table_name: str | None = None
    # The tag index (ConnectionTagsTable, stores/connection_tags.py): None in a function that never changes tags.
    connection_tags_table_name: str | None = None
    # The base of the login links the management API hands out (CustomDomainName): None means the host the request
    # came in on.
    public_base_url: str | None = None
    # What each connection event names in its `resources`: the stack's connections table, so a rule on a bus that
    # several stacks share (the webhook's) matches this stack's events only.
    event_resource: str | None = None
    # The regions a sign-in may choose (AllowedRegions; `region` above is the default and always among them), and each
    # of the four regions' (authorize page, API base) with the overrides applied: a connection keeps its region's API
    # for its refreshes and revocation even after its region leaves the allowed list.
    allowed_regions: tuple[str, ...] = ()
    region_endpoints: tuple[tuple[str, str, str], ...] = ()
    # The fan-out (DueShards): new due times go to one of this many partitions of the due index, by connection id.
    due_shards: int = 1
    # How often the scheduled dispatcher runs (RefreshSchedule, in minutes): it queues what the pace can refresh
    # before its next run.
    dispatch_interval_minutes: int = 30
    # Where the dispatcher sends due connections (RefreshQueue); None: the sweep refreshes them in its own process.
    refresh_queue_url: str | None = None
    # AccountsPerEndUser: one or many Smartsheet accounts per end user (ACCOUNTS_PER_END_USER above).
    accounts_per_end_user: str = ONE_ACCOUNT

    def regions_allowed(self) -> tuple[str, ...]:
        """The regions a new sign-in may choose, the default first."""
        return self.allowed_regions or (self.region,)

    def region_of(self, recorded: str | None) -> str:
        """The region of a connection as its record or pair names it: none (written before regions were recorded)
        means the stack's default region."""
        return recorded or self.region

    def endpoints(self, region: str | None = None) -> tuple[str, str]:
        """(authorize page, API base) of a region (default: the stack's); KeyError for an unknown one."""
        wanted = self.region_of(region)
        if wanted == self.region:
            return self.authorize_url, self.api_base_url
        for name, authorize, api in self.region_endpoints:
            if name == wanted:
                return authorize, api
        raise KeyError(wanted)


def load_config(environ: Mapping[str, str]) -> Config:
    """Read and validate the configuration; raise ConfigError naming the first bad variable."""
    values = {name: _required(environ, name) for name in REQUIRED}

    region = environ.get("SMARTSHEET_REGION", "").strip().lower() or "us"
    if region not in REGIONS:
        raise ConfigError("SMARTSHEET_REGION", f"must be one of {', '.join(REGIONS)}, got {region!r}")
    default_authorize, default_api = REGIONS[region]

    redirect_uri = environ.get("REDIRECT_URI", "").strip() or None
    if redirect_uri is not None:
        _check_url("REDIRECT_URI", redirect_uri)

    token_store, token_table_name = _token_store(environ)
    authorize_url = _url_override(environ, "SMARTSHEET_AUTHORIZE_URL", default_authorize)
    api_base_url = _url_override(environ, "SMARTSHEET_API_BASE_URL", default_api).rstrip("/")
    endpoints = _region_endpoints(environ, region, authorize_url, api_base_url)
    default_authorize, default_api = next((a, b) for name, a, b in endpoints if name == region)
    return Config(
        state_table_name=values["STATE_TABLE_NAME"],
        connections_table_name=values["CONNECTIONS_TABLE_NAME"],
        client_id=_client_id(values["SMARTSHEET_CLIENT_ID"]),
        app_credentials_secret_arn=values["APP_CREDENTIALS_SECRET_ARN"],
        token_secret_prefix=_secret_prefix(values["TOKEN_SECRET_PREFIX"]),
        region=region,
        authorize_url=default_authorize,
        api_base_url=default_api,
        scopes=_scopes(environ.get("OAUTH_SCOPES", "")),
        redirect_uri=redirect_uri,
        state_ttl_seconds=_int(environ, "STATE_TTL_SECONDS", 600, low=60, high=3600),
        refresh_window_seconds=_int(environ, "REFRESH_WINDOW_SECONDS", 172800, low=600, high=604800),
        refresh_concurrency=_int(environ, "REFRESH_CONCURRENCY", 8, low=1, high=64),
        allowed_return_to=_allowed_return_to(environ.get("ALLOWED_RETURN_TO", "")),
        # A lease must outlast a refresh's whole window (refresh_window.py), or none could ever be sent.
        lease_seconds=_int(environ, "REFRESH_LEASE_SECONDS", 120, low=MIN_LEASE_SECONDS, high=900),
        app_credentials_max_age_seconds=_int(environ, "APP_CREDENTIALS_MAX_AGE_SECONDS", 300, low=0, high=86400),
        token_kms_key_id=environ.get("TOKEN_KMS_KEY_ID", "").strip() or None,
        event_bus_name=_event_bus(environ.get("EVENT_BUS_NAME", "")),
        events_include_email=_switch(environ, "EVENTS_INCLUDE_EMAIL", default=False),
        anonymous_login=_switch(environ, "ANONYMOUS_LOGIN", default=True),
        connect_session_ttl_seconds=_int(environ, "CONNECT_SESSION_TTL_SECONDS", 600, low=60, high=3600),
        pending_tokens_key_id=environ.get("PENDING_TOKENS_KEY_ID", "").strip() or None,
        refresh_rate_per_minute=_refresh_rate(environ),
        app_name=_app_name(environ.get("APP_NAME", "")),
        support_url=_page_url(environ, "SUPPORT_URL", mailto=True),
        logo_url=_page_url(environ, "LOGO_URL", mailto=False),
        token_store=token_store,
        token_table_name=token_table_name,
        connection_tags_table_name=environ.get("CONNECTION_TAGS_TABLE_NAME", "").strip() or None,
        public_base_url=_public_base_url(environ),
        event_resource=environ.get("EVENT_RESOURCE_ARN", "").strip() or None,
        allowed_regions=_allowed_regions(environ.get("ALLOWED_REGIONS", ""), region),
        region_endpoints=endpoints,
        due_shards=_int(environ, "DUE_SHARDS", 1, low=1, high=MAX_DUE_SHARDS),
        dispatch_interval_minutes=_schedule_minutes(environ.get("REFRESH_SCHEDULE", "")),
        refresh_queue_url=environ.get("REFRESH_QUEUE_URL", "").strip() or None,
        accounts_per_end_user=_accounts_per_end_user(environ.get("ACCOUNTS_PER_END_USER", "")),
    )


def _accounts_per_end_user(raw: str) -> str:
    value = raw.strip().lower() or ONE_ACCOUNT
    if value not in ACCOUNTS_PER_END_USER:
        raise ConfigError("ACCOUNTS_PER_END_USER", f"must be one or many (AccountsPerEndUser), got {raw.strip()!r}")
    return value


def _allowed_regions(raw: str, default: str) -> tuple[str, ...]:
    """AllowedRegions: comma- or space-separated region names; the default region is always allowed (first)."""
    names = [name.strip().lower() for name in raw.replace(",", " ").split()]
    unknown = sorted({name for name in names if name not in REGIONS})
    if unknown:
        raise ConfigError("ALLOWED_REGIONS", f"has unknown region(s) {', '.join(unknown)}; use {', '.join(REGIONS)}")
    # The default region stays allowed whatever the list says: /login without ?region= must keep working.
    return tuple(dict.fromkeys([default, *names]))


def _region_endpoints(
    environ: Mapping[str, str], default: str, authorize_url: str, api_base_url: str
) -> tuple[tuple[str, str, str], ...]:
    """Every region's (name, authorize page, API base). SMARTSHEET_AUTHORIZE_URL_<REGION> and
    SMARTSHEET_API_BASE_URL_<REGION> replace one region's URLs (the local stack's emulator per region); the
    unsuffixed pair keeps meaning the default region's."""
    found = []
    for name, urls in REGIONS.items():
        authorize, api = (authorize_url, api_base_url) if name == default else urls
        suffix = name.upper()
        found.append(
            (
                name,
                _url_override(environ, f"SMARTSHEET_AUTHORIZE_URL_{suffix}", authorize),
                _url_override(environ, f"SMARTSHEET_API_BASE_URL_{suffix}", api).rstrip("/"),
            )
        )
    return tuple(found)


_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours)\)")
_CRON_STEP = re.compile(r"cron\(\d+/(\d+) ")


def _schedule_minutes(raw: str) -> int:
    """The minutes between two runs of RefreshSchedule's expression (the forms its AllowedPattern lets through);
    30 when unset (tests, a stack without the variable)."""
    expression = raw.strip()
    if not expression:
        return 30
    rate = _RATE.fullmatch(expression)
    if rate:
        return int(rate.group(1)) * (60 if rate.group(2).startswith("hour") else 1)
    step = _CRON_STEP.match(expression)
    if step:
        return int(step.group(1))
    if expression.startswith("cron("):
        return 60  # cron(M * * * ? *): once an hour
    raise ConfigError("REFRESH_SCHEDULE", f"must be a rate() or cron() expression, got {expression!r}")


_APP_NAME_MAX = 64


def _app_name(raw: str) -> str:
    name = raw.strip()
    if len(name) > _APP_NAME_MAX or not name.isprintable():
        raise ConfigError("APP_NAME", f"must be at most {_APP_NAME_MAX} printable characters")
    return name


def _page_url(environ: Mapping[str, str], name: str, *, mailto: bool) -> str | None:
    """A link or image the pages show: https only (mailto: for a support address), no credentials, no spaces. The
    pages escape it; the logo's origin is the only one their CSP lets load."""
    value = environ.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if mailto and parts.scheme == "mailto" and parts.path and not any(c.isspace() for c in value):
        return value
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username
        or parts.password
        or any(c.isspace() or c in "'\"<>\\" for c in value)
        or len(value) > 2048
    ):
        allowed = "an https:// URL or a mailto: address" if mailto else "an https:// URL"
        raise ConfigError(name, f"must be {allowed} without credentials, spaces or quotes, got {value!r}")
    return value


def _token_store(environ: Mapping[str, str]) -> tuple[str, str | None]:
    store = environ.get("TOKEN_STORE", "").strip().lower() or "secretsmanager"
    if store not in ("secretsmanager", "dynamodb"):
        raise ConfigError("TOKEN_STORE", f"must be secretsmanager or dynamodb, got {store!r}")
    table = environ.get("TOKEN_TABLE_NAME", "").strip() or None
    if store == "dynamodb":
        if table is None:
            raise ConfigError("TOKEN_TABLE_NAME", "is needed with TOKEN_STORE=dynamodb")
        if not environ.get("TOKEN_KMS_KEY_ID", "").strip():
            raise ConfigError("TOKEN_KMS_KEY_ID", "is needed with TOKEN_STORE=dynamodb (it seals the token pairs)")
    return store, table


def _refresh_rate(environ: Mapping[str, str]) -> int:
    """The pace, within the ceiling the template sets for its token store (REFRESH_RATE_CEILING: 600 while token
    pairs are written to Secrets Manager, 6000 with the dynamodb store alone). Unset (tests, the bench) means none."""
    rate = _int(environ, "REFRESH_RATE_PER_MINUTE", DEFAULT_REFRESH_RATE_PER_MINUTE, low=1, high=100_000)
    ceiling = _int(environ, "REFRESH_RATE_CEILING", 100_000, low=1, high=100_000)
    if rate > ceiling:
        why = (
            "each refresh writes a secret version, and 600 a minute is a fifth of the Region's PutSecretValue quota:"
            " use TokenStore=dynamodb (and end TokenStoreMigration) for a higher pace"
            if ceiling <= SECRETS_MANAGER_MAX_REFRESH_RATE_PER_MINUTE
            else "the template's maximum"
        )
        raise ConfigError("REFRESH_RATE_PER_MINUTE", f"is {rate}, above {ceiling} for this token store ({why})")
    return rate


@cache
def get_config() -> Config:
    """The process's configuration, read from os.environ once (a cold start fails here if it is bad)."""
    return load_config(os.environ)


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(name, "is required and not set")
    return value


def _client_id(value: str) -> str:
    if not _CLIENT_ID.fullmatch(value):
        raise ConfigError(
            "SMARTSHEET_CLIENT_ID", "must be 1 to 64 letters, digits, '_' or '-' (Developer Tools' client id)"
        )
    return value


def _secret_prefix(prefix: str) -> str:
    if not prefix.endswith("/"):
        raise ConfigError("TOKEN_SECRET_PREFIX", f"must end with '/', got {prefix!r}")
    if any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+=.@-" for ch in prefix):
        raise ConfigError("TOKEN_SECRET_PREFIX", "may contain only letters, digits and /_+=.@-")
    return prefix


def _int(environ: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _scopes(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(raw.split()))
    if not names:
        raise ConfigError("OAUTH_SCOPES", "is required: a space-separated list such as 'READ_SHEETS'")
    unknown = sorted(set(names) - KNOWN_SCOPES)
    if unknown:
        raise ConfigError("OAUTH_SCOPES", f"has unknown scope(s) {', '.join(unknown)}")
    return names


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, url: str) -> None:
    """https everywhere; http only for a loopback host (the local emulator and gateway)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return
    raise ConfigError(name, f"must be an https:// URL (http:// only for 127.0.0.1/localhost), got {url!r}")


def _public_base_url(environ: Mapping[str, str]) -> str | None:
    """An origin (https://signin.example.com): login links append /login to it, so no path, query or fragment."""
    value = environ.get("PUBLIC_BASE_URL", "").strip().rstrip("/")
    if not value:
        return None
    _check_url("PUBLIC_BASE_URL", value)
    parts = urlsplit(value)
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError("PUBLIC_BASE_URL", f"must be an origin such as https://signin.example.com, got {value!r}")
    return value


def _url_override(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        return default
    _check_url(name, value)
    if urlsplit(value).query or urlsplit(value).fragment:
        raise ConfigError(name, "must not carry a query string or fragment")
    return value


def _allowed_return_to(raw: str) -> tuple[str, ...]:
    entries = []
    for entry in raw.split():
        _check_url("ALLOWED_RETURN_TO", entry)
        parts = urlsplit(entry)
        if parts.username or parts.password or parts.fragment:
            raise ConfigError("ALLOWED_RETURN_TO", f"entries may not carry userinfo or fragments: {entry!r}")
        entries.append(entry)
    return tuple(entries)


_EVENT_BUS_NAME = re.compile(r"[A-Za-z0-9._/-]{1,256}")
_EVENT_BUS_ARN = re.compile(r"arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/[A-Za-z0-9._/-]{1,256}")


def _event_bus(raw: str) -> str:
    """The bus the connection events go to: a name in this account and region, or a bus ARN."""
    value = raw.strip() or "default"
    if _EVENT_BUS_NAME.fullmatch(value) or _EVENT_BUS_ARN.fullmatch(value):
        return value
    raise ConfigError("EVENT_BUS_NAME", f"must be an event bus name or ARN, got {value!r}")


def _switch(environ: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("enabled", "true"):
        return True
    if raw in ("disabled", "false"):
        return False
    raise ConfigError(name, f"must be 'enabled' or 'disabled', got {raw!r}")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """The webhook delivery function's settings (WebhookUrl and the resources the template makes for it)."""

    url: str
    signing_secret_arn: str
    delivery_queue_url: str
    dead_letter_queue_url: str
    # A failed attempt's message comes back after min(max, base * 2^(attempt-1)) seconds, jittered down by up to a
    # quarter. The template leaves both at their defaults; the local tests shorten them.
    retry_base_seconds: int = 30
    retry_max_seconds: int = 3600
    secret_max_age_seconds: int = 300


def load_webhook_config(environ: Mapping[str, str]) -> WebhookConfig:
    """Read and validate the delivery function's settings; raise ConfigError naming the first bad variable."""
    url = _required(environ, "WEBHOOK_URL")
    parts = urlsplit(url)
    # Not quoted in the message: a receiver may carry its own token in the URL's query.
    if not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))) or not parts.hostname:
        raise ConfigError("WEBHOOK_URL", "must be an https:// URL (http:// only for 127.0.0.1/localhost)")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ConfigError("WEBHOOK_URL", "must not carry credentials or a fragment")
    return WebhookConfig(
        url=url,
        signing_secret_arn=_required(environ, "WEBHOOK_SIGNING_SECRET_ARN"),
        delivery_queue_url=_required(environ, "WEBHOOK_DELIVERY_QUEUE_URL"),
        dead_letter_queue_url=_required(environ, "WEBHOOK_DEAD_LETTER_QUEUE_URL"),
        retry_base_seconds=_int(environ, "WEBHOOK_RETRY_BASE_SECONDS", 30, low=0, high=900),
        # SQS keeps a message invisible for 12 hours at most.
        retry_max_seconds=_int(environ, "WEBHOOK_RETRY_MAX_SECONDS", 3600, low=0, high=43200),
        secret_max_age_seconds=_int(environ, "WEBHOOK_SECRET_MAX_AGE_SECONDS", 300, low=0, high=86400),
    )
