"""Coverage gaps: the windows ahead in which no eligible coach is on call for a site.

If no one is on call, nothing happens: a patient waits for a page that never
comes. So gaps are computed ahead of time, per site, from the rota (the site's
own and its state pool's), the overrides, and who will still be eligible then
(active, certified in the site's state through that moment).
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import UUID

from handoff_matching.domain.eligibility import Coach, SiteProfile, certification_expiry
from handoff_matching.domain.layers import PoolSchedule, merged_on_call
from handoff_matching.domain.schedules import Interval


def coverage_gaps(
    site: SiteProfile,
    window: Interval,
    schedules: Sequence[PoolSchedule],
    coaches: Mapping[UUID, Coach],
) -> list[Interval]:
    """The windows (UTC, in order, joined where adjacent) in which nobody eligible is on
    call in any of `schedules` (the site's and its state pool's)."""
    points = {point for schedule in schedules for point in schedule.boundaries(window)}
    points |= {
        expiry
        for coach in coaches.values()
        for certification in coach.certifications
        if certification.state == site.state
        and window.start < (expiry := certification_expiry(certification, site.zone)) < window.end
    }
    starts = sorted(points)
    gaps: list[Interval] = []
    for start, end in zip(starts, [*starts[1:], window.end], strict=True):
        if any(
            _eligible(coaches.get(coach_id), site, start)
            for coach_id in merged_on_call(schedules, start)
        ):
            continue
        if gaps and gaps[-1].end == start:
            gaps[-1] = Interval(gaps[-1].start, end)
        else:
            gaps.append(Interval(start, end))
    return gaps


def _eligible(coach: Coach | None, site: SiteProfile, instant: datetime) -> bool:
    return (
        coach is not None
        and coach.active
        and any(
            certification.state == site.state
            and instant < certification_expiry(certification, site.zone)
            for certification in coach.certifications
        )
    )
