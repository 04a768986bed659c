"""The roster as program coordinators write it: a JSON file of coaches and their shifts.

Validated whole before anything is stored, and every problem is reported with
where it is — `coaches[3].contact_methods[0].destination: …` — so a coordinator
can fix a file of hundreds of rows in one pass.
"""

import json
from datetime import date, datetime, time
from typing import Annotated, Literal, get_args
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    ValidationError,
    model_validator,
)

from handoff_matching.domain.eligibility import Certification, Coach
from handoff_matching.domain.schedules import (
    Interval,
    Override,
    OverrideKind,
    Pool,
    PoolKind,
    WeeklyShift,
)
from handoff_schemas.vocabulary import Channel, E164Phone, GenderPreference, LanguageTag, Substance

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    return name


TimeZone = Annotated[str, AfterValidator(_time_zone)]
FIRST_YEAR, LAST_YEAR = 2000, 2100
"""The years a schedule may name: beyond them a date is a typo (9999), and arithmetic on
it would overflow far from the field that caused it."""


def _in_years(value: date) -> date:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must be in the years {FIRST_YEAR} to {LAST_YEAR}")
    return value


def _moment_in_years(value: datetime) -> datetime:
    _in_years(value.date())
    return value


ScheduleDate = Annotated[date, AfterValidator(_in_years)]
"""A date a schedule names, in the years 2000 to 2100."""
ScheduleMoment = Annotated[AwareDatetime, AfterValidator(_moment_in_years)]
"""An instant with its offset that a schedule names, in the years 2000 to 2100."""
PoolName = Annotated[str, Field(pattern=r"^(site:[a-z0-9][a-z0-9-]{1,39}|state:[A-Z]{2})$")]


def _pool(name: str) -> Pool:
    kind, key = name.split(":", 1)
    return Pool(PoolKind(kind), key)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhoneContact(Strict):
    channel: Literal[Channel.SMS, Channel.VOICE]
    destination: E164Phone


class EmailContact(Strict):
    channel: Literal[Channel.EMAIL]
    destination: EmailStr


class WebhookContact(Strict):
    channel: Literal[Channel.WEBHOOK]
    destination: HttpUrl

    @model_validator(mode="after")
    def _https_only(self) -> "WebhookContact":
        if self.destination.scheme != "https":
            raise ValueError("a webhook destination must be an https URL")
        return self


ContactMethod = Annotated[
    PhoneContact | EmailContact | WebhookContact, Field(discriminator="channel")
]


class CertificationRow(Strict):
    state: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    credential: Annotated[str, Field(min_length=2, max_length=20)]
    expires_on: date


class CoachRow(Strict):
    coach_id: UUID
    display_name: Annotated[str, Field(min_length=1, max_length=80)]
    contact_methods: Annotated[list[ContactMethod], Field(min_length=1)]
    languages: Annotated[list[LanguageTag], Field(min_length=1)]
    gender: GenderPreference | None = None
    lived_experience: list[Substance] = []
    veteran: bool = False
    lgbtq_affirming: bool = False
    telehealth: bool = False
    max_concurrent: Annotated[int, Field(ge=1, le=10)] = 1
    home_sites: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$")]] = []
    active: bool = True
    certifications: list[CertificationRow] = []

    def to_coach(self) -> Coach:
        return Coach(
            coach_id=self.coach_id,
            display_name=self.display_name,
            languages=frozenset(self.languages),
            gender=self.gender,
            lived_experience=frozenset(self.lived_experience),
            max_concurrent=self.max_concurrent,
            certifications=tuple(
                Certification(c.state, c.credential, c.expires_on) for c in self.certifications
            ),
            active=self.active,
            home_sites=frozenset(self.home_sites),
        )


class ShiftRow(Strict):
    coach_id: UUID
    pool: PoolName
    weekday: Weekday
    start: time
    end: time
    time_zone: TimeZone

    def to_shift(self) -> WeeklyShift:
        return WeeklyShift(
            self.coach_id,
            _pool(self.pool),
            WEEKDAYS.index(self.weekday),
            self.start,
            self.end,
            ZoneInfo(self.time_zone),
        )


class OverrideRow(Strict):
    override_id: UUID
    kind: OverrideKind
    pool: PoolName
    coach_id: UUID
    replaces: UUID | None = None
    starts_at: ScheduleMoment
    ends_at: ScheduleMoment

    @model_validator(mode="after")
    def _consistent(self) -> "OverrideRow":
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if (self.kind is OverrideKind.REPLACE) != (self.replaces is not None):
            raise ValueError("a replace override, and only it, names the coach it replaces")
        return self

    def to_override(self) -> Override:
        return Override(
            self.kind,
            _pool(self.pool),
            Interval(self.starts_at, self.ends_at),
            self.coach_id,
            self.replaces,
        )


class RosterFile(Strict):
    coaches: list[CoachRow]
    shifts: list[ShiftRow] = []
    overrides: list[OverrideRow] = []

    @model_validator(mode="after")
    def _references_hold(self) -> "RosterFile":
        known = {coach.coach_id for coach in self.coaches}
        if len(known) != len(self.coaches):
            raise ValueError("a coach_id appears twice")
        for index, shift in enumerate(self.shifts):
            if shift.coach_id not in known:
                raise ValueError(f"shifts[{index}].coach_id: no such coach in this file")
        for index, override in enumerate(self.overrides):
            if not {override.coach_id, override.replaces or override.coach_id} <= known:
                raise ValueError(f"overrides[{index}]: names a coach not in this file")
            if override.replaces == override.coach_id:
                raise ValueError(f"overrides[{index}].replaces: a coach cannot cover herself")
        return self


class RosterProblems(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_roster(text: str) -> RosterFile:
    """The validated roster, or RosterProblems listing each problem with its row and field."""
    try:
        return RosterFile.model_validate(json.loads(text))
    except json.JSONDecodeError as error:
        raise RosterProblems([f"line {error.lineno}: not valid JSON ({error.msg})"]) from None
    except ValidationError as error:
        raise RosterProblems(
            [
                problem_location(item["loc"]) + ": " + item["msg"]
                for item in error.errors(include_url=False)
            ]
        ) from None


def problem_location(location: tuple[int | str, ...]) -> str:
    """Where a validation problem is, as a coordinator reads it: `coaches[3].languages[0]`."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("PhoneContact", "EmailContact", "WebhookContact") or part.startswith(
            ("sms", "voice", "email", "webhook")
        ):
            continue  # the union member pydantic tried: noise to a coordinator
        else:
            path += f".{part}" if path else part
    return path or "file"
