"""On-call schedules in wall-clock time: midnight-crossing shifts, both DST changes, overrides."""

import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from handoff_matching.domain.schedules import (
    Interval,
    Override,
    OverrideKind,
    Pool,
    WeeklyShift,
    boundaries,
    on_call,
    wall_time_problem,
)

NEW_YORK = ZoneInfo("America/New_York")
MERCY = Pool.site("md-mercy")
MONDAY, SATURDAY, SUNDAY = 0, 5, 6
ANA, BEN, CARA = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def night(coach: uuid.UUID = ANA, weekday: int = SATURDAY) -> WeeklyShift:
    return WeeklyShift(coach, MERCY, weekday, time(20), time(8), NEW_YORK)


def test_a_night_shift_is_13_hours_when_clocks_fall_back_2026_11_01() -> None:
    occurrence = night().occurrence_starting(datetime(2026, 10, 31).date())
    assert occurrence.start == utc(2026, 11, 1, 0)  # Sat 20:00 EDT
    assert occurrence.end == utc(2026, 11, 1, 13)  # Sun 08:00 EST
    assert occurrence.end - occurrence.start == timedelta(hours=13)


def test_a_night_shift_is_11_hours_when_clocks_spring_forward_2026_03_08() -> None:
    occurrence = night().occurrence_starting(datetime(2026, 3, 7).date())
    assert occurrence.start == utc(2026, 3, 8, 1)  # Sat 20:00 EST
    assert occurrence.end == utc(2026, 3, 8, 12)  # Sun 08:00 EDT
    assert occurrence.end - occurrence.start == timedelta(hours=11)


def test_the_same_day_shift_follows_the_wall_clock_across_the_change() -> None:
    shift = WeeklyShift(BEN, MERCY, MONDAY, time(9), time(17), NEW_YORK)
    before = shift.occurrence_starting(datetime(2026, 3, 2).date())
    after = shift.occurrence_starting(datetime(2026, 3, 9).date())
    assert (before.start, before.end) == (utc(2026, 3, 2, 14), utc(2026, 3, 2, 22))
    assert (after.start, after.end) == (utc(2026, 3, 9, 13), utc(2026, 3, 9, 21))


def test_a_wall_time_in_the_spring_gap_moves_forward_and_a_repeated_one_is_the_first() -> None:
    gap = WeeklyShift(CARA, MERCY, SUNDAY, time(2, 30), time(6), NEW_YORK)
    assert gap.occurrence_starting(datetime(2026, 3, 8).date()).start == utc(2026, 3, 8, 7, 30)
    repeated = WeeklyShift(CARA, MERCY, SUNDAY, time(1, 30), time(6), NEW_YORK)
    assert repeated.occurrence_starting(datetime(2026, 11, 1).date()).start == utc(
        2026, 11, 1, 5, 30
    )


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (utc(2026, 10, 31, 23, 59), set()),  # Sat 19:59 EDT
        (utc(2026, 11, 1, 0, 0), {ANA}),  # Sat 20:00 EDT
        (utc(2026, 11, 1, 5, 30), {ANA}),  # the first 01:30
        (utc(2026, 11, 1, 6, 30), {ANA}),  # the second 01:30, EST
        (utc(2026, 11, 1, 12, 59), {ANA}),  # Sun 07:59 EST
        (utc(2026, 11, 1, 13, 0), set()),  # Sun 08:00 EST: over
    ],
)
def test_who_is_on_call_through_the_fall_back_night(
    instant: datetime, expected: set[uuid.UUID]
) -> None:
    assert on_call(MERCY, instant, [night()], []) == expected


def test_a_shift_that_started_yesterday_is_found_after_midnight() -> None:
    sunday_3am = utc(2026, 6, 14, 7)  # Sun 03:00 EDT; the shift began Saturday
    assert on_call(MERCY, sunday_3am, [night()], []) == {ANA}
    assert on_call(Pool.state("MD"), sunday_3am, [night()], []) == frozenset()


def test_overrides_add_remove_and_replace_within_their_window_only() -> None:
    instant = utc(2026, 6, 14, 7)
    window = Interval(utc(2026, 6, 14, 6), utc(2026, 6, 14, 8))
    shifts = [night(ANA), night(BEN)]
    assert on_call(MERCY, instant, shifts, [Override(OverrideKind.ADD, MERCY, window, CARA)]) == {
        ANA,
        BEN,
        CARA,
    }
    assert on_call(MERCY, instant, shifts, [Override(OverrideKind.REMOVE, MERCY, window, BEN)]) == {
        ANA
    }
    replace = Override(OverrideKind.REPLACE, MERCY, window, CARA, replaces=BEN)
    assert on_call(MERCY, instant, shifts, [replace]) == {ANA, CARA}
    assert on_call(MERCY, utc(2026, 6, 14, 9), shifts, [replace]) == {ANA, BEN}
    assert on_call(MERCY, instant, [night(ANA)], [replace]) == {ANA}  # BEN was not on call
    other_pool = Override(OverrideKind.ADD, Pool.site("ri-kent"), window, CARA)
    assert on_call(MERCY, instant, shifts, [other_pool]) == {ANA, BEN}
    with pytest.raises(ValueError, match="replace"):
        Override(OverrideKind.REPLACE, MERCY, window, CARA)


def test_boundaries_are_every_instant_the_rota_can_change() -> None:
    window = Interval(utc(2026, 10, 30, 12), utc(2026, 11, 2, 12))
    override = Override(
        OverrideKind.REMOVE, MERCY, Interval(utc(2026, 11, 1, 2), utc(2026, 11, 1, 3)), ANA
    )
    assert boundaries(window, [night()], [override]) == [
        utc(2026, 10, 30, 12),
        utc(2026, 11, 1, 0),
        utc(2026, 11, 1, 2),
        utc(2026, 11, 1, 3),
        utc(2026, 11, 1, 13),
    ]


def test_a_wall_time_the_clocks_skip_or_repeat_is_named() -> None:
    new_york = ZoneInfo("America/New_York")
    assert wall_time_problem(date(2027, 3, 14), time(2, 30), new_york) == (
        "time_does_not_exist",
        "02:30 does not exist on 2027-03-14 in America/New_York (the clocks go forward then)",
    )
    assert wall_time_problem(date(2026, 11, 1), time(1, 30), new_york) == (
        "time_happens_twice",
        "01:30 happens twice on 2026-11-01 in America/New_York (the clocks go back then): "
        "choose a time outside the repeated hour",
    )
    for day, wall in [
        (date(2027, 3, 14), time(1, 59)),
        (date(2027, 3, 14), time(3, 0)),
        (date(2026, 11, 1), time(2, 0)),
        (date(2026, 11, 2), time(1, 30)),
    ]:
        assert wall_time_problem(day, wall, new_york) is None, (day, wall)
