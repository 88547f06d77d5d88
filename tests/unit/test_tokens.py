"""Token pairs: one way to build the pair the broker keeps from the one Smartsheet issued, and one rule for when it
comes due (sign-in, refresh and connect completions all go through them)."""

from __future__ import annotations

from smartsheet_oauth.domain.tokens import TokenGrant, TokenSet, refresh_due_at

WINDOW = 172_800  # the template's default: 48 hours of the 7-day lifetime
NOW = 1_700_000_000
GRANT = TokenGrant(access_token="access-1", refresh_token="refresh-1", token_type="bearer", expires_in=604_799)


def test_a_pair_is_due_its_window_before_it_expires() -> None:
    assert refresh_due_at(NOW + 604_799, window_seconds=WINDOW, now=NOW) == NOW + 604_799 - WINDOW


def test_a_pair_that_lives_less_than_the_window_is_due_now_not_in_the_past() -> None:
    # An organisation's token policy can issue shorter lifetimes: due at once, in its place in the queue.
    assert refresh_due_at(NOW + 3600, window_seconds=WINDOW, now=NOW) == NOW
    assert refresh_due_at(NOW - 60, window_seconds=WINDOW, now=NOW) == NOW


def test_a_pair_is_built_from_the_grant_with_its_lifetime_counted_from_when_it_was_obtained() -> None:
    tokens = TokenSet.from_grant(
        GRANT, obtained_at=NOW, scope="READ_SHEETS", region="eu", user_id="4583173393803140", email="ada@example.com"
    )

    assert tokens == TokenSet(
        access_token="access-1",
        refresh_token="refresh-1",
        token_type="bearer",
        expires_at=NOW + 604_799,
        scope="READ_SHEETS",
        region="eu",
        user_id="4583173393803140",
        email="ada@example.com",
        obtained_at=NOW,
    )


def test_a_rotated_pair_keeps_its_grant_s_scope_region_and_user() -> None:
    first = TokenSet.from_grant(
        GRANT, obtained_at=NOW, scope="READ_SHEETS WRITE_SHEETS", region="au", user_id="7", email="a@example.com"
    )
    grant = TokenGrant(access_token="access-2", refresh_token="refresh-2", token_type="bearer", expires_in=3600)

    second = first.rotated(grant, obtained_at=NOW + 100)

    assert (second.access_token, second.refresh_token, second.expires_at, second.obtained_at) == (
        "access-2",
        "refresh-2",
        NOW + 100 + 3600,
        NOW + 100,
    )
    assert (second.scope, second.region, second.user_id, second.email) == (first.scope, "au", "7", "a@example.com")


def test_neither_repr_shows_a_token() -> None:
    tokens = TokenSet.from_grant(GRANT, obtained_at=NOW, scope="", region="us", user_id="7", email="")
    assert "access-1" not in repr(GRANT) + repr(tokens)
    assert "refresh-1" not in repr(GRANT) + repr(tokens)
