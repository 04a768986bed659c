"""Events that move a referral's dispatch (new, updated and cancelled referrals, coaches'
answers), the sites they come from, coaches' own OFF / ON, and follow-up attempts due,
recorded or stopped by a revoked consent (issue #16)."""

from handoff_matching.service import MatchingService
from handoff_platform.consumer import Handler
from handoff_schemas.events import (
    CoachAvailabilityChanged,
    CoachResponded,
    ContactMethodReachabilityChanged,
    FollowUpAttempted,
    FollowUpConsentRevoked,
    FollowUpDue,
    PageFailed,
    PageSent,
    ReferralCancelled,
    ReferralCreated,
    ReferralUpdated,
    SiteRegistered,
)


def dispatch_handlers(service: MatchingService) -> dict[str, Handler]:
    return {
        SiteRegistered.event_type: service.site_registered,
        ReferralCreated.event_type: service.referral_created,
        ReferralCancelled.event_type: service.referral_cancelled,
        ReferralUpdated.event_type: service.referral_updated,
        CoachResponded.event_type: service.coach_responded,
        PageSent.event_type: service.page_sent,
        PageFailed.event_type: service.page_failed,
        CoachAvailabilityChanged.event_type: service.coach_availability_changed,
        ContactMethodReachabilityChanged.event_type: (service.contact_method_reachability_changed),
        FollowUpDue.event_type: service.follow_up_due,
        FollowUpAttempted.event_type: service.follow_up_attempted,
        FollowUpConsentRevoked.event_type: service.follow_up_consent_revoked,
    }
