"""Pages escape what they show and load nothing from elsewhere."""

from __future__ import annotations

from smartsheet_oauth.edge import pages


def test_echoed_values_are_escaped() -> None:
    body = pages.signed_in('<script>alert("x")</script>@example.com')
    assert "<script>" not in body
    assert "&lt;script&gt;" in body


def test_pages_reference_no_external_resources() -> None:
    for body in (
        pages.signed_in("a@b.c"),
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
