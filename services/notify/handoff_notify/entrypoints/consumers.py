"""Dispatch events that make or end pages."""

from handoff_notify.service import NotifyService
from handoff_platform.consumer import Handler
from handoff_schemas.events import CoachAssigned, OfferMade, OfferWithdrawn


def dispatch_handlers(service: NotifyService) -> dict[str, Handler]:
    return {
        OfferMade.event_type: service.offer_made,
        OfferWithdrawn.event_type: service.offer_withdrawn,
        CoachAssigned.event_type: service.coach_assigned,
    }
