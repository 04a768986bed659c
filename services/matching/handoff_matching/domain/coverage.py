"""Coverage gaps: the windows ahead in which no eligible coach is on call for a site.

If no one is on call, nothing happens: a patient waits for a page that never
comes. So gaps are computed ahead of time, per site, from the rota (the site's
own and its state pool's), the overrides, and who will still be eligible then
(active, certified in the site's state through that moment).
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from uuid import UUID

from handoff_matching.domain.eligibility import Coach, SiteProfile, certification_expiry
from handoff_matching.domain.schedules import Interval, Override, Pool, WeeklyShift, boundaries
from handoff_matching.domain.schedules import on_call as on_call_in


def coverage_gaps(
    site: SiteProfile,
    window: Interval,
    shifts: Iterable[WeeklyShift],
    overrides: Iterable[Override],
    coaches: Mapping[UUID, Coach],
) -> list[Interval]:
    pools = (Pool.site(site.site_id), Pool.state(site.state))
    shifts = [shift for shift in shifts if shift.pool in pools]
    overrides = [override for override in overrides if override.pool in pools]
    points = set(boundaries(window, shifts, overrides))
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
        on_call = set().union(*(on_call_in(pool, start, shifts, overrides) for pool in pools))
        if any(_eligible(coaches.get(coach_id), site, start) for coach_id in on_call):
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
