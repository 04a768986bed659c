"""ReferralUpdated (an HL7 bed move) reaches the dispatch's briefing, which later offers carry."""

import uuid
from datetime import UTC, datetime

from handoff_matching.domain.briefing import apply_update
from handoff_matching.domain.dispatch import DispatchState
from handoff_schemas.events import OfferMade, ReferralUpdated
from handoff_schemas.vocabulary import Consent, Tier, Urgency
from tests.unit.test_matching_dispatch import FACTS, NOW, dispatch, of


def moved(**fields: object) -> ReferralUpdated:
    return ReferralUpdated(referral_id=FACTS.referral_id, updated_at=datetime.now(UTC), **fields)


def test_a_bed_move_is_in_the_offers_made_after_it() -> None:
    d = dispatch()
    [first] = of(OfferMade, d.start(NOW, {Tier.SITE: [uuid.UUID(int=1), uuid.UUID(int=2)]}))
    assert first.briefing.location == "ED bay 4"

    assert apply_update(d, moved(location="ED 12 B")) == ["location"]

    [second] = of(OfferMade, d.decline(first.offer_id, NOW, {Tier.SITE: [uuid.UUID(int=2)]}))
    assert second.briefing.location == "ED 12 B"
    assert second.briefing.callback_phone == first.briefing.callback_phone


def test_only_fields_that_differ_change_and_urgency_is_left_alone() -> None:
    d = dispatch()
    changed = apply_update(
        d, moved(location="ED bay 4", consent=Consent.PENDING, urgency=Urgency.EMERGENT)
    )
    assert changed == ["consent"]
    assert d.facts.briefing.consent is Consent.PENDING
    assert d.facts.urgency is Urgency.URGENT
    assert apply_update(d, moved(consent=Consent.PENDING)) == []


def test_a_dispatch_that_is_over_keeps_its_briefing() -> None:
    for state in (DispatchState.CANCELLED, DispatchState.CLOSED, DispatchState.EXPIRED):
        d = dispatch()
        d.state = state
        assert apply_update(d, moved(location="ED 12 B")) == []
        assert d.facts.briefing.location == "ED bay 4"
