"""What the Smartsheet client knows about a token request that went wrong: whether Smartsheet may have carried it out
(its answer never came, or a server error does not say), and that it sends no attempt whose answer could arrive
after the caller's deadline. Against the emulator on loopback."""

from __future__ import annotations

import socket

import pytest
from smartsheet_oauth.domain.errors import InvalidGrant, NoTimeToRefresh, SmartsheetError, TransientSmartsheetError
from smartsheet_oauth.smartsheet.client import REFRESH_RETRY_PAUSE_SECONDS, SmartsheetClient, Timeouts

from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator

TIMEOUTS = Timeouts(connect=1.0, read=0.5)


def client(base_url: str) -> SmartsheetClient:
    return SmartsheetClient(
        api_base_url=base_url,
        client_id=DEFAULT_APP.client_id,
        client_secret=DEFAULT_APP.client_secret,
        timeouts=TIMEOUTS,
    )


def refresh_token(emulator: SmartsheetEmulator) -> str:
    token: str = emulator.issue_grant()["refresh_token"]
    return token


def test_a_refresh_whose_answer_never_comes_may_have_rotated(emulator: SmartsheetEmulator) -> None:
    emulator.set_faults(next_outcomes=["timeout"], timeout_processes=True)

    with pytest.raises(TransientSmartsheetError) as lost:
        client(emulator.api_base_url).refresh(refresh_token(emulator))

    assert lost.value.outcome_unknown
    assert lost.value.reason == "no_answer"
    assert emulator.counts["token.refresh.ok"] == 1  # it did: the pair was rotated
    assert emulator.counts["token.refresh"] == 1  # and the request was never repeated


def test_a_refused_connection_never_reached_smartsheet() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(TransientSmartsheetError) as refused:
        client(f"http://127.0.0.1:{port}/2.0").refresh("r" * 26)

    assert not refused.value.outcome_unknown
    assert refused.value.reason == "unreachable"


@pytest.mark.parametrize(("code", "unknown"), [(4003, False), (4004, True), (4001, True)])
def test_a_rate_limit_was_refused_unprocessed_a_server_error_does_not_say(
    emulator: SmartsheetEmulator, code: int, unknown: bool
) -> None:
    emulator.set_faults(next_outcomes=[code, code])

    with pytest.raises(TransientSmartsheetError) as failed:
        client(emulator.api_base_url).refresh(refresh_token(emulator), answer_within=TIMEOUTS.attempt_seconds)

    assert failed.value.outcome_unknown is unknown


def test_no_attempt_is_sent_without_time_for_its_answer(emulator: SmartsheetEmulator) -> None:
    with pytest.raises(NoTimeToRefresh):
        client(emulator.api_base_url).refresh(refresh_token(emulator), answer_within=TIMEOUTS.attempt_seconds - 0.01)

    assert emulator.counts["token.refresh"] == 0


def test_with_room_for_one_answer_only_a_rate_limit_is_the_answer(emulator: SmartsheetEmulator) -> None:
    emulator.set_faults(next_outcomes=[4003])

    with pytest.raises(TransientSmartsheetError) as limited:
        client(emulator.api_base_url).refresh(refresh_token(emulator), answer_within=TIMEOUTS.attempt_seconds)

    assert limited.value.status == 429
    assert emulator.counts["token.refresh"] == 1


def test_with_room_for_a_retry_a_rate_limited_refresh_is_sent_again(emulator: SmartsheetEmulator) -> None:
    emulator.set_faults(next_outcomes=[4003])
    within = 2 * TIMEOUTS.attempt_seconds + REFRESH_RETRY_PAUSE_SECONDS

    grant = client(emulator.api_base_url).refresh(refresh_token(emulator), answer_within=within)

    assert emulator.refresh_token_is_live(grant.refresh_token)
    assert emulator.counts["token.refresh"] == 2


def test_a_code_exchange_whose_answer_was_lost_is_not_blamed_on_the_code(emulator: SmartsheetEmulator) -> None:
    """The first attempt is carried out (a grant is issued) and its answer never arrives; the retry's refusal of the
    now-used code is Smartsheet refusing what it already did, not a bad code: the outcome is unknown."""
    emulator.set_faults(next_outcomes=["timeout"], timeout_processes=True)

    with pytest.raises(TransientSmartsheetError) as lost:
        client(emulator.api_base_url).exchange_code(emulator.issue_code())

    assert lost.value.outcome_unknown
    assert lost.value.reason == "no_answer"
    assert emulator.counts["token.code.ok"] == 1
    assert emulator.counts["token.code.1071"] == 1


def test_a_used_code_on_its_own_is_refused_as_such(emulator: SmartsheetEmulator) -> None:
    code = emulator.issue_code()
    client(emulator.api_base_url).exchange_code(code)

    with pytest.raises(InvalidGrant):
        client(emulator.api_base_url).exchange_code(code)


def test_the_broker_sends_the_redirect_as_the_sdks_spell_it_and_the_emulator_checks_it(
    emulator: SmartsheetEmulator,
) -> None:
    """The SDKs (Python token.py, Java OAuthFlowImpl) send `redirect_uri`; the current reference spells the parameter
    `redirect_url` and marks it Deprecated. The broker keeps the SDKs' spelling, which the emulator checks like the
    other."""
    before = len(emulator.token_requests)
    client(emulator.api_base_url).exchange_code(emulator.issue_code(), redirect_uri=DEFAULT_APP.redirect_uri)

    # The ledger is the emulator's, shared with this module's other tests: a request an earlier test's timeout fault
    # held can be recorded after ours, so ours is found by what it was, not by being last.
    sent = [(r["outcome"], r["redirect_uri_sent"], r["redirect_url_sent"]) for r in emulator.token_requests[before:]]
    assert ("ok", True, False) in sent, sent
    with pytest.raises(SmartsheetError) as refused:
        client(emulator.api_base_url).exchange_code(emulator.issue_code(), redirect_uri="http://127.0.0.1:1/elsewhere")
    assert refused.value.error_code == 1073
