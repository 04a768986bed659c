"""Follow-ups after the bedside visit (issue #16, decision 0025): what a coach records, the
patient's contact choice, and when each follow-up attempt is due. No I/O here.

Times: every instant is an aware UTC datetime; local times are the site's time zone.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from handoff_schemas.vocabulary import FollowUpResult, RecoveryOutcome

DEFAULT_SCHEDULE = (1, 30, 90)
"""Days after the visit each window opens, when the site sets no schedule of its own."""
MAX_WINDOWS = 12
LAST_WINDOW = timedelta(days=14)
"""The last window ends this many local days after it opens, at the same local time (the
others end where the next opens)."""
RETRY_AFTER_DAYS = (1, 2)
"""A `no_answer` is tried again 1 day after the first attempt, then 2 days after the
second; a third `no_answer` closes the task as not reached."""


class BadInput(ValueError):
    """Input a coach or an administrator gave that cannot be stored; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class DayPart(StrEnum):
    """When in the day the patient prefers to be called."""

    MORNINGS = "mornings"
    AFTERNOONS = "afternoons"
    EVENINGS = "evenings"
    ANY_TIME = "any_time"


class CallDays(StrEnum):
    """Which days the patient prefers to be called."""

    WEEKDAYS = "weekdays"
    WEEKENDS = "weekends"
    ANY_DAY = "any_day"


# The local time an attempt falls due: inside the chosen part of the day, late enough
# that a patient discharged yesterday is up, early enough that a coach can still call.
CALL_TIMES = {
    DayPart.MORNINGS: time(10, 0),
    DayPart.AFTERNOONS: time(14, 0),
    DayPart.EVENINGS: time(18, 0),
    DayPart.ANY_TIME: time(11, 0),
}
DAY_PART_LABELS = {
    DayPart.MORNINGS: "Mornings",
    DayPart.AFTERNOONS: "Afternoons",
    DayPart.EVENINGS: "Evenings",
    DayPart.ANY_TIME: "Any time",
}
CALL_DAY_LABELS = {
    CallDays.WEEKDAYS: "Weekdays",
    CallDays.WEEKENDS: "Weekends",
    CallDays.ANY_DAY: "Any day",
}


class Contact(BaseModel):
    """What a consenting patient gave: sealed (encrypted) before it is stored."""

    phone: str = Field(description="E.164")
    day_part: DayPart
    days: CallDays

    def times_label(self) -> str:
        """The preferred times as the coach reads them, e.g. "Evenings, weekdays"."""
        return f"{DAY_PART_LABELS[self.day_part]}, {CALL_DAY_LABELS[self.days].lower()}"


_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_US_NANP = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")


def normalise_phone(text: str) -> str:
    """E.164 from what a coach typed: `+` and 8..15 digits, or a US number of 10 digits
    (a leading 1 allowed); spaces, dots, dashes and brackets ignored. Raises BadInput
    naming `callback_phone`."""
    cleaned = re.sub(r"[\s().-]", "", text)
    if _E164.match(cleaned):
        if cleaned.startswith("+1") and not _US_NANP.match(cleaned[2:]):
            raise BadInput("callback_phone", "not a valid US phone number")
        return cleaned
    digits = cleaned[1:] if len(cleaned) == 11 and cleaned.startswith("1") else cleaned
    if _US_NANP.match(digits):
        return "+1" + digits
    raise BadInput("callback_phone", "enter a 10-digit US number or +country code and number")


def parse_outcomes(values: Iterable[str], field: str = "outcomes") -> frozenset[RecoveryOutcome]:
    """The outcomes chosen: at least one, from the vocabulary; `none` only alone.
    Raises BadInput naming `field`."""
    try:
        outcomes = frozenset(RecoveryOutcome(v) for v in values)
    except ValueError:
        raise BadInput(field, "choose outcomes from the list") from None
    if not outcomes:
        raise BadInput(field, "choose at least one outcome (or none)")
    if RecoveryOutcome.NONE in outcomes and len(outcomes) > 1:
        raise BadInput(field, "'none' cannot be chosen with other outcomes")
    return outcomes


def check_schedule(days: Sequence[int]) -> tuple[int, ...]:
    """A site's follow-up schedule: 1..MAX_WINDOWS whole days, each 1..365, strictly
    ascending. Raises BadInput naming `follow_up_days`."""
    if not 1 <= len(days) <= MAX_WINDOWS:
        raise BadInput("follow_up_days", f"give 1 to {MAX_WINDOWS} days")
    if any(not 1 <= d <= 365 for d in days):
        raise BadInput("follow_up_days", "each day must be 1..365")
    if any(b <= a for a, b in pairwise(days)):
        raise BadInput("follow_up_days", "days must be strictly ascending")
    return tuple(days)


def call_slot(day: date, contact: Contact, zone: ZoneInfo) -> datetime:
    """The first call time on or after local `day` that the patient's preferred days
    allow, at their part of the day's call time, as UTC."""
    while not _day_allowed(day, contact.days):
        day += timedelta(days=1)
    return datetime.combine(day, CALL_TIMES[contact.day_part], zone).astimezone(UTC)


def _day_allowed(day: date, days: CallDays) -> bool:
    weekend = day.weekday() >= 5
    return days is CallDays.ANY_DAY or weekend == (days is CallDays.WEEKENDS)


@dataclass(frozen=True)
class Window:
    """One follow-up task's window: it opens (attempt 1 is due) `opens_at` and ends
    `ends_at` (UTC); no attempt of the task falls due at or after its end."""

    days: int
    opens_at: datetime
    ends_at: datetime


def windows(
    visit_at: datetime, schedule: Sequence[int], contact: Contact, time_zone: str
) -> list[Window]:
    """The tasks of a visit recorded `visit_at`: window N opens at the patient's call
    slot N local days after the visit's local date; each ends where the next opens, the
    last LAST_WINDOW after it opens."""
    zone = ZoneInfo(time_zone)
    visit_day = visit_at.astimezone(zone).date()
    opens = [call_slot(visit_day + timedelta(days=n), contact, zone) for n in schedule]
    # Wall-clock days: the last window ends at the same local time, across a DST change.
    last_end = (opens[-1].astimezone(zone) + LAST_WINDOW).astimezone(UTC)
    ends = [*opens[1:], last_end]
    return [Window(n, o, e) for n, o, e in zip(schedule, opens, ends, strict=True)]


def retry_due(
    attempt: int, attempted_at: datetime, window_ends_at: datetime, contact: Contact, time_zone: str
) -> datetime | None:
    """When attempt `attempt + 1` falls due after attempt `attempt` went unanswered at
    `attempted_at`: RETRY_AFTER_DAYS[attempt - 1] local days later, at the patient's call
    slot. None when no attempt is left, or the slot is not before the window's end: the
    task then closes as not reached."""
    if attempt > len(RETRY_AFTER_DAYS):
        return None
    zone = ZoneInfo(time_zone)
    day = attempted_at.astimezone(zone).date() + timedelta(days=RETRY_AFTER_DAYS[attempt - 1])
    due = call_slot(day, contact, zone)
    return due if due < window_ends_at else None


class TaskState(StrEnum):
    SCHEDULED = "scheduled"  # its timer is set
    DUE = "due"  # FollowUpDue sent; waiting for the coach's result
    REACHED = "reached"
    READMITTED = "readmitted"
    NOT_REACHED = "not_reached"  # no answer on every attempt of the window
    CLOSED = "closed"  # a result (wrong number, declined, deceased) ended follow-up
    CANCELLED = "cancelled"  # consent revoked

    @property
    def open(self) -> bool:
        return self in (TaskState.SCHEDULED, TaskState.DUE)


ENDS_FOLLOW_UP = frozenset(
    {
        FollowUpResult.WRONG_NUMBER,
        FollowUpResult.DECLINED_FURTHER_CONTACT,
        FollowUpResult.DECEASED,
    }
)
"""Results that close every open task and erase the contact details."""
CLOSES_TASK = {
    FollowUpResult.REACHED: TaskState.REACHED,
    FollowUpResult.READMITTED: TaskState.READMITTED,
}


@dataclass(frozen=True)
class VisitChoice:
    """What the coach recorded: the patient's consent, their contact when they consented
    (None otherwise), and the visit's outcomes."""

    consent: bool
    contact: Contact | None
    outcomes: frozenset[RecoveryOutcome]
    shown_schedule: tuple[int, ...] | None = None
    """The follow-up days the consent statement read out (the form's hidden `schedule`);
    None when the form did not carry it."""


def _one(form: Mapping[str, Sequence[str]], field: str) -> str:
    values = [v.strip() for v in form.get(field, ()) if v.strip()]
    if len(values) > 1:
        raise BadInput(field, "give one value")
    return values[0] if values else ""


def read_visit_form(form: Mapping[str, Sequence[str]]) -> VisitChoice:
    """The visit page's form (field → values): `consent` yes|no; when yes,
    `callback_phone`, `day_part` (DayPart) and `days` (CallDays); `outcomes`
    (RecoveryOutcome, several); the hidden `schedule` the consent statement read out
    (checked against the site's when the visit is stored). A number given without
    consent is not kept. Raises BadInput naming the first field in error."""
    consent_text = _one(form, "consent")
    if consent_text not in ("yes", "no"):
        raise BadInput("consent", "choose whether the patient agrees to follow-up calls")
    consent = consent_text == "yes"
    contact = None
    if consent:
        phone = normalise_phone(_one(form, "callback_phone"))
        try:
            day_part = DayPart(_one(form, "day_part"))
        except ValueError:
            raise BadInput("day_part", "choose the best time of day") from None
        try:
            days = CallDays(_one(form, "days"))
        except ValueError:
            raise BadInput("days", "choose the best days") from None
        contact = Contact(phone=phone, day_part=day_part, days=days)
    outcomes = parse_outcomes(form.get("outcomes", ()))
    return VisitChoice(consent, contact, outcomes, parse_shown_schedule(_one(form, "schedule")))


def parse_shown_schedule(text: str) -> tuple[int, ...] | None:
    """The visit form's hidden `schedule` ("1,30,90": the days the consent statement read
    out); None when missing or not a list of whole days, which no schedule matches."""
    parts = text.split(",") if text else []
    if not parts or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def schedule_field(days: Sequence[int]) -> str:
    """The hidden `schedule` value of the visit form for `days`."""
    return ",".join(str(d) for d in days)


def read_attempt_form(
    form: Mapping[str, Sequence[str]],
) -> tuple[FollowUpResult, frozenset[RecoveryOutcome]]:
    """The follow-up page's form: `result` (FollowUpResult) and, only when `reached`,
    `outcomes` (at least one, `none` alone). Raises BadInput naming the field."""
    try:
        result = FollowUpResult(_one(form, "result"))
    except ValueError:
        raise BadInput("result", "choose what happened") from None
    chosen = form.get("outcomes", ())
    if result is FollowUpResult.REACHED:
        return result, parse_outcomes(chosen)
    if chosen:
        raise BadInput("outcomes", "choose outcomes only when you reached the patient")
    return result, frozenset()


def schedule_text(days: Sequence[int]) -> str:
    """ "1 day, 30 days and 90 days": the schedule as the consent statement reads it."""
    parts = [f"{d} day" if d == 1 else f"{d} days" for d in days]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


RESULT_LABELS = {
    FollowUpResult.REACHED: "Reached the patient",
    FollowUpResult.NO_ANSWER: "No answer (we try again)",
    FollowUpResult.WRONG_NUMBER: "Wrong number",
    FollowUpResult.DECLINED_FURTHER_CONTACT: "Patient declined further calls",
    FollowUpResult.READMITTED: "Patient is back in hospital",
    FollowUpResult.DECEASED: "Patient has died",
}
OUTCOME_LABELS = {
    RecoveryOutcome.TREATMENT_OUTPATIENT: "Treatment: outpatient",
    RecoveryOutcome.TREATMENT_INTENSIVE_OUTPATIENT: "Treatment: intensive outpatient",
    RecoveryOutcome.TREATMENT_RESIDENTIAL: "Treatment: residential",
    RecoveryOutcome.TREATMENT_WITHDRAWAL_MANAGEMENT: "Treatment: withdrawal management",
    RecoveryOutcome.MOUD: "Medication for opioid use disorder (started or continued)",
    RecoveryOutcome.NALOXONE_KIT: "Naloxone kit given",
    RecoveryOutcome.RECOVERY_SUPPORT: "Recovery support (mutual support, community centre)",
    RecoveryOutcome.HOUSING: "Housing support",
    RecoveryOutcome.NONE: "None of these",
}
