"""The console's form rules without I/O: one-time form tokens bound to the session, and
wall-clock fields that name a time the clocks skip or a year out of range."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from handoff_console.domain.access import form_token_nonce, new_form_token, new_token
from handoff_console.entrypoints.web import _iso_minute, _wall_clock


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


def test_times_around_the_gap_are_read_and_one_in_the_autumn_overlap_is_named() -> None:
    errors: dict[str, str] = {}
    before = _wall_clock("2027-03-14T01:59", "America/New_York", "start", errors)
    after = _wall_clock("2027-03-14T03:00", "America/New_York", "end", errors)
    around = _wall_clock("2026-11-01T02:00", "America/New_York", "end", errors)
    assert errors == {}
    assert before == datetime(2027, 3, 14, 6, 59, tzinfo=UTC)
    assert after == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    assert around == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)  # 02:00 EST, once
    # 01:30 happens twice that night: the form cannot say which, so it is not guessed.
    assert _wall_clock("2026-11-01T01:30", "America/New_York", "start", errors) is None
    assert errors == {
        "start": "01:30 happens twice on 2026-11-01 in America/New_York (the clocks go back "
        "then): choose a time outside the repeated hour"
    }


def test_a_year_outside_2000_to_2100_is_named() -> None:
    errors: dict[str, str] = {}
    assert _wall_clock("9999-12-31T10:00", "America/New_York", "ends_at", errors) is None
    assert errors == {"ends_at": "must be in the years 2000 to 2100"}


def test_the_coverage_csv_names_whole_minutes_with_their_offset() -> None:
    """A gap cut at the report's moment is widened to whole minutes, never shortened."""
    start = datetime(2026, 12, 2, 11, 51, 8, 11596, tzinfo=UTC)
    end = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    new_york = ZoneInfo("America/New_York")
    assert _iso_minute(start, UTC) == "2026-12-02T11:51+00:00"
    assert _iso_minute(start, UTC, up=True) == "2026-12-02T11:52+00:00"
    assert _iso_minute(end, new_york, up=True) == "2026-12-04T10:00-05:00"
    assert _iso_minute(datetime(2026, 11, 1, 6, 30, tzinfo=UTC), new_york) == (
        "2026-11-01T01:30-05:00"  # the second 01:30: the offset says which
    )
