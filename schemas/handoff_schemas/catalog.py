"""The registry of event types: decoding a message starts here."""

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from handoff_schemas.envelope import Envelope, Payload, envelope_for
from handoff_schemas.events import (
    CoachAssigned,
    CoachAvailabilityChanged,
    CoachPhonesChanged,
    CoachResponded,
    ContactMethodReachabilityChanged,
    FollowUpAssigned,
    FollowUpAttempted,
    FollowUpConsentRevoked,
    FollowUpDue,
    OfferMade,
    OfferWithdrawn,
    PageDelivered,
    PageFailed,
    PageSent,
    ReferralCancelled,
    ReferralCreated,
    ReferralEscalated,
    ReferralExpired,
    ReferralUnassigned,
    ReferralUpdated,
    ReferralWaiting,
    SiteRegistered,
    VisitRecorded,
)
from handoff_schemas.topics import Topic

EVENT_TYPES: Mapping[str, type[Payload]] = {
    cls.event_type: cls
    for cls in (
        ReferralCreated,
        ReferralUpdated,
        ReferralCancelled,
        OfferMade,
        OfferWithdrawn,
        CoachAssigned,
        ReferralEscalated,
        ReferralUnassigned,
        ReferralWaiting,
        ReferralExpired,
        PageSent,
        PageDelivered,
        PageFailed,
        CoachResponded,
        SiteRegistered,
        CoachAvailabilityChanged,
        ContactMethodReachabilityChanged,
        CoachPhonesChanged,
        VisitRecorded,
        FollowUpDue,
        FollowUpAttempted,
        FollowUpConsentRevoked,
        FollowUpAssigned,
    )
}


class _EventHead(BaseModel):
    """Just enough of an envelope to know which payload class decodes the rest."""

    type: str


class UnknownEventType(ValueError):
    pass


def event_class_for(event_type: str) -> type[Payload]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(f"unknown event type {event_type!r}") from None


def events_on(topic: Topic) -> list[type[Payload]]:
    return [cls for cls in EVENT_TYPES.values() if cls.topic is topic]


def decode_event(raw: bytes | str) -> Envelope[Any]:
    """Parse one message into its typed envelope; raises ValueError on anything malformed."""
    head = _EventHead.model_validate_json(raw)
    return envelope_for(event_class_for(head.type)).model_validate_json(raw)
