"""What coaches' phones and Twilio reach: the offer page, SMS replies, keypad answers,
delivery callbacks; and, in the sandbox, the local inbox.

The offer page is server-rendered and works without JavaScript. Whatever the
link's offer became, the page says so plainly; only a link we did not sign is a 404.
Twilio's webhooks are refused unless their `X-Twilio-Signature` checks out, and an
sender on no coach's roster is told its number is not registered (decision 0013).
"""

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from pydantic import BaseModel

from handoff_notify import metrics
from handoff_notify.adapters import sandbox
from handoff_notify.adapters.pages_store import OfferRecord
from handoff_notify.adapters.reply_spool import ReplySpool, SpooledReply
from handoff_notify.adapters.report_spool import ReportSpool, SpooledReport
from handoff_notify.adapters.twilio import (
    DELIVERED_STATUSES,
    FAILED_STATUSES,
    PAGE_PARAM,
    signature_valid,
)
from handoff_notify.domain import content
from handoff_notify.domain.offer import OfferState
from handoff_notify.domain.replies import read_reply
from handoff_notify.service import NotifyService, coach_phone
from handoff_platform.audit import address_of
from handoff_platform.transient import TRANSIENT_DATABASE_ERRORS, is_transient_database_error
from handoff_schemas.events import OfferBriefing
from handoff_schemas.vocabulary import CoachResponse, ResponseVia, WithdrawReason

LABELS = {
    CoachResponse.ACCEPTED: "Accept",
    CoachResponse.DECLINED: "Decline",
    CoachResponse.ARRIVED: "Arrived",
    CoachResponse.COMPLETED: "Completed",
}
log = logging.getLogger(__name__)
TWIML = "application/xml"
_URL = re.compile(r"https?://\S+")


def _linkify(text: str) -> Markup:
    escaped = str(escape(text))
    return Markup(_URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped))  # noqa: S704


templates = Environment(loader=PackageLoader("handoff_notify.entrypoints"), autoescape=True)
templates.filters["linkify"] = _linkify


def build_coach_router(service: NotifyService) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def offer_of(token: str) -> UUID:
        offer_id = service.signer.offer_id(token)
        if offer_id is None:
            raise LinkNotFound
        return offer_id

    @router.get("/p/{token}", response_class=HTMLResponse)
    async def offer_page(
        token: str, offer_id: Annotated[UUID, Depends(offer_of)], request: Request
    ) -> Response:
        address = address_of(request.client.host if request.client else None)
        record = await service.offer_seen(offer_id, address, lambda r: _shown(r, service))
        if record is None:
            raise LinkNotFound
        return await _render_offer(record, service, token)

    @router.post("/p/{token}", response_class=HTMLResponse)
    async def answer_from_page(
        token: str,
        offer_id: Annotated[UUID, Depends(offer_of)],
        answer: Annotated[CoachResponse, Form()],
        request: Request,
    ) -> Response:
        if len((await request.form()).getlist("answer")) > 1:
            # Form() keeps the last: "declined" then "accepted" accepted (fresh34d).
            return HTMLResponse("answer: give one answer, not several.", status_code=422)
        record = await service.answer(offer_id, answer, ResponseVia.LINK)
        if record is None:
            raise LinkNotFound
        return RedirectResponse(f"/p/{token}", status_code=303)

    @router.get("/p/{token}/availability")
    async def availability_page(
        token: str, _: Annotated[UUID, Depends(offer_of)]
    ) -> RedirectResponse:
        """A reload or bookmark of the page an OFF / ON answered on: the coach's page."""
        return RedirectResponse(f"/p/{token}", status_code=303)

    @router.post("/p/{token}/availability", response_class=HTMLResponse)
    async def availability_from_page(
        token: str,
        offer_id: Annotated[UUID, Depends(offer_of)],
        request: Request,
        availability: Annotated[Literal["off", "on"], Form()],
        until: Annotated[str | None, Form(max_length=40)] = None,
    ) -> Response:
        """The coach's own OFF / ON from their page (issue #15): the same as texting it.
        The signed link in the path is the proof it is theirs (no cookie, so no CSRF to
        forge); `until` is one of the page's choices, an instant within 24 h."""
        ends: datetime | None = None  # no choice: 24 h from when it is taken, as SMS OFF
        if availability == "off" and until:
            ends = _off_until(until, service.clock())
            if ends is None:
                return HTMLResponse(
                    "until: choose a time within the next 24 hours.", status_code=422
                )
        answer = await service.availability_from_page(offer_id, availability == "on", ends)
        if answer is None:
            raise LinkNotFound
        # The page shown again after an OFF / ON is a view like any other: audited.
        address = address_of(request.client.host if request.client else None)
        record = await service.offer_seen(offer_id, address, lambda r: _shown(r, service))
        if record is None:
            raise LinkNotFound
        return await _render_offer(record, service, token, changed=answer)

    return router


def _off_until(value: str, now: datetime) -> datetime | None:
    """`value` (an ISO instant with offset, as the page offers it) when it is after `now`
    and at most 24 h on (a minute's slack for a page left open), else None."""
    try:
        until = datetime.fromisoformat(value)
    except ValueError:
        return None
    if until.tzinfo is None or not now < until <= now + content.OFF_FOR + timedelta(minutes=1):
        return None
    return until


def _off_choices(now: datetime, time_zone: str | None) -> list[tuple[str, str]]:
    """The ends an OFF from the page may have: each whole hour over the next 24 h on the
    site's clock, then 24 h from now (the default, as SMS OFF), as (UTC ISO, label)."""
    top = now.replace(minute=0, second=0, microsecond=0)
    hours = [top + timedelta(hours=h) for h in range(1, 25) if top + timedelta(hours=h) > now]
    choices = [
        (end.astimezone(UTC).isoformat(), content.off_until_text(end, time_zone, now))
        for end in hours
        if end - now >= timedelta(minutes=30)
    ]
    default = now + content.OFF_FOR
    label = f"24 h from now ({content.off_until_text(default, time_zone, now)})"
    return [*choices, (default.astimezone(UTC).isoformat(), label)]


class LinkNotFound(Exception):
    """The link was not signed by us, or names no offer of this coach."""


def link_not_found_page(_: Request, __: Exception) -> HTMLResponse:
    return HTMLResponse(templates.get_template("not_found.html").render(), status_code=404)


SUMMARY_FIELDS = ("site_short_name", "urgency", "status")
BRIEFING_FIELDS = (*SUMMARY_FIELDS, *OfferBriefing.model_fields)


def _shown(record: OfferRecord, service: NotifyService) -> tuple[str, ...]:
    """The names of what the offer's page shows now, for its audit entry: the briefing
    (location, call-back phone, language, consent) only while it is the coach's to see."""
    _, briefing = _situation(record, service.clock())
    return BRIEFING_FIELDS if briefing else SUMMARY_FIELDS


async def _render_offer(
    record: OfferRecord, service: NotifyService, token: str, changed: str | None = None
) -> HTMLResponse:
    """The coach's page at /p/`token`; `changed`: what an OFF / ON from it just changed (as
    the SMS answer says it)."""
    now = service.clock()
    offer = record.coach_offer
    state = offer.state
    message, briefing = _situation(record, now)
    deadline = (
        content.local_time(offer.arrival_deadline, record.site_time_zone)
        if offer.arrival_deadline and state in (OfferState.ASSIGNED, OfferState.ARRIVED)
        else None
    )
    has_phone = coach_phone(record) is not None
    off_until = await service.off_until(record) if has_phone else None
    page = templates.get_template("offer.html").render(
        token=token,
        offer=record,
        message=message,
        show_briefing=briefing,
        answers=offer.answers(now),
        labels=LABELS,
        deadline=deadline,
        waiting=state is OfferState.ACCEPTED and changed is None,
        changed=changed,
        has_phone=has_phone,
        off_until=(
            content.off_until_text(off_until, record.site_time_zone, now) if off_until else None
        ),
        off_choices=_off_choices(now, record.site_time_zone),
        # Once at the bedside, the visit is recorded on the referral service's page
        # (issue #16); arrived and completed exist only on the accepted offer.
        visit_link=(
            service.visit_link(record.offer_id)
            if state in (OfferState.ARRIVED, OfferState.COMPLETED)
            else None
        ),
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def _situation(record: OfferRecord, now: datetime) -> tuple[str | None, bool]:
    """What to tell the coach about the offer, and whether its briefing is still theirs to see."""
    offer = record.coach_offer
    match offer.state:
        case OfferState.OPEN if offer.expired(now):
            return "This request has expired; your answer can no longer be taken.", False
        case OfferState.OPEN:
            return None, True
        case OfferState.ACCEPTED:
            return "You accepted. Waiting for the ED's confirmation…", True
        case OfferState.ASSIGNED:
            return "Confirmed: the ED expects you. Tap Arrived when you get there.", True
        case OfferState.ARRIVED:
            return "You have arrived. Tap Completed when you are done.", True
        case OfferState.COMPLETED:
            return "Completed. Thank you.", False
        case OfferState.DECLINED:
            return "You declined this request. Thank you for answering.", False
        case OfferState.WITHDRAWN if offer.withdraw_reason is WithdrawReason.FILLED:
            return "This request was filled by another coach. No action is needed.", False
        case OfferState.WITHDRAWN if offer.withdraw_reason is WithdrawReason.CANCELLED:
            return "The ED cancelled this request. No action is needed.", False
        case OfferState.WITHDRAWN if offer.withdraw_reason is WithdrawReason.AT_CAPACITY:
            return (
                "You are at your limit of open requests, so this one was passed on to another "
                "coach. No action is needed.",
                False,
            )
        case OfferState.WITHDRAWN if offer.withdraw_reason is WithdrawReason.UNREACHABLE:
            return (
                "This request was passed on to another coach because texts to your number "
                "were stopped (STOP) or none of your contact methods could be reached.",
                False,
            )
        case _:
            return "This request has expired; your answer can no longer be taken.", False


def build_twilio_router(
    service: NotifyService, auth_token: str, spool: ReportSpool, replies: ReplySpool
) -> APIRouter:
    """Twilio's webhooks: inbound SMS (kept in `replies` while the database is away, read
    and without their text), keypad answers on a call, delivery status (kept in `spool`
    while the database is away)."""
    router = APIRouter(prefix="/v1/twilio", include_in_schema=False)
    public_url = service.settings.notify_public_url.rstrip("/")

    async def signed_form(request: Request) -> Mapping[str, str]:
        form = {key: str(value) for key, value in (await request.form()).items()}
        url = public_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not signature_valid(auth_token, url, form, signature):
            raise UnsignedWebhookError
        return form

    @router.post("/sms")
    async def inbound_sms(form: Annotated[Mapping[str, str], Depends(signed_form)]) -> Response:
        phone, body = form.get("From", ""), form.get("Body", "")
        try:
            reply = await service.sms_reply(phone, body)
        except TRANSIENT_DATABASE_ERRORS as error:
            if not is_transient_database_error(error):
                raise
            # Twilio does not retry a 5xx here: keep what the reply says (never its text),
            # apply it and text the coach the answer once the database is back.
            await replies.keep(SpooledReply(phone, read_reply(body), service.clock()))
            metrics.SPOOLED_REPLIES.labels("spooled").inc()
            log.warning(
                "SMS reply spooled while the database is away",
                extra={"error": type(error).__name__},
            )
            return _twiml("")
        return _twiml("" if reply is None else f"<Message>{escape(reply)}</Message>")

    @router.post("/voice/{token}")
    async def keypad_answer(
        token: str, form: Annotated[Mapping[str, str], Depends(signed_form)]
    ) -> Response:
        offer_id = service.signer.offer_id(token)
        response = {"1": CoachResponse.ACCEPTED, "2": CoachResponse.DECLINED}.get(
            form.get("Digits", "")
        )
        if offer_id is None or response is None:
            return _twiml("<Say>No answer was recorded. Goodbye.</Say>")
        record = await service.answer(offer_id, response, ResponseVia.VOICE_KEYPAD)
        if record is None:
            return _twiml("<Say>This request is no longer open. Goodbye.</Say>")
        if record.coach_offer.state.value != response.value:
            said = service.closed_text(record).removeprefix("Handoff: ")
            return _twiml(f"<Say>{escape(said)} Goodbye.</Say>")
        if response is CoachResponse.ACCEPTED:
            return _twiml(
                "<Say>Thank you. Your answer, accepted, is recorded. We are confirming you "
                "with the emergency department, and will tell you shortly.</Say>"
            )
        return _twiml(f"<Say>Thank you. Your answer, {response.value}, is recorded.</Say>")

    @router.post("/status", status_code=204)
    async def delivery_status(
        form: Annotated[Mapping[str, str], Depends(signed_form)],
        page: Annotated[str | None, Query(alias=PAGE_PARAM)] = None,
    ) -> Response:
        """Twilio's status callback. Always 204 once signed: Twilio does not reliably retry
        these, so a report for a message whose id is not stored yet is kept, not refused.
        The callback URL names notify's message (`?page=`): any status, final or not,
        stores the provider's id of a send whose own answer was lost."""
        reference = form.get("MessageSid") or form.get("CallSid")
        status = form.get("MessageStatus") or form.get("CallStatus") or ""
        message_id = _uuid(page)
        final = status in DELIVERED_STATUSES or status in FAILED_STATUSES
        if reference and (final or message_id is not None):
            delivered = status in DELIVERED_STATUSES if final else None
            error_code = form.get("ErrorCode") or None
            try:
                await service.delivery_reported(reference, delivered, error_code, message_id)
            except TRANSIENT_DATABASE_ERRORS as error:
                if not is_transient_database_error(error):
                    raise
                # Twilio would not send it again: keep it on disk, apply it once back.
                page_id = None if message_id is None else str(message_id)
                await spool.keep(SpooledReport(reference, delivered, error_code, page_id))
                metrics.DELIVERY_REPORTS.labels("spooled").inc()
                log.warning(
                    "delivery report spooled while the database is away",
                    extra={"error": type(error).__name__},
                )
        return Response(status_code=204)

    return router


class UnsignedWebhookError(Exception):
    """A request claiming to come from Twilio without a valid signature."""


def unsigned_webhook_response(_: Request, __: Exception) -> Response:
    return Response(status_code=403)


def _uuid(text: str | None) -> UUID | None:
    """The id in a callback URL's query; None if absent or not one (a URL of an older
    version, or tampered with: the signature covers the query, so not from Twilio)."""
    try:
        return None if text is None else UUID(text)
    except ValueError:
        return None


def _twiml(inner: str) -> Response:
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>', media_type=TWIML
    )


class SandboxMessage(BaseModel):
    id: int
    channel: str
    to: str
    subject: str
    body: str
    sent_at: datetime


class SandboxInbox(BaseModel):
    messages: list[SandboxMessage]


def build_sandbox_router(service: NotifyService) -> APIRouter:
    router = APIRouter(prefix="/sandbox", tags=["sandbox"])

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    async def inbox_page() -> HTMLResponse:
        messages = await sandbox.inbox(service.pool)
        return HTMLResponse(templates.get_template("inbox.html").render(messages=messages))

    @router.get("/messages")
    async def inbox_messages(
        after: Annotated[int, Query(ge=0, description="Only messages with a greater id.")] = 0,
        to: Annotated[str | None, Query(max_length=320)] = None,
    ) -> SandboxInbox:
        """The sandbox phone's messages, oldest first, for scripts and demos."""
        rows = await sandbox.inbox(service.pool, after=after, to=to, limit=1000)
        return SandboxInbox(
            messages=[
                SandboxMessage(
                    id=r["sandbox_id"],
                    channel=r["channel"],
                    to=r["destination"],
                    subject=r["subject"],
                    body=r["body"],
                    sent_at=r["sent_at"],
                )
                for r in reversed(rows)
            ]
        )

    return router
