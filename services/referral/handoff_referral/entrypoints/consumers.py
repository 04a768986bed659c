"""Events from matching and notify that move a referral along its timeline."""

from typing import Any

from handoff_platform.consumer import Handler
from handoff_platform.database import Connection
from handoff_referral.domain.referral import StepDetails
from handoff_referral.domain.status import Status, Step
from handoff_referral.follow_ups import FollowUpService
from handoff_referral.service import ReferralService
from handoff_schemas import Envelope
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    FollowUpAssigned,
    OfferMade,
    OfferWithdrawn,
    ReferralExpired,
    ReferralUnassigned,
    ReferralWaiting,
)
from handoff_schemas.vocabulary import CoachResponse, WithdrawReason

RESPONSE_STEPS = {CoachResponse.ARRIVED: Status.ARRIVED, CoachResponse.COMPLETED: Status.COMPLETED}
# Filled and cancelled offers are told by the referral's own accepted / cancelled step.
WITHDRAWAL_STEPS = {
    WithdrawReason.EXPIRED: Step.COACH_DID_NOT_ANSWER,
    WithdrawReason.NOT_CONTACTED: Step.COACH_NOT_CONTACTED,
    WithdrawReason.UNREACHABLE: Step.COACH_UNREACHABLE,
    WithdrawReason.AT_CAPACITY: Step.COACH_AT_CAPACITY,
}


def timeline_handlers(
    service: ReferralService, follow_ups: FollowUpService | None = None
) -> dict[str, Handler]:
    """The handlers of the events the referral service consumes: its timeline, and with
    `follow_ups`, the accepted offer a visit page names and the follow-up assignments."""

    async def offer_made(connection: Connection, event: Envelope[Any]) -> None:
        data: OfferMade = event.data
        # An offer from before batches were named is a batch of its own, of one coach.
        details = StepDetails(coaches=data.batch_size or 1, batch_id=data.batch_id)
        await service.observe_step(
            connection, data.referral_id, Status.OFFERED, event.time, details
        )

    async def offer_withdrawn(connection: Connection, event: Envelope[Any]) -> None:
        data: OfferWithdrawn = event.data
        if step := WITHDRAWAL_STEPS.get(data.reason):
            await service.observe_offer_ending(
                connection, data.referral_id, step, data.withdrawn_at
            )

    async def coach_assigned(connection: Connection, event: Envelope[Any]) -> None:
        data: CoachAssigned = event.data
        details = StepDetails(coach_id=data.coach_id, arrive_by=data.arrival_deadline)
        await service.observe_step(
            connection, data.referral_id, Status.ACCEPTED, data.assigned_at, details
        )
        if follow_ups is not None:
            await follow_ups.offer_accepted(
                connection, data.offer_id, data.referral_id, data.coach_id, data.assigned_at
            )

    async def follow_up_assigned(connection: Connection, event: Envelope[Any]) -> None:
        assert follow_ups is not None  # subscribed only with follow_ups
        await follow_ups.assigned(connection, event.data)

    async def waiting(connection: Connection, event: Envelope[Any]) -> None:
        data: ReferralWaiting = event.data
        await service.observe_step(connection, data.referral_id, Status.WAITING, data.waiting_since)

    async def unassigned(connection: Connection, event: Envelope[Any]) -> None:
        data: ReferralUnassigned = event.data
        await service.observe_step(
            connection, data.referral_id, Status.UNASSIGNED, data.unassigned_at
        )

    async def expired(connection: Connection, event: Envelope[Any]) -> None:
        data: ReferralExpired = event.data
        await service.observe_step(connection, data.referral_id, Status.EXPIRED, data.expired_at)

    async def coach_responded(connection: Connection, event: Envelope[Any]) -> None:
        data: CoachResponded = event.data
        # Acceptance is taken from CoachAssigned: in a broadcast only one acceptance wins.
        if data.response is CoachResponse.DECLINED:
            await service.observe_offer_ending(
                connection, data.referral_id, Step.COACH_DECLINED, data.responded_at
            )
        elif step := RESPONSE_STEPS.get(data.response):
            await service.observe_step(connection, data.referral_id, step, data.responded_at)

    handlers: dict[str, Handler] = {
        OfferMade.event_type: offer_made,
        OfferWithdrawn.event_type: offer_withdrawn,
        CoachAssigned.event_type: coach_assigned,
        ReferralWaiting.event_type: waiting,
        ReferralUnassigned.event_type: unassigned,
        ReferralExpired.event_type: expired,
        CoachResponded.event_type: coach_responded,
    }
    if follow_ups is not None:
        handlers[FollowUpAssigned.event_type] = follow_up_assigned
    return handlers
