"""Dispatch events that make or end pages, or tell supervisors of an unassigned referral;
and from handoff.referrals only a cancel (a held notice about it is then dropped). Other
referral events, which may carry patient data, are skipped undecoded."""

from handoff_notify.service import NotifyService
from handoff_platform.consumer import Handler
from handoff_schemas.events import (
    CoachAssigned,
    CoachPhonesChanged,
    OfferMade,
    OfferWithdrawn,
    ReferralCancelled,
    ReferralUnassigned,
)


def dispatch_handlers(service: NotifyService) -> dict[str, Handler]:
    return {
        OfferMade.event_type: service.offer_made,
        OfferWithdrawn.event_type: service.offer_withdrawn,
        CoachAssigned.event_type: service.coach_assigned,
        ReferralUnassigned.event_type: service.referral_unassigned,
        ReferralCancelled.event_type: service.referral_cancelled,
        CoachPhonesChanged.event_type: service.coach_phones_changed,
    }
