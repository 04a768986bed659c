"""Rotations, layers, overrides and temporary schedules, computed in wall-clock time."""

import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from handoff_matching.domain.layers import Layer, PoolSchedule, TemporarySchedule
from handoff_matching.domain.rotations import Rotation, ShiftUnit
from handoff_matching.domain.schedules import (
    Interval,
    Override,
    OverrideKind,
    Pool,
    Shift,
    WeeklyShift,
)

NEW_YORK = ZoneInfo("America/New_York")
MERCY = Pool.site("md-mercy")
ANA, BEN, CARA, DEV = (uuid.UUID(int=n) for n in range(1, 5))


def utc(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(month: int, day: int, hour: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=NEW_YORK)


def rotation(
    length: int, unit: ShiftUnit, *people: uuid.UUID, start: date = date(2026, 3, 1)
) -> Rotation:
    return Rotation(NEW_YORK, start, time(8), length, unit, people or (ANA, BEN, CARA))


def test_a_daily_rotation_hands_over_at_0800_and_takes_turns() -> None:
    daily = rotation(1, ShiftUnit.DAYS)
    assert daily.covering(local(3, 1, 7)) == frozenset()  # before its start
    assert daily.covering(local(3, 1, 8)) == {ANA}
    assert daily.covering(local(3, 2, 7)) == {ANA}
    assert daily.covering(local(3, 2, 8)) == {BEN}
    assert daily.covering(local(3, 3, 9)) == {CARA}
    assert daily.covering(local(3, 4, 9)) == {ANA}


def test_a_daily_rotation_keeps_0800_across_spring_forward_2026_03_08() -> None:
    daily = rotation(1, ShiftUnit.DAYS)
    across = daily.shift(6)  # Sat 03-07 08:00 EST to Sun 03-08 08:00 EDT
    assert across.interval == Interval(utc(3, 7, 13), utc(3, 8, 12))
    assert across.interval.end - across.interval.start == timedelta(hours=23)
    assert daily.handoff_at(7) == utc(3, 8, 12)  # 08:00 EDT
    assert daily.covering(utc(3, 8, 11, 59)) == {ANA}  # 07:59 EDT: still Saturday's coach
    assert daily.covering(utc(3, 8, 12)) == {BEN}


def test_a_daily_rotation_keeps_0800_across_fall_back_2026_11_01() -> None:
    daily = rotation(1, ShiftUnit.DAYS, start=date(2026, 10, 1))
    sunday = (date(2026, 11, 1) - date(2026, 10, 1)).days
    assert daily.handoff_at(sunday) == utc(11, 1, 13)  # 08:00 EST
    assert daily.handoff_at(sunday - 1) == utc(10, 31, 12)  # 08:00 EDT
    longer = daily.shift(sunday - 1).interval
    assert longer.end - longer.start == timedelta(hours=25)


def test_a_rotation_defined_in_october_keeps_its_handoff_hour_in_november() -> None:
    weekly = rotation(1, ShiftUnit.WEEKS, ANA, BEN, start=date(2026, 10, 5))  # a Monday
    for shift in weekly.shifts(Interval(utc(11, 2), utc(12, 1))):
        assert shift.interval.start.astimezone(NEW_YORK).time() == time(8)
        assert shift.interval.start.astimezone(NEW_YORK).weekday() == 0
    # From 10-05 by week: A, B, A, B, then 11-02 A, 11-09 B, 11-16 A at 08:00 EST.
    assert weekly.covering(local(11, 16, 8)) == {ANA}
    assert weekly.covering(local(11, 16, 7)) == {BEN}
    assert weekly.handoff_at(6) == utc(11, 16, 13)


def test_an_hourly_rotation_of_12_hours_stays_on_the_wall_clock_and_a_coach_may_repeat() -> None:
    twelve = Rotation(NEW_YORK, date(2026, 3, 7), time(8), 12, ShiftUnit.HOURS, (ANA, BEN, ANA))
    starts = [s.interval.start for s in twelve.shifts(Interval(utc(3, 7, 13), utc(3, 9, 12)))]
    assert [s.astimezone(NEW_YORK).hour for s in starts] == [8, 20, 8, 20]
    assert [s.coach_id for s in twelve.shifts(Interval(utc(3, 7, 13), utc(3, 9, 12)))] == [
        ANA,
        BEN,
        ANA,
        ANA,
    ]
    night = twelve.shift(1).interval  # Sat 20:00 EST to Sun 08:00 EDT
    assert night.end - night.start == timedelta(hours=11)


def test_an_hourly_rotation_skips_the_hour_that_does_not_exist() -> None:
    hourly = Rotation(NEW_YORK, date(2026, 3, 8), time(0), 1, ShiftUnit.HOURS, (ANA, BEN, CARA))
    shifts = list(hourly.shifts(Interval(utc(3, 8, 5), utc(3, 8, 9))))
    # 00:00 A, 01:00 B, 02:00 C does not exist (its shift is empty), 03:00 A
    assert [(s.coach_id, s.interval.start) for s in shifts] == [
        (ANA, utc(3, 8, 5)),
        (BEN, utc(3, 8, 6)),
        (ANA, utc(3, 8, 7)),
        (BEN, utc(3, 8, 8)),
    ]
    assert hourly.covering(utc(3, 8, 7, 30)) == {ANA}


def test_a_rotation_refuses_no_participants_or_an_empty_length() -> None:
    with pytest.raises(ValueError, match="participant"):
        Rotation(NEW_YORK, date(2026, 3, 1), time(8), 1, ShiftUnit.DAYS, ())
    with pytest.raises(ValueError, match="one unit"):
        Rotation(NEW_YORK, date(2026, 3, 1), time(8), 0, ShiftUnit.DAYS, (ANA,))


def days(coach_id: uuid.UUID) -> tuple[WeeklyShift, ...]:
    return tuple(WeeklyShift(coach_id, MERCY, d, time(8), time(20), NEW_YORK) for d in range(7))


def test_the_highest_layer_with_someone_on_call_wins_and_equal_layers_add() -> None:
    around_the_clock = rotation(1, ShiftUnit.DAYS, ANA, start=date(2026, 3, 2))
    primary = Layer(10, (around_the_clock,))
    backup = Layer(0, days(BEN))
    schedule = PoolSchedule(MERCY, (backup, primary))
    assert schedule.on_call(local(3, 2, 12)) == {ANA}
    assert schedule.on_call(local(3, 1, 12)) == {BEN}  # before the rotation starts: the layer below
    assert schedule.on_call(local(3, 1, 6)) == frozenset()  # BEN works 08-20
    equal = PoolSchedule(MERCY, (Layer(10, days(BEN)), primary))
    assert equal.on_call(local(3, 2, 12)) == {ANA, BEN}
    assert equal.on_call(local(3, 2, 22)) == {ANA}


def test_a_cover_spanning_two_shifts_applies_only_where_the_coach_was_on_call() -> None:
    schedule = PoolSchedule(MERCY, (Layer(0, days(ANA)),))
    cover = Override(
        OverrideKind.REPLACE, MERCY, Interval(local(3, 2, 8), local(3, 3, 20)), BEN, ANA
    )
    covered = PoolSchedule(MERCY, schedule.layers, (cover,))
    assert covered.on_call(local(3, 2, 12)) == {BEN}
    assert covered.on_call(local(3, 2, 23)) == frozenset()  # the gap between ANA's two shifts
    assert covered.on_call(local(3, 3, 9)) == {BEN}
    assert covered.on_call(local(3, 3, 21)) == frozenset()
    assert covered.on_call(local(3, 4, 9)) == {ANA}
    timeline = covered.timeline(Interval(local(3, 2), local(3, 4)))
    assert [(s.coach_id, s.interval) for s in timeline.shifts()] == [
        (BEN, Interval(local(3, 2, 8), local(3, 2, 20))),
        (BEN, Interval(local(3, 3, 8), local(3, 3, 20))),
    ]


def test_a_replace_inside_a_shift_hands_back_when_it_ends() -> None:
    overnight = Layer(0, (rotation(1, ShiftUnit.DAYS, ANA),))
    swap = Override(
        OverrideKind.REPLACE, MERCY, Interval(local(3, 2, 13), local(3, 2, 17)), BEN, ANA
    )
    schedule = PoolSchedule(MERCY, (overnight,), (swap,))
    timeline = schedule.timeline(Interval(local(3, 2, 8), local(3, 3, 8)))
    assert list(timeline.segments()) == [
        (Interval(local(3, 2, 8), local(3, 2, 13)), frozenset({ANA})),
        (Interval(local(3, 2, 13), local(3, 2, 17)), frozenset({BEN})),
        (Interval(local(3, 2, 17), local(3, 3, 8)), frozenset({ANA})),
    ]


def test_two_overlapping_overrides_the_later_replace_wins_and_a_remove_beats_all() -> None:
    schedule = PoolSchedule(MERCY, (Layer(0, days(ANA)),))
    morning = Interval(local(3, 2, 8), local(3, 2, 12))
    first = Override(OverrideKind.REPLACE, MERCY, morning, BEN, ANA)
    later = Override(
        OverrideKind.REPLACE, MERCY, Interval(local(3, 2, 10), local(3, 2, 14)), CARA, ANA
    )
    both = PoolSchedule(MERCY, schedule.layers, (first, later))
    assert both.on_call(local(3, 2, 9)) == {BEN}
    assert both.on_call(local(3, 2, 11)) == {CARA}  # made last: wins where they overlap
    assert both.on_call(local(3, 2, 13)) == {CARA}
    assert both.on_call(local(3, 2, 15)) == {ANA}
    cara_off = Override(OverrideKind.REMOVE, None, Interval(local(3, 2, 11), local(3, 2, 12)), CARA)
    sick_cover = PoolSchedule(MERCY, schedule.layers, (first, later, cara_off))
    assert sick_cover.on_call(local(3, 2, 11) + timedelta(minutes=30)) == frozenset()
    added = Override(OverrideKind.ADD, MERCY, morning, DEV)
    assert PoolSchedule(MERCY, schedule.layers, (first, added)).on_call(local(3, 2, 9)) == {
        BEN,
        DEV,
    }


def test_a_temporary_schedule_replaces_every_layer_for_its_window() -> None:
    holiday = Interval(local(12, 24, 18), local(12, 26, 8))
    temporary = TemporarySchedule(
        holiday,
        (
            Shift(DEV, Interval(local(12, 24, 18), local(12, 25, 8))),
            Shift(CARA, Interval(local(12, 25, 8), local(12, 26, 8))),
        ),
    )
    layers = (Layer(0, days(ANA)), Layer(5, (rotation(1, ShiftUnit.DAYS, BEN),)))
    schedule = PoolSchedule(MERCY, layers, temporaries=(temporary,))
    assert schedule.on_call(local(12, 24, 12)) == {BEN}
    assert schedule.on_call(local(12, 24, 20)) == {DEV}
    assert schedule.on_call(local(12, 25, 12)) == {CARA}
    assert schedule.on_call(local(12, 26, 8)) == {BEN}
    bare = PoolSchedule(MERCY, layers, temporaries=(TemporarySchedule(holiday, ()),))
    assert bare.on_call(local(12, 25, 12)) == frozenset()  # a strike: nobody, and it shows
    off = Override(OverrideKind.REMOVE, None, holiday, CARA)
    assert PoolSchedule(MERCY, layers, (off,), (temporary,)).on_call(local(12, 25, 12)) == set()


def test_a_timeline_answers_like_the_schedule_at_every_minute() -> None:
    schedule = PoolSchedule(
        MERCY,
        (Layer(0, days(ANA)), Layer(1, (rotation(12, ShiftUnit.HOURS, BEN, CARA),))),
        (Override(OverrideKind.REMOVE, MERCY, Interval(local(3, 8, 1), local(3, 8, 9)), BEN),),
    )
    window = Interval(utc(3, 7), utc(3, 10))
    timeline = schedule.timeline(window)
    instant = window.start
    while instant < window.end:
        assert timeline.at(instant) == schedule.on_call(instant), instant
        instant += timedelta(minutes=7)
    with pytest.raises(ValueError, match="outside"):
        timeline.at(window.end)
