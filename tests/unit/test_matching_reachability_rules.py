"""Coaches notify cannot reach (every contact method opted out or never deliverable) are
asked nothing, and an offer that bounced off a blocked number is not an answer: once the
coach is reachable again, they may be asked in the same round (decision 0019). The pure
domain, with chosen instants and rosters."""

import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from handoff_matching.domain.dispatch import (
    Candidates,
    Dispatch,
    DispatchMode,
    DispatchState,
    Ranking,
    TellSupervisors,
)
from handoff_matching.domain.eligibility import (
    Certification,
    Coach,
    Ineligible,
    SiteProfile,
    may_supervise,
    supervisors_told,
    why_ineligible,
)
from handoff_schemas.events import OfferMade, ReferralUnassigned, ReferralWaiting
from handoff_schemas.vocabulary import Tier, UnassignedReason
from tests.unit.test_matching_load_rules import ANA, BEN, NOW, dispatch, of, offered


def rungs_reachable_again(
    site: list[uuid.UUID], full: set[uuid.UUID], again: dict[uuid.UUID, datetime]
) -> Candidates:
    """The site rung as the service hands it over, with when each coach was reachable again."""
    ranked = Ranking(
        ((c, "") for c in site if c not in full), (c for c in site if c in full), again
    )
    return {Tier.SITE: ranked, Tier.STATE_POOL: Ranking(), Tier.SUPERVISOR: Ranking()}


def test_a_coach_with_no_reachable_method_is_unreachable_not_merely_full() -> None:
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
    assert why_ineligible(coach, site, NOW, 1, False, "en", False, False) is Ineligible.UNREACHABLE
    # Full and unreachable: unreachable, so no referral waits in line for them.
    assert why_ineligible(coach, site, NOW, 2, False, "en", False, False) is Ineligible.UNREACHABLE
    assert why_ineligible(coach, site, NOW, 1, False, "en", False, True) is None


def test_a_bounce_before_the_coach_was_reachable_again_does_not_count_as_asked() -> None:
    d = dispatch()
    [first] = of(OfferMade, d.start(NOW, rungs_reachable_again([ANA], set(), {})))
    bounced_at = NOW + timedelta(seconds=1)
    # ANA's only number was blocked: the offer bounces; nobody else to ask, so unassigned.
    effects = d.unreachable(first.offer_id, bounced_at, rungs_reachable_again([], set(), {}))
    assert of(ReferralUnassigned, effects)
    assert d.asked(rungs_reachable_again([ANA], set(), {})) == {ANA}

    # Still blocked as far as matching knows: the line does not ask ANA again this round.
    assert d.retry(NOW + timedelta(seconds=2), rungs_reachable_again([ANA], set(), {})) == []

    # ANA texted START after the bounce: asked again at once, in the same round.
    start = {ANA: NOW + timedelta(seconds=30)}
    effects = d.retry(NOW + timedelta(seconds=31), rungs_reachable_again([ANA], set(), start))
    assert offered(effects) == [ANA]
    assert (d.state, d.round) == (DispatchState.OFFERING, 0)


def test_a_decline_or_an_expiry_still_counts_after_the_coach_is_reachable_again() -> None:
    d = dispatch()
    [first] = of(OfferMade, d.start(NOW, rungs_reachable_again([ANA, BEN], set(), {})))
    assert first.coach_id == ANA
    d.decline(
        first.offer_id, NOW + timedelta(seconds=5), rungs_reachable_again([ANA, BEN], set(), {})
    )
    later = {ANA: NOW + timedelta(seconds=30)}
    assert ANA in d.asked(rungs_reachable_again([ANA, BEN], set(), later))


def test_a_bounce_after_the_coach_was_last_reachable_again_still_counts() -> None:
    d = dispatch()
    long_ago = {ANA: NOW - timedelta(hours=1)}
    [first] = of(OfferMade, d.start(NOW, rungs_reachable_again([ANA, BEN], set(), long_ago)))
    effects = d.unreachable(
        first.offer_id,
        NOW + timedelta(seconds=1),
        rungs_reachable_again([ANA, BEN], set(), long_ago),
    )
    assert offered(effects) == [BEN]  # the ladder moves on, it does not loop on ANA


def test_a_referral_waits_for_a_full_coach_but_not_for_an_unreachable_one() -> None:
    d = dispatch()
    # The service leaves unreachable coaches out of both lists: nobody left, unassigned.
    effects = d.start(NOW, rungs_reachable_again([], set(), {}))
    assert of(ReferralUnassigned, effects)
    d2 = dispatch()
    effects = d2.start(NOW, rungs_reachable_again([BEN], {BEN}, {}))
    assert of(ReferralWaiting, effects)


def test_supervisors_hear_whether_any_page_of_the_round_reached_a_coach() -> None:
    """ReferralUnassigned.nobody_reached: the supervisors' notice then says no page got
    through (a paging problem), not that the coaches asked did not accept."""
    everyone = rungs_reachable_again([ANA, BEN], set(), {})
    nobody_left = rungs_reachable_again([], set(), {})

    bounced = dispatch()
    [to_ana] = of(OfferMade, bounced.start(NOW, everyone))
    [to_ben] = of(OfferMade, bounced.not_contacted(to_ana.offer_id, NOW, everyone))
    [unassigned] = of(ReferralUnassigned, bounced.unreachable(to_ben.offer_id, NOW, nobody_left))
    assert (unassigned.reason, unassigned.nobody_reached) == (
        UnassignedReason.LADDER_EXHAUSTED,
        True,
    )

    declined = dispatch()
    [to_ana] = of(OfferMade, declined.start(NOW, everyone))
    [to_ben] = of(OfferMade, declined.decline(to_ana.offer_id, NOW, everyone))
    [unassigned] = of(ReferralUnassigned, declined.unreachable(to_ben.offer_id, NOW, nobody_left))
    assert unassigned.nobody_reached is False  # ANA saw the page and said no

    [unassigned] = of(ReferralUnassigned, dispatch().start(NOW, nobody_left))
    assert (unassigned.reason, unassigned.nobody_reached) == (
        UnassignedReason.NOBODY_ON_CALL,
        False,
    )


def _until_it_ends(d: Dispatch, offer: OfferMade, everyone: Candidates) -> tuple[int, list[Any]]:
    """Let each new offer run out its page deadline (its page never goes out) until the
    referral stops being offered or 5 hours pass: (offers made, ReferralUnassigned seen)."""
    at, made, told = NOW, 0, []
    while d.state is DispatchState.OFFERING and at < NOW + timedelta(hours=5):
        at += timedelta(minutes=1)
        effects = d.expire(offer.offer_id, at, everyone)
        told += of(ReferralUnassigned, effects)
        if not (offers := of(OfferMade, effects)):
            break
        made, offer = made + 1, offers[0]
    return made, told


def _ana_not_contacted_then_ben_declined(everyone: Candidates) -> tuple[Dispatch, OfferMade]:
    """A round where ANA's page did not go out by its deadline and BEN, paged, declined:
    the dispatch and its offer asking ANA again."""
    d = dispatch()
    [to_ana] = of(OfferMade, d.start(NOW, everyone))
    [to_ben] = of(OfferMade, d.expire(to_ana.offer_id, NOW + timedelta(minutes=1), everyone))
    d.paged(to_ben.offer_id, NOW + timedelta(minutes=1, seconds=1))
    [again] = of(OfferMade, d.decline(to_ben.offer_id, NOW + timedelta(minutes=2), everyone))
    return d, again


def test_a_coach_whose_pages_never_go_out_is_asked_again_once_not_until_the_give_up_time() -> None:
    """fresh32: ANA's pages never leave (her method's provider is down) while BEN's do, and
    BEN declined. ANA was offered again at every page deadline for 4 hours, the referral
    read `offered` and the supervisors heard nothing until it expired."""
    everyone = rungs_reachable_again([ANA, BEN], set(), {})
    d, again = _ana_not_contacted_then_ben_declined(everyone)
    assert again.coach_id == ANA  # asked again at once: paging works for others

    made, told = _until_it_ends(d, again, everyone)
    assert made == 0  # not a third time this round
    [unassigned] = told
    assert unassigned.nobody_reached is False  # BEN saw his page and declined


def test_in_later_rounds_a_coach_whose_pages_never_go_out_is_tried_each_page_deadline() -> None:
    """Decision 0032, as weighed after fresh32b: once BEN declined, every later round asks
    only ANA; her page failing ends the round with every page failed, which the outage rule
    restarts at the line's next pass, so she is paged the minute her provider recovers. The
    supervisors are told once for the whole spell."""
    everyone = rungs_reachable_again([ANA, BEN], set(), {})
    d, again = _ana_not_contacted_then_ben_declined(everyone)
    first = d.expire(again.offer_id, NOW + timedelta(minutes=3), everyone)
    assert of(ReferralUnassigned, first)
    assert of(TellSupervisors, first)
    assert d.retry(NOW + timedelta(minutes=4), everyone) == []  # reoffer_every not yet passed

    at = NOW + timedelta(minutes=3) + d.settings.reoffer_every
    told = 0
    for _ in range(5):
        [offer] = of(OfferMade, d.retry(at, everyone))
        assert offer.coach_id == ANA  # BEN's decline stands in every round
        at += d.settings.page_deadline
        ended = d.expire(offer.offer_id, at, everyone)
        assert of(ReferralUnassigned, ended)
        told += len(of(TellSupervisors, ended))
    assert told == 0


def test_a_round_whose_only_page_sent_then_failed_ends_nobody_reached() -> None:
    """fresh32: ANA's SMS left (PageSent) and then failed on every method (unreachable);
    BEN's pages never left. BEN was offered again at every page deadline, for good, because
    a page had gone out; now once, and the supervisors hear that no page got through."""
    everyone = rungs_reachable_again([ANA, BEN], set(), {})
    d = dispatch(DispatchMode.BROADCAST)
    to_ana, to_ben = of(OfferMade, d.start(NOW, everyone))
    d.paged(to_ana.offer_id, NOW + timedelta(seconds=1))
    d.unreachable(to_ana.offer_id, NOW + timedelta(seconds=5), everyone)

    made, told = _until_it_ends(d, to_ben, everyone)
    assert made == 1
    [unassigned] = told
    assert unassigned.nobody_reached is True


def test_a_coach_whose_pages_failed_twice_is_not_waited_for_when_full() -> None:
    """fresh32b: ANA's pages failed twice and she is now full with another referral: the
    referral waited in line for her slot (supervisors not told) and then did not ask her."""
    everyone = rungs_reachable_again([ANA, BEN], set(), {})
    d, again = _ana_not_contacted_then_ben_declined(everyone)
    ana_full = rungs_reachable_again([ANA, BEN], {ANA}, {})
    effects = d.expire(again.offer_id, NOW + timedelta(minutes=3), ana_full)
    assert of(ReferralWaiting, effects) == []
    assert of(ReferralUnassigned, effects)


def test_a_spent_phone_freed_again_is_asked_again_whatever_it_failed_before() -> None:
    """fresh32b: failures before the coach was reachable again count for nothing (decision
    0032: the line asks her the moment a slot of her quarter hour frees), twice or not."""
    d = dispatch()
    roster = rungs_reachable_again([ANA, BEN], set(), {})
    [to_ana] = of(OfferMade, d.start(NOW, roster))
    [to_ben] = of(OfferMade, d.not_contacted(to_ana.offer_id, NOW + timedelta(seconds=1), roster))
    d.paged(to_ben.offer_id, NOW + timedelta(seconds=2))
    spent = rungs_reachable_again([BEN], set(), {})  # ANA left out while her phone is spent
    assert of(ReferralUnassigned, d.decline(to_ben.offer_id, NOW + timedelta(seconds=10), spent))
    freed = rungs_reachable_again([ANA, BEN], set(), {ANA: NOW + timedelta(seconds=60)})
    [again] = of(OfferMade, d.retry(NOW + timedelta(seconds=61), freed))
    d.not_contacted(again.offer_id, NOW + timedelta(seconds=62), spent)  # slot taken first
    freed = rungs_reachable_again([ANA, BEN], set(), {ANA: NOW + timedelta(seconds=120)})
    assert offered(d.retry(NOW + timedelta(seconds=121), freed)) == [ANA]


def test_a_supervisor_who_texted_off_is_not_told_of_an_unassigned_referral_unless_all_did() -> None:
    """fresh33c: a supervisor who texted OFF was still texted every unassigned referral. If
    every supervisor of the site is off, all are told: somebody must hear of it."""
    rita, paul = uuid.uuid4(), uuid.uuid4()
    assert supervisors_told([rita, paul], {rita}) == [paul]
    assert supervisors_told([rita, paul], set()) == [rita, paul]
    assert supervisors_told([rita, paul], {rita, paul}) == [rita, paul]
    assert supervisors_told([], set()) == []


def test_a_supervisor_inactive_or_uncertified_in_the_state_is_not_paged() -> None:
    """fresh34c: a supervisor made inactive, or whose Maryland certification had lapsed in
    2020, was paged and held referrals for five minutes each."""
    site = SiteProfile("md-mercy", "MD", ZoneInfo("America/New_York"))
    valid = (Certification("MD", "CPRS", NOW.date() + timedelta(days=9)),)
    rita = Coach(uuid.uuid4(), "Rita O.", frozenset({"en"}), None, frozenset(), 2, valid)
    assert may_supervise(rita, site, NOW)
    assert not may_supervise(replace(rita, active=False), site, NOW)
    lapsed = (Certification("MD", "CPRS", date(2020, 6, 30)),)
    assert not may_supervise(replace(rita, certifications=lapsed), site, NOW)
    elsewhere = (Certification("VT", "CPRS", NOW.date() + timedelta(days=9)),)
    assert not may_supervise(replace(rita, certifications=elsewhere), site, NOW)
    assert may_supervise(replace(rita, max_concurrent=0), site, NOW)  # full is another rule
