"""The console's form rules without I/O: one-time form tokens bound to the session, and
wall-clock fields that name a time the clocks skip or a year out of range."""

from datetime import UTC, datetime

from handoff_console.domain.access import form_token_nonce, new_form_token, new_token
from handoff_console.entrypoints.web import _wall_clock


def test_a_form_token_opens_only_with_its_own_sessions_csrf_token() -> None:
    csrf = new_token()
    token = new_form_token(csrf)
    nonce = form_token_nonce(csrf, token)
    assert nonce is not None
    assert token.startswith(nonce + ".")
    assert form_token_nonce(new_token(), token) is None, "another session's page"
    assert new_form_token(csrf) != token, "each rendering has its own"
    for bad in (None, "", "no-dot", "a.b.c", f"{nonce}.{'0' * 64}", f".{token.split('.')[1]}"):
        assert form_token_nonce(csrf, bad) is None, bad


def test_a_time_in_the_spring_forward_gap_is_named_not_guessed() -> None:
    errors: dict[str, str] = {}
    assert _wall_clock("2027-03-14T02:30", "America/New_York", "starts_at", errors) is None
    assert errors == {
        "starts_at": "02:30 does not exist on 2027-03-14 in America/New_York "
        "(the clocks go forward then)"
    }


def test_times_around_the_gap_and_in_the_autumn_overlap_are_read() -> None:
    errors: dict[str, str] = {}
    before = _wall_clock("2027-03-14T01:59", "America/New_York", "start", errors)
    after = _wall_clock("2027-03-14T03:00", "America/New_York", "end", errors)
    repeated = _wall_clock("2026-11-01T01:30", "America/New_York", "start", errors)
    assert errors == {}
    assert before
    assert after
    assert repeated
    assert before == datetime(2027, 3, 14, 6, 59, tzinfo=UTC)
    assert after == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    # The first 01:30 (EDT); compared in UTC, as PEP 495 makes an ambiguous time equal to
    # nothing in another zone.
    assert repeated.astimezone(UTC) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_a_year_outside_2000_to_2100_is_named() -> None:
    errors: dict[str, str] = {}
    assert _wall_clock("9999-12-31T10:00", "America/New_York", "ends_at", errors) is None
    assert errors == {"ends_at": "must be in the years 2000 to 2100"}
