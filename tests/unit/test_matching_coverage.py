"""Coverage gaps ahead of time, per site: from the rota, the state pool and eligibility."""

import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from handoff_matching.domain.coverage import (
    NotCover,
    coverage_gaps,
    not_covering,
    split_by_cover,
    why_not_cover,
)
from handoff_matching.domain.eligibility import Certification, Coach, SiteProfile
from handoff_matching.domain.layers import Layer, PoolSchedule
from handoff_matching.domain.schedules import (
    Interval,
    Override,
    OverrideKind,
    Pool,
    Shift,
    WeeklyShift,
)

NEW_YORK = ZoneInfo("America/New_York")
MERCY = SiteProfile("md-mercy", "MD", NEW_YORK)
DAY, NIGHT = uuid.UUID(int=1), uuid.UUID(int=2)
MONDAY = datetime(2026, 11, 30, 5, tzinfo=UTC)  # Mon 00:00 EST


def coach(
    coach_id: uuid.UUID, expires_on: date = date(2030, 1, 1), active: bool = True, state: str = "MD"
) -> Coach:
    return Coach(
        coach_id,
        "Coach",
        frozenset({"en"}),
        None,
        frozenset(),
        2,
        (Certification(state, "CPRS", expires_on),),
        active=active,
    )


def weekday_days(coach_id: uuid.UUID, pool: Pool) -> list[WeeklyShift]:
    return [WeeklyShift(coach_id, pool, day, time(8), time(20), NEW_YORK) for day in range(7)]


def nights(coach_id: uuid.UUID, pool: Pool) -> list[WeeklyShift]:
    return [WeeklyShift(coach_id, pool, day, time(20), time(8), NEW_YORK) for day in range(7)]


def weekly(shifts: list[WeeklyShift], overrides: list[Override]) -> list[PoolSchedule]:
    """The site's and the state pool's schedules: one layer of weekly shifts each."""
    return [
        PoolSchedule(
            pool, (Layer(0, tuple(s for s in shifts if s.pool == pool)),), tuple(overrides)
        )
        for pool in (Pool.site("md-mercy"), Pool.state("MD"))
    ]


def hours(instant: datetime) -> float:
    return (instant - MONDAY).total_seconds() / 3600


def test_a_site_covered_only_by_day_has_a_gap_every_night() -> None:
    window = Interval(MONDAY, MONDAY + timedelta(days=2))
    gaps = coverage_gaps(
        MERCY, window, weekly(weekday_days(DAY, Pool.site("md-mercy")), []), {DAY: coach(DAY)}
    )
    assert [(hours(g.start), hours(g.end)) for g in gaps] == [(0, 8), (20, 32), (44, 48)]


def test_the_state_pool_fills_the_nights_and_an_override_can_open_a_gap() -> None:
    window = Interval(MONDAY, MONDAY + timedelta(days=2))
    shifts = weekday_days(DAY, Pool.site("md-mercy")) + nights(NIGHT, Pool.state("MD"))
    coaches = {DAY: coach(DAY), NIGHT: coach(NIGHT)}
    assert coverage_gaps(MERCY, window, weekly(shifts, []), coaches) == []
    sick = Override(
        OverrideKind.REMOVE,
        Pool.state("MD"),
        Interval(MONDAY + timedelta(hours=22), MONDAY + timedelta(hours=26)),
        NIGHT,
    )
    gaps = coverage_gaps(MERCY, window, weekly(shifts, [sick]), coaches)
    assert [(hours(g.start), hours(g.end)) for g in gaps] == [(22, 26)]
    other_state = Override(OverrideKind.REMOVE, Pool.state("RI"), sick.window, NIGHT)
    assert coverage_gaps(MERCY, window, weekly(shifts, [other_state]), coaches) == []


def test_an_expiring_certification_or_an_inactive_coach_leaves_a_gap() -> None:
    window = Interval(MONDAY, MONDAY + timedelta(days=2))
    shifts = weekday_days(DAY, Pool.site("md-mercy")) + nights(NIGHT, Pool.site("md-mercy"))
    expiring = {DAY: coach(DAY), NIGHT: coach(NIGHT, expires_on=date(2026, 11, 30))}
    gaps = coverage_gaps(MERCY, window, weekly(shifts, []), expiring)
    # NIGHT's certification ends at Tuesday 00:00 local, mid-shift; DAY is back at 08:00.
    assert [(hours(g.start), hours(g.end)) for g in gaps] == [(24, 32), (44, 48)]
    inactive = {DAY: coach(DAY), NIGHT: coach(NIGHT, active=False)}
    every_night = [(0, 8), (20, 32), (44, 48)]
    gaps = coverage_gaps(MERCY, window, weekly(shifts, []), inactive)
    assert [(hours(g.start), hours(g.end)) for g in gaps] == every_night
    out_of_state = {DAY: coach(DAY), NIGHT: coach(NIGHT, state="RI")}
    assert coverage_gaps(MERCY, window, weekly(shifts, []), out_of_state) == coverage_gaps(
        MERCY, window, weekly(shifts, []), inactive
    )


def test_one_rule_says_who_counts_as_cover_and_why_not() -> None:
    """The rule the gap report, on-call?at=, the timeline's data and the feeds share."""
    expired_sunday = coach(DAY, expires_on=date(2026, 11, 29))
    assert why_not_cover(coach(DAY), MERCY, MONDAY) is None
    assert why_not_cover(None, MERCY, MONDAY) is NotCover.NOT_ON_ROSTER
    assert why_not_cover(coach(DAY, active=False), MERCY, MONDAY) is NotCover.INACTIVE
    assert why_not_cover(coach(DAY, state="RI"), MERCY, MONDAY) is NotCover.NOT_CERTIFIED
    assert why_not_cover(expired_sunday, MERCY, MONDAY) is NotCover.CERTIFICATION_EXPIRED
    assert why_not_cover(coach(DAY), MERCY, MONDAY, NotCover.UNREACHABLE) is NotCover.UNREACHABLE
    # fresh29: a phone at notify's offer ceiling is not "no reachable contact".
    assert why_not_cover(coach(DAY), MERCY, MONDAY, NotCover.SPENT) is NotCover.SPENT
    assert NotCover.CERTIFICATION_EXPIRED.value == "certification expired"
    on_call = [DAY, NIGHT]
    found = not_covering(on_call, MERCY, MONDAY, {DAY: expired_sunday, NIGHT: coach(NIGHT)})
    assert found == {DAY: NotCover.CERTIFICATION_EXPIRED}


def test_a_coach_reachable_on_no_contact_method_leaves_a_gap() -> None:
    window = Interval(MONDAY, MONDAY + timedelta(days=1))
    schedules = weekly(weekday_days(DAY, Pool.site("md-mercy")), [])
    reachable = coverage_gaps(MERCY, window, schedules, {DAY: coach(DAY)})
    unreachable = coverage_gaps(
        MERCY, window, schedules, {DAY: coach(DAY)}, {DAY: NotCover.UNREACHABLE}
    )
    assert [(hours(g.start), hours(g.end)) for g in reachable] == [(0, 8), (20, 24)]
    assert [(hours(g.start), hours(g.end)) for g in unreachable] == [(0, 24)]


def test_a_shift_is_cut_where_the_certification_expires() -> None:
    # Expires through Monday: from Tuesday 00:00 in New York she no longer counts.
    ana = coach(DAY, expires_on=date(2026, 11, 30))
    shift = Shift(DAY, Interval(MONDAY + timedelta(hours=20), MONDAY + timedelta(hours=32)))
    pieces = split_by_cover(shift, MERCY, ana)
    assert [(hours(p.interval.start), hours(p.interval.end), why) for p, why in pieces] == [
        (20, 24, None),
        (24, 32, NotCover.CERTIFICATION_EXPIRED),
    ]
    assert split_by_cover(shift, MERCY, coach(DAY), NotCover.UNREACHABLE) == [
        (shift, NotCover.UNREACHABLE)
    ]
