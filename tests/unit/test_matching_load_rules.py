"""Load-aware offers, the waiting line, capacity at acceptance, the ack clock from the page,
and re-offering an unassigned referral: the pure domain, with chosen instants and rosters."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from handoff_matching.domain.dispatch import (
    GIVE_UP_RECHECK,
    CancelTimer,
    Candidates,
    Dispatch,
    DispatchMode,
    DispatchSettings,
    DispatchState,
    Effect,
    Ranking,
    ReferralFacts,
    SetTimer,
    TellSupervisors,
    TimerKind,
)
from handoff_matching.domain.eligibility import (
    Certification,
    Coach,
    Ineligible,
    SiteProfile,
    why_ineligible,
)
from handoff_matching.domain.load import PRIORITY, has_room, may_take_assignment
from handoff_schemas.events import (
    OfferMade,
    OfferWithdrawn,
    ReferralEscalated,
    ReferralExpired,
    ReferralUnassigned,
    ReferralWaiting,
)
from handoff_schemas.vocabulary import Tier, Urgency, WaitingReason, WithdrawReason
from tests.support.events import BRIEFING

NOW = datetime(2026, 11, 27, 15, tzinfo=UTC)
ANA, BEN, CARA, SUPERVISOR = (uuid.UUID(int=n) for n in range(1, 5))
SETTINGS = DispatchSettings(
    ack_timeout=timedelta(seconds=15),
    page_deadline=timedelta(seconds=60),
    reoffer_every=timedelta(minutes=5),
    give_up_after=timedelta(hours=4),
)


def dispatch(mode: DispatchMode = DispatchMode.SEQUENTIAL) -> Dispatch:
    facts = ReferralFacts(
        referral_id=uuid.uuid4(),
        correlation_id="corr-1",
        site_id="md-mercy",
        site_short_name="Mercy ED",
        site_state="MD",
        site_time_zone="America/New_York",
        urgency=Urgency.URGENT,
        briefing=BRIEFING,
    )
    return Dispatch(facts, DispatchSettings(**{**SETTINGS.__dict__, "mode": mode}))


def rungs(
    site: list[uuid.UUID] = (),  # type: ignore[assignment]
    pool: list[uuid.UUID] = (),  # type: ignore[assignment]
    supervisors: list[uuid.UUID] = (),  # type: ignore[assignment]
    full: set[uuid.UUID] = frozenset(),  # type: ignore[assignment]
) -> Candidates:
    """The roster as the service hands it over: with room ranked, the full ones aside."""

    def rung(ids: list[uuid.UUID]) -> Ranking:
        return Ranking(((c, "") for c in ids if c not in full), (c for c in ids if c in full))

    return {Tier.SITE: rung(site), Tier.STATE_POOL: rung(pool), Tier.SUPERVISOR: rung(supervisors)}


def of(kind: type, effects: list[Effect]) -> list[Any]:
    return [effect for effect in effects if isinstance(effect, kind)]


def state_of(d: Dispatch) -> DispatchState:
    """The dispatch's state, unnarrowed: a test reads it again after each step."""
    return d.state


def offered(effects: list[Effect]) -> list[uuid.UUID]:
    return [made.coach_id for made in of(OfferMade, effects)]


def test_load_counts_offers_and_assignments_and_acceptance_counts_assignments_only() -> None:
    assert has_room(1, 2)
    assert not has_room(2, 2)
    assert not has_room(3, 2)
    assert has_room(50, None)  # a supervisor who is not on the roster
    assert may_take_assignment(1, 2)
    assert not may_take_assignment(2, 2)
    assert not may_take_assignment(1, 1)  # max_concurrent lowered below what is held


def test_the_line_serves_emergent_then_urgent_then_routine() -> None:
    order = sorted([Urgency.ROUTINE, Urgency.EMERGENT, Urgency.URGENT], key=PRIORITY.__getitem__)
    assert order == [Urgency.EMERGENT, Urgency.URGENT, Urgency.ROUTINE]


def test_at_capacity_names_only_coaches_who_are_otherwise_eligible() -> None:
    coach = Coach(
        ANA,
        "Ana",
        frozenset({"en"}),
        None,
        frozenset(),
        2,
        (Certification("MD", "CPRS", NOW.date() + timedelta(days=9)),),
    )
    site = SiteProfile("md-mercy", "MD", NOW.tzinfo)  # type: ignore[arg-type]
    assert why_ineligible(coach, site, NOW, 2, False, "en", False) is Ineligible.AT_CAPACITY
    assert why_ineligible(coach, site, NOW, 1, False, "en", False) is None
    assert why_ineligible(coach, site, NOW, 2, True, "en", False) is Ineligible.ALREADY_OFFERED


def test_a_full_site_rung_is_passed_over_so_a_burst_spreads_up_the_ladder() -> None:
    d = dispatch()
    effects = d.start(NOW, rungs(site=[ANA], pool=[BEN, CARA], full={ANA}))
    assert offered(effects) == [BEN]
    [escalated] = of(ReferralEscalated, effects)
    assert (escalated.from_tier, escalated.to_tier) == (Tier.SITE, Tier.STATE_POOL)
    assert d.holding == {BEN}


def test_when_everyone_on_call_is_full_the_referral_waits_then_takes_the_first_free_slot() -> None:
    d = dispatch()
    everyone_full = rungs(
        site=[ANA], pool=[BEN], supervisors=[SUPERVISOR], full={ANA, BEN, SUPERVISOR}
    )
    [waiting] = d.start(NOW, everyone_full)[1:]
    assert isinstance(waiting, ReferralWaiting)
    assert (waiting.reason, waiting.waiting_since) == (WaitingReason.ALL_AT_CAPACITY, NOW)
    assert d.state is DispatchState.WAITING
    assert d.holding == frozenset()

    assert d.retry(NOW + timedelta(seconds=1), everyone_full) == []  # still full: silence
    assert d.state is DispatchState.WAITING

    freed = rungs(site=[ANA], pool=[BEN], supervisors=[SUPERVISOR], full={ANA, SUPERVISOR})
    effects = d.retry(NOW + timedelta(seconds=2), freed)
    assert offered(effects) == [BEN]
    assert (d.state, d.in_line_since) == (DispatchState.OFFERING, None)


def test_a_waiting_referral_whose_full_coaches_went_off_call_becomes_unassigned() -> None:
    d = dispatch()
    d.start(NOW, rungs(site=[ANA], full={ANA}))
    effects = d.retry(NOW + timedelta(minutes=1), rungs())
    [unassigned] = of(ReferralUnassigned, effects)
    assert d.state is DispatchState.UNASSIGNED
    assert unassigned.unassigned_at == NOW + timedelta(minutes=1)


def test_the_ack_clock_starts_at_the_page_not_at_the_offer() -> None:
    d = dispatch()
    made = of(OfferMade, d.start(NOW, rungs(site=[ANA, BEN])))[0]
    paged_at = NOW + timedelta(seconds=40)
    assert d.paged(made.offer_id, paged_at) == [
        SetTimer(made.offer_id, paged_at + timedelta(seconds=15))
    ]
    assert d.paged(made.offer_id, paged_at + timedelta(seconds=1)) == []  # the first page counts
    # 15 s after the offer was made nothing has expired: the clock started at the page.
    early = d.expire(made.offer_id, NOW + timedelta(seconds=15), rungs(site=[ANA, BEN]))
    assert early == [SetTimer(made.offer_id, paged_at + timedelta(seconds=15))]
    expired = d.expire(made.offer_id, paged_at + timedelta(seconds=15), rungs(site=[ANA, BEN]))
    assert [w.reason for w in of(OfferWithdrawn, expired)] == [WithdrawReason.EXPIRED]
    assert offered(expired) == [BEN]


def test_an_offer_never_paged_by_its_deadline_ends_not_contacted_and_the_ladder_moves_on() -> None:
    d = dispatch()
    made = of(OfferMade, d.start(NOW, rungs(site=[ANA], pool=[BEN])))[0]
    effects = d.expire(made.offer_id, NOW + timedelta(seconds=60), rungs(site=[ANA], pool=[BEN]))
    [withdrawn] = of(OfferWithdrawn, effects)
    assert (withdrawn.coach_id, withdrawn.reason) == (ANA, WithdrawReason.NOT_CONTACTED)
    assert offered(effects) == [BEN]
    late_page = d.paged(made.offer_id, NOW + timedelta(seconds=61))
    assert late_page == []  # a page for a closed offer starts no clock


def test_a_round_lost_to_a_paging_outage_is_offered_again_at_once_to_the_same_coaches() -> None:
    d = dispatch()
    roster = rungs(site=[ANA], pool=[BEN])
    first = of(OfferMade, d.start(NOW, roster))[0]
    second = of(OfferMade, d.expire(first.offer_id, NOW + timedelta(seconds=60), roster))[0]
    end = d.expire(second.offer_id, NOW + timedelta(seconds=120), roster)
    assert of(ReferralUnassigned, end)
    assert d.state is DispatchState.UNASSIGNED
    # Nobody was ever reached: no need to wait reoffer_every, and nobody is used up.
    again = d.retry(NOW + timedelta(seconds=121), roster)
    assert offered(again) == [ANA]
    assert d.round == 1


def test_an_unassigned_referral_asks_new_coaches_at_once_and_everyone_but_decliners_later() -> None:
    d = dispatch()
    roster = rungs(site=[ANA, BEN])
    first = of(OfferMade, d.start(NOW, roster))[0]
    d.paged(first.offer_id, NOW)
    second = of(OfferMade, d.decline(first.offer_id, NOW + timedelta(seconds=5), roster))[0]
    d.paged(second.offer_id, NOW + timedelta(seconds=5))
    end = d.expire(second.offer_id, NOW + timedelta(seconds=20), roster)
    assert of(ReferralUnassigned, end)

    # Before reoffer_every: the same two are not asked again; a coach new to the round is.
    assert d.retry(NOW + timedelta(minutes=1), roster) == []
    assert d.state is DispatchState.UNASSIGNED
    assert offered(d.retry(NOW + timedelta(minutes=1), rungs(site=[ANA, BEN, CARA]))) == [CARA]

    d2 = dispatch()
    made = of(OfferMade, d2.start(NOW, roster))[0]
    d2.paged(made.offer_id, NOW)
    after_decline = d2.decline(made.offer_id, NOW, roster)
    d2.paged(of(OfferMade, after_decline)[0].offer_id, NOW)
    d2.expire(of(OfferMade, after_decline)[0].offer_id, NOW + timedelta(seconds=15), roster)
    # After reoffer_every: a new round asks BEN (no answer) again, never ANA (declined).
    reoffered = d2.retry(NOW + timedelta(seconds=15) + timedelta(minutes=5), roster)
    assert offered(reoffered) == [BEN]


def test_acceptance_at_capacity_is_withdrawn_and_the_referral_moves_on_at_once() -> None:
    d = dispatch()
    roster = rungs(site=[ANA, BEN])
    made = of(OfferMade, d.start(NOW, roster))[0]
    assert d.accepting_coach(made.offer_id) == ANA
    effects = d.refuse_at_capacity(made.offer_id, NOW + timedelta(seconds=3), roster)
    [withdrawn] = of(OfferWithdrawn, effects)
    assert (withdrawn.coach_id, withdrawn.reason) == (ANA, WithdrawReason.AT_CAPACITY)
    assert CancelTimer(made.offer_id) in effects
    assert offered(effects) == [BEN]
    assert d.accepting_coach(made.offer_id) is None  # a second "1" changes nothing


def test_broadcast_offers_only_coaches_with_room() -> None:
    d = dispatch(DispatchMode.BROADCAST)
    effects = d.start(NOW, rungs(site=[ANA, BEN, CARA], full={BEN}))
    assert offered(effects) == [ANA, CARA]
    assert d.holding == {ANA, CARA}


def test_give_up_lets_an_open_offer_run_its_course_then_expires_the_referral_once() -> None:
    """Found by a new user (#12 F4): give-up withdrew an offer 23 s into its 300 s window,
    as "coach_did_not_answer", and the coach was never told."""
    d = dispatch()
    made = of(OfferMade, d.start(NOW, rungs(site=[ANA])))[0]
    late = NOW + timedelta(hours=4)
    effects = d.give_up(late)
    assert effects == [SetTimer(d.facts.referral_id, late + GIVE_UP_RECHECK, TimerKind.GIVE_UP)]
    assert state_of(d) is DispatchState.OFFERING
    assert d.holding == {ANA}

    # The coach declines after the give-up time: the referral ends then, nobody else asked.
    effects = d.decline(made.offer_id, late + timedelta(seconds=30), rungs(site=[ANA, BEN]))
    assert offered(effects) == []
    [expired] = of(ReferralExpired, effects)
    assert expired.expired_at == late + timedelta(seconds=30)
    assert CancelTimer(d.facts.referral_id, TimerKind.GIVE_UP) in effects
    assert state_of(d) is DispatchState.EXPIRED
    assert d.holding == frozenset()
    assert d.give_up(late + GIVE_UP_RECHECK) == []
    assert d.retry(NOW + timedelta(hours=5), rungs(site=[ANA])) == []

    in_line = dispatch()
    in_line.start(NOW, rungs())
    assert state_of(in_line) is DispatchState.UNASSIGNED
    [expired] = of(ReferralExpired, in_line.give_up(late))
    assert state_of(in_line) is DispatchState.EXPIRED

    assigned = dispatch()
    offer = of(OfferMade, assigned.start(NOW, rungs(site=[ANA])))[0]
    assigned.accept(offer.offer_id, NOW)
    assert assigned.give_up(NOW + timedelta(hours=4)) == []
    assert assigned.holding == {ANA}


def test_a_coach_at_the_bedside_holds_the_slot_until_completed_or_the_visit_limit() -> None:
    referral = dispatch()
    made = of(OfferMade, referral.start(NOW, rungs(site=[ANA])))[0]
    referral.accept(made.offer_id, NOW)
    assert referral.holding == {ANA}

    arrived = referral.arrived(NOW + timedelta(minutes=20))
    assert referral.holding == {ANA}  # with the patient: not free for another referral
    limit = [t for t in of(SetTimer, arrived) if t.kind is TimerKind.VISIT_LIMIT]
    assert [t.due for t in limit] == [NOW + timedelta(minutes=20) + SETTINGS.visit_limit]
    assert not referral.arrival_overdue(made.offer_id)
    assert referral.arrived(NOW + timedelta(minutes=21)) == []  # a repeated tap

    closed = referral.close()
    assert referral.holding == frozenset()
    assert CancelTimer(made.offer_id, TimerKind.VISIT_LIMIT) in closed
    assert referral.close() == []  # the visit limit firing after completion changes nothing


def test_a_yes_at_capacity_does_not_use_the_coach_up_the_referral_waits_for_her() -> None:
    d = dispatch()
    made = of(OfferMade, d.start(NOW, rungs(site=[ANA])))[0]
    effects = d.refuse_at_capacity(made.offer_id, NOW, rungs(site=[ANA], full={ANA}))
    assert of(ReferralWaiting, effects)
    assert ANA not in d.asked(rungs(site=[ANA]))
    again = d.retry(NOW + timedelta(seconds=30), rungs(site=[ANA]))  # her slot freed
    assert offered(again) == [ANA]


def test_a_coach_never_paged_in_a_round_where_paging_worked_is_asked_again_at_once() -> None:
    d = dispatch(DispatchMode.BROADCAST)
    roster = rungs(site=[ANA, BEN])
    ana, ben = of(OfferMade, d.start(NOW, roster))
    d.paged(ben.offer_id, NOW + timedelta(seconds=1))
    assert d.expire(ana.offer_id, NOW + timedelta(seconds=60), roster)  # not_contacted
    effects = d.expire(ben.offer_id, NOW + timedelta(seconds=61), roster)  # no answer
    assert offered(effects) == [ANA]
    assert of(ReferralUnassigned, effects) == []


def test_an_outage_is_one_unassigned_spell_told_once_until_a_page_reaches_a_coach() -> None:
    d = dispatch()
    roster = rungs(site=[ANA])
    made = of(OfferMade, d.start(NOW, roster))[0]
    first = d.expire(made.offer_id, NOW + timedelta(seconds=60), roster)
    assert of(ReferralUnassigned, first)
    assert of(TellSupervisors, first)
    made = of(OfferMade, d.retry(NOW + timedelta(seconds=61), roster))[0]  # a new round at once
    second = d.expire(made.offer_id, NOW + timedelta(seconds=121), roster)
    assert of(ReferralUnassigned, second)
    assert of(TellSupervisors, second) == []  # the same spell: nobody is texted again
    made = of(OfferMade, d.retry(NOW + timedelta(seconds=122), roster))[0]
    d.paged(made.offer_id, NOW + timedelta(seconds=123))  # paging works: she was reached
    third = d.expire(made.offer_id, NOW + timedelta(seconds=140), roster)
    assert of(TellSupervisors, third)


def test_an_arrival_behind_the_line_waits_with_its_give_up_timer_set() -> None:
    d = dispatch()
    effects = d.join_line(NOW)
    assert of(ReferralWaiting, effects)
    assert SetTimer(d.facts.referral_id, NOW + SETTINGS.give_up_after, TimerKind.GIVE_UP) in effects
    assert d.state is DispatchState.WAITING
    assert offered(d.retry(NOW + timedelta(seconds=1), rungs(site=[ANA]))) == [ANA]
