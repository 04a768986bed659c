"""iCalendar out and in: computed shifts as a subscription feed, a layer from an `.ics` file.

Export writes one VEVENT per computed shift (not one RRULE per participant, which
overrides would falsify), in the pool's zone with its VTIMEZONE, each with a UID
derived from pool, coach and start: the same shift keeps its UID on every refresh.
Import expands RRULE, RDATE, EXDATE and RECURRENCE-ID with `recurring-ical-events`
over a window; each event names its coach by the `X-HANDOFF-COACH` property (as
exported), else by an ATTENDEE e-mail, else by a SUMMARY equal to the coach's name.
Pure computation: parsing and writing text, no I/O.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

import recurring_ical_events
from icalendar import Calendar, Event

from handoff_matching.domain.schedules import Interval, Pool, Shift

COACH_PROPERTY = "X-HANDOFF-COACH"
EDGE_MARGIN = timedelta(days=1)  # more than any UTC offset
UID_NAMESPACE = UUID("8b0f8f39-5c2e-4a53-a0a4-0e6a6c1f3d17")


@dataclass(frozen=True)
class CalendarEntry:
    """A shift in a feed: which pool it covers and the title a calendar shows."""

    pool: Pool
    shift: Shift
    summary: str

    @property
    def uid(self) -> str:
        """Stable for the same pool, coach and start (UTC)."""
        start = self.shift.interval.start.astimezone(UTC).isoformat()
        key = f"{self.pool.kind.value}:{self.pool.key}|{self.shift.coach_id}|{start}"
        return f"{uuid5(UID_NAMESPACE, key)}@handoff"


class CalendarProblems(ValueError):
    """The file cannot become a layer; `problems` says why, one line per event."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def export_ics(name: str, entries: Sequence[CalendarEntry], zone: ZoneInfo, stamp: datetime) -> str:
    """An RFC 5545 calendar of the entries, times in `zone` (VTIMEZONE included); `stamp`
    (UTC) is when it was computed (DTSTAMP)."""
    calendar = Calendar()
    calendar.add("prodid", "-//Handoff//on-call//EN")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", name)
    for entry in entries:
        event = Event()
        event.add("uid", entry.uid)
        event.add("dtstamp", stamp)
        event.add("dtstart", entry.shift.interval.start.astimezone(zone))
        event.add("dtend", entry.shift.interval.end.astimezone(zone))
        event.add("summary", entry.summary)
        event.add(COACH_PROPERTY, str(entry.shift.coach_id))
        calendar.add_component(event)
    # icalendar does not add VTIMEZONE by itself; without it Outlook misreads TZID times.
    calendar.add_missing_timezones()
    written: bytes = calendar.to_ical()
    return written.decode()


def import_ics(
    text: str, window: Interval, zone: ZoneInfo, coaches: Mapping[str, UUID]
) -> list[Shift]:
    """The shifts the calendar's events (recurrences expanded) have in the window, in
    start order. Floating times and all-day dates are read in `zone`. `coaches` maps
    lower-cased coach ids, `mailto:` addresses and names to coach ids.

    Raises CalendarProblems for text that is not a calendar, and naming every event
    (by UID) whose coach is not found or whose end is not after its start."""
    try:
        calendar = Calendar.from_ical(text)
    except ValueError as error:
        raise CalendarProblems([f"not an iCalendar file: {error}"]) from None
    # recurring-ical-events quietly swaps a DTEND before DTSTART, so a typo would become a
    # shift the coordinator never wrote: the events are checked as written, first.
    problems = _backwards_events(calendar, zone)
    if problems:
        raise CalendarProblems(problems)
    shifts: list[Shift] = []
    try:
        # Widened by a day: the library places floating times without our zone, so an
        # occurrence near an edge may be kept or dropped wrongly; clipped below, in `zone`.
        occurrences = recurring_ical_events.of(calendar).between(
            window.start - EDGE_MARGIN, window.end + EDGE_MARGIN
        )
    except ValueError as error:
        raise CalendarProblems([f"the recurrences cannot be expanded: {error}"]) from None
    for event in occurrences:
        uid = str(event.get("uid", "?"))
        coach_id = _coach_of(event, coaches)
        if coach_id is None:
            problems.append(
                f"event {uid}: no coach with its {COACH_PROPERTY}, attendee e-mail or summary"
            )
            continue
        start, end = _instant(event.start, zone), _instant(event.end, zone)
        if end <= start:
            problems.append(f"event {uid}: ends before it starts")
            continue
        if end <= window.start or start >= window.end:
            continue  # outside the window once read in `zone`
        shifts.append(Shift(coach_id, Interval(start, end)))
    if problems:
        raise CalendarProblems(sorted(set(problems)))
    return sorted(shifts, key=lambda s: (s.interval.start, str(s.coach_id)))


def _backwards_events(calendar: Calendar, zone: ZoneInfo) -> list[str]:
    """One line per VEVENT whose DTEND is not after its DTSTART (by UID, with both times)."""
    found: list[str] = []
    for event in calendar.walk("VEVENT"):
        start, end = event.get("dtstart"), event.get("dtend")
        if start is None or end is None:
            continue
        if _instant(end.dt, zone) <= _instant(start.dt, zone):
            found.append(
                f"event {event.get('uid', '?')}: DTEND {end.dt.isoformat()} is not after "
                f"DTSTART {start.dt.isoformat()}"
            )
    return sorted(found)


def _coach_of(event: Event, coaches: Mapping[str, UUID]) -> UUID | None:
    attendees = event.get("attendee", [])
    keys = [
        str(event.get(COACH_PROPERTY, "")),
        *(str(a) for a in (attendees if isinstance(attendees, list) else [attendees])),
        str(event.get("summary", "")),
    ]
    return next((coaches[k.lower()] for k in keys if k and k.lower() in coaches), None)


def _instant(value: date | datetime, zone: ZoneInfo) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)
