"""The console's pages: server-rendered HTML forms that work without JavaScript.

Every page needs a session (else a redirect to sign in); every POST but sign-in carries
the session's CSRF token and is refused 403 without it, or from a read-only account. A
site or pool outside the account's scope is 404, as if it did not exist.
"""

import csv
import io
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from importlib import resources
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from handoff_console.adapters import accounts
from handoff_console.adapters.accounts import Session
from handoff_console.adapters.services import Refused, Services, ServiceUnavailable
from handoff_console.domain.access import (
    Account,
    PoolRef,
    certified_in,
    csrf_matches,
    form_token_nonce,
    may_change_dispatch,
    may_change_pool,
    may_view_pool,
    may_view_site,
    new_form_token,
    new_token,
)
from handoff_console.domain.roster import certification_warning
from handoff_console.domain.timeline import Picture, Segment, lay_out
from handoff_console.entrypoints.reports_page import add_reports_routes
from handoff_console.settings import ConsoleSettings
from handoff_platform.audit import address_of

log = logging.getLogger(__name__)
SESSION_COOKIE = "handoff_console_session"
SIGN_IN_COOKIE = "handoff_console_sign_in"  # the sign-in form's own CSRF token
TIMELINE_DAYS = 14
SIGN_IN_ATTEMPTS = 5  # failures per username within SIGN_IN_WINDOW before a pause
SIGN_IN_WINDOW = timedelta(minutes=15)
DISPATCH_FIELDS = (
    "ack_timeout_seconds",
    "arrival_target_minutes",
    "broadcast_size",
    "page_deadline_seconds",
    "reoffer_every_seconds",
    "give_up_after_minutes",
)


class SignInNeeded(Exception):
    """No live session: answered with a redirect to the sign-in page."""


class NotFound(Exception):
    """Unknown, or outside the account's scope: the same 404 either way."""


class Forbidden(Exception):
    """Signed in but not allowed (read-only, or a missing/wrong CSRF token): 403."""


class AlreadySaved(Exception):
    """The same form (its one-time token) came again: nothing more is done; a 409 page
    says it was saved the first time."""


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    short_name: str
    state: str
    time_zone: str


@dataclass
class Console:
    """What every page needs: the console's database, the services, the settings."""

    pool: asyncpg.Pool
    services: Services
    settings: ConsoleSettings
    templates: Environment

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        template = self.templates.get_template(name)
        session = context.get("session")
        if isinstance(session, Session) and "form_token" not in context:
            # One token per rendering, shared by the page's forms: saving one sends the
            # browser to a fresh page, so a second send of the same form is a repeat.
            context["form_token"] = new_form_token(session.csrf_token)
        body = template.render(request=request, **context)
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    # The site directory as referral last gave it: while referral is away, pages that need
    # only the directory (for scope, names, zones) keep working from it; sites change rarely.
    known_sites: dict[str, Site] | None = field(default=None, init=False)

    async def sites(self) -> dict[str, Site]:
        """Every registered site, from the referral service, by id; while it does not answer,
        the directory as it last answered (ServiceUnavailable if it never has)."""
        try:
            rows = await self.services.referral.call("GET", "/v1/admin/sites")
        except ServiceUnavailable:
            if self.known_sites is None:
                raise
            log.warning("console: referral away, using the last known site directory")
            return dict(self.known_sites)
        self.known_sites = {r["site_id"]: Site(**r) for r in rows}
        return dict(self.known_sites)

    async def visible_site(self, account: Account, site_id: str) -> Site:
        """Raises NotFound for an unknown site or one outside the account's scope."""
        site = (await self.sites()).get(site_id)
        if site is None or not may_view_site(account, site.site_id, site.state):
            raise NotFound
        return site

    async def coach_names(self) -> dict[UUID, str]:
        coaches = await self.services.matching.call("GET", "/v1/admin/coaches")
        return {UUID(c["coach_id"]): c["display_name"] for c in coaches}


def templates() -> Environment:
    folder = resources.files("handoff_console") / "templates"
    environment = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["local"] = _local
    environment.filters["duration"] = _duration
    return environment


def _local(instant: datetime, zone: str, fmt: str = "%a %d %b %H:%M") -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime(fmt)


def _iso_minute(instant: datetime, zone: tzinfo, up: bool = False) -> str:
    """ISO 8601 to the minute with the offset, e.g. 2026-12-04T10:00-05:00 (the CSV's form:
    a spreadsheet reads it, and a fall-back hour is never ambiguous). A gap that starts or
    ends mid-minute (at the moment the report was made) is widened to whole minutes: its
    start down, its end `up`, so it never reads shorter than it is."""
    whole = instant.replace(second=0, microsecond=0)
    if up and whole != instant:
        whole += timedelta(minutes=1)
    return whole.astimezone(zone).isoformat("T", "minutes")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _priority(raw: str) -> int | None:
    """A layer priority typed in a form: a whole number 0-100 in ASCII digits, else None
    (`str.isdigit` also passes "²", which `int` then refuses)."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if 0 <= value <= 100 else None


def build_console(console: Console) -> APIRouter:
    """The console's routes over `console`; `install_console_errors` renders its errors."""
    router = APIRouter(include_in_schema=False)
    settings = console.settings

    async def current_session(request: Request) -> Session:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise SignInNeeded
        async with console.pool.acquire() as connection:
            session = await accounts.session_for(
                connection, token, timedelta(minutes=settings.console_idle_minutes)
            )
        if session is None:
            raise SignInNeeded
        return session

    SignedIn = Annotated[Session, Depends(current_session)]

    async def changing(request: Request, session: SignedIn) -> AsyncIterator[Session]:
        """A POST that changes something: CSRF token checked, read-only refused. The route
        then claims the form's one-time token (`claim_once`, once it knows the target is in
        scope); if the change fails (an exception, or a page re-rendered with errors through
        `release`), the token is given back so the same form may be sent again."""
        form = await request.form()
        given = form.get("csrf_token")
        if not csrf_matches(session.csrf_token, given if isinstance(given, str) else None):
            log.warning("console form refused: CSRF token missing or wrong")
            raise Forbidden("This form has expired or did not come from the console.")
        if not session.account.changes_anything:
            raise Forbidden("Your account is read-only.")
        try:
            yield session
        except Exception:
            await release(request)
            raise

    async def claim_once(request: Request, session: Session) -> None:
        """Claim the form's one-time token: Forbidden without a valid one, AlreadySaved if
        this form was saved before (so nothing is done twice)."""
        form = await request.form()
        once = form.get("form_token")
        nonce = form_token_nonce(session.csrf_token, once if isinstance(once, str) else None)
        if nonce is None:
            log.warning("console form refused: one-time form token missing or wrong")
            raise Forbidden("This form has expired or did not come from the console.")
        async with console.pool.acquire() as connection:
            if not await accounts.claim_form_token(connection, session.account, nonce):
                log.info("console form sent again", extra={"path": request.url.path})
                raise AlreadySaved
        request.state.form_nonce = nonce

    async def release(request: Request) -> None:
        """Give the request's form token back: its change was not saved."""
        nonce = getattr(request.state, "form_nonce", None)
        if nonce is not None:
            request.state.form_nonce = None
            async with console.pool.acquire() as connection:
                await accounts.release_form_token(connection, nonce)

    Changing = Annotated[Session, Depends(changing)]

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: v.strip() for k, v in form.items() if isinstance(v, str)}

    async def record(
        session: Session,
        action: str,
        target: str,
        detail: dict[str, Any],
        site_id: str | None = None,
        state: str | None = None,
    ) -> None:
        async with console.pool.acquire() as connection:
            await accounts.record_change(
                connection, session.account, action, target, detail, site_id, state
            )
        log.info(
            "console change",
            extra={"action": action, "target": target, "account": session.account.username},
        )

    async def changed_pool(
        session: Session, action: str, pool: PoolRef, state: str, detail: dict[str, Any]
    ) -> Response:
        """Record a change to the pool's schedule and send the browser back to its page."""
        site_id = pool.key if pool.kind == "site" else None
        await record(session, action, pool.name, detail, site_id, state)
        return RedirectResponse(f"/pools/{pool.name}", status_code=303)

    # --- signing in and out ---------------------------------------------------------------

    @router.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_page(request: Request) -> Response:
        token = new_token()
        response = console.render(request, "sign_in.html", csrf_token=token, error=None)
        _set_cookie(response, SIGN_IN_COOKIE, token, settings, max_age=3600)
        return response

    @router.post("/sign-in", response_class=HTMLResponse)
    async def sign_in(request: Request) -> Response:
        form = await form_of(request)
        expected = request.cookies.get(SIGN_IN_COOKIE, "")
        if not csrf_matches(expected, form.get("csrf_token")):
            raise Forbidden("This form has expired: reload the sign-in page.")
        username = form.get("username", "")[:200]
        async with console.pool.acquire() as connection:
            failures = await accounts.recent_sign_in_failures(connection, username, SIGN_IN_WINDOW)
            if failures >= SIGN_IN_ATTEMPTS:
                # Checked before the password, so a guesser learns nothing more, and
                # Argon2 is not made to run for them.
                log.warning("console sign-in throttled")
                response = console.render(
                    request,
                    "error.html",
                    status=429,
                    title="Too many attempts",
                    message="Too many failed sign-ins for this username. Wait "
                    f"{int(SIGN_IN_WINDOW.total_seconds() // 60)} minutes and try again.",
                )
                response.headers["Retry-After"] = str(int(SIGN_IN_WINDOW.total_seconds()))
                return response
            account = await accounts.check_password(
                connection, form.get("username", ""), form.get("password", "")
            )
            if account is not None and not await accounts.second_factor_ok(
                connection, account, form.get("code", ""), datetime.now(UTC)
            ):
                account = None
            if account is None:
                await accounts.record_sign_in_failure(connection, username)
                log.info("console sign-in refused")
                response = console.render(
                    request,
                    "sign_in.html",
                    status=401,
                    csrf_token=expected,
                    error="Wrong username, password or code.",
                    username=form.get("username", ""),
                )
                return response
            await accounts.clear_sign_in_failures(connection, username)
            lifetime = timedelta(hours=settings.console_session_hours)
            token, _ = await accounts.open_session(connection, account, lifetime)
        log.info("console sign-in", extra={"account": account.username})
        response = RedirectResponse("/", status_code=303)
        _set_cookie(response, SESSION_COOKIE, token, settings, int(lifetime.total_seconds()))
        response.delete_cookie(SIGN_IN_COOKIE)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request, session: SignedIn) -> Response:
        form = await form_of(request)
        if not csrf_matches(session.csrf_token, form.get("csrf_token")):
            raise Forbidden("This form has expired or did not come from the console.")
        async with console.pool.acquire() as connection:
            await accounts.close_session(connection, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # --- sites -------------------------------------------------------------------------------

    @router.get("/", response_class=HTMLResponse)
    async def home(request: Request, session: SignedIn) -> Response:
        account = session.account
        sites = [
            s
            for s in (await console.sites()).values()
            if may_view_site(account, s.site_id, s.state)
        ]
        states = sorted({s.state for s in sites})
        return console.render(
            request,
            "sites.html",
            session=session,
            states=[(state, [s for s in sites if s.state == state]) for state in states],
        )

    @router.get("/sites/{site_id}", response_class=HTMLResponse)
    async def site_page(request: Request, site_id: str, session: SignedIn) -> Response:
        return await _site_page(request, session, site_id, {}, None)

    async def _site_page(
        request: Request,
        session: Session,
        site_id: str,
        errors: dict[str, str],
        submitted: dict[str, Any] | None,
        status: int = 200,
    ) -> Response:
        if status >= 400:
            await release(request)
        site = await console.visible_site(session.account, site_id)
        dispatch = await console.services.matching.call(
            "GET", f"/v1/admin/sites/{site_id}/dispatch"
        )
        coaches = await console.services.matching.call("GET", "/v1/admin/coaches")
        names = {UUID(c["coach_id"]): c["display_name"] for c in coaches}
        schedule = await console.services.matching.call(
            "GET", f"/v1/admin/sites/{site_id}/schedule", params={"days": TIMELINE_DAYS}
        )
        zone = ZoneInfo(site.time_zone)
        start, end = _aware(schedule["start"]), _aware(schedule["end"])
        now = datetime.now(UTC)

        def picture(key: str) -> Picture:
            return lay_out(
                [
                    Segment(
                        _aware(s["start"]),
                        _aware(s["end"]),
                        frozenset(map(UUID, s[key])),
                        {UUID(c): why for c, why in s.get("not_covering", {}).items()},
                    )
                    for s in schedule["segments"]
                ],
                start,
                end,
                names,
                zone,
                now,
            )

        # The summary names matching's gaps (the coverage report's rule and window), so the
        # page never counts stretches differently from the report.
        gaps = [
            f"nobody on call: {_local(_aware(g['start']), site.time_zone)} to "
            f"{_local(_aware(g['end']), site.time_zone)}"
            for g in schedule.get("gaps", [])
        ]
        return console.render(
            request,
            "site.html",
            status=status,
            session=session,
            site=site,
            dispatch=submitted or dispatch,
            coaches=certified_in(
                coaches, site.state, datetime.now(ZoneInfo(site.time_zone)).date()
            ),
            names={str(k): v for k, v in names.items()},
            errors=errors,
            may_change=may_change_dispatch(session.account, site.site_id, site.state),
            site_picture=picture("site"),
            state_picture=picture("state_pool"),
            gaps=gaps,
        )

    async def _send_form(
        errors: dict[str, str],
        refused_as: Callable[[Refused], dict[str, str]],
        method: str,
        path: str,
        *,
        gone_is_not_found: bool = False,
        **call: Any,
    ) -> tuple[Any, dict[str, str]]:
        """What a form handler does once it has read its form: sends `method path` (with
        `call`: json, params, content...) to matching's admin API unless the form already
        had `errors`. Returns (matching's answer, or None when not sent or refused; the
        errors by field, empty when saved): a refusal becomes field errors by `refused_as`,
        for the handler to show on its page again with 422 (which gives the form's one-time
        token back). With `gone_is_not_found`, a 404 (the thing removed meanwhile) raises
        NotFound instead. ServiceUnavailable propagates (the 503 page)."""
        if errors:
            return None, errors
        try:
            return await console.services.matching.call(method, path, **call), {}
        except Refused as refused:
            if gone_is_not_found and refused.status == 404:
                raise NotFound from None
            return None, refused_as(refused)

    @router.post("/sites/{site_id}/dispatch", response_class=HTMLResponse)
    async def change_dispatch(request: Request, site_id: str, session: Changing) -> Response:
        site = await console.visible_site(session.account, site_id)
        if not may_change_dispatch(session.account, site.site_id, site.state):
            raise Forbidden("Only a supervisor changes a site's dispatch settings.")
        await claim_once(request, session)
        form = await request.form()
        body: dict[str, Any] = {
            "mode": str(form.get("mode", "")),
            "interpreter_available": form.get("interpreter_available") == "on",
            "supervisors": [str(v) for v in form.getlist("supervisors")],
        }
        errors: dict[str, str] = {}
        for name in DISPATCH_FIELDS:
            raw = str(form.get(name, "")).strip()
            try:
                body[name] = int(raw)
            except ValueError:
                body[name] = raw
                errors[name] = "a whole number"
        _, errors = await _send_form(
            errors, _fields_or("form"), "PUT", f"/v1/admin/sites/{site_id}/dispatch", json=body
        )
        if errors:
            return await _site_page(request, session, site_id, errors, body, status=422)
        await record(session, "dispatch settings changed", site_id, body, site_id, site.state)
        return RedirectResponse(f"/sites/{site_id}", status_code=303)

    # --- coverage-gap report -----------------------------------------------------------------

    async def _coverage(session: Session, site_id: str, days: int) -> tuple[Site, dict[str, Any]]:
        site = await console.visible_site(session.account, site_id)
        report = await console.services.matching.call(
            "GET", f"/v1/admin/sites/{site_id}/coverage", params={"days": days}
        )
        return site, report

    @router.get("/sites/{site_id}/coverage", response_class=HTMLResponse)
    async def coverage_page(
        request: Request, site_id: str, session: SignedIn, days: int = TIMELINE_DAYS
    ) -> Response:
        days = min(max(days, 1), 28)
        site, report = await _coverage(session, site_id, days)
        gaps = [{**g, "start": _aware(g["start"]), "end": _aware(g["end"])} for g in report["gaps"]]
        return console.render(
            request, "coverage.html", session=session, site=site, gaps=gaps, days=days
        )

    @router.get("/sites/{site_id}/coverage.csv")
    async def coverage_csv(site_id: str, session: SignedIn, days: int = TIMELINE_DAYS) -> Response:
        days = min(max(days, 1), 28)
        site, report = await _coverage(session, site_id, days)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["site_id", "start_utc", "end_utc", "start_local", "end_local", "minutes"])
        for gap in report["gaps"]:
            writer.writerow(
                [
                    site.site_id,
                    _iso_minute(_aware(gap["start"]), UTC),
                    _iso_minute(_aware(gap["end"]), UTC, up=True),
                    _iso_minute(_aware(gap["start"]), ZoneInfo(site.time_zone)),
                    _iso_minute(_aware(gap["end"]), ZoneInfo(site.time_zone), up=True),
                    gap["minutes"],
                ]
            )
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="coverage-{site.site_id}.csv"',
                "Cache-Control": "no-store",
            },
        )

    # --- the live board ----------------------------------------------------------------------

    @router.get("/sites/{site_id}/board", response_class=HTMLResponse)
    async def board(request: Request, site_id: str, session: SignedIn) -> Response:
        site = await console.visible_site(session.account, site_id)
        referrals = await console.services.referral.call(
            "GET", f"/v1/admin/sites/{site_id}/open-referrals"
        )
        dispatches = await console.services.matching.call(
            "GET", f"/v1/admin/sites/{site_id}/open-dispatches"
        )
        names = await console.coach_names()
        holding = {
            d["referral_id"]: [
                names.get(UUID(c), "a coach no longer on the roster") for c in d["holding"]
            ]
            for d in dispatches
        }
        now = datetime.now(UTC)
        rows = [
            {
                **r,
                "received_at": _aware(r["received_at"]),
                "waiting_seconds": (now - _aware(r["received_at"])).total_seconds(),
                "holding": holding.get(r["referral_id"], []),
            }
            for r in referrals
        ]
        async with console.pool.acquire() as connection:
            await accounts.record_referral_view(
                connection,
                session.account,
                site_id,
                [UUID(r["referral_id"]) for r in rows],
                address_of(request.client.host if request.client else None),
            )
        log.info(
            "console board viewed",
            extra={"site_id": site_id, "referrals": len(rows), "account": session.account.username},
        )
        return console.render(
            request,
            "board.html",
            session=session,
            site=site,
            rows=rows,
            refresh=settings.console_board_refresh_seconds,
            now=now,
        )

    # --- schedules of a pool -----------------------------------------------------------------

    async def _pool(account: Account, pool_name: str) -> tuple[PoolRef, str, dict[str, Site]]:
        """The pool, its time zone and the site directory; NotFound outside the scope."""
        try:
            pool = PoolRef.parse(pool_name)
        except ValueError:
            raise NotFound from None
        sites = await console.sites()
        site_states = {s.site_id: s.state for s in sites.values()}
        if not may_view_pool(account, pool, site_states):
            raise NotFound
        if pool.kind == "site":
            zone = sites[pool.key].time_zone
        else:
            zone = next(
                (s.time_zone for s in sites.values() if s.state == pool.key), "America/New_York"
            )
        return pool, zone, sites

    async def _pool_page(
        request: Request,
        session: Session,
        pool_name: str,
        errors: dict[str, dict[str, str]] | None = None,
        submitted: dict[str, dict[str, str]] | None = None,
        status: int = 200,
        new_feed: str | None = None,
    ) -> Response:
        if status >= 400:
            await release(request)
        pool, zone, sites = await _pool(session.account, pool_name)
        site_states = {s.site_id: s.state for s in sites.values()}
        matching = console.services.matching
        layers = await matching.call("GET", "/v1/admin/layers", params={"pool": pool.name})
        rotations = await matching.call("GET", "/v1/admin/rotations", params={"pool": pool.name})
        overrides = await matching.call("GET", "/v1/admin/overrides", params={"pool": pool.name})
        temporaries = await matching.call(
            "GET", "/v1/admin/temporary-schedules", params={"pool": pool.name}
        )
        coaches = await matching.call("GET", "/v1/admin/coaches")
        names = {UUID(c["coach_id"]): c["display_name"] for c in coaches}
        schedule = await matching.call(
            "GET", f"/v1/admin/pools/{pool.name}/schedule", params={"days": TIMELINE_DAYS}
        )
        picture = lay_out(
            [
                Segment(
                    _aware(s["start"]),
                    _aware(s["end"]),
                    frozenset(map(UUID, s["coaches"])),
                    {UUID(c): why for c, why in s.get("not_covering", {}).items()},
                )
                for s in schedule["segments"]
            ],
            _aware(schedule["start"]),
            _aware(schedule["end"]),
            names,
            ZoneInfo(zone),
            datetime.now(UTC),
        )
        async with console.pool.acquire() as connection:
            authors = await accounts.override_authors(
                connection, [o["override_id"] for o in overrides]
            )
        by_rotation = {r["layer_id"]: r for r in rotations}
        today = datetime.now(ZoneInfo(zone)).date()
        state = sites[pool.key].state if pool.kind == "site" else pool.key
        certified = certified_in(coaches, state, today)
        feeds = await _pool_feeds(pool, certified)
        return console.render(
            request,
            "pool.html",
            status=status,
            session=session,
            pool=pool,
            zone=zone,
            site=sites.get(pool.key) if pool.kind == "site" else None,
            layers=[{**layer, "rotation": by_rotation.get(layer["layer_id"])} for layer in layers],
            overrides=[
                {
                    **o,
                    "starts_at": _aware(o["starts_at"]),
                    "ends_at": _aware(o["ends_at"]),
                    "by": authors.get(o["override_id"]),
                }
                for o in overrides
            ],
            temporaries=[
                {**t, "start": _aware(t["start"]), "end": _aware(t["end"])} for t in temporaries
            ],
            names={str(k): v for k, v in names.items()},
            coaches=certified,
            feeds=feeds,
            new_feed=new_feed,
            picture=picture,
            may_change=may_change_pool(session.account, pool, site_states),
            errors=errors or {},
            submitted=submitted or {},
            today=today,
        )

    async def _pool_feeds(pool: PoolRef, certified: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The calendar feeds a pool's page lists: the site's own (a site pool) and those of
        the coaches who may be scheduled in it, each with `whose` for the table."""
        names = {c["coach_id"]: c["display_name"] for c in certified}
        params: dict[str, Any] = {"coach_id": list(names)}
        if pool.kind == "site":
            params["site_id"] = pool.key
        if not names and pool.kind != "site":
            return []
        found = await console.services.matching.call(
            "GET", "/v1/admin/calendar-tokens", params=params
        )
        return [
            {
                **feed,
                "created_at": _aware(feed["created_at"]),
                "whose": names.get(feed["coach_id"], "a coach")
                if feed["coach_id"]
                else "the whole site",
            }
            for feed in found
        ]

    @router.post("/pools/{pool_name}/calendar-feeds", response_class=HTMLResponse)
    async def add_feed(request: Request, pool_name: str, session: Changing) -> Response:
        pool, zone, state = await _changeable_pool(request, session, pool_name)
        form = await form_of(request)
        whose = form.get("whose", "")
        coaches = await console.services.matching.call("GET", "/v1/admin/coaches")
        certified = {
            c["coach_id"]: c["display_name"]
            for c in certified_in(coaches, state, datetime.now(ZoneInfo(zone)).date())
        }
        if whose == "site" and pool.kind == "site":
            body: dict[str, str] = {"site_id": pool.key}
            label = "the whole site"
        elif whose in certified:
            body = {"coach_id": whose}
            label = certified[whose]
        else:
            return await _pool_page(
                request,
                session,
                pool_name,
                {"feed": {"whose": "choose the site or a coach of this pool"}},
                {"feed": form},
                422,
            )
        created = await console.services.matching.call(
            "POST", "/v1/admin/calendar-tokens", json=body
        )
        await record(
            session,
            "calendar feed created",
            pool.name,
            {"token_id": created["token_id"], "for": label},
            pool.key if pool.kind == "site" else None,
            state,
        )
        base = (settings.console_calendar_base_url or settings.console_matching_url).rstrip("/")
        # Shown this once, not after a redirect: only its hash is kept anywhere.
        return await _pool_page(request, session, pool_name, new_feed=base + created["path"])

    @router.post("/pools/{pool_name}/calendar-feeds/{token_id}/revoke")
    async def revoke_feed(
        request: Request, pool_name: str, token_id: UUID, session: Changing
    ) -> Response:
        pool, zone, state = await _changeable_pool(request, session, pool_name)
        coaches = await console.services.matching.call("GET", "/v1/admin/coaches")
        feeds = await _pool_feeds(
            pool, certified_in(coaches, state, datetime.now(ZoneInfo(zone)).date())
        )
        feed = next((f for f in feeds if f["token_id"] == str(token_id)), None)
        if feed is None:
            raise NotFound  # another pool's, or revoked already
        await console.services.matching.call("DELETE", f"/v1/admin/calendar-tokens/{token_id}")
        return await changed_pool(
            session,
            "calendar feed revoked",
            pool,
            state,
            {"token_id": str(token_id), "for": feed["whose"]},
        )

    async def _changeable_pool(
        request: Request, session: Session, pool_name: str
    ) -> tuple[PoolRef, str, str]:
        """(pool, zone, state) if the account may change the pool, its form's one-time
        token claimed; NotFound / Forbidden / AlreadySaved."""
        pool, zone, sites = await _pool(session.account, pool_name)
        site_states = {s.site_id: s.state for s in sites.values()}
        if not may_change_pool(session.account, pool, site_states):
            raise Forbidden("A state pool's schedule is changed with the whole state in scope.")
        await claim_once(request, session)
        state = site_states[pool.key] if pool.kind == "site" else pool.key
        return pool, zone, state

    @router.get("/pools/{pool_name}", response_class=HTMLResponse)
    async def pool_page(request: Request, pool_name: str, session: SignedIn) -> Response:
        return await _pool_page(request, session, pool_name)

    @router.post("/pools/{pool_name}/rotations", response_class=HTMLResponse)
    async def add_rotation(request: Request, pool_name: str, session: Changing) -> Response:
        pool, zone, state = await _changeable_pool(request, session, pool_name)
        form = await form_of(request)
        names = await console.coach_names()
        body, errors = _rotation_body(form, pool, zone, names)
        created, errors = await _send_form(
            errors, _fields_or("name"), "POST", "/v1/admin/rotations", json=body
        )
        if errors:
            return await _pool_page(
                request, session, pool_name, {"rotation": errors}, {"rotation": form}, 422
            )
        return await changed_pool(
            session,
            "rotation created",
            pool,
            state,
            {
                **body,
                "layer_id": created["layer_id"],
                "participants": _names(body["participants"], names),
            },
        )

    async def _rotation_of(pool: PoolRef, layer_id: UUID) -> dict[str, Any]:
        """The pool's rotation `layer_id` as matching lists it; NotFound when the pool has
        no such rotation (another pool's, a weekly or calendar layer, or removed)."""
        rotations = await console.services.matching.call(
            "GET", "/v1/admin/rotations", params={"pool": pool.name}
        )
        found = next((r for r in rotations if r["layer_id"] == str(layer_id)), None)
        if found is None:
            raise NotFound
        return dict(found)

    async def _layer_of(pool: PoolRef, layer_id: UUID) -> dict[str, Any]:
        """The pool's layer `layer_id` (any kind) as matching lists it; NotFound when the
        pool has no such layer (another pool's, or removed)."""
        layers = await console.services.matching.call(
            "GET", "/v1/admin/layers", params={"pool": pool.name}
        )
        found = next((la for la in layers if la["layer_id"] == str(layer_id)), None)
        if found is None:
            raise NotFound
        return dict(found)

    async def _rotation_page(
        request: Request,
        session: Session,
        pool_name: str,
        layer_id: UUID,
        errors: dict[str, str] | None = None,
        submitted: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        """The edit form of one rotation, filled from matching (or from what was sent, with
        the errors next to their fields)."""
        if status >= 400:
            await release(request)
        pool, zone, sites = await _pool(session.account, pool_name)
        site_states = {s.site_id: s.state for s in sites.values()}
        if not may_change_pool(session.account, pool, site_states):
            raise Forbidden("Your account does not change this pool's schedule.")
        rotation = await _rotation_of(pool, layer_id)
        coaches = await console.services.matching.call("GET", "/v1/admin/coaches")
        names = {c["coach_id"]: c["display_name"] for c in coaches}
        state = site_states[pool.key] if pool.kind == "site" else pool.key
        current = {
            "name": rotation["name"],
            "priority": str(rotation["priority"]),
            "time_zone": rotation["time_zone"],
            "start_date": rotation["start_date"],
            "handoff": rotation["handoff"][:5],
            "shift_length": str(rotation["shift_length"]),
            "shift_unit": rotation["shift_unit"],
            "participants": "\n".join(names.get(p, p) for p in rotation["participants"]),
        }
        return console.render(
            request,
            "rotation.html",
            status=status,
            session=session,
            pool=pool,
            zone=zone,
            site=sites.get(pool.key) if pool.kind == "site" else None,
            layer_id=str(layer_id),
            errors={"rotation": errors or {}},
            submitted={"rotation": submitted or current},
            coaches=certified_in(coaches, state, datetime.now(ZoneInfo(zone)).date()),
        )

    @router.get("/pools/{pool_name}/rotations/{layer_id}", response_class=HTMLResponse)
    async def rotation_page(
        request: Request, pool_name: str, layer_id: UUID, session: SignedIn
    ) -> Response:
        return await _rotation_page(request, session, pool_name, layer_id)

    @router.post("/pools/{pool_name}/rotations/{layer_id}", response_class=HTMLResponse)
    async def change_rotation(
        request: Request, pool_name: str, layer_id: UUID, session: Changing
    ) -> Response:
        pool, zone, state = await _changeable_pool(request, session, pool_name)
        before = await _rotation_of(pool, layer_id)
        form = await form_of(request)
        names = await console.coach_names()
        body, errors = _rotation_body(form, pool, zone, names)
        _, errors = await _send_form(
            errors,
            _fields_or("name"),
            "PUT",
            f"/v1/admin/rotations/{layer_id}",
            gone_is_not_found=True,  # removed meanwhile
            json=body,
        )
        if errors:
            return await _rotation_page(
                request, session, pool_name, layer_id, errors, form, status=422
            )
        return await changed_pool(
            session,
            "rotation changed",
            pool,
            state,
            {
                **body,
                "layer_id": str(layer_id),
                "participants": _names(body["participants"], names),
                "before": {
                    **{k: v for k, v in before.items() if k not in ("pool", "layer_id")},
                    "participants": _names(before["participants"], names),
                },
            },
        )

    @router.post("/pools/{pool_name}/layers/{layer_id}/priority", response_class=HTMLResponse)
    async def change_priority(
        request: Request, pool_name: str, layer_id: UUID, session: Changing
    ) -> Response:
        pool, _, state = await _changeable_pool(request, session, pool_name)
        layer = await _layer_of(pool, layer_id)
        form = await form_of(request)
        raw = form.get("priority", "")
        valid = _priority(raw) is not None
        _, errors = await _send_form(
            {} if valid else {"priority": "a whole number from 0 to 100 (higher wins)"},
            lambda refused: {"priority": refused.fields.get("priority", refused.message)},
            "PATCH",
            f"/v1/admin/layers/{layer_id}",
            gone_is_not_found=True,
            json={"priority": int(raw) if valid else None},
        )
        if errors:
            return await _pool_page(
                request,
                session,
                pool_name,
                {"priority": {str(layer_id): errors["priority"]}},
                {"priority": {str(layer_id): raw}},
                422,
            )
        return await changed_pool(
            session,
            "layer priority changed",
            pool,
            state,
            {
                "layer_id": str(layer_id),
                "name": layer["name"],
                "kind": layer["kind"],
                "priority": int(raw),
                "before": layer["priority"],
            },
        )

    @router.post("/pools/{pool_name}/calendars", response_class=HTMLResponse)
    async def import_calendar(request: Request, pool_name: str, session: Changing) -> Response:
        pool, zone, state = await _changeable_pool(request, session, pool_name)
        raw = await request.form()
        form = {k: v.strip() for k, v in raw.items() if isinstance(v, str)}
        upload = raw.get("calendar")
        errors: dict[str, str] = {}
        content = await upload.read() if isinstance(upload, StarletteUploadFile) else b""
        if not content:
            errors["calendar"] = "choose an .ics file"
        name = form.get("name", "")
        if not name:
            errors["name"] = "required"
        priority = form.get("priority", "0") or "0"
        if _priority(priority) is None:
            errors["priority"] = "a whole number from 0 to 100 (higher wins)"
        imported, errors = await _send_form(
            errors,
            _calendar_refused,
            "POST",
            "/v1/admin/calendars/import",
            params={
                "pool": pool.name,
                "name": name,
                "priority": int(priority) if not errors else None,
                "time_zone": zone,  # floating times are read in the pool's zone
            },
            content=content,
            content_type="text/calendar",
        )
        if errors:
            return await _pool_page(
                request, session, pool_name, {"calendar": errors}, {"calendar": form}, 422
            )
        return await changed_pool(
            session,
            "calendar imported",
            pool,
            state,
            {
                "layer_id": imported["layer_id"],
                "name": name,
                "priority": int(priority),
                "shifts": imported["shifts"],
                "file_bytes": len(content),
            },
        )

    @router.post("/pools/{pool_name}/overrides", response_class=HTMLResponse)
    async def add_override(request: Request, pool_name: str, session: Changing) -> Response:
        pool, zone, state = await _changeable_pool(request, session, pool_name)
        form = await form_of(request)
        errors: dict[str, str] = {}
        starts = _wall_clock(form.get("starts_at", ""), zone, "starts_at", errors)
        ends = _wall_clock(form.get("ends_at", ""), zone, "ends_at", errors)
        if starts and ends and ends <= starts:
            errors["ends_at"] = "must be after the start"
        kind = form.get("kind", "")
        body = {
            "override_id": str(uuid.uuid4()),
            "kind": kind,
            "pool": pool.name,
            "coach_id": form.get("coach_id", ""),
            "replaces": (form.get("replaces") or None) if kind == "replace" else None,
            "starts_at": starts.isoformat() if starts else None,
            "ends_at": ends.isoformat() if ends else None,
        }
        if kind == "replace" and not body["replaces"]:
            errors["replaces"] = "a replace names the coach it replaces"
        elif kind == "replace" and body["replaces"] == body["coach_id"]:
            errors["replaces"] = "a coach cannot cover herself: choose another coach to replace"
        _, errors = await _send_form(
            errors, _override_refused, "POST", "/v1/admin/overrides", json=body
        )
        if errors:
            return await _pool_page(
                request, session, pool_name, {"override": errors}, {"override": form}, 422
            )
        names = await console.coach_names()
        return await changed_pool(
            session,
            "override added",
            pool,
            state,
            {
                **body,
                "coach": names.get(UUID(body["coach_id"] or "")),
                "replaces_coach": names.get(UUID(body["replaces"])) if body["replaces"] else None,
            },
        )

    @router.post("/pools/{pool_name}/temporary-schedules", response_class=HTMLResponse)
    async def add_temporary(request: Request, pool_name: str, session: Changing) -> Response:
        pool, zone, state = await _changeable_pool(request, session, pool_name)
        raw = await request.form()
        form = {k: v.strip() for k, v in raw.items() if isinstance(v, str)}
        errors: dict[str, str] = {}
        starts = _wall_clock(form.get("start", ""), zone, "start", errors)
        ends = _wall_clock(form.get("end", ""), zone, "end", errors)
        if starts and ends and ends <= starts:
            errors["end"] = "must be after the start"
        coaches = [str(v) for v in raw.getlist("coaches")]
        body = {
            "pool": pool.name,
            "start": starts.isoformat() if starts else None,
            "end": ends.isoformat() if ends else None,
            "shifts": [
                {"coach_id": c, "start": starts.isoformat(), "end": ends.isoformat()}
                for c in coaches
                if starts and ends
            ],
        }
        created, errors = await _send_form(
            errors, _fields_or("start"), "POST", "/v1/admin/temporary-schedules", json=body
        )
        if errors:
            return await _pool_page(
                request, session, pool_name, {"temporary": errors}, {"temporary": form}, 422
            )
        names = await console.coach_names()
        return await changed_pool(
            session,
            "temporary schedule added",
            pool,
            state,
            {
                "temporary_id": created["temporary_id"],
                "start": body["start"],
                "end": body["end"],
                "on_call": _names(coaches, names),
            },
        )

    @router.post("/pools/{pool_name}/layers/{layer_id}/remove")
    async def remove_layer(
        request: Request, pool_name: str, layer_id: UUID, session: Changing
    ) -> Response:
        pool, _, state = await _changeable_pool(request, session, pool_name)
        layer = await _layer_of(pool, layer_id)
        try:
            await console.services.matching.call("DELETE", f"/v1/admin/layers/{layer_id}")
        except Refused as refused:
            if refused.status == 404:
                raise NotFound from None
            raise
        return await changed_pool(
            session,
            "layer removed",
            pool,
            state,
            {"layer_id": str(layer_id), "name": layer["name"], "kind": layer["kind"]},
        )

    @router.post("/pools/{pool_name}/temporary-schedules/{temporary_id}/remove")
    async def remove_temporary(
        request: Request, pool_name: str, temporary_id: UUID, session: Changing
    ) -> Response:
        pool, _, state = await _changeable_pool(request, session, pool_name)
        temporaries = await console.services.matching.call(
            "GET", "/v1/admin/temporary-schedules", params={"pool": pool.name}
        )
        if not any(t["temporary_id"] == str(temporary_id) for t in temporaries):
            raise NotFound  # another pool's, or already ended
        await console.services.matching.call(
            "DELETE", f"/v1/admin/temporary-schedules/{temporary_id}"
        )
        return await changed_pool(
            session,
            "temporary schedule removed",
            pool,
            state,
            {"temporary_id": str(temporary_id)},
        )

    @router.post("/pools/{pool_name}/overrides/{override_id}/remove")
    async def remove_override(
        request: Request, pool_name: str, override_id: UUID, session: Changing
    ) -> Response:
        pool, _, state = await _changeable_pool(request, session, pool_name)
        overrides = await console.services.matching.call(
            "GET", "/v1/admin/overrides", params={"pool": pool.name}
        )
        if not any(o["override_id"] == str(override_id) and o["pool"] for o in overrides):
            raise NotFound  # another pool's, or a coach's own OFF (theirs to end with ON)
        await console.services.matching.call("DELETE", f"/v1/admin/overrides/{override_id}")
        return await changed_pool(
            session,
            "override removed",
            pool,
            state,
            {"override_id": str(override_id)},
        )

    # --- coaches and the change log ----------------------------------------------------------

    @router.get("/coaches", response_class=HTMLResponse)
    async def coaches_page(request: Request, session: SignedIn) -> Response:
        account = session.account
        sites = await console.sites()
        visible = {s.site_id for s in sites.values() if may_view_site(account, s.site_id, s.state)}
        states = account.states | {sites[s].state for s in visible}
        coaches = [
            c
            for c in await console.services.matching.call("GET", "/v1/admin/coaches")
            if set(c["home_sites"]) & visible
            or {cert["state"] for cert in c["certifications"]} & states
        ]
        blocked = {
            (m["channel"], m["destination"]): m
            for m in (await console.services.notify.call("GET", "/v1/admin/contact-methods"))[
                "contact_methods"
            ]
        }
        today = datetime.now(UTC).date()
        for coach in coaches:
            for method in coach["contact_methods"]:
                found = blocked.get((method["channel"], method["destination"]))
                method["state"] = found["state"] if found else "reachable"
                method["reason"] = found["reason"] if found else ""
            for cert in coach["certifications"]:
                cert["warning"] = certification_warning(
                    date.fromisoformat(cert["expires_on"]), today
                )
        return console.render(request, "coaches.html", session=session, coaches=coaches)

    @router.get("/changes", response_class=HTMLResponse)
    async def change_log(request: Request, session: SignedIn) -> Response:
        account = session.account
        sites = await console.sites()
        visible = [s.site_id for s in sites.values() if may_view_site(account, s.site_id, s.state)]
        async with console.pool.acquire() as connection:
            found = await accounts.changes(connection, visible, account.states)
        return console.render(request, "changes.html", session=session, changes=found)

    add_reports_routes(router, console, current_session)
    return router


def install_console_errors(app: FastAPI, console: Console) -> None:
    """The console's errors as pages: sign in, 403, 404, a service away (503), never a 500
    for something a person did."""

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, _: SignInNeeded) -> Response:
        return RedirectResponse("/sign-in", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> Response:
        return console.render(
            request, "error.html", status=403, title="Not allowed", message=str(error)
        )

    @app.exception_handler(AlreadySaved)
    async def already_saved(request: Request, _: AlreadySaved) -> Response:
        return console.render(
            request,
            "error.html",
            status=409,
            title="Already saved",
            message="This form was already saved; nothing was changed the second time. "
            "Reload the page to see it.",
        )

    @app.exception_handler(NotFound)
    async def not_found(request: Request, _: NotFound) -> Response:
        return _not_found_page(request, console)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, error: ServiceUnavailable) -> Response:
        log.warning("console: a service is not answering", extra={"service": error.service})
        response = console.render(
            request,
            "error.html",
            status=503,
            title="Try again in a moment",
            message=f"The {error.service} service is not answering, try again in a moment. "
            f"Pages that do not need {error.service} still work; after a form, reload its "
            "page to see whether it was saved.",
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:
        if error.status == 404:
            return _not_found_page(request, console)
        return console.render(
            request, "error.html", status=422, title="Refused", message=error.message
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            return _not_found_page(request, console)
        return console.render(
            request,
            "error.html",
            status=error.status_code,
            title="Error",
            message=str(error.detail),
        )


def _not_found_page(request: Request, console: Console) -> Response:
    return console.render(
        request, "error.html", status=404, title="Not found", message="There is no such page."
    )


def _set_cookie(
    response: Response, name: str, value: str, settings: ConsoleSettings, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        secure=settings.console_secure_cookies,
        samesite="strict",
        path="/",
    )


def _aware(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _lines(text: str) -> list[str]:
    return [part.strip() for line in text.splitlines() for part in line.split(",") if part.strip()]


def _names(coach_ids: list[str], names: Mapping[UUID, str]) -> list[str]:
    return [names.get(UUID(c), c) for c in coach_ids]


def _fields_or(field: str) -> Callable[[Refused], dict[str, str]]:
    """A refusal as the fields the service named, or its message on `field` if it named none."""
    return lambda refused: dict(refused.fields) or {field: refused.message}


def _calendar_refused(refused: Refused) -> dict[str, str]:
    """A refused calendar import by form field: matching names the body (the file) and
    query fields; a taken name (409) names none."""
    return {
        ("calendar" if field in ("body", "") else field): message
        for field, message in refused.fields.items()
    } or {"name" if refused.status == 409 else "calendar": refused.message}


def _override_refused(refused: Refused) -> dict[str, str]:
    """A refused override by form field; the same change existing (override_id) is said at
    the top of the form, on `kind`."""
    errors = _fields_or("kind")(refused)
    if "override_id" in errors:
        errors["kind"] = errors.pop("override_id")
    return errors


def _rotation_body(
    form: Mapping[str, str], pool: PoolRef, zone: str, names: Mapping[UUID, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The admin API's rotation body from the rotation form (participants written by name,
    one per line or comma-separated, in turn) and the errors found before sending it, by
    field. Numbers and dates are left as written: matching names what it refuses."""
    errors: dict[str, str] = {}
    by_name = {name.casefold(): coach for coach, name in names.items()}
    participants: list[str] = []
    for written in _lines(form.get("participants", "")):
        coach = by_name.get(written.casefold())
        if coach is None:
            errors["participants"] = f"no coach named {written!r} on the roster"
            break
        participants.append(str(coach))
    if not participants and "participants" not in errors:
        errors["participants"] = "name at least one coach, one per line, in turn"
    try:  # the first handoff, read as a wall clock; what matching refuses, named here too
        first = datetime.fromisoformat(f"{form.get('start_date', '')}T{form.get('handoff', '')}")
        problem = _wall_time_problem(first, form.get("time_zone", "") or zone)
    except (ValueError, KeyError):
        problem = None  # a bad date, time or zone: matching names the field
    if problem is not None:
        errors["handoff"] = problem
    body = {
        "pool": pool.name,
        "name": form.get("name", ""),
        "priority": form.get("priority", "0") or "0",
        "time_zone": form.get("time_zone", "") or zone,
        "start_date": form.get("start_date", ""),
        "handoff": form.get("handoff", ""),
        "shift_length": form.get("shift_length", ""),
        "shift_unit": form.get("shift_unit", ""),
        "participants": participants,
    }
    return body, errors


def _wall_time_problem(wall: datetime, zone: str) -> str | None:
    """None if a clock in `zone` shows the naive `wall` exactly once; else what the form
    says: a time the clocks skip, or one they show twice (which one was meant, a form
    cannot say). Either would be a guess, so it is named, never read (matching's rule for
    a rotation's first handoff too)."""
    local = wall.replace(tzinfo=ZoneInfo(zone))
    if local.astimezone(UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None) != wall:
        return (
            f"{wall:%H:%M} does not exist on {wall:%Y-%m-%d} in {zone} (the clocks go forward then)"
        )
    if local.utcoffset() != local.replace(fold=1).utcoffset():
        return (
            f"{wall:%H:%M} happens twice on {wall:%Y-%m-%d} in {zone} (the clocks go back "
            "then): choose a time outside the repeated hour"
        )
    return None


def _wall_clock(value: str, zone: str, field: str, errors: dict[str, str]) -> datetime | None:
    """A `datetime-local` field (wall clock in `zone`) as an aware datetime; records an error
    naming `field` when it is empty or not a date and time."""
    if not value:
        errors[field] = "required"
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors[field] = "a date and time, such as 2026-12-24T08:00"
        return None
    if parsed.tzinfo is None:
        problem = _wall_time_problem(parsed, zone)
        if problem is not None:
            errors[field] = problem
            return None
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    if not 2000 <= parsed.year <= 2100:
        errors[field] = "must be in the years 2000 to 2100"
        return None
    return parsed
