"""Dispatch events that make or end pages, or tell supervisors of an unassigned referral."""

from handoff_notify.service import NotifyService
from handoff_platform.consumer import Handler
from handoff_schemas.events import (
    CoachAssigned,
    CoachPhonesChanged,
    OfferMade,
    OfferWithdrawn,
    ReferralUnassigned,
)


def dispatch_handlers(service: NotifyService) -> dict[str, Handler]:
    return {
        OfferMade.event_type: service.offer_made,
        OfferWithdrawn.event_type: service.offer_withdrawn,
        CoachAssigned.event_type: service.coach_assigned,
        ReferralUnassigned.event_type: service.referral_unassigned,
        CoachPhonesChanged.event_type: service.coach_phones_changed,
    }
