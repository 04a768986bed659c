"""Rotations: coaches taking turns, handed over at a wall-clock time in the rotation's zone.

"24-hour on-call handed over at 08:00, rotating through five coaches" is a rotation
of 1-day shifts starting some day at 08:00. Shift k starts at the start's wall-clock
date and time plus k shift lengths, added on the wall clock (not in elapsed time),
so a 08:00 handoff stays 08:00 across DST: the shift spanning a change is an hour
longer or shorter. Wall times in a DST gap or repeated fold are read as
`schedules.wall_time_to_utc` reads them. Participant k mod n holds shift k; a coach
may appear more than once. Before its start a rotation has nobody on call.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo

from handoff_matching.domain.schedules import Interval, Shift


class ShiftUnit(StrEnum):
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"


@dataclass(frozen=True)
class Rotation:
    """Raises ValueError without participants or with a shift length below 1."""

    zone: ZoneInfo
    start_date: date  # the local date of the first handoff
    handoff: time  # the wall-clock time of every handoff (hourly: of the first)
    shift_length: int  # in `unit`s
    unit: ShiftUnit
    participants: tuple[UUID, ...]

    def __post_init__(self) -> None:
        if not self.participants:
            raise ValueError("a rotation needs at least one participant")
        if self.shift_length < 1:
            raise ValueError("a shift is at least one unit long")

    @property
    def _step(self) -> timedelta:
        return timedelta(**{self.unit.value: self.shift_length})

    @property
    def _first(self) -> datetime:
        return datetime.combine(self.start_date, self.handoff)  # naive: the wall clock

    def handoff_at(self, k: int) -> datetime:
        """The instant (UTC) shift k begins; shift 0 begins at the start."""
        return (self._first + k * self._step).replace(tzinfo=self.zone).astimezone(UTC)

    def shift(self, k: int) -> Shift:
        """Shift k (k >= 0): its participant and interval."""
        return Shift(
            self.participants[k % len(self.participants)],
            Interval(self.handoff_at(k), self.handoff_at(k + 1)),
        )

    def index_at(self, instant: datetime) -> int:
        """The number of the shift covering the instant (negative before the start)."""
        wall = instant.astimezone(self.zone).replace(tzinfo=None)
        k = (wall - self._first) // self._step
        # The wall clock is within an hour of elapsed time: at most one step either way.
        while self.handoff_at(k) > instant:
            k -= 1
        while self.handoff_at(k + 1) <= instant:
            k += 1
        return k

    def covering(self, instant: datetime) -> frozenset[UUID]:
        """Who the rotation has on call at the instant (nobody before it starts)."""
        k = self.index_at(instant)
        return frozenset() if k < 0 else frozenset((self.shift(k).coach_id,))

    def shifts(self, window: Interval) -> Iterator[Shift]:
        """Every shift overlapping the window, in order (none of zero length)."""
        k = max(0, self.index_at(window.start))
        while (shift := self.shift(k)).interval.start < window.end:
            if shift.interval.start < shift.interval.end and window.start < shift.interval.end:
                yield shift
            k += 1
