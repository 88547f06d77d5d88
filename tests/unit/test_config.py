"""The configuration fails fast and names the variable that is missing or malformed."""

from __future__ import annotations

import re

import pytest
from smartsheet_oauth.config import REGIONS, load_config
from smartsheet_oauth.domain.errors import ConfigError

from infra.scripts.sam_translate import load_template

BASE = {
    "STATE_TABLE_NAME": "states",
    "CONNECTIONS_TABLE_NAME": "connections",
    "SMARTSHEET_CLIENT_ID": "1samp48lliedc2kebz",
    "APP_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf",
    "TOKEN_SECRET_PREFIX": "broker/connections/",
    "OAUTH_SCOPES": "READ_SHEETS WRITE_SHEETS",
}


def test_defaults_follow_the_design() -> None:
    config = load_config(BASE)
    assert config.region == "us"
    assert config.client_id == "1samp48lliedc2kebz"
    assert config.authorize_url == "https://app.smartsheet.com/b/authorize"
    assert config.api_base_url == "https://api.smartsheet.com/2.0"
    assert config.scopes == ("READ_SHEETS", "WRITE_SHEETS")
    assert config.redirect_uri is None
    assert config.state_ttl_seconds == 600
    assert config.refresh_window_seconds == 172800
    assert config.allowed_return_to == ()
    assert config.events_include_email is False  # EventsIncludeEmail: personal data stays out of events
    assert load_config({**BASE, "EVENTS_INCLUDE_EMAIL": "enabled"}).events_include_email is True


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_each_region_has_its_own_hosts(region: str) -> None:
    config = load_config({**BASE, "SMARTSHEET_REGION": region.upper()})
    assert (config.authorize_url, config.api_base_url) == REGIONS[region]


@pytest.mark.parametrize(
    "name",
    [
        "STATE_TABLE_NAME",
        "CONNECTIONS_TABLE_NAME",
        "SMARTSHEET_CLIENT_ID",
        "APP_CREDENTIALS_SECRET_ARN",
        "TOKEN_SECRET_PREFIX",
        "OAUTH_SCOPES",
    ],
)
def test_a_missing_variable_is_named(name: str) -> None:
    env = {k: v for k, v in BASE.items() if k != name}
    with pytest.raises(ConfigError, match=name) as info:
        load_config(env)
    assert info.value.variable == name


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("SMARTSHEET_REGION", "mars", "must be one of"),
        ("SMARTSHEET_CLIENT_ID", "id with spaces", "letters, digits"),
        ("SMARTSHEET_CLIENT_ID", "x" * 65, "1 to 64"),
        ("OAUTH_SCOPES", "READ_SHEETS READ_EVERYTHING", "READ_EVERYTHING"),
        ("STATE_TTL_SECONDS", "ten", "whole number"),
        ("STATE_TTL_SECONDS", "5", "between"),
        ("REFRESH_WINDOW_SECONDS", "99999999", "between"),
        ("REFRESH_CONCURRENCY", "0", "between"),
        ("TOKEN_SECRET_PREFIX", "no-trailing-slash", "must end with"),
        ("TOKEN_SECRET_PREFIX", "bad prefix/", "only letters"),
        ("SMARTSHEET_API_BASE_URL", "http://api.example.com/2.0", "https://"),
        ("SMARTSHEET_AUTHORIZE_URL", "ftp://127.0.0.1/b/authorize", "https://"),
        ("SMARTSHEET_API_BASE_URL", "https://api.example.com/2.0?x=1", "query"),
        ("REDIRECT_URI", "http://example.com/callback", "https://"),
        ("ALLOWED_RETURN_TO", "https://user@app.example.com", "userinfo"),
        ("ALLOWED_RETURN_TO", "javascript:alert(1)", "https://"),
        ("EVENTS_INCLUDE_EMAIL", "yes", "'enabled' or 'disabled'"),
        ("DUE_SHARDS", "17", "between"),
        ("DUE_SHARDS", "0", "between"),
        ("REFRESH_SCHEDULE", "every half hour", r"a rate\(\) or cron\(\) expression"),
    ],
)
def test_a_malformed_variable_is_named(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        load_config({**BASE, name: value})
    assert info.value.variable == name
    assert name in str(info.value)


def test_http_overrides_are_allowed_for_loopback_only() -> None:
    config = load_config(
        {
            **BASE,
            "SMARTSHEET_API_BASE_URL": "http://127.0.0.1:8700/2.0/",
            "SMARTSHEET_AUTHORIZE_URL": "http://localhost:8700/b/authorize",
        }
    )
    assert config.api_base_url == "http://127.0.0.1:8700/2.0"
    assert config.authorize_url == "http://localhost:8700/b/authorize"


def test_scopes_are_deduplicated_in_order() -> None:
    assert load_config({**BASE, "OAUTH_SCOPES": "WRITE_SHEETS READ_SHEETS WRITE_SHEETS"}).scopes == (
        "WRITE_SHEETS",
        "READ_SHEETS",
    )


def test_the_pages_brand_is_read_and_checked() -> None:
    """AppName, SupportUrl, LogoUrl (issue 22 item 6): https only (mailto: for support), nothing a page could not
    escape into a link or an image."""
    config = load_config(
        {
            **BASE,
            "APP_NAME": " Acme Sheets ",
            "SUPPORT_URL": "mailto:help@acme.example.com",
            "LOGO_URL": "https://cdn.acme.example.com/logo.png",
        }
    )
    assert (config.app_name, config.support_url, config.logo_url) == (
        "Acme Sheets",
        "mailto:help@acme.example.com",
        "https://cdn.acme.example.com/logo.png",
    )
    assert (load_config(BASE).app_name, load_config(BASE).support_url, load_config(BASE).logo_url) == ("", None, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOGO_URL", "http://cdn.acme.example.com/logo.png"),
        ("LOGO_URL", "mailto:help@acme.example.com"),
        ("LOGO_URL", "data:image/png;base64,AAAA"),
        ("SUPPORT_URL", "javascript:alert(1)"),
        ("SUPPORT_URL", "https://user:pass@acme.example.com/"),
        ("SUPPORT_URL", 'https://acme.example.com/"onmouseover='),
        ("APP_NAME", "A" * 65),
        ("APP_NAME", "Acme\nSheets"),
    ],
)
def test_a_brand_value_a_page_must_not_show_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({**BASE, name: value})
    assert refused.value.variable == name


def test_the_public_base_url_is_an_origin_or_nothing() -> None:
    """PUBLIC_BASE_URL (the stack's CustomDomainName): the base of connect sessions' login links."""
    assert load_config(BASE).public_base_url is None
    assert load_config({**BASE, "PUBLIC_BASE_URL": "https://signin.example.com/"}).public_base_url == (
        "https://signin.example.com"
    )


@pytest.mark.parametrize(
    "value",
    [
        "http://signin.example.com",
        "signin.example.com",
        "https://signin.example.com/prefix",
        "https://signin.example.com?x=1",
        "https://user@signin.example.com",
    ],
)
def test_a_public_base_url_a_login_link_cannot_start_with_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({**BASE, "PUBLIC_BASE_URL": value})
    assert refused.value.variable == "PUBLIC_BASE_URL"


def test_allowed_regions_default_to_the_stacks_region_alone() -> None:
    assert load_config(BASE).regions_allowed() == ("us",)
    assert load_config({**BASE, "SMARTSHEET_REGION": "eu"}).regions_allowed() == ("eu",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("us,eu", ("us", "eu")),
        ("EU, au gov", ("us", "eu", "au", "gov")),
        ("eu", ("us", "eu")),  # the default region stays allowed: /login without ?region= keeps working
        ("eu,eu,us", ("us", "eu")),
    ],
)
def test_allowed_regions_are_read_with_the_default_first(raw: str, expected: tuple[str, ...]) -> None:
    assert load_config({**BASE, "ALLOWED_REGIONS": raw}).regions_allowed() == expected


@pytest.mark.parametrize("raw", ["us,mars", "emea", "us;eu"])
def test_an_unknown_allowed_region_fails_the_cold_start_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_REGIONS") as info:
        load_config({**BASE, "ALLOWED_REGIONS": raw})
    assert info.value.variable == "ALLOWED_REGIONS"


def test_every_region_has_its_endpoints_and_each_can_be_overridden_on_its_own() -> None:
    config = load_config(
        {
            **BASE,
            "SMARTSHEET_API_BASE_URL": "http://127.0.0.1:9001/2.0/",
            "SMARTSHEET_AUTHORIZE_URL_EU": "http://127.0.0.1:9002/b/authorize",
            "SMARTSHEET_API_BASE_URL_EU": "http://127.0.0.1:9002/2.0",
        }
    )

    assert config.endpoints() == ("https://app.smartsheet.com/b/authorize", "http://127.0.0.1:9001/2.0")
    assert config.endpoints("us") == config.endpoints()
    assert config.endpoints("eu") == ("http://127.0.0.1:9002/b/authorize", "http://127.0.0.1:9002/2.0")
    assert config.endpoints("au") == REGIONS["au"]
    assert config.endpoints("gov") == REGIONS["gov"]
    assert config.region_of("") == "us"  # a record written before regions were recorded
    assert config.region_of(None) == "us"
    assert config.region_of("eu") == "eu"
    with pytest.raises(KeyError):
        config.endpoints("mars")


def test_a_regions_override_must_be_https_or_loopback() -> None:
    with pytest.raises(ConfigError, match="SMARTSHEET_API_BASE_URL_EU"):
        load_config({**BASE, "SMARTSHEET_API_BASE_URL_EU": "http://api.smartsheet.eu/2.0"})


@pytest.mark.parametrize(
    ("value", "admitted"),
    [
        ("", True),
        ("us", True),
        ("us,eu", True),
        ("us,eu,gov,au", True),
        ("eu,au", True),
        ("US", False),
        ("us eu", False),
        ("us,", False),
        ("mars", False),
        ("us,eu,gov,au,us", False),  # past MaxLength: four regions are all there are
    ],
)
def test_the_templates_allowed_regions_parameter_admits_only_what_the_config_reads(value: str, admitted: bool) -> None:
    spec = load_template()["Parameters"]["AllowedRegions"]
    matches = re.fullmatch(spec["AllowedPattern"], value) is not None and len(value) <= int(spec["MaxLength"])
    assert matches is admitted
    if matches:  # whatever the template lets through starts the functions
        assert load_config({**BASE, "ALLOWED_REGIONS": value}).regions_allowed()[0] == "us"


@pytest.mark.parametrize(
    ("expression", "minutes"),
    [
        ("rate(30 minutes)", 30),
        ("rate(15 minutes)", 15),
        ("rate(1 hour)", 60),
        ("cron(0/20 * * * ? *)", 20),
        ("cron(5 * * * ? *)", 60),
        ("", 30),
    ],
)
def test_the_dispatcher_reckons_its_interval_from_the_schedule(expression: str, minutes: int) -> None:
    config = load_config({**BASE, "REFRESH_SCHEDULE": expression})
    assert config.dispatch_interval_minutes == minutes
    assert config.due_shards == 1  # one partition of the due index unless DueShards says more
    assert config.refresh_queue_url is None  # no queue: the sweep refreshes in its own process


def test_the_pace_keeps_to_the_ceiling_the_template_sets_for_its_token_store() -> None:
    # 360 a minute by default (2x headroom at a million connections); no ceiling in the environment (tests, the
    # bench): none applies.
    assert load_config(BASE).refresh_rate_per_minute == 360
    assert load_config(BASE | {"REFRESH_RATE_PER_MINUTE": "100000"}).refresh_rate_per_minute == 100_000
    # Pairs in Secrets Manager: 600 at most (a fifth of the Region's PutSecretValue quota), and the cold start says
    # what to change above it.
    with_secrets = BASE | {"REFRESH_RATE_CEILING": "600"}
    assert load_config(with_secrets | {"REFRESH_RATE_PER_MINUTE": "600"}).refresh_rate_per_minute == 600
    with pytest.raises(ConfigError) as refused:
        load_config(with_secrets | {"REFRESH_RATE_PER_MINUTE": "3600"})
    assert refused.value.variable == "REFRESH_RATE_PER_MINUTE"
    assert "above 600" in str(refused.value)
    assert "PutSecretValue" in str(refused.value)
    assert "TokenStore=dynamodb" in str(refused.value)
    # The dynamodb store alone: up to the parameter's maximum.
    dynamodb = BASE | {"REFRESH_RATE_CEILING": "6000"}
    assert load_config(dynamodb | {"REFRESH_RATE_PER_MINUTE": "6000"}).refresh_rate_per_minute == 6000
    with pytest.raises(ConfigError, match="is 6001, above 6000 for this token store"):
        load_config(dynamodb | {"REFRESH_RATE_PER_MINUTE": "6001"})
    with pytest.raises(ConfigError, match="REFRESH_RATE_CEILING must be a whole number"):
        load_config(with_secrets | {"REFRESH_RATE_CEILING": "six hundred"})
