"""The events the read model is kept from: each handler writes facts, in the consumer's
transaction (which records the event id, so a redelivery is skipped)."""

from typing import Any

from handoff_platform.consumer import Handler
from handoff_platform.database import Connection
from handoff_reports.adapters import read_model
from handoff_schemas import Envelope
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    FollowUpAttempted,
    FollowUpDue,
    OfferMade,
    PageSent,
    ReferralCancelled,
    ReferralCreated,
    ReferralExpired,
    ReferralUnassigned,
    VisitRecorded,
)
from handoff_schemas.vocabulary import CoachResponse, FollowUpResult


async def referral_created(connection: Connection, envelope: Envelope[Any]) -> None:
    event: ReferralCreated = envelope.data
    # Only the site's slug and state: the event's location, phone and substances are
    # patient data the reports never keep.
    await read_model.site_seen(
        connection, event.referral_id, event.site.site_id, event.site.state, event.received_at
    )


async def referral_cancelled(connection: Connection, envelope: Envelope[Any]) -> None:
    event: ReferralCancelled = envelope.data
    await read_model.referral_time(
        connection, event.referral_id, "cancelled_at", event.cancelled_at
    )


async def visit_recorded(connection: Connection, envelope: Envelope[Any]) -> None:
    event: VisitRecorded = envelope.data
    await read_model.visit_recorded(
        connection, event.referral_id, event.outcomes, event.recorded_at
    )


async def follow_up_due(connection: Connection, envelope: Envelope[Any]) -> None:
    event: FollowUpDue = envelope.data
    await read_model.follow_up_due(
        connection,
        event.task_id,
        event.referral_id,
        event.site_id,
        event.window_days,
        event.due_at,
    )


async def follow_up_attempted(connection: Connection, envelope: Envelope[Any]) -> None:
    event: FollowUpAttempted = envelope.data
    await read_model.follow_up_attempted(
        connection,
        event.task_id,
        event.referral_id,
        event.site_id,
        event.window_days,
        event.attempted_at,
        event.result is FollowUpResult.REACHED,
        event.outcomes,
    )


async def offer_made(connection: Connection, envelope: Envelope[Any]) -> None:
    event: OfferMade = envelope.data
    # The briefing (location, callback number) and contacts stay out of the read model.
    await read_model.offer_made(connection, event.offer_id, event.referral_id, event.tier)


async def coach_assigned(connection: Connection, envelope: Envelope[Any]) -> None:
    event: CoachAssigned = envelope.data
    await read_model.accepted(connection, event.referral_id, event.offer_id, event.assigned_at)


async def referral_unassigned(connection: Connection, envelope: Envelope[Any]) -> None:
    event: ReferralUnassigned = envelope.data
    await read_model.referral_time(
        connection, event.referral_id, "unassigned_at", event.unassigned_at
    )


async def referral_expired(connection: Connection, envelope: Envelope[Any]) -> None:
    event: ReferralExpired = envelope.data
    await read_model.referral_time(connection, event.referral_id, "expired_at", event.expired_at)


async def page_sent(connection: Connection, envelope: Envelope[Any]) -> None:
    event: PageSent = envelope.data
    await read_model.referral_time(connection, event.referral_id, "first_page_at", event.sent_at)


_RESPONSE_TIMES = {CoachResponse.ARRIVED: "arrived_at", CoachResponse.COMPLETED: "completed_at"}


async def coach_responded(connection: Connection, envelope: Envelope[Any]) -> None:
    event: CoachResponded = envelope.data
    column = _RESPONSE_TIMES.get(event.response)
    if column is not None:  # accepted comes as CoachAssigned; declined is no figure
        await read_model.referral_time(connection, event.referral_id, column, event.responded_at)


def read_model_handlers() -> dict[str, Handler]:
    """Event type → handler, for the events the reports count."""
    return {
        ReferralCreated.event_type: referral_created,
        ReferralCancelled.event_type: referral_cancelled,
        VisitRecorded.event_type: visit_recorded,
        FollowUpDue.event_type: follow_up_due,
        FollowUpAttempted.event_type: follow_up_attempted,
        OfferMade.event_type: offer_made,
        CoachAssigned.event_type: coach_assigned,
        ReferralUnassigned.event_type: referral_unassigned,
        ReferralExpired.event_type: referral_expired,
        PageSent.event_type: page_sent,
        CoachResponded.event_type: coach_responded,
    }
