"""Who makes a follow-up attempt (issue #16): pure rules, the callers read the facts.

The coach who saw the patient keeps the relationship: they are given the attempt while
they still count as cover for the site (`why_not_cover`: on the roster, active,
certified in the site's state, reachable) and have not texted OFF. Otherwise whoever is
on call for the site now (the site's pool, then its state pool, as dispatch asks them),
the least loaded first; otherwise a supervisor who can be reached. Nobody at all: the
attempt waits, and is tried again every `RETRY_EVERY` until its window ends.
"""

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from handoff_matching.domain.coverage import NotCover, why_not_cover
from handoff_matching.domain.eligibility import Coach, SiteProfile
from handoff_schemas.vocabulary import FollowUpAssignee

RETRY_EVERY = timedelta(minutes=15)
"""How often an attempt nobody could be given is tried again, until its window ends."""


@dataclass(frozen=True)
class FollowUpFacts:
    """What the choice reads, as the roster stands at `now` (UTC).

    `coaches`: roster entries of every coach named below (a coach missing is off the
    roster); `off`: coaches whose own OFF is in force; `unreachable`: coaches notify can
    reach on no contact method (a phone at its offer ceiling still takes a reminder);
    `on_call_site` / `on_call_state`: on call in the site's pool and its state pool now
    (overrides applied); `loads`: referrals holding each coach;
    `supervisors`: the site's escalation list, then other supervisors of its state, in
    order (a supervisor is reminded on their roster entry's contacts, so one not on the
    roster, or inactive, is passed over); `has_contacts`: coaches with at least one
    contact method on the roster."""

    site: SiteProfile
    now: datetime
    coaches: Mapping[UUID, Coach]
    off: Collection[UUID]
    unreachable: Collection[UUID]
    on_call_site: Collection[UUID]
    on_call_state: Collection[UUID]
    loads: Mapping[UUID, int]
    supervisors: Sequence[UUID]
    has_contacts: Collection[UUID]


@dataclass(frozen=True)
class Choice:
    coach_id: UUID
    assignee: FollowUpAssignee


def may_follow_up(coach_id: UUID, facts: FollowUpFacts) -> bool:
    """True if the coach may be given a follow-up attempt for the site now: they count as
    cover (`why_not_cover`), are not OFF, and have a contact method to be reminded on."""
    out_of_reach = NotCover.UNREACHABLE if coach_id in facts.unreachable else None
    return (
        why_not_cover(facts.coaches.get(coach_id), facts.site, facts.now, out_of_reach) is None
        and coach_id not in facts.off
        and coach_id in facts.has_contacts
    )


def choose(
    visiting_coach: UUID, facts: FollowUpFacts, excluding: Iterable[UUID] = ()
) -> Choice | None:
    """Who is given the attempt, or None when nobody may be (the caller waits and retries).

    `excluding`: coaches not to give it to (one just gone off the roster, when an attempt
    is re-assigned). Ties in load go to the lower coach id, so replicas agree."""
    left_out = frozenset(excluding)
    if visiting_coach not in left_out and may_follow_up(visiting_coach, facts):
        return Choice(visiting_coach, FollowUpAssignee.VISITING_COACH)
    for pool in (facts.on_call_site, facts.on_call_state):
        fit = [c for c in pool if c not in left_out and may_follow_up(c, facts)]
        if fit:
            best = min(fit, key=lambda c: (facts.loads.get(c, 0), str(c)))
            return Choice(best, FollowUpAssignee.SITE_POOL)
    for supervisor in facts.supervisors:
        if (
            supervisor not in left_out
            and supervisor not in facts.unreachable
            and supervisor not in facts.off
            and supervisor in facts.has_contacts
            and (entry := facts.coaches.get(supervisor)) is not None
            and entry.active
        ):
            return Choice(supervisor, FollowUpAssignee.SUPERVISOR)
    return None


LAST_TRY = timedelta(minutes=1)
"""How long before its window ends a waiting attempt is tried the last time."""


def retry_at(now: datetime, window_ends_at: datetime) -> datetime | None:
    """When an attempt nobody could be given is tried next: `RETRY_EVERY` on, the last try
    `LAST_TRY` before the window ends; None once that is past (it is then given up)."""
    due = min(now + RETRY_EVERY, window_ends_at - LAST_TRY)
    return due if due > now else None


FOLLOW_UP_RETRY = "follow_up_retry"
"""The timer kind that tries a waiting attempt again; payload: task_id, attempt."""
