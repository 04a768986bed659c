"""What a new user found in dispatch (issue 12, fresh12 findings), kept as rules of the
pure domain: a burst's overflow at the supervisors waits for the full coaches below them."""

import uuid
from datetime import UTC, datetime, timedelta

from handoff_matching.domain.dispatch import DispatchState, Effect
from handoff_schemas.events import OfferMade, ReferralUnassigned, ReferralWaiting
from handoff_schemas.vocabulary import WaitingReason
from tests.unit.test_matching_load_rules import dispatch, of, offered, rungs

NOW = datetime(2026, 12, 1, 0, 6, tzinfo=UTC)
SITE_COACH, POOL_COACH, SUPERVISOR = (uuid.UUID(int=n) for n in range(11, 14))


def offer_id(effects: list[Effect]) -> uuid.UUID:
    [made] = of(OfferMade, effects)
    offer: uuid.UUID = made.offer_id
    return offer


def test_overflow_declined_by_the_supervisor_waits_for_the_full_coaches_not_unassigned() -> None:
    """Finding 3: site and pool coaches full, the supervisor declines: the referral waits
    (no "arrange cover" alert), and the first coach to free up is offered it."""
    d = dispatch()
    busy = rungs(
        site=[SITE_COACH],
        pool=[POOL_COACH],
        supervisors=[SUPERVISOR],
        full={SITE_COACH, POOL_COACH},
    )
    started = d.start(NOW, busy)
    assert offered(started) == [SUPERVISOR]

    declined = d.decline(offer_id(started), NOW + timedelta(seconds=30), busy)
    assert of(ReferralUnassigned, declined) == []
    [waiting] = of(ReferralWaiting, declined)
    assert waiting.reason is WaitingReason.ALL_AT_CAPACITY
    assert d.state is DispatchState.WAITING

    still_full = d.retry(NOW + timedelta(seconds=31), busy)
    assert (still_full, d.state) == ([], DispatchState.WAITING)  # no flapping, no events

    freed = rungs(site=[SITE_COACH], pool=[POOL_COACH], supervisors=[SUPERVISOR], full={POOL_COACH})
    assert offered(d.retry(NOW + timedelta(seconds=40), freed)) == [SITE_COACH]


def test_overflow_whose_supervisor_timed_out_also_waits() -> None:
    """Finding 3: a supervisor who lets the offer expire is no answer for the full coaches."""
    d = dispatch()
    busy = rungs(site=[SITE_COACH], supervisors=[SUPERVISOR], full={SITE_COACH})
    started = d.start(NOW, busy)
    made = offer_id(started)
    d.paged(made, NOW)
    expired = d.expire(made, NOW + timedelta(minutes=1), busy)
    assert of(ReferralUnassigned, expired) == []
    assert d.state is DispatchState.WAITING


def test_unassigned_only_when_every_coach_on_call_was_asked() -> None:
    """Finding 3: with nobody merely full, a declined ladder is really unassigned."""
    d = dispatch()
    free = rungs(site=[SITE_COACH], supervisors=[SUPERVISOR])
    first = d.start(NOW, free)
    second = d.decline(offer_id(first), NOW + timedelta(seconds=5), free)
    assert offered(second) == [SUPERVISOR]
    last = d.decline(offer_id(second), NOW + timedelta(seconds=9), free)
    [unassigned] = of(ReferralUnassigned, last)
    assert unassigned.site_short_name == "Mercy ED"
    assert d.state is DispatchState.UNASSIGNED
