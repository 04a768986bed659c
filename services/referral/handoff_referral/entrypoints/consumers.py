"""Events from matching and notify that move a referral along its timeline."""

from typing import Any

from handoff_platform.consumer import Handler
from handoff_platform.database import Connection
from handoff_referral.domain.status import Status
from handoff_referral.service import ReferralService
from handoff_schemas import Envelope
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferMade,
    ReferralUnassigned,
)
from handoff_schemas.vocabulary import CoachResponse

RESPONSE_STEPS = {CoachResponse.ARRIVED: Status.ARRIVED, CoachResponse.COMPLETED: Status.COMPLETED}


def timeline_handlers(service: ReferralService) -> dict[str, Handler]:
    async def offer_made(connection: Connection, event: Envelope[Any]) -> None:
        data: OfferMade = event.data
        await service.observe_step(connection, data.referral_id, Status.OFFERED, event.time)

    async def coach_assigned(connection: Connection, event: Envelope[Any]) -> None:
        data: CoachAssigned = event.data
        await service.observe_step(connection, data.referral_id, Status.ACCEPTED, data.assigned_at)

    async def unassigned(connection: Connection, event: Envelope[Any]) -> None:
        data: ReferralUnassigned = event.data
        await service.observe_step(
            connection, data.referral_id, Status.UNASSIGNED, data.unassigned_at
        )

    async def coach_responded(connection: Connection, event: Envelope[Any]) -> None:
        data: CoachResponded = event.data
        # Acceptance is taken from CoachAssigned: in a broadcast only one acceptance wins.
        if step := RESPONSE_STEPS.get(data.response):
            await service.observe_step(connection, data.referral_id, step, data.responded_at)

    return {
        OfferMade.event_type: offer_made,
        CoachAssigned.event_type: coach_assigned,
        ReferralUnassigned.event_type: unassigned,
        CoachResponded.event_type: coach_responded,
    }
