"""The hospital-facing API: thin routes over ReferralService."""

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, Field

from handoff_platform.audit import Accessor, ActorKind, AuditEntry, Purpose, address_of
from handoff_platform.http import ApiError
from handoff_platform.logs import correlation_id_var
from handoff_referral import SCHEMA
from handoff_referral.domain.api_keys import parse_key
from handoff_referral.domain.intake import CancelRequest, Patient, ReferralRequest
from handoff_referral.domain.referral import Referral, Site, TimelineStep
from handoff_referral.domain.status import CancelRefused, Status, Step
from handoff_referral.follow_ups import FollowUpService, NoConsent
from handoff_referral.service import ExternalIdConflict, ReferralNotFound, ReferralService
from handoff_schemas.envelope import UtcDateTime

MAX_PAGE = 200
API_KEY = HTTPBearer(
    auto_error=False,
    scheme_name="api_key",
    description="The site's API key (`hok_…`), from `handoff referral key create`.",
)
_ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _iso_8601_only(value: object) -> object:
    """Refuse what pydantic would otherwise take for a time, like a bare Unix timestamp."""
    if not (isinstance(value, str) and _ISO_8601.match(value)):
        raise ValueError("expected an ISO 8601 date-time with a UTC offset")
    return value


IsoDateTime = Annotated[UtcDateTime, BeforeValidator(_iso_8601_only)]


STATUS_DOC = (
    "What is true now. `received`; `offered` (a coach is being asked); `waiting` (every "
    "eligible coach on call is busy with other patients: the referral waits in line and is "
    "offered the moment one frees up); `unassigned` (nobody took it yet: Handoff offers "
    "it again when a coach frees up or comes on call); `accepted`; `arrived`; and the final "
    "`completed`, `cancelled`, `expired` (the site's give-up time passed with no coach)."
)
STEP_DOC = (
    "What happened: a status the referral entered (see `status`), or an offer that ended "
    "without a coach: `coach_declined`, `coach_did_not_answer`, `coach_not_contacted` "
    "(Handoff could not get the page to the coach's phone in time; the coach never saw "
    "it), `coach_unreachable` (every way of reaching the coach failed), `coach_at_capacity` "
    "(the coach accepted but was already with as many patients as they can take). A "
    "referral offered, then waiting, then offered again shows each occurrence; one "
    "`offered` step stands for every coach asked at once (`coaches`). "
    "`discharged`: the hospital discharged the patient after the coach arrived (HL7)."
)


class TimelineStepOut(BaseModel):
    status: Step = Field(description=STEP_DOC)
    at: datetime
    coaches: int | None = Field(
        default=None,
        description="On an `offered` step: how many coaches were asked at once (a "
        "broadcast asks several; one step per batch of offers).",
    )
    coach_id: UUID | None = Field(
        default=None, description="On an `accepted` step: the coach who accepted."
    )
    arrive_by: datetime | None = Field(
        default=None,
        description="On an `accepted` step: the latest time (UTC) the ED expects the coach.",
    )

    @classmethod
    def of(cls, step: TimelineStep) -> "TimelineStepOut":
        """From a stored step, which was validated on its way in: not validated again."""
        details = step.details
        return cls.model_construct(
            status=step.step,
            at=step.at,
            coaches=details.coaches,
            coach_id=details.coach_id,
            arrive_by=details.arrive_by,
        )


class ReferralOut(BaseModel):
    id: UUID
    external_id: str
    site_id: str
    status: Status = Field(description=STATUS_DOC)
    urgency: str
    location: str
    callback_phone: str
    patient: Patient
    notes: str | None
    cancel_reason: str | None
    received_at: datetime
    updated_at: datetime
    timeline: list[TimelineStepOut]

    @classmethod
    def of(cls, referral: Referral) -> "ReferralOut":
        """From a stored referral, which was validated on its way in: not validated again
        (on the intake's path that was a measurable share of its CPU; issue 17)."""
        request = referral.request
        return cls.model_construct(
            id=referral.referral_id,
            external_id=request.external_id,
            site_id=referral.site_id,
            status=referral.status,
            urgency=request.urgency.value,
            location=request.location,
            callback_phone=request.callback_phone,
            patient=request.patient,
            notes=request.notes,
            cancel_reason=referral.cancel_reason,
            received_at=referral.received_at,
            updated_at=referral.updated_at,
            timeline=[TimelineStepOut.of(s) for s in referral.timeline],
        )


REFERRAL_FIELDS = tuple(ReferralOut.model_fields)
"""What a GET of a referral discloses, for its audit entry: every field of the answer."""


class ReferralPage(BaseModel):
    items: list[ReferralOut]
    next_cursor: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[dict[str, str]] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, unknown or revoked API key."},
    413: {"model": ErrorOut, "description": "Body over 64 KiB."},
    415: {"model": ErrorOut, "description": "A body that is not `application/json`."},
    422: {"model": ErrorOut, "description": "Invalid request; `fields` names each problem."},
}


class ConsentRevokedOut(BaseModel):
    referral_id: UUID
    tasks_cancelled: int = Field(description="Open follow-up tasks cancelled by this call.")
    already_revoked: bool = Field(
        description="Nothing was left to stop: consent had been revoked before, or a call's "
        "result (wrong number, declined, deceased) had already ended follow-up and deleted "
        "the number. The withdrawal is recorded either way."
    )


def build_router(service: ReferralService, follow_ups: FollowUpService) -> APIRouter:
    router = APIRouter(prefix="/v1/referrals", tags=["referrals"], responses=ERRORS)

    async def authenticated_site(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_KEY)],
    ) -> Site:
        site = await service.authenticate(credentials.credentials) if credentials else None
        if site is None:
            raise ApiError(
                401,
                "unauthorized",
                "a valid API key is required",
                headers={"WWW-Authenticate": 'Bearer realm="handoff"'},
            )
        return site

    CurrentSite = Annotated[Site, Depends(authenticated_site)]

    async def hospital_reader(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_KEY)],
        _: CurrentSite,
    ) -> Accessor:
        """Who reads, for the audit trail: the key's id (never its secret), after the key
        was checked; the hospital reads its own patient's referral for treatment."""
        parsed = parse_key(credentials.credentials) if credentials else None
        assert parsed is not None  # authenticated_site let only a well-formed key through
        address = address_of(request.client.host if request.client else None)
        return Accessor(ActorKind.API_KEY, parsed[0], Purpose.TREATMENT, address)

    @router.post(
        "",
        status_code=201,
        response_model=ReferralOut,
        responses={
            200: {"model": ReferralOut, "description": "A replay: the original."},
            409: {"model": ErrorOut, "description": "external_id reused."},
        },
    )
    async def create_referral(body: ReferralRequest, site: CurrentSite) -> Response:
        """Ask for a peer recovery coach. Replaying the same external_id and body is safe."""
        try:
            referral, created = await service.submit(site, body, correlation_id_var.get())
        except ExternalIdConflict:
            raise ApiError(
                409,
                "external_id_conflict",
                "this external_id was already used with a different request",
                field="external_id",
            ) from None
        # Serialised here, once: FastAPI would validate the model again on its way out,
        # a measurable share of the intake's CPU.
        return Response(
            ReferralOut.of(referral).model_dump_json(),
            status_code=201 if created else 200,
            media_type="application/json",
            headers={"Location": f"/v1/referrals/{referral.referral_id}"},
        )

    @router.get("/{referral_id}", response_model=ReferralOut, responses={404: {"model": ErrorOut}})
    async def get_referral(
        referral_id: UUID, site: CurrentSite, reader: Annotated[Accessor, Depends(hospital_reader)]
    ) -> ReferralOut:
        """The referral and its status timeline. Each read is one entry of the audit trail."""
        audit = reader.saw("referral", referral_id, REFERRAL_FIELDS)
        return ReferralOut.of(await _get(service, site, referral_id, audit))

    @router.get("", response_model=ReferralPage)
    async def list_referrals(
        site: CurrentSite,
        reader: Annotated[Accessor, Depends(hospital_reader)],
        status: Annotated[Status | None, Query(description="Only referrals now in it.")] = None,
        since: Annotated[IsoDateTime | None, Query(description="Received at or after.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> ReferralPage:
        """The site's referrals in the order received; follow `next_cursor` for more. Each
        referral listed is one entry of the audit trail."""
        after = _decode_cursor(cursor) if cursor else None
        page, more = await service.list(
            site,
            status,
            since,
            after,
            limit,
            lambda r: reader.saw("referral", r.referral_id, REFERRAL_FIELDS),
        )
        return ReferralPage(
            items=[ReferralOut.of(r) for r in page],
            next_cursor=_encode_cursor(page[-1]) if more else None,
        )

    @router.post(
        "/{referral_id}/cancel",
        response_model=ReferralOut,
        responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    )
    async def cancel_referral(
        referral_id: UUID, body: CancelRequest, site: CurrentSite
    ) -> ReferralOut:
        """The patient left or declined: withdraw the request and any open offers."""
        try:
            referral = await service.cancel(site, referral_id, body.reason)
        except ReferralNotFound:
            raise _not_found() from None
        except CancelRefused as refused:
            raise ApiError(409, "referral_closed", str(refused)) from None
        return ReferralOut.of(referral)

    @router.post(
        "/{referral_id}/follow-up-consent/revoke",
        response_model=ConsentRevokedOut,
        responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    )
    async def revoke_follow_up_consent(referral_id: UUID, site: CurrentSite) -> ConsentRevokedOut:
        """The patient withdrew their follow-up consent (told the hospital): every open
        follow-up is cancelled at once and the stored contact details erased. Calling it
        again changes nothing. 409 when no follow-up consent was recorded."""
        try:
            revoked = await follow_ups.revoke(referral_id, site.site_id)
        except NoConsent:
            async with service.pool.acquire() as connection:
                known = await connection.fetchval(
                    f"""SELECT true FROM {SCHEMA}.referrals
                        WHERE referral_id = $1 AND site_id = $2""",
                    referral_id,
                    site.site_id,
                )
            if not known:
                raise _not_found() from None
            raise ApiError(
                409, "no_follow_up_consent", "no follow-up consent is recorded for this referral"
            ) from None
        return ConsentRevokedOut(
            referral_id=referral_id,
            tasks_cancelled=revoked.tasks_cancelled,
            already_revoked=revoked.already,
        )

    return router


async def _get(
    service: ReferralService, site: Site, referral_id: UUID, audit: AuditEntry
) -> Referral:
    try:
        return await service.get(site, referral_id, audit)
    except ReferralNotFound:
        raise _not_found() from None


def _not_found() -> ApiError:
    # Another site's referral is 404 too: its existence is not the caller's business.
    return ApiError(404, "not_found", "no such referral")


def _encode_cursor(last: Referral) -> str:
    position = [last.received_at.isoformat(), str(last.referral_id)]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        received_at, referral_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        position = (datetime.fromisoformat(received_at), UUID(referral_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            422, "invalid_cursor", "cursor is not one this API returned", field="cursor"
        ) from None
    if position[0].tzinfo is None:
        raise ApiError(422, "invalid_cursor", "cursor is not one this API returned", field="cursor")
    return position
