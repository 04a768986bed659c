"""Events that move a referral's dispatch (new, updated and cancelled referrals, coaches'
answers), the sites they come from, and coaches' own OFF / ON."""

from handoff_matching.service import MatchingService
from handoff_platform.consumer import Handler
from handoff_schemas.events import (
    CoachAvailabilityChanged,
    CoachResponded,
    ContactMethodReachabilityChanged,
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
    }
