"""Pages escape what they show and load nothing from elsewhere."""

from __future__ import annotations

import pytest
from smartsheet_oauth.edge import pages


def test_echoed_values_are_escaped() -> None:
    body = pages.signed_in('<script>alert("x")</script>@example.com')
    assert "<script>" not in body
    assert "&lt;script&gt;" in body


def test_pages_reference_no_external_resources() -> None:
    for body in (
        pages.signed_in("a@b.c"),
        pages.no_result(start_again="/login"),
        pages.no_result(start_again=None),
        pages.expired_or_used(),
        pages.declined(),
        pages.smartsheet_error("r"),
        pages.code_refused("/login", "r"),
        pages.code_refused(None, "r"),
        pages.unavailable("r"),
        pages.not_found(),
        pages.bad_request("d"),
        pages.internal_error("r"),
    ):
        assert "http://" not in body
        assert "https://" not in body
        assert "<script" not in body


def test_security_headers() -> None:
    headers = pages.SECURITY_HEADERS
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Strict-Transport-Security"].startswith("max-age=")


def test_every_page_carries_the_brand_escaped_and_the_csp_admits_only_the_logos_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    brand = pages.Brand(
        app_name="<b>Acme</b>",
        support_url="https://acme.example.com/help",
        logo_url="https://cdn.acme.example.com/l.png",
    )
    monkeypatch.setattr(pages, "brand", lambda: brand)

    for body in (
        pages.signed_in("a@b.c"),
        pages.no_result(start_again=None),
        pages.declined(),
        pages.not_found(),
        pages.connect("h", session="s", form_token="t"),
    ):
        assert "&lt;b&gt;Acme&lt;/b&gt;" in body
        assert "<b>" not in body
        assert '<img src="https://cdn.acme.example.com/l.png" alt="&lt;b&gt;Acme&lt;/b&gt; logo">' in body
        assert '<a href="https://acme.example.com/help">Contact &lt;b&gt;Acme&lt;/b&gt; support</a>' in body
    csp = pages.security_headers()["Content-Security-Policy"]
    assert "img-src https://cdn.acme.example.com;" in csp
    assert "default-src 'none'" in csp
    assert (
        "img-src https://cdn.acme.example.com;"
        in pages.connect_page_headers("https://app.smartsheet.com")["Content-Security-Policy"]
    )


def test_without_a_brand_pages_load_nothing_and_say_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "brand", pages.Brand)

    assert "img-src 'none'" in pages.security_headers()["Content-Security-Policy"]
    assert "<img" not in pages.signed_in("a@b.c")
    assert "connected to the app" in pages.signed_in("a@b.c")


def test_the_binding_conflict_page_says_which_case() -> None:
    mine = pages.binding_conflict("end_user_has_another_smartsheet_account")
    theirs = pages.binding_conflict("smartsheet_account_bound_to_another_end_user")

    assert "is already connected to a different Smartsheet account" in mine
    assert "already connected to another account in" in theirs
    assert mine != theirs


def test_a_bad_request_page_speaks_to_the_user_not_the_developer() -> None:
    body = pages.bad_request("return_to is not an allowed address")

    assert "return_to" not in body
    assert "This link is not valid" in body
