"""Coverage: who on the rota counts as cover, and the windows with nobody who does.

If no one is on call, nothing happens: a patient waits for a page that never
comes. So gaps are computed ahead of time, per site, from the rota (the site's
own and its state pool's), the overrides, and who will still count as cover then.

One rule, `why_not_cover`, decides whether a coach the rota has on call counts as
cover for a site at an instant: active, certified in the site's state through that
moment, and reachable on some contact method (decision 0019). The gap report, the
admin `on-call?at=`, the coverage timeline's data and the calendar feeds all use it,
so they never disagree (decision 0017, "What counts as cover").
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType
from uuid import UUID

from handoff_matching.domain.eligibility import Coach, SiteProfile, certification_expiry
from handoff_matching.domain.layers import PoolSchedule, merged_on_call
from handoff_matching.domain.schedules import Interval, Shift


class NotCover(StrEnum):
    """Why a coach on the rota does not count as cover (the words a coordinator reads)."""

    NOT_ON_ROSTER = "not on the roster"
    INACTIVE = "inactive"
    NOT_CERTIFIED = "not certified in the state"
    CERTIFICATION_EXPIRED = "certification expired"
    UNREACHABLE = "no reachable contact"
    SPENT = "offer pages at their limit this quarter hour"  # notify's flood ceiling (0032)


NO_ONE: Mapping[UUID, NotCover] = MappingProxyType({})


def why_not_cover(
    coach: Coach | None,
    site: SiteProfile,
    instant: datetime,
    out_of_reach: NotCover | None = None,
) -> NotCover | None:
    """None if the coach, on call at `instant` (UTC), counts as cover for the site (matching
    could page them there), else the first reason they do not. `out_of_reach`: why notify
    can page none of the coach's contact methods now (UNREACHABLE: opted out or never
    deliverable; SPENT: each at its offer ceiling), or None."""
    if coach is None:
        return NotCover.NOT_ON_ROSTER
    if not coach.active:
        return NotCover.INACTIVE
    in_state = [c for c in coach.certifications if c.state == site.state]
    if not in_state:
        return NotCover.NOT_CERTIFIED
    if all(instant >= certification_expiry(c, site.zone) for c in in_state):
        return NotCover.CERTIFICATION_EXPIRED
    return out_of_reach


def not_covering(
    on_call: Iterable[UUID],
    site: SiteProfile,
    instant: datetime,
    coaches: Mapping[UUID, Coach],
    unreachable: Mapping[UUID, NotCover] = NO_ONE,
) -> dict[UUID, NotCover]:
    """Of the coaches on call at the instant, those who do not count as cover, and why;
    `unreachable`: the coaches notify can page on no method now, and why (`why_not_cover`)."""
    found: dict[UUID, NotCover] = {}
    for coach_id in on_call:
        why = why_not_cover(coaches.get(coach_id), site, instant, unreachable.get(coach_id))
        if why is not None:
            found[coach_id] = why
    return found


def cover_changes(
    site: SiteProfile, window: Interval, coaches: Mapping[UUID, Coach]
) -> set[datetime]:
    """The instants inside the window at which a coach stops counting as cover by the
    clock alone (a certification in the site's state expiring)."""
    return {
        expiry
        for coach in coaches.values()
        for certification in coach.certifications
        if certification.state == site.state
        and window.start < (expiry := certification_expiry(certification, site.zone)) < window.end
    }


def coverage_gaps(
    site: SiteProfile,
    window: Interval,
    schedules: Sequence[PoolSchedule],
    coaches: Mapping[UUID, Coach],
    unreachable: Mapping[UUID, NotCover] = NO_ONE,
) -> list[Interval]:
    """The windows (UTC, in order, joined where adjacent) in which nobody on call in any of
    `schedules` (the site's and its state pool's) counts as cover (`why_not_cover`)."""
    points = {point for schedule in schedules for point in schedule.boundaries(window)}
    points |= cover_changes(site, window, coaches)
    starts = sorted(points)
    gaps: list[Interval] = []
    for start, end in zip(starts, [*starts[1:], window.end], strict=True):
        on_call = merged_on_call(schedules, start)
        if set(on_call) - not_covering(on_call, site, start, coaches, unreachable).keys():
            continue
        if gaps and gaps[-1].end == start:
            gaps[-1] = Interval(gaps[-1].start, end)
        else:
            gaps.append(Interval(start, end))
    return gaps


def split_by_cover(
    shift: Shift, site: SiteProfile, coach: Coach | None, out_of_reach: NotCover | None = None
) -> list[tuple[Shift, NotCover | None]]:
    """The shift cut where the coach starts or stops counting as cover for the site, each
    piece with why it does not count (None: it does). Pieces in order, never empty."""
    cuts = cover_changes(site, shift.interval, {coach.coach_id: coach} if coach else {})
    bounds = [shift.interval.start, *sorted(cuts), shift.interval.end]
    pieces: list[tuple[Shift, NotCover | None]] = []
    for start, end in pairwise(bounds):
        why = why_not_cover(coach, site, start, out_of_reach)
        if pieces and pieces[-1][1] is why:
            pieces[-1] = (Shift(shift.coach_id, Interval(pieces[-1][0].interval.start, end)), why)
        else:
            pieces.append((Shift(shift.coach_id, Interval(start, end)), why))
    return pieces
