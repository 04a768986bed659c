"""The registry of event types: decoding a message starts here."""

from collections.abc import Mapping
from typing import Any

from handoff_schemas.envelope import Envelope, EventPayload
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferMade,
    OfferWithdrawn,
    PageDelivered,
    PageFailed,
    PageSent,
    ReferralCancelled,
    ReferralCreated,
    ReferralEscalated,
    ReferralUnassigned,
    ReferralUpdated,
)
from handoff_schemas.topics import Topic

EVENT_TYPES: Mapping[str, type[EventPayload]] = {
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
        PageSent,
        PageDelivered,
        PageFailed,
        CoachResponded,
    )
}


class UnknownEventType(ValueError):
    pass


def event_class_for(event_type: str) -> type[EventPayload]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(f"unknown event type {event_type!r}") from None


def events_on(topic: Topic) -> list[type[EventPayload]]:
    return [cls for cls in EVENT_TYPES.values() if cls.topic is topic]


def decode_event(raw: bytes | str) -> Envelope[Any]:
    """Parse one message into its typed envelope; raises ValueError on anything malformed."""
    from pydantic import BaseModel

    class _Head(BaseModel):
        type: str

    head = _Head.model_validate_json(raw)
    payload_class = event_class_for(head.type)
    return Envelope[payload_class].model_validate_json(raw)  # type: ignore[valid-type]
