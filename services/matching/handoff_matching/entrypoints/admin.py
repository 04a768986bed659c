"""The admin API for program coordinators: a site's dispatch settings and rota overrides.

Every call needs `Authorization: Bearer <MATCHING_ADMIN_TOKEN>`; without a token
configured the admin API refuses everything.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from handoff_matching.adapters import dispatch_store, roster_store
from handoff_matching.domain.coverage import not_covering
from handoff_matching.domain.dispatch import DispatchMode, DispatchSettings
from handoff_matching.domain.eligibility import SiteProfile
from handoff_matching.domain.schedules import OverrideKind, Pool
from handoff_matching.entrypoints.overview_api import add_overview_routes
from handoff_matching.entrypoints.schedules_api import (
    add_schedule_routes,
    coaches_for,
    window_ahead,
)
from handoff_matching.on_call import OnCall
from handoff_matching.roster_file import OverrideRow, ScheduleMoment, _pool
from handoff_matching.service import cover_facts, coverage_gaps_ahead, roster_changed
from handoff_platform.database import Connection
from handoff_platform.http import ADMIN_ERRORS, ApiError, SitePath, admin_token_required


class SiteDispatch(BaseModel):
    """A site's whole dispatch settings: PUT replaces them all, so every field is required
    (a field left out is a 422 naming it, never silently reset to its default)."""

    model_config = ConfigDict(extra="forbid")

    mode: DispatchMode
    ack_timeout_seconds: Annotated[int, Field(ge=15, le=3600)]
    arrival_target_minutes: Annotated[int, Field(ge=5, le=480)]
    broadcast_size: Annotated[int, Field(ge=1, le=10)]
    interpreter_available: bool
    supervisors: list[UUID]
    page_deadline_seconds: Annotated[int, Field(ge=10, le=3600)]
    reoffer_every_seconds: Annotated[int, Field(ge=10, le=86400)]
    give_up_after_minutes: Annotated[int, Field(ge=1, le=10080)]


class SiteDispatchChanges(BaseModel):
    """PATCH: only the fields given change; the others keep their current values."""

    model_config = ConfigDict(extra="forbid")

    mode: DispatchMode | None = None
    ack_timeout_seconds: Annotated[int, Field(ge=15, le=3600)] | None = None
    arrival_target_minutes: Annotated[int, Field(ge=5, le=480)] | None = None
    broadcast_size: Annotated[int, Field(ge=1, le=10)] | None = None
    interpreter_available: bool | None = None
    supervisors: list[UUID] | None = None
    page_deadline_seconds: Annotated[int, Field(ge=10, le=3600)] | None = None
    reoffer_every_seconds: Annotated[int, Field(ge=10, le=86400)] | None = None
    give_up_after_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None


class Gap(BaseModel):
    start: datetime
    end: datetime
    minutes: int


class Coverage(BaseModel):
    site_id: str
    start: datetime
    end: datetime
    gaps: list[Gap]


class NotCovering(BaseModel):
    """A coach the rota has on call who does not count as cover (`why_not_cover`)."""

    coach_id: UUID
    reason: str  # e.g. "certification expired"


class OnCallNow(BaseModel):
    """Who counts as cover at `at` for the site and for its state pool; coaches the rota
    has on call there who do not count (inactive, no current certification in the state,
    reachable on no contact method) are listed only in `not_covering`."""

    site_id: str
    at: datetime
    site: list[UUID]
    state_pool: list[UUID]
    not_covering: list[NotCovering] = []


def build_admin_router(
    pool: asyncpg.Pool, token: SecretStr | None, on_call: OnCall | None = None
) -> APIRouter:
    """The admin routes; `on_call` is the service's (one per process), or a new one."""
    who_is_on_call = on_call or OnCall()
    router = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        responses=ADMIN_ERRORS,
        dependencies=[admin_token_required(token, "The matching service's admin token.")],
    )

    @router.get("/sites/{site_id}/dispatch", response_model=SiteDispatch)
    async def get_site_dispatch(site_id: SitePath) -> SiteDispatch:
        """How the site's referrals are dispatched (the defaults if never set); 404
        `site_unknown` for a site never registered."""
        async with pool.acquire() as connection:
            await _site_facts(connection, site_id)
            return await _current(connection, site_id)

    @router.put("/sites/{site_id}/dispatch", response_model=SiteDispatch)
    async def put_site_dispatch(site_id: SitePath, body: SiteDispatch) -> SiteDispatch:
        """Set all of the site's dispatch settings: mode, ack timeout, arrival target,
        supervisors (coaches on the roster), page deadline (s), how often an unassigned
        referral is offered again (s), and when one is given up (min, from its arrival).
        422 naming each field missing or invalid, or `supervisors` naming an unknown coach
        or one twice; 404 `site_unknown` for a site never registered (a mistyped id)."""
        async with pool.acquire() as connection:
            await _site_facts(connection, site_id)
            await _store(connection, site_id, body)
            await roster_changed(connection)  # e.g. a supervisor added: serve the line
        return body

    @router.patch("/sites/{site_id}/dispatch", response_model=SiteDispatch)
    async def patch_site_dispatch(site_id: SitePath, body: SiteDispatchChanges) -> SiteDispatch:
        """Change only the settings given (as PUT's fields); returns them all as stored.
        Refused as PUT is."""
        async with pool.acquire() as connection:
            await _site_facts(connection, site_id)
            async with connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('handoff_site_dispatch:' || $1))",
                    site_id,
                )  # two coordinators patching at once both keep their change
                current = await _current(connection, site_id)
                merged = current.model_copy(update=body.model_dump(exclude_none=True))
                await _store(connection, site_id, SiteDispatch.model_validate(merged.model_dump()))
            await roster_changed(connection)  # after the commit: NOTIFY never in a write
        return merged

    @router.get("/sites/{site_id}/coverage", response_model=Coverage)
    async def get_coverage(
        site_id: SitePath, days: Annotated[int, Query(ge=1, le=28)] = 7
    ) -> Coverage:
        """Windows in the next `days` with no eligible coach on call for the site or its pool."""
        window = window_ahead(days)
        async with pool.acquire() as connection:
            state, time_zone = await _site_facts(connection, site_id)
            _, interpreter, _ = await dispatch_store.site_settings(connection, site_id)
            gaps = await coverage_gaps_ahead(
                connection, site_id, state, time_zone, window, interpreter
            )
        return Coverage(
            site_id=site_id,
            start=window.start,
            end=window.end,
            gaps=[
                Gap(start=g.start, end=g.end, minutes=round((g.end - g.start).total_seconds() / 60))
                for g in gaps
            ],
        )

    @router.get("/sites/{site_id}/on-call", response_model=OnCallNow)
    async def get_on_call(site_id: SitePath, at: ScheduleMoment | None = None) -> OnCallNow:
        """Who is on call for the site, and for its state pool, at `at` (default: now). Only
        a view of now counts out a coach whose phone is at notify's offer ceiling: it lasts
        minutes (decision 0032)."""
        instant = at or datetime.now(UTC)
        async with pool.acquire() as connection:
            state, time_zone = await _site_facts(connection, site_id)
            pools = [Pool.site(site_id), Pool.state(state)]
            found = await who_is_on_call(connection, pools, instant)
            coaches, unreachable = await cover_facts(connection, pools, now_only=at is None)
        site = SiteProfile(site_id, state, ZoneInfo(time_zone))
        rota = found[pools[0]] | found[pools[1]]
        out = not_covering(rota, site, instant, coaches, unreachable)
        return OnCallNow(
            site_id=site_id,
            at=instant,
            site=sorted(found[pools[0]] - out.keys(), key=str),
            state_pool=sorted(found[pools[1]] - out.keys(), key=str),
            not_covering=[
                NotCovering(coach_id=c, reason=out[c].value) for c in sorted(out, key=str)
            ],
        )

    @router.post("/overrides", status_code=201, response_model=OverrideRow)
    async def add_override(body: OverrideRow) -> OverrideRow:
        """Add a coach to a pool, remove one, or have one replace another, for a window.
        422 `covers_self` naming `replaces` for a coach replacing herself."""
        if body.replaces is not None and body.replaces == body.coach_id:
            # "Maya covers Maya" changes nothing, yet would be listed as if it did.
            raise ApiError(
                422,
                "covers_self",
                "a coach cannot cover herself: name another coach to replace",
                field="replaces",
            )
        async with pool.acquire() as connection:
            if body.kind is not OverrideKind.REMOVE:
                await coaches_for(connection, _pool(body.pool), [body.coach_id], "coach_id")
            twin = await roster_store.same_override(connection, body)
            if twin is not None:
                # The same change sent twice (a double click, a retried script) under a new
                # id: a second row would show twice and need removing twice.
                raise ApiError(
                    409,
                    "duplicate_override",
                    f"override {twin} already makes exactly this change",
                    field="override_id",
                )
            try:
                await roster_store.put_override(connection, body)
            except asyncpg.ForeignKeyViolationError:
                raise ApiError(
                    422, "unknown_coach", "no such coach in the roster", field="coach_id"
                ) from None
            await roster_changed(connection)  # an added coach may take a waiting referral
        return body

    @router.delete("/overrides/{override_id}", status_code=204)
    async def remove_override(override_id: UUID) -> Response:
        async with pool.acquire() as connection:
            if not await roster_store.delete_override(connection, override_id):
                raise ApiError(404, "not_found", "no such override")
        return Response(status_code=204)

    add_schedule_routes(router, pool)
    add_overview_routes(router, pool)
    return router


async def _site_facts(connection: Connection, site_id: str) -> tuple[str, str]:
    """The site's state and time zone, as the referral service registered them."""
    facts = await roster_store.site_facts(connection, site_id)
    if facts is not None:
        return facts
    raise ApiError(404, "site_unknown", "no site with this id has been registered")


async def _current(connection: Connection, site_id: str) -> SiteDispatch:
    """The site's dispatch settings as stored (the defaults if never set)."""
    settings, interpreter, supervisors = await dispatch_store.site_settings(connection, site_id)
    return SiteDispatch(
        mode=settings.mode,
        ack_timeout_seconds=int(settings.ack_timeout.total_seconds()),
        arrival_target_minutes=int(settings.arrival_target.total_seconds() // 60),
        broadcast_size=settings.broadcast_size,
        interpreter_available=interpreter,
        supervisors=list(supervisors),
        page_deadline_seconds=int(settings.page_deadline.total_seconds()),
        reoffer_every_seconds=int(settings.reoffer_every.total_seconds()),
        give_up_after_minutes=int(settings.give_up_after.total_seconds() // 60),
    )


async def _store(connection: Connection, site_id: str, body: SiteDispatch) -> None:
    """Store the site's settings (the caller wakes the line after its commit). Raises
    ApiError 422 naming `supervisors` if one is not a coach on the roster (nobody could be
    paged there) or is named twice."""
    twice = sorted({str(s) for s in body.supervisors if body.supervisors.count(s) > 1})
    if twice:
        raise ApiError(
            422,
            "duplicate_supervisor",
            f"a supervisor named more than once: {', '.join(twice)}",
            field="supervisors",
        )
    known = await roster_store.coaches_by_id(connection, body.supervisors)
    unknown = [str(s) for s in body.supervisors if s not in known]
    if unknown:
        raise ApiError(
            422,
            "unknown_coach",
            f"no such coach in the roster: {', '.join(unknown)}",
            field="supervisors",
        )
    # A supervisor is paged about the site's referrals, which only a coach certified in its
    # state may take on: the same rule as a schedule's coaches.
    await coaches_for(connection, Pool.site(site_id), body.supervisors, "supervisors")
    settings = DispatchSettings(
        mode=body.mode,
        ack_timeout=timedelta(seconds=body.ack_timeout_seconds),
        arrival_target=timedelta(minutes=body.arrival_target_minutes),
        broadcast_size=body.broadcast_size,
        page_deadline=timedelta(seconds=body.page_deadline_seconds),
        reoffer_every=timedelta(seconds=body.reoffer_every_seconds),
        give_up_after=timedelta(minutes=body.give_up_after_minutes),
    )
    await dispatch_store.put_site_settings(
        connection, site_id, settings, body.interpreter_available, tuple(body.supervisors)
    )
