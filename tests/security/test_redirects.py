"""No open redirect (RFC 9700 4.11, RFC 6749 10.15): `return_to` leads only to an allow-listed origin (exact scheme,
host and port) or exact URL, and the Smartsheet redirect is built from configuration alone."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.errors import BadRequest
from smartsheet_oauth.flows.sign_in import checked_return_to

from tests.security.support import assert_security_headers, header
from tests.support.broker import Broker

ALLOWED = ("https://app.example.com", "https://other.example.com/exact/path")

REFUSED = [
    # another origin, protocol-relative and path tricks
    "https://evil.example",
    "//evil.example",
    "///evil.example",
    "////evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/%2F/evil.example",
    "/login",
    "relative/path",
    "https:evil.example",
    "https:/evil.example",
    "https:\\\\evil.example",
    "https:/\\evil.example",
    "https://app.example.com\\@evil.example",
    "https://evil.example\\.app.example.com",
    # scheme tricks
    "http://app.example.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "javascript://app.example.com/%0Aalert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "ftp://app.example.com/",
    "https+evil://app.example.com/",
    # userinfo
    "https://app.example.com@evil.example",
    "https://app.example.com:443@evil.example",
    "https://user@app.example.com/",
    "https://user:pass@app.example.com/",
    "https://:@app.example.com/",
    "https://evil.example%2F@app.example.com/",
    # encoded variants
    "https%3A%2F%2Fevil.example",
    "https%3a//evil.example",
    "%2F%2Fevil.example",
    "%5C%5Cevil.example",
    "https://app.example.com%2Eevil.example",
    "https://app.example.com%40evil.example",
    "https://app%2Eexample%2Ecom/",
    "https://evil.example%23@app.example.com",
    "https:%2F%2Fapp.example.com",
    # case, port, trailing-dot and look-alike host tricks
    "https://app.example.com./",
    "https://APP.EXAMPLE.COM./",
    "https://app.example.com:8443/",
    "https://app.example.com:443/",
    "https://app.example.com:/",
    "https://app.example.com:0/",
    "https://app.example.com:99999/",
    "https://app.example.com.evil.example/",
    "https://evilapp.example.com/",
    "https://evil.example/app.example.com",
    "https://evil.example?https://app.example.com",
    "https://evil.example#https://app.example.com",
    "https://xn--pp-8cd.example.com/",
    "https://\u0430pp.example.com/",  # Cyrillic a
    "https://app.example.com\u3002evil.example/",  # ideographic full stop
    "https://evil.example\uff03@app.example.com",  # fullwidth '#': NFKC makes it a delimiter
    "https://app.example.com\uff0f@evil.example",  # fullwidth '/'
    "https://[::1",
    "https://[app.example.com]/",
    "https://[::ffff:127.0.0.1]/",
    # exact-URL entries are exact
    "https://other.example.com/",
    "https://other.example.com/exact/path/",
    "https://other.example.com/exact/Path",
    "https://other.example.com/exact/path?x=1",
    "https://other.example.com/exact/path/../../evil",
    # control characters (header splitting), oversized
    "https://app.example.com/\r\nSet-Cookie:%20x=1",
    "https://app.example.com/\x00",
    "\x00https://app.example.com/",
    "https://app.example.com/\x7f",
    "https://app.example.com/" + "a" * 3000,
]

# Allowed, and harmless: the browser stays on the allowed origin whatever the path or fragment says.
ALLOWED_URLS = [
    "https://app.example.com",
    "https://app.example.com/",
    "https://app.example.com/settings?tab=smartsheet#done",
    "HTTPS://APP.EXAMPLE.COM/x",
    "https://app.example.com//evil.example",
    "https://app.example.com/%0D%0ASet-Cookie:x=1",
    "https://app.example.com#@evil.example",
    "https://other.example.com/exact/path",
]


@pytest.mark.parametrize("url", REFUSED)
def test_the_return_to_check_refuses(url: str) -> None:
    with pytest.raises(BadRequest):
        checked_return_to(url, ALLOWED)


@pytest.mark.parametrize("url", ALLOWED_URLS)
def test_the_return_to_check_admits_exactly_the_allowed_origin(url: str) -> None:
    assert checked_return_to(url, ALLOWED) == url
    parts = urlsplit(url)
    assert parts.scheme.lower() == "https"
    assert parts.netloc.lower() in {"app.example.com", "other.example.com"}


def test_login_refuses_every_hostile_return_to_and_lands_exactly_on_an_allowed_one(
    broker: Broker, subtests: pytest.Subtests, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_RETURN_TO", " ".join(ALLOWED))
    services.reset()
    for url in REFUSED:
        with subtests.test(return_to=url):
            answer = broker.login({"return_to": url})
            assert answer.status == 400
            assert header(answer.headers, "Location") is None
            assert answer.cookies == []
            assert_security_headers(answer.headers)
            assert "This link is not valid" in answer.body  # the user's words; the log has the developer's
    assert broker.dynamodb.scan(TableName=broker.state_table)["Count"] == 0

    # An allowed one waits in the state table (not in any URL) and is exactly where the user lands.
    url = "https://app.example.com/settings?tab=smartsheet#done"
    location, nonce = broker.start(return_to=url)
    assert "app.example.com" not in location
    answer = broker.callback(broker.consent(location, user_id=4583173393803140), nonce)
    assert answer.status == 303
    assert answer.location == url
    assert_security_headers(answer.headers)


HOSTILE_LOGIN_QUERIES = [
    {"redirect_uri": "https://evil.example/callback"},
    {"authorize_url": "https://evil.example/b/authorize"},
    {"client_id": "attacker-app", "scope": "ADMIN_USERS", "state": "chosen-by-attacker"},
    {"response_type": "token"},
]


def test_the_smartsheet_redirect_is_built_from_configuration_only(
    broker: Broker, subtests: pytest.Subtests, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authorize.app import lambda_handler

    from tests.support.broker import answer_of
    from tests.support.events import LambdaContext, http_event

    for hostile in HOSTILE_LOGIN_QUERIES:
        with subtests.test(query=hostile):
            event = http_event(
                "/login",
                hostile,
                headers={
                    "host": "evil.example",
                    "x-forwarded-host": "evil.example",
                    "referer": "https://evil.example/",
                },
            )
            event["requestContext"]["domainName"] = "evil.example"
            answer = answer_of(lambda_handler(event, LambdaContext()))

            assert answer.status == 302
            location = urlsplit(answer.location)
            assert f"{location.scheme}://{location.netloc}{location.path}" == broker.emulator.authorize_url
            query = parse_qs(location.query)
            assert set(query) == {"response_type", "client_id", "scope", "state"}  # no redirect_uri: not configured
            assert query["response_type"] == ["code"]
            assert query["client_id"] == ["local-client-id"]
            assert query["scope"] == ["READ_SHEETS WRITE_SHEETS"]
            assert query["state"] != ["chosen-by-attacker"]
            assert "evil.example" not in answer.location

    # A configured REDIRECT_URI is sent exactly as configured, whatever the request says.
    monkeypatch.setenv("REDIRECT_URI", "https://broker.example.com/callback")
    services.reset()
    answer = broker.login({"redirect_uri": "https://evil.example/callback"})
    assert answer.status == 302
    assert parse_qs(urlsplit(answer.location).query)["redirect_uri"] == ["https://broker.example.com/callback"]
