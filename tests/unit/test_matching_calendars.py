"""iCalendar export and import: stable UIDs, round trips, RRULE / EXDATE / RECURRENCE-ID."""

import uuid
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from handoff_matching.domain.calendars import (
    CalendarEntry,
    CalendarProblems,
    export_ics,
    import_ics,
)
from handoff_matching.domain.layers import Layer, PoolSchedule
from handoff_matching.domain.rotations import Rotation, ShiftUnit
from handoff_matching.domain.schedules import Interval, Pool

NEW_YORK = ZoneInfo("America/New_York")
MERCY = Pool.site("md-mercy")
ANA, BEN = uuid.UUID(int=1), uuid.UUID(int=2)
COACHES = {str(ANA): ANA, str(BEN): BEN, "mailto:ben@example.org": BEN, "ana r.": ANA}
MARCH = Interval(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
STAMP = datetime(2026, 2, 27, tzinfo=UTC)


def computed() -> list[CalendarEntry]:
    rotation = Rotation(NEW_YORK, date(2026, 3, 2), time(8), 1, ShiftUnit.WEEKS, (ANA, BEN))
    timeline = PoolSchedule(MERCY, (Layer(0, (rotation,)),)).timeline(MARCH)
    return [CalendarEntry(MERCY, shift, "On call: Mercy ED") for shift in timeline.shifts()]


def test_an_export_imports_back_to_the_same_shifts_across_spring_forward() -> None:
    entries = computed()
    text = export_ics("Mercy ED on call", entries, NEW_YORK, STAMP)
    assert "BEGIN:VTIMEZONE" in text
    assert "TZID=America/New_York" in text
    shifts = import_ics(text, MARCH, NEW_YORK, COACHES)
    assert shifts == [entry.shift for entry in entries]
    assert [s.interval.start.astimezone(NEW_YORK).hour for s in shifts[1:]] == [8, 8, 8, 8]


def test_uids_are_stable_between_exports_and_distinct_between_shifts() -> None:
    first = export_ics("x", computed(), NEW_YORK, STAMP)
    again = export_ics("x", computed(), NEW_YORK, datetime(2026, 3, 5, tzinfo=UTC))
    uids = [line for line in first.splitlines() if line.startswith("UID:")]
    assert uids == [line for line in again.splitlines() if line.startswith("UID:")]
    assert len(set(uids)) == len(computed()) == 5


RECURRING = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example//Rota//EN
BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:STANDARD
DTSTART:19701101T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700308T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:nights@example
DTSTAMP:20260201T000000Z
DTSTART;TZID=America/New_York:20260302T200000
DTEND;TZID=America/New_York:20260303T080000
RRULE:FREQ=WEEKLY;BYDAY=MO,FR;COUNT=6
EXDATE;TZID=America/New_York:20260306T200000
SUMMARY:Ana R.
END:VEVENT
BEGIN:VEVENT
UID:nights@example
RECURRENCE-ID;TZID=America/New_York:20260309T200000
DTSTAMP:20260201T000000Z
DTSTART;TZID=America/New_York:20260309T220000
DTEND;TZID=America/New_York:20260310T080000
SUMMARY:Ana R.
ATTENDEE;CN=Ben:mailto:ben@example.org
END:VEVENT
END:VCALENDAR
"""


def test_recurring_events_expand_with_exdate_recurrence_id_and_the_zone() -> None:
    shifts = import_ics(RECURRING, MARCH, NEW_YORK, COACHES)
    starts = [(s.coach_id, s.interval.start.astimezone(NEW_YORK)) for s in shifts]
    assert starts == [
        (ANA, datetime(2026, 3, 2, 20, tzinfo=NEW_YORK)),
        # 03-06 is an EXDATE; 03-09 was moved to 22:00 and names Ben by e-mail
        (BEN, datetime(2026, 3, 9, 22, tzinfo=NEW_YORK)),
        (ANA, datetime(2026, 3, 13, 20, tzinfo=NEW_YORK)),
        (ANA, datetime(2026, 3, 16, 20, tzinfo=NEW_YORK)),
        (ANA, datetime(2026, 3, 20, 20, tzinfo=NEW_YORK)),
    ]
    assert shifts[0].interval.end == datetime(2026, 3, 3, 13, tzinfo=UTC)  # 08:00 EST
    assert shifts[2].interval.start == datetime(2026, 3, 14, 0, tzinfo=UTC)  # 20:00 EDT


def test_an_event_naming_nobody_known_or_a_broken_file_is_refused_with_the_reason() -> None:
    with pytest.raises(CalendarProblems) as refused:
        import_ics(RECURRING.replace("Ana R.", "Somebody"), MARCH, NEW_YORK, COACHES)
    assert refused.value.problems == [
        "event nights@example: no coach with its X-HANDOFF-COACH, attendee e-mail or summary"
    ]
    with pytest.raises(CalendarProblems, match="not an iCalendar file"):
        import_ics("hello", MARCH, NEW_YORK, COACHES)


def _daily(start: str, end: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:daily@tests\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:{start}\r\n"
        f"DTEND:{end}\r\nRRULE:FREQ=DAILY\r\nSUMMARY:Ana R.\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def test_floating_times_are_clipped_to_the_window_as_read_in_the_zone() -> None:
    """Floating 08:00-20:00 daily, window ending 11:23 UTC (06:23 in New York): the 08:00
    of the last day starts after the window in New York, so it is not imported (the
    library, reading floating times without our zone, used to keep it)."""
    window = Interval(
        datetime(2026, 12, 1, 11, 23, tzinfo=UTC), datetime(2026, 12, 4, 11, 23, tzinfo=UTC)
    )
    shifts = import_ics(_daily("20261005T080000", "20261005T200000"), window, NEW_YORK, COACHES)
    assert [s.interval.start.astimezone(NEW_YORK).day for s in shifts] == [1, 2, 3]


def test_an_event_ending_before_it_starts_is_refused_not_swapped() -> None:
    with pytest.raises(CalendarProblems) as refused:
        import_ics(_daily("20261005T200000", "20261005T080000"), MARCH, NEW_YORK, COACHES)
    assert refused.value.problems == [
        "event daily@tests: DTEND 2026-10-05T08:00:00 is not after DTSTART 2026-10-05T20:00:00"
    ]
