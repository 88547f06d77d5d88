"""Which requests the local servers serve (infra.local.request_guard): this machine's programs and the servers' own
pages; never a page elsewhere, whether it names another origin, another host (DNS rebinding) or neither."""

from __future__ import annotations

import pytest

from infra.local.request_guard import refusal

PORT = 3000


def refused(
    host: str | None = f"127.0.0.1:{PORT}",
    origin: str | None = None,
    fetch_site: str | None = None,
    *,
    pages_elsewhere_link_here: bool = True,
    port: int = PORT,
) -> bool:
    reason = refusal(
        port=port, host=host, origin=origin, fetch_site=fetch_site, pages_elsewhere_link_here=pages_elsewhere_link_here
    )
    return reason is not None


@pytest.mark.parametrize("host", ["127.0.0.1:3000", "localhost:3000", "[::1]:3000", "LocalHost:3000"])
def test_a_loopback_name_with_the_servers_port_is_served(host: str) -> None:
    assert not refused(host)


@pytest.mark.parametrize(
    "host",
    [
        None,  # HTTP/1.0 without Host: no browser sends that, and nothing local needs it
        "",
        "rebind.example:3000",  # DNS rebinding: the attacker's own name, now pointing at 127.0.0.1
        "127.0.0.1:3001",  # another server's port
        "127.0.0.1",  # the default port 80 is not this server's
        "127.0.0.2:3000",
        "localhost.:3000",
        "127.0.0.1:3000.rebind.example",
        "[::ffff:127.0.0.1]:3000",
    ],
)
def test_any_other_host_is_refused(host: str | None) -> None:
    assert refused(host)


def test_a_server_on_port_80_is_named_with_or_without_it() -> None:
    assert not refused("localhost", port=80)
    assert not refused("127.0.0.1:80", port=80)


@pytest.mark.parametrize("origin", ["http://127.0.0.1:3000", "http://localhost:3000", "http://[::1]:3000"])
def test_the_servers_own_origin_is_served(origin: str) -> None:
    assert not refused(origin=origin, fetch_site="same-origin")


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://127.0.0.1:3000",  # another scheme is another origin
        "http://127.0.0.1:3001",  # another loopback port: another site's page
        "http://localhost:8080",
        "null",  # a sandboxed frame or a data: URL anywhere, unless the browser says it is this origin
        "",
    ],
)
def test_pages_of_other_origins_are_refused(origin: str) -> None:
    assert refused(origin=origin)
    assert refused(origin=origin, fetch_site="cross-site")


def test_a_form_of_the_servers_own_page_without_referrer_posts_with_a_null_origin() -> None:
    assert not refused(origin="null", fetch_site="same-origin")
    assert refused(origin="null", fetch_site="same-site")
    assert refused(origin="null", fetch_site="cross-site")
    assert refused(origin="null", fetch_site="none")


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site"])
def test_a_server_no_page_links_to_refuses_what_pages_elsewhere_start(fetch_site: str) -> None:
    # An <img> or a link: no Origin header, but the browser tells who started the request.
    assert refused(fetch_site=fetch_site, pages_elsewhere_link_here=False)
    assert not refused(fetch_site=fetch_site, pages_elsewhere_link_here=True)  # /login from another site's link


@pytest.mark.parametrize("fetch_site", [None, "none", "same-origin"])
def test_programs_and_typed_urls_reach_a_server_no_page_links_to(fetch_site: str | None) -> None:
    assert not refused(fetch_site=fetch_site, pages_elsewhere_link_here=False)


def test_the_reason_names_what_to_fix_and_echoes_nothing_of_the_request() -> None:
    reason = refusal(
        port=PORT, host="<script>rebind.example:3000", origin=None, fetch_site=None, pages_elsewhere_link_here=True
    )
    assert reason is not None
    assert "127.0.0.1:3000" in reason
    assert "<script>" not in reason
