"""Who makes a follow-up attempt (issue #16, domain/follow_ups.py): the coach who saw the
patient while they count as cover, else the site's on-call coach with the least load,
else a supervisor; nobody: tried again every 15 minutes until the window ends."""

from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from handoff_matching.domain.eligibility import Certification, Coach, SiteProfile
from handoff_matching.domain.follow_ups import (
    LAST_TRY,
    RETRY_EVERY,
    Choice,
    FollowUpFacts,
    choose,
    retry_at,
)
from handoff_schemas.vocabulary import FollowUpAssignee

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
SITE = SiteProfile("md-elsewhere", "MD", ZoneInfo("America/New_York"))


def coach(*, state: str = "MD", active: bool = True, expires_on: date = date(2030, 1, 1)) -> Coach:
    return Coach(
        coach_id=uuid4(),
        display_name="Coach",
        languages=frozenset({"en"}),
        gender=None,
        lived_experience=frozenset(),
        max_concurrent=3,
        certifications=(Certification(state, "CPRS", expires_on),),
        active=active,
    )


def facts(
    visiting: Coach | None,
    *,
    site: tuple[Coach, ...] = (),
    state: tuple[Coach, ...] = (),
    supervisors: tuple[Coach, ...] = (),
    off: tuple[UUID, ...] = (),
    unreachable: tuple[UUID, ...] = (),
    loads: dict[UUID, int] | None = None,
    without_contacts: tuple[UUID, ...] = (),
) -> FollowUpFacts:
    everyone = [c for c in (visiting, *site, *state, *supervisors) if c is not None]
    return FollowUpFacts(
        site=SITE,
        now=NOW,
        coaches={c.coach_id: c for c in everyone},
        off=frozenset(off),
        unreachable=frozenset(unreachable),
        on_call_site=frozenset(c.coach_id for c in site),
        on_call_state=frozenset(c.coach_id for c in state),
        loads=loads or {},
        supervisors=[c.coach_id for c in supervisors],
        has_contacts=frozenset(c.coach_id for c in everyone) - set(without_contacts),
    )


def test_the_coach_who_saw_the_patient_makes_the_call_while_they_count_as_cover() -> None:
    visiting, on_call = coach(), coach()
    chosen = choose(visiting.coach_id, facts(visiting, site=(on_call,)))
    assert chosen == Choice(visiting.coach_id, FollowUpAssignee.VISITING_COACH)


def test_a_coach_gone_from_the_roster_passes_it_to_the_sites_on_call_coach() -> None:
    on_call = coach()
    gone = uuid4()  # no roster entry any more
    chosen = choose(gone, facts(None, site=(on_call,)))
    assert chosen == Choice(on_call.coach_id, FollowUpAssignee.SITE_POOL)


def test_an_inactive_uncertified_expired_off_or_unreachable_coach_is_passed_over() -> None:
    on_call = coach()
    for visiting in (coach(active=False), coach(state="VA"), coach(expires_on=date(2026, 11, 30))):
        chosen = choose(visiting.coach_id, facts(visiting, site=(on_call,)))
        assert chosen == Choice(on_call.coach_id, FollowUpAssignee.SITE_POOL)
    visiting = coach()
    mine = (visiting.coach_id,)
    for passed_over in (
        facts(visiting, site=(on_call,), off=mine),
        facts(visiting, site=(on_call,), unreachable=mine),
        facts(visiting, site=(on_call,), without_contacts=mine),
    ):
        chosen = choose(visiting.coach_id, passed_over)
        assert chosen == Choice(on_call.coach_id, FollowUpAssignee.SITE_POOL)


def test_the_least_loaded_on_call_coach_is_preferred_and_the_site_pool_before_the_state() -> None:
    busy, free, in_state = coach(), coach(), coach()
    gone = uuid4()
    chosen = choose(
        gone,
        facts(None, site=(busy, free), state=(in_state,), loads={busy.coach_id: 2}),
    )
    assert chosen == Choice(free.coach_id, FollowUpAssignee.SITE_POOL)
    only_state = choose(gone, facts(None, state=(in_state,)))
    assert only_state == Choice(in_state.coach_id, FollowUpAssignee.SITE_POOL)


def test_with_nobody_on_call_a_reachable_supervisor_is_given_it() -> None:
    unreachable, reachable = coach(), coach()
    gone = uuid4()
    chosen = choose(
        gone, facts(None, supervisors=(unreachable, reachable), unreachable=(unreachable.coach_id,))
    )
    assert chosen == Choice(reachable.coach_id, FollowUpAssignee.SUPERVISOR)


def test_nobody_at_all_waits_and_is_tried_again_until_the_window_ends() -> None:
    assert choose(uuid4(), facts(None)) is None
    ends = NOW + timedelta(days=7)
    assert retry_at(NOW, ends) == NOW + RETRY_EVERY
    # The last try just before the window ends; after it, the attempt lapses.
    assert retry_at(NOW, NOW + RETRY_EVERY) == NOW + RETRY_EVERY - LAST_TRY
    assert retry_at(NOW, NOW + LAST_TRY) is None


def test_a_reassignment_leaves_out_the_coach_it_was_taken_from() -> None:
    visiting, on_call = coach(), coach()
    chosen = choose(visiting.coach_id, facts(visiting, site=(on_call,)), [visiting.coach_id])
    assert chosen == Choice(on_call.coach_id, FollowUpAssignee.SITE_POOL)
