"""Event parts the tests build again and again: what matching and notify would publish about
one referral, for tests of the referral service that stand in for them."""

import uuid
from datetime import UTC, datetime, timedelta

from handoff_schemas.events import CoachAssigned, CoachResponded, OfferBriefing, OfferMade
from handoff_schemas.vocabulary import CoachResponse, Consent, ResponseVia, Tier, Urgency

BRIEFING = OfferBriefing(
    location="ED bay 4",
    callback_phone="+14105550100",
    preferred_language="es",
    interpreter_needed=True,
    consent=Consent.OBTAINED,
)


def offer_made(
    referral_id: uuid.UUID,
    *,
    coach_id: uuid.UUID | None = None,
    offer_id: uuid.UUID | None = None,
    site_id: str = "md-test",
) -> OfferMade:
    """An urgent site-tier offer of the referral ("Test ED"), expiring in five minutes; a new
    coach and offer id unless given."""
    return OfferMade(
        referral_id=referral_id,
        offer_id=offer_id or uuid.uuid4(),
        coach_id=coach_id or uuid.uuid4(),
        site_id=site_id,
        site_short_name="Test ED",
        urgency=Urgency.URGENT,
        tier=Tier.SITE,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        briefing=BRIEFING,
    )


def coach_assigned(
    referral_id: uuid.UUID, offer_id: uuid.UUID, coach_id: uuid.UUID, at: datetime
) -> CoachAssigned:
    """The coach's acceptance of the offer at `at` (UTC), due at the bedside an hour later."""
    return CoachAssigned(
        referral_id=referral_id,
        offer_id=offer_id,
        coach_id=coach_id,
        assigned_at=at,
        arrival_deadline=at + timedelta(hours=1),
    )


def coach_responded(
    referral_id: uuid.UUID,
    offer_id: uuid.UUID,
    coach_id: uuid.UUID,
    response: CoachResponse,
    at: datetime,
    via: ResponseVia = ResponseVia.LINK,
) -> CoachResponded:
    """The coach's answer about the offer (declined, arrived, completed...) at `at` (UTC)."""
    return CoachResponded(
        referral_id=referral_id,
        offer_id=offer_id,
        coach_id=coach_id,
        response=response,
        via=via,
        responded_at=at,
    )
