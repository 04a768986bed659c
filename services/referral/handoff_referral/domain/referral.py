"""A referral as the referral service keeps it, and the event it announces itself with."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from handoff_referral.domain.intake import ReferralRequest
from handoff_referral.domain.status import Status, Step
from handoff_schemas.events import ReferralCreated, SiteFacts


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    short_name: str
    state: str
    time_zone: str

    def facts(self) -> SiteFacts:
        return SiteFacts(
            site_id=self.site_id,
            short_name=self.short_name,
            state=self.state,
            time_zone=self.time_zone,
        )


@dataclass(frozen=True)
class StepDetails:
    """What a step says beyond its name: `coaches` asked at once (an `offered` step, one
    per batch of offers), and who accepted and by when the ED expects them (`coach_id`,
    `arrive_by` UTC, an `accepted` step). None where it does not apply or was not known
    (steps recorded before these were kept). `batch_id` finds an offered step's batch."""

    coaches: int | None = None
    coach_id: UUID | None = None
    arrive_by: datetime | None = None
    batch_id: UUID | None = None


@dataclass(frozen=True)
class TimelineStep:
    """One timeline entry: `step` happened `at` (UTC), with its details."""

    step: Step
    at: datetime
    details: StepDetails = StepDetails()


NO_DETAILS = StepDetails()


@dataclass(frozen=True)
class Referral:
    referral_id: UUID
    site_id: str
    request: ReferralRequest
    status: Status
    received_at: datetime
    updated_at: datetime
    timeline: tuple[TimelineStep, ...]
    correlation_id: str
    cancel_reason: str | None = None


def referral_created(
    referral_id: UUID, site: Site, request: ReferralRequest, received_at: datetime
) -> ReferralCreated:
    """Minimum necessary: no initials, age band or notes leave the referral service."""
    patient = request.patient
    return ReferralCreated(
        referral_id=referral_id,
        site=site.facts(),
        urgency=request.urgency,
        location=request.location,
        callback_phone=request.callback_phone,
        preferred_language=patient.preferred_language,
        interpreter_needed=patient.interpreter_needed,
        coach_gender_preference=patient.coach_gender_preference,
        substances=patient.substances,
        consent=patient.consent,
        received_at=received_at,
    )
