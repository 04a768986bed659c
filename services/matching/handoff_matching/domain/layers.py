"""A pool's schedule: prioritized layers, overrides, and temporary schedules.

A site's or a state pool's on-call is computed in three steps (docs/decisions/0017):
1. A **temporary schedule** in force at the instant replaces everything else: its
   own shifts say who is on call (of two overlapping, the one made last wins).
2. Otherwise the **layers**: the highest-priority layer with anyone on call wins;
   layers of equal priority add up. A layer is rotations, weekly shifts, or the
   shifts of an imported calendar.
3. The **overrides** in force then change that (`schedules.apply_overrides`), so a
   coach who texted OFF is off during a temporary schedule too.

`Timeline` is the result over a window, for lookups by bisection: matching computes
it once per pool and change, not once per referral.
"""

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Protocol
from uuid import UUID

from handoff_matching.domain.schedules import Interval, Override, Pool, Shift, apply_overrides


class ShiftSource(Protocol):
    """A rotation, a weekly shift, or a fixed shift."""

    def covering(self, instant: datetime) -> frozenset[UUID]: ...

    def shifts(self, window: Interval) -> Iterable[Shift]: ...


@dataclass(frozen=True)
class Layer:
    priority: int  # higher wins
    sources: tuple[ShiftSource, ...]

    def covering(self, instant: datetime) -> frozenset[UUID]:
        return frozenset().union(*(source.covering(instant) for source in self.sources))


@dataclass(frozen=True)
class TemporarySchedule:
    """For its window, exactly these shifts (none: nobody, before overrides)."""

    window: Interval
    shifts: tuple[Shift, ...]


@dataclass(frozen=True)
class Timeline:
    """Who is on call from each start until the next (the last until `end`)."""

    starts: tuple[datetime, ...]
    on_call: tuple[frozenset[UUID], ...]
    end: datetime

    @property
    def window(self) -> Interval:
        return Interval(self.starts[0], self.end)

    def at(self, instant: datetime) -> frozenset[UUID]:
        """Raises ValueError for an instant outside the window."""
        if instant not in self.window:
            raise ValueError("the instant is outside the timeline's window")
        return self.on_call[bisect.bisect_right(self.starts, instant) - 1]

    def segments(self) -> Iterator[tuple[Interval, frozenset[UUID]]]:
        ends = (*self.starts[1:], self.end)
        for start, end, coaches in zip(self.starts, ends, self.on_call, strict=True):
            yield Interval(start, end), coaches

    def shifts(self) -> list[Shift]:
        """Each coach's time on call as shifts: adjacent segments joined, in start order."""
        open_since: dict[UUID, datetime] = {}
        shifts: list[Shift] = []
        previous: frozenset[UUID] = frozenset()
        for interval, coaches in self.segments():
            for coach_id in previous - coaches:
                shifts.append(Shift(coach_id, Interval(open_since.pop(coach_id), interval.start)))
            for coach_id in coaches - previous:
                open_since[coach_id] = interval.start
            previous = coaches
        shifts.extend(Shift(c, Interval(start, self.end)) for c, start in open_since.items())
        return sorted(shifts, key=lambda s: (s.interval.start, str(s.coach_id)))


@dataclass(frozen=True)
class PoolSchedule:
    """Everything that decides one pool's on-call. `overrides` and `temporaries` in the
    order they were made (later wins where the rules say so)."""

    pool: Pool
    layers: tuple[Layer, ...] = ()
    overrides: tuple[Override, ...] = ()
    temporaries: tuple[TemporarySchedule, ...] = ()

    def scheduled(self, instant: datetime) -> frozenset[UUID]:
        """Who the temporary schedule or the layers have on call, before overrides."""
        for temporary in reversed(self.temporaries):
            if instant in temporary.window:
                return frozenset().union(*(s.covering(instant) for s in temporary.shifts))
        by_priority = sorted(self.layers, key=lambda layer: -layer.priority)
        for _, layers in groupby(by_priority, key=lambda layer: layer.priority):
            coaches = frozenset().union(*(layer.covering(instant) for layer in layers))
            if coaches:
                return coaches
        return frozenset()

    def on_call(self, instant: datetime) -> frozenset[UUID]:
        return apply_overrides(self.pool, instant, self.scheduled(instant), self.overrides)

    def boundaries(self, window: Interval) -> list[datetime]:
        """Every instant in the window at which the pool's on-call can change, sorted."""
        points = {window.start}
        for layer in self.layers:
            for source in layer.sources:
                for shift in source.shifts(window):
                    points.update((shift.interval.start, shift.interval.end))
        for temporary in self.temporaries:
            points.update((temporary.window.start, temporary.window.end))
            points.update(p for s in temporary.shifts for p in (s.interval.start, s.interval.end))
        for override in self.overrides:
            points.update((override.window.start, override.window.end))
        return sorted(point for point in points if window.start <= point < window.end)

    def timeline(self, window: Interval) -> Timeline:
        """The on-call over the window, computed once at each boundary."""
        starts: list[datetime] = []
        on_call: list[frozenset[UUID]] = []
        for point in self.boundaries(window):
            coaches = self.on_call(point)
            if not on_call or coaches != on_call[-1]:
                starts.append(point)
                on_call.append(coaches)
        return Timeline(tuple(starts), tuple(on_call), window.end)


def merged_on_call(schedules: Sequence[PoolSchedule], instant: datetime) -> frozenset[UUID]:
    """Who is on call in any of the pools."""
    return frozenset().union(*(schedule.on_call(instant) for schedule in schedules))
