"""The coach's visit page (/v/{token}) and follow-up page (/f/{token}): server-rendered,
phone-sized, without JavaScript. Notify mints both links (with FOLLOW_UP_LINK_SECRET);
the signed token in the path is the proof the page is the coach's (no cookie, so no
CSRF to forge). Bad input is a 422 page naming the field, with nothing stored; only a
link we did not sign, or one naming nothing we know, is a 404.
"""

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader

from handoff_platform.audit import Accessor, ActorKind, Purpose, address_of
from handoff_platform.links import FOLLOW_UP_LINK, VISIT_LINK, LinkSigner
from handoff_referral.domain.follow_ups import (
    CALL_DAY_LABELS,
    DAY_PART_LABELS,
    OUTCOME_LABELS,
    RESULT_LABELS,
    BadInput,
    TaskState,
    read_attempt_form,
    read_visit_form,
    schedule_field,
    schedule_text,
)
from handoff_referral.follow_ups import (
    ContactUnreadable,
    FollowUpPage,
    FollowUpService,
    FollowUpView,
    NoConsent,
    Replaced,
    ScheduleChanged,
    VisitPage,
    VisitView,
)
from handoff_schemas.vocabulary import FollowUpResult, RecoveryOutcome

templates = Environment(loader=PackageLoader("handoff_referral.entrypoints"), autoescape=True)

VISIT_MESSAGES = {
    VisitPage.REPLACED: "This request was passed to another coach. Nothing for you to record.",
    VisitPage.TOO_EARLY: "Record the visit once you are with the patient (tap Arrived first).",
    VisitPage.CLOSED: "This request closed before a visit was recorded.",
}
DONE_TEXT = {
    TaskState.SCHEDULED: "Saved. We will try again and text you (or the coach on call) then.",
    TaskState.DUE: "This call is not yours to make now.",
    TaskState.REACHED: "Saved: the patient was reached. Thank you.",
    TaskState.READMITTED: "Saved: the patient is back in hospital. This follow-up is closed.",
    TaskState.NOT_REACHED: "Saved. No tries are left in this call's window: it is closed.",
    TaskState.CLOSED: "Saved. No more follow-up calls for this patient; their number is deleted.",
    TaskState.CANCELLED: "The patient withdrew their consent: no more calls, number deleted.",
}
SCHEDULE_CHANGED = (
    "The follow-up schedule changed: nothing was saved. Read the new statement below to "
    "the patient and ask again."
)
ALREADY_RECORDED = "This visit is already recorded: what you sent was not saved."
UNREADABLE = (
    "This number cannot be read right now; the program has been alerted. Try the link again later."
)
NO_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


async def _form(request: Request) -> dict[str, list[str]]:
    form = await request.form()
    return {key: [str(v) for v in form.getlist(key)] for key in form}


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    # no-store: a page with a patient's number must not stay in a shared phone's cache.
    return HTMLResponse(
        templates.get_template(name).render(**context), status_code=status, headers=NO_HEADERS
    )


def _not_found() -> HTMLResponse:
    return _page("not_found.html", 404)


def build_follow_up_pages(service: FollowUpService, secret: str) -> APIRouter:
    """GET/POST /v/{token}, /v/{token}/revoke, /f/{token}, /f/{token}/revoke."""
    router = APIRouter(include_in_schema=False)
    visits = LinkSigner(secret, VISIT_LINK)
    follow_ups = LinkSigner(secret, FOLLOW_UP_LINK)

    def visit_page(
        token: str,
        view: VisitView,
        status: int = 200,
        error: BadInput | None = None,
        form: Mapping[str, Sequence[str]] | None = None,
        message: str | None = None,
    ) -> HTMLResponse:
        if view.page is VisitPage.UNKNOWN:
            return _not_found()
        values = form or {}
        return _page(
            "visit.html",
            status,
            token=token,
            page=view.page.value,
            consent=view.consent,
            consent_revoked=view.consent_revoked,
            message=message or VISIT_MESSAGES.get(view.page),
            error=None if error is None else {"field": error.field, "message": str(error)},
            # Typed values shown again after a 422, so the coach fixes one field only.
            form={
                "consent": _first(values, "consent"),
                "callback_phone": _first(values, "callback_phone"),
                "day_part": _first(values, "day_part"),
                "days": _first(values, "days"),
                "outcomes": list(values.get("outcomes", ())),
            },
            site_short_name=view.site_short_name,
            schedule_text=schedule_text(view.follow_up_days) if view.follow_up_days else "",
            schedule=schedule_field(view.follow_up_days),
            day_parts=[(p.value, label) for p, label in DAY_PART_LABELS.items()],
            call_days=[(d.value, label) for d, label in CALL_DAY_LABELS.items()],
            outcome_choices=[(o.value, label) for o, label in OUTCOME_LABELS.items()],
        )

    @router.get("/v/{token}", response_class=HTMLResponse)
    async def show_visit(token: str) -> Response:
        offer_id = visits.record_id(token)
        if offer_id is None:
            return _not_found()
        return visit_page(token, await service.visit_view(offer_id))

    @router.post("/v/{token}", response_class=HTMLResponse)
    async def record_visit(token: str, request: Request) -> Response:
        offer_id = visits.record_id(token)
        if offer_id is None:
            return _not_found()
        form = await _form(request)
        try:
            choice = read_visit_form(form)
        except BadInput as error:
            view = await service.visit_view(offer_id)
            return visit_page(token, view, 422 if view.page is VisitPage.OPEN else 409, error, form)
        before = await service.visit_view(offer_id)
        if before.page is not VisitPage.OPEN:
            return _unsaved_visit(token, before)
        try:
            view = await service.record_visit(offer_id, choice)
        except BadInput as error:
            return visit_page(token, before, 422, error, form)
        except ScheduleChanged:
            # The page again with the site's schedule as it is now: the statement to read.
            view = await service.visit_view(offer_id)
            return visit_page(token, view, 409, form=form, message=SCHEDULE_CHANGED)
        if not view.saved:
            return _unsaved_visit(token, view)
        return RedirectResponse(f"/v/{token}", status_code=303)

    def _unsaved_visit(token: str, view: VisitView) -> HTMLResponse:
        # A second (or a losing concurrent) submit amends nothing: consent is withdrawn
        # with its own button.
        recorded = view.page is VisitPage.RECORDED
        return visit_page(token, view, 409, message=ALREADY_RECORDED if recorded else None)

    @router.post("/v/{token}/revoke", response_class=HTMLResponse)
    async def revoke_from_visit(token: str, request: Request) -> Response:
        offer_id = visits.record_id(token)
        if offer_id is None:
            return _not_found()
        if _first(await _form(request), "confirm") != "yes":
            error = BadInput("confirm", "tick the box to confirm the patient withdrew consent")
            return visit_page(token, await service.visit_view(offer_id), 422, error)
        try:
            revoked = await service.revoke_by_offer(offer_id)
        except NoConsent:
            return visit_page(
                token, await service.visit_view(offer_id), 409, message="No consent to withdraw."
            )
        if revoked is None:
            return _not_found()
        return RedirectResponse(f"/v/{token}", status_code=303)

    def follow_up_page(
        token: str,
        view: FollowUpView,
        status: int = 200,
        error: BadInput | None = None,
        form: Mapping[str, Sequence[str]] | None = None,
        message: str | None = None,
    ) -> HTMLResponse:
        if view.page is FollowUpPage.UNKNOWN:
            return _not_found()
        values = form or {}
        done_text = DONE_TEXT.get(view.state, "") if view.state else ""
        if view.page is FollowUpPage.DONE and not view.saved and done_text.startswith("Saved"):
            done_text = ""  # only the submit that stored the result may say it saved
        return _page(
            "follow_up.html",
            status,
            token=token,
            page=view.page.value,
            window_days=view.window_days,
            attempt=view.attempt,
            contact=view.contact,
            message=message,
            error=None if error is None else {"field": error.field, "message": str(error)},
            done_text=done_text,
            form={"result": _first(values, "result"), "outcomes": list(values.get("outcomes", ()))},
            results=[(r.value, label) for r, label in RESULT_LABELS.items()],
            outcome_choices=[(o.value, label) for o, label in OUTCOME_LABELS.items()],
        )

    async def shown(assignment_id: UUID, request: Request) -> FollowUpView:
        """The page as the assigned coach sees it: an open attempt's contact, audited."""
        address = address_of(request.client.host if request.client else None)
        # Follow-up care is treatment under HIPAA: the audit trail's purpose vocabulary.
        return await service.follow_up_view(
            assignment_id,
            lambda coach: Accessor(ActorKind.COACH, str(coach), Purpose.TREATMENT, address),
        )

    @router.get("/f/{token}", response_class=HTMLResponse)
    async def show_follow_up(token: str, request: Request) -> Response:
        assignment_id = follow_ups.record_id(token)
        if assignment_id is None:
            return _not_found()
        try:
            view = await shown(assignment_id, request)
        except ContactUnreadable:
            return _unreadable(token, view=None)
        return follow_up_page(token, view)

    @router.post("/f/{token}", response_class=HTMLResponse)
    async def record_attempt(token: str, request: Request) -> Response:
        assignment_id = follow_ups.record_id(token)
        if assignment_id is None:
            return _not_found()
        form = await _form(request)
        try:
            result, outcomes = read_attempt_form(form)
        except BadInput as error:
            # The page again, number included: the coach is still on the call. A view.
            try:
                view = await shown(assignment_id, request)
            except ContactUnreadable:
                return _unreadable(token, view=None)
            status = 422 if view.page is FollowUpPage.OPEN else 409
            return follow_up_page(token, view, status, error, form)
        try:
            view = await service.record_attempt(assignment_id, result, outcomes)
        except ContactUnreadable:
            return _unreadable(token, view=None)
        if view.page is FollowUpPage.DONE and not view.saved:
            return follow_up_page(token, view, 409, message=_not_saved(view, result, outcomes))
        return follow_up_page(token, view)

    def _unreadable(token: str, view: FollowUpView | None) -> HTMLResponse:
        return follow_up_page(
            token, view or FollowUpView(FollowUpPage.DONE), 503, message=UNREADABLE
        )

    @router.post("/f/{token}/revoke", response_class=HTMLResponse)
    async def revoke_from_follow_up(token: str, request: Request) -> Response:
        assignment_id = follow_ups.record_id(token)
        if assignment_id is None:
            return _not_found()
        if _first(await _form(request), "confirm") != "yes":
            error = BadInput("confirm", "tick the box to confirm the patient withdrew consent")
            try:
                view = await shown(assignment_id, request)
            except ContactUnreadable:
                return _unreadable(token, view=None)
            return follow_up_page(token, view, 422, error)
        try:
            revoked = await service.revoke_by_assignment(assignment_id)
        except NoConsent:
            revoked = None
        except Replaced:
            # The same answer as opening the link: given to another coach.
            return follow_up_page(token, FollowUpView(FollowUpPage.REPLACED), 409)
        if revoked is None:
            return _not_found()
        view = FollowUpView(FollowUpPage.DONE, state=TaskState.CANCELLED)
        return follow_up_page(token, view)

    return router


def _not_saved(
    view: FollowUpView, result: FollowUpResult, outcomes: frozenset[RecoveryOutcome]
) -> str:
    """What a submit that stored nothing is told: what was recorded instead, and that its
    own result, when different, was not."""
    if view.recorded is None:
        return "Nothing was saved: this call is no longer open."
    text = f"This call was already recorded: {RESULT_LABELS[view.recorded.result]}."
    if (view.recorded.result, view.recorded.outcomes) != (result, outcomes):
        text += f" What you sent ({RESULT_LABELS[result]}) was not saved; nothing was changed."
    return text


def _first(values: Mapping[str, Sequence[str]], field: str) -> str:
    found = values.get(field, ())
    return found[0] if found else ""
