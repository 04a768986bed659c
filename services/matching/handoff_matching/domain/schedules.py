"""On-call schedules: weekly shifts in a site's wall-clock time, and overrides.

Rotations, layers and temporary schedules build on these (`domain/rotations.py`,
`domain/layers.py`); how overrides combine is decided here, once.

A shift is written as people write rotas: "Saturday 20:00 to 08:00" in the
site's time zone. Its start and end are wall-clock times, so a night shift is
13 hours long on the night clocks fall back and 11 on the night they spring
forward. A wall time that does not exist (02:30 on a spring-forward night) moves
forward by the jump (to 03:30), and one that happens twice (01:30 on a fall-back
night) is its first occurrence.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo


class PoolKind(StrEnum):
    SITE = "site"
    STATE = "state"


@dataclass(frozen=True)
class Pool:
    """Whom a shift covers: one site, or every site of a state (the state pool)."""

    kind: PoolKind
    key: str  # a site id, or a USPS state code

    @classmethod
    def site(cls, site_id: str) -> "Pool":
        return cls(PoolKind.SITE, site_id)

    @classmethod
    def state(cls, state: str) -> "Pool":
        return cls(PoolKind.STATE, state)


@dataclass(frozen=True)
class Interval:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


@dataclass(frozen=True)
class Shift:
    """One coach on call for one interval: an occurrence of a rotation or a weekly shift,
    an imported calendar event, or a shift of a temporary schedule."""

    coach_id: UUID
    interval: Interval

    def covering(self, instant: datetime) -> frozenset[UUID]:
        return frozenset((self.coach_id,)) if instant in self.interval else frozenset()

    def shifts(self, window: Interval) -> Iterator["Shift"]:
        if self.interval.start < window.end and window.start < self.interval.end:
            yield self


def wall_time_to_utc(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The instant a wall clock in `zone` shows `wall` on `day` (see the module's rules)."""
    # fold=0: of two 01:30s the first; a time in the gap is read with the offset before
    # the jump, which moves it forward by the gap, as PostgreSQL reads such a time too.
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def wall_time_problem(day: date, wall: time, zone: ZoneInfo) -> tuple[str, str] | None:
    """None if a wall clock in `zone` shows `wall` on `day` exactly once; else a code and
    what a coordinator reads: `time_does_not_exist` (skipped when the clocks go forward)
    or `time_happens_twice` (repeated when they go back). Where a person names such a time
    to start something (a rotation's first handoff), it is refused rather than guessed."""
    first = datetime.combine(day, wall, tzinfo=zone)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != first.replace(tzinfo=None):
        return (
            "time_does_not_exist",
            f"{wall:%H:%M} does not exist on {day:%Y-%m-%d} in {zone.key} "
            "(the clocks go forward then)",
        )
    if first.utcoffset() != first.replace(fold=1).utcoffset():
        return (
            "time_happens_twice",
            f"{wall:%H:%M} happens twice on {day:%Y-%m-%d} in {zone.key} (the clocks go back "
            "then): choose a time outside the repeated hour",
        )
    return None


@dataclass(frozen=True)
class WeeklyShift:
    coach_id: UUID
    pool: Pool
    weekday: int  # the local day the shift starts: 0 is Monday
    start: time
    end: time  # at or before `start`: ends the next day
    zone: ZoneInfo

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError("weekday is 0 (Monday) to 6 (Sunday)")

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def occurrence_starting(self, day: date) -> Interval:
        end_day = day + timedelta(days=1) if self.crosses_midnight else day
        return Interval(
            wall_time_to_utc(day, self.start, self.zone),
            wall_time_to_utc(end_day, self.end, self.zone),
        )

    def occurrences(self, window: Interval) -> Iterator[Interval]:
        """Every occurrence that overlaps the window."""
        first_day = window.start.astimezone(self.zone).date() - timedelta(days=1)
        last_day = window.end.astimezone(self.zone).date()
        day = first_day + timedelta(days=(self.weekday - first_day.weekday()) % 7)
        while day <= last_day:
            occurrence = self.occurrence_starting(day)
            if occurrence.start < window.end and window.start < occurrence.end:
                yield occurrence
            day += timedelta(days=7)

    def covering(self, instant: datetime) -> frozenset[UUID]:
        """The coach, if this shift covers the instant (the layers' common interface)."""
        return frozenset((self.coach_id,)) if self.covers(instant) else frozenset()

    def shifts(self, window: Interval) -> Iterator[Shift]:
        return (Shift(self.coach_id, occurrence) for occurrence in self.occurrences(window))

    def covers(self, instant: datetime) -> bool:
        # A shift lasts at most a day, so only one starting today or yesterday can cover now.
        today = instant.astimezone(self.zone).date()
        return any(
            instant in self.occurrence_starting(day)
            for day in (today, today - timedelta(days=1))
            if day.weekday() == self.weekday
        )


class OverrideKind(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True)
class Override:
    """A change to the rota for a window: add a coach, remove one, or one replacing another.

    `pool` None means every pool (a coach who texted OFF is off everywhere)."""

    kind: OverrideKind
    pool: Pool | None
    window: Interval
    coach_id: UUID
    replaces: UUID | None = None

    def __post_init__(self) -> None:
        if (self.kind is OverrideKind.REPLACE) != (self.replaces is not None):
            raise ValueError("a replace override, and only it, names the coach it replaces")
        if self.pool is None and self.kind is not OverrideKind.REMOVE:
            raise ValueError("only a remove override may apply to every pool")

    def applies(self, pool: Pool, instant: datetime) -> bool:
        return (self.pool is None or self.pool == pool) and instant in self.window


def apply_overrides(
    pool: Pool, instant: datetime, scheduled: Iterable[UUID], overrides: Iterable[Override]
) -> frozenset[UUID]:
    """Who is on call once the overrides in force at the instant change `scheduled`.

    `overrides` in the order they were made. The rules, so that two overlapping overrides
    have one documented winner (docs/decisions/0017):
    - a replace applies only where the coach it replaces is scheduled (a cover spanning
      several shifts adds nobody in the gaps between them); of two replacing the same
      coach, the one made last wins;
    - adds then add;
    - removes win over everything: a coach removed for an interval is not on call in it,
      however they got there (a replacement, an add, the schedule).
    """
    base = frozenset(scheduled)
    in_force = [o for o in overrides if o.applies(pool, instant)]
    replaced_by = {
        o.replaces: o.coach_id
        for o in in_force
        if o.kind is OverrideKind.REPLACE and o.replaces in base
    }
    coaches = {replaced_by.get(coach_id, coach_id) for coach_id in base}
    coaches.update(o.coach_id for o in in_force if o.kind is OverrideKind.ADD)
    coaches.difference_update(o.coach_id for o in in_force if o.kind is OverrideKind.REMOVE)
    return frozenset(coaches)


def on_call(
    pool: Pool, instant: datetime, shifts: Iterable[WeeklyShift], overrides: Iterable[Override]
) -> frozenset[UUID]:
    """Who is on call for the pool at the instant from weekly shifts alone (one layer);
    overrides as `apply_overrides` combines them."""
    scheduled = (shift.coach_id for shift in shifts if shift.pool == pool and shift.covers(instant))
    return apply_overrides(pool, instant, scheduled, overrides)


def boundaries(
    window: Interval, shifts: Iterable[WeeklyShift], overrides: Iterable[Override]
) -> list[datetime]:
    """Every instant in the window at which someone's on-call status can change."""
    points = {window.start}
    for shift in shifts:
        for occurrence in shift.occurrences(window):
            points.update((occurrence.start, occurrence.end))
    for override in overrides:
        points.update((override.window.start, override.window.end))
    return sorted(point for point in points if window.start <= point < window.end)
