"""The escalation ladder as a state machine, driven with chosen instants and candidates."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from handoff_matching.domain.dispatch import (
    CancelTimer,
    Dispatch,
    DispatchMode,
    DispatchSettings,
    DispatchState,
    Effect,
    Ranking,
    ReferralFacts,
    SetTimer,
    TimerKind,
)
from handoff_schemas.events import (
    CoachAssigned,
    OfferMade,
    OfferWithdrawn,
    ReferralEscalated,
    ReferralUnassigned,
)
from handoff_schemas.vocabulary import Tier, UnassignedReason, Urgency, WithdrawReason
from tests.support.events import BRIEFING

NOW = datetime(2026, 11, 27, 15, tzinfo=UTC)
ANA, BEN, CARA, DEV, SUPERVISOR = (uuid.UUID(int=n) for n in range(1, 6))
FACTS = ReferralFacts(
    referral_id=uuid.uuid4(),
    correlation_id="corr-1",
    site_id="md-mercy",
    site_short_name="Mercy ED",
    site_state="MD",
    site_time_zone="America/New_York",
    urgency=Urgency.URGENT,
    briefing=BRIEFING,
)
LADDER = {Tier.SITE: [ANA, BEN], Tier.STATE_POOL: [CARA], Tier.SUPERVISOR: [SUPERVISOR]}


def dispatch(mode: DispatchMode = DispatchMode.SEQUENTIAL) -> Dispatch:
    return Dispatch(
        FACTS,
        DispatchSettings(
            mode=mode,
            ack_timeout=timedelta(minutes=5),
            arrival_target=timedelta(minutes=60),
            broadcast_size=2,
        ),
    )


def of(kind: type, effects: list[Effect]) -> list[Any]:
    return [effect for effect in effects if isinstance(effect, kind)]


def offered(effects: list[Effect]) -> list[uuid.UUID]:
    return [made.coach_id for made in of(OfferMade, effects)]


def test_sequential_offers_the_best_site_coach_with_a_timer_at_the_page_deadline() -> None:
    d = dispatch()
    effects = d.start(NOW, LADDER)
    [made] = of(OfferMade, effects)
    assert made.coach_id == ANA
    assert made.tier is Tier.SITE
    assert made.page_deadline == NOW + timedelta(seconds=60)
    assert made.expires_at == NOW + timedelta(seconds=60) + timedelta(minutes=5)
    assert made.site_short_name == "Mercy ED"
    assert of(SetTimer, effects) == [
        SetTimer(FACTS.referral_id, NOW + timedelta(hours=4), TimerKind.GIVE_UP),
        SetTimer(made.offer_id, NOW + timedelta(seconds=60)),
    ]


def test_decline_and_expiry_move_to_the_next_coach_then_up_the_ladder() -> None:
    d = dispatch()
    first = of(OfferMade, d.start(NOW, LADDER))[0]
    after_decline = d.decline(first.offer_id, NOW + timedelta(minutes=1), LADDER)
    assert offered(after_decline) == [BEN]
    assert CancelTimer(first.offer_id) in after_decline

    second = of(OfferMade, after_decline)[0]
    assert d.paged(second.offer_id, NOW + timedelta(minutes=1)) == [
        SetTimer(second.offer_id, NOW + timedelta(minutes=6))
    ]
    later = NOW + timedelta(minutes=6)
    after_expiry = d.expire(second.offer_id, later, LADDER)
    [withdrawn] = of(OfferWithdrawn, after_expiry)
    assert (withdrawn.coach_id, withdrawn.reason) == (BEN, WithdrawReason.EXPIRED)
    [escalated] = of(ReferralEscalated, after_expiry)
    assert (escalated.from_tier, escalated.to_tier) == (Tier.SITE, Tier.STATE_POOL)
    assert offered(after_expiry) == [CARA]

    third = of(OfferMade, after_expiry)[0]
    to_supervisor = d.unreachable(third.offer_id, later, LADDER)
    assert [(e.from_tier, e.to_tier) for e in of(ReferralEscalated, to_supervisor)] == [
        (Tier.STATE_POOL, Tier.SUPERVISOR)
    ]
    assert offered(to_supervisor) == [SUPERVISOR]

    last = of(OfferMade, to_supervisor)[0]
    end = d.decline(last.offer_id, later, LADDER)
    [unassigned] = of(ReferralUnassigned, end)
    assert unassigned.reason is UnassignedReason.LADDER_EXHAUSTED
    assert d.state is DispatchState.UNASSIGNED


def test_an_empty_rung_is_skipped_and_nobody_at_all_is_reported_as_such() -> None:
    d = dispatch()
    effects = d.start(NOW, {Tier.SITE: [], Tier.STATE_POOL: [CARA]})
    assert [e.to_tier for e in of(ReferralEscalated, effects)] == [Tier.STATE_POOL]
    assert offered(effects) == [CARA]

    nobody = dispatch().start(NOW, {})
    assert of(ReferralEscalated, nobody) == []  # no rung was climbed to offer anyone
    [unassigned] = of(ReferralUnassigned, nobody)
    assert unassigned.reason is UnassignedReason.NOBODY_ON_CALL
    assert (unassigned.site_id, unassigned.site_short_name) == ("md-mercy", "Mercy ED")


def test_acceptance_assigns_with_an_arrival_deadline_and_late_answers_change_nothing() -> None:
    d = dispatch()
    made = of(OfferMade, d.start(NOW, LADDER))[0]
    effects = d.accept(made.offer_id, NOW + timedelta(minutes=2))
    [assigned] = of(CoachAssigned, effects)
    assert assigned.coach_id == ANA
    assert assigned.arrival_deadline == NOW + timedelta(minutes=62)
    assert CancelTimer(made.offer_id) in effects
    assert SetTimer(made.offer_id, assigned.arrival_deadline, TimerKind.ARRIVAL_DEADLINE) in effects
    assert d.state is DispatchState.ASSIGNED
    assert d.arrival_overdue(made.offer_id)
    assert d.accept(made.offer_id, NOW + timedelta(minutes=3)) == []
    assert d.expire(made.offer_id, NOW + timedelta(minutes=5), LADDER) == []


def test_completion_closes_the_assignment_frees_the_coach_and_stops_the_clocks() -> None:
    d = dispatch()
    made = of(OfferMade, d.start(NOW, LADDER))[0]
    d.accept(made.offer_id, NOW)
    assert d.close() == [
        CancelTimer(made.offer_id, TimerKind.ARRIVAL_DEADLINE),
        CancelTimer(made.offer_id, TimerKind.VISIT_LIMIT),
    ]
    assert d.state is DispatchState.CLOSED
    assert not d.arrival_overdue(made.offer_id)
    assert d.close() == []
    assert d.cancel(NOW) == []


def test_cancelling_an_assigned_referral_stops_the_arrival_clock() -> None:
    d = dispatch()
    made = of(OfferMade, d.start(NOW, LADDER))[0]
    d.accept(made.offer_id, NOW)
    assert d.cancel(NOW) == [
        CancelTimer(made.offer_id, TimerKind.ARRIVAL_DEADLINE),
        CancelTimer(FACTS.referral_id, TimerKind.GIVE_UP),
    ]
    assert not d.arrival_overdue(made.offer_id)


def test_broadcast_offers_several_and_two_acceptances_yield_one_assignment() -> None:
    d = dispatch(DispatchMode.BROADCAST)
    made = of(OfferMade, d.start(NOW, {Tier.SITE: [ANA, BEN, DEV]}))
    assert [m.coach_id for m in made] == [ANA, BEN]

    first = d.accept(made[1].offer_id, NOW + timedelta(seconds=30))
    assert [a.coach_id for a in of(CoachAssigned, first)] == [BEN]
    [filled] = of(OfferWithdrawn, first)
    assert (filled.coach_id, filled.reason) == (ANA, WithdrawReason.FILLED)

    second = d.accept(made[0].offer_id, NOW + timedelta(seconds=31))
    assert of(CoachAssigned, second) == []
    assert d.assigned_coach == BEN


def test_a_broadcast_waits_for_every_open_offer_before_the_next_batch() -> None:
    d = dispatch(DispatchMode.BROADCAST)
    made = of(OfferMade, d.start(NOW, {Tier.SITE: [ANA, BEN, DEV]}))
    assert offered(d.decline(made[0].offer_id, NOW, {Tier.SITE: [ANA, BEN, DEV]})) == []
    assert offered(d.decline(made[1].offer_id, NOW, {Tier.SITE: [ANA, BEN, DEV]})) == [DEV]


def test_a_broadcasts_offers_share_one_batch_and_the_next_batch_gets_its_own() -> None:
    """The referral's timeline shows one `offered` step per batch, with its size."""
    d = dispatch(DispatchMode.BROADCAST)
    made = of(OfferMade, d.start(NOW, {Tier.SITE: [ANA, BEN, DEV]}))
    assert [(m.batch_size, m.batch_id) for m in made] == [(2, made[0].batch_id)] * 2
    assert made[0].batch_id is not None
    d.decline(made[0].offer_id, NOW, {Tier.SITE: [ANA, BEN, DEV]})
    [then] = of(OfferMade, d.decline(made[1].offer_id, NOW, {Tier.SITE: [ANA, BEN, DEV]}))
    assert then.batch_size == 1
    assert then.batch_id not in (None, made[0].batch_id)
    [single] = of(OfferMade, dispatch().start(NOW, LADDER))
    assert single.batch_size == 1


def test_cancel_withdraws_every_open_offer_at_once() -> None:
    d = dispatch(DispatchMode.BROADCAST)
    made = of(OfferMade, d.start(NOW, LADDER))
    effects = d.cancel(NOW + timedelta(minutes=1))
    withdrawn = of(OfferWithdrawn, effects)
    assert {(w.coach_id, w.reason) for w in withdrawn} == {
        (ANA, WithdrawReason.CANCELLED),
        (BEN, WithdrawReason.CANCELLED),
    }
    assert set(of(CancelTimer, effects)) == {
        *(CancelTimer(m.offer_id) for m in made),
        CancelTimer(FACTS.referral_id, TimerKind.GIVE_UP),
    }
    assert d.state is DispatchState.CANCELLED
    assert d.accept(made[0].offer_id, NOW + timedelta(minutes=2)) == []
    assert d.cancel(NOW + timedelta(minutes=3)) == []


def test_a_coach_is_never_offered_the_same_referral_twice() -> None:
    d = dispatch()
    first = of(OfferMade, d.start(NOW, LADDER))[0]
    # ANA is on call in both the site and the state pool.
    effects = d.decline(first.offer_id, NOW, {Tier.SITE: [ANA], Tier.STATE_POOL: [ANA, CARA]})
    assert offered(effects) == [CARA]


def test_each_offer_keeps_why_its_coach_ranked_where_it_did() -> None:
    d = dispatch()
    ranking = Ranking([(BEN, "#1 score 140.0: same_site +100, language +40"), (ANA, "#2 …")])
    d.start(NOW, {Tier.SITE: ranking})
    assert [(o.coach_id, o.why) for o in d.offers] == [
        (BEN, "#1 score 140.0: same_site +100, language +40")
    ]


def test_a_page_notify_held_back_ends_the_offer_not_contacted_at_once_and_asks_the_next() -> None:
    """Decision 0032: notify's own flood ceiling is not the coach's doing, and not a reason
    to wait out the page deadline."""
    d = dispatch()
    first = of(OfferMade, d.start(NOW, LADDER))[0]
    effects = d.not_contacted(first.offer_id, NOW + timedelta(seconds=1), LADDER)
    [withdrawn] = of(OfferWithdrawn, effects)
    assert (withdrawn.coach_id, withdrawn.reason) == (ANA, WithdrawReason.NOT_CONTACTED)
    assert CancelTimer(first.offer_id) in effects
    assert offered(effects) == [BEN]
    assert d.not_contacted(first.offer_id, NOW + timedelta(seconds=2), LADDER) == []
