"""Dispatch events that make or end pages, tell supervisors of an unassigned referral, or
give a coach a follow-up attempt (a reminder); and from handoff.referrals only a cancel (a
coach holding the referral is told; a held notice about it is dropped), an update (the
briefing fields the coach's page shows), a follow-up attempt recorded and a follow-up
consent revoked (a reminder not yet sent is then dropped). Other referral events, which
may carry patient data, are skipped undecoded."""

from handoff_notify.service import NotifyService
from handoff_platform.consumer import Handler
from handoff_schemas.events import (
    CoachAssigned,
    CoachPhonesChanged,
    FollowUpAssigned,
    FollowUpAttempted,
    FollowUpConsentRevoked,
    OfferMade,
    OfferWithdrawn,
    ReferralCancelled,
    ReferralUnassigned,
    ReferralUpdated,
)


def dispatch_handlers(service: NotifyService) -> dict[str, Handler]:
    return {
        OfferMade.event_type: service.offer_made,
        OfferWithdrawn.event_type: service.offer_withdrawn,
        CoachAssigned.event_type: service.coach_assigned,
        ReferralUnassigned.event_type: service.referral_unassigned,
        ReferralCancelled.event_type: service.referral_cancelled,
        ReferralUpdated.event_type: service.referral_updated,
        CoachPhonesChanged.event_type: service.coach_phones_changed,
        FollowUpAssigned.event_type: service.follow_up_assigned,
        FollowUpAttempted.event_type: service.follow_up_attempted,
        FollowUpConsentRevoked.event_type: service.follow_up_consent_revoked,
    }
