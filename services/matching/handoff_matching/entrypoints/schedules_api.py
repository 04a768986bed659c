"""Schedules for coordinators (behind the admin token) and calendar feeds (behind a token
in the path): rotations, layers, temporary schedules, calendar import and tokens, and
the computed timeline a console draws. JSON in and out, so a console can drive it."""

from datetime import UTC, datetime, time, timedelta
from typing import Annotated
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field, model_validator

from handoff_matching import metrics
from handoff_matching.adapters import reachability_store, roster_store, schedule_store
from handoff_matching.adapters.schedule_store import (
    CalendarSubject,
    LayerRow,
    NameTaken,
    NotARotation,
    OtherPool,
    TemporaryOverlaps,
)
from handoff_matching.domain.calendars import (
    CalendarEntry,
    CalendarProblems,
    export_ics,
    import_ics,
)
from handoff_matching.domain.coverage import (
    cover_changes,
    coverage_gaps,
    not_covering,
    split_by_cover,
)
from handoff_matching.domain.eligibility import SiteProfile
from handoff_matching.domain.rotations import Rotation, ShiftUnit
from handoff_matching.domain.schedules import (
    Interval,
    Pool,
    PoolKind,
    Shift,
    wall_time_problem,
)
from handoff_matching.roster_file import (
    PoolName,
    ScheduleDate,
    ScheduleMoment,
    Strict,
    TimeZone,
    _pool,
)
from handoff_matching.service import cover_facts, out_of_reach, roster_changed
from handoff_platform.database import Connection
from handoff_platform.http import ApiError
from handoff_schemas.vocabulary import SiteId

FEED_DAYS = 60  # how far ahead a calendar feed shows computed shifts
FEED_LOOKBACK = timedelta(days=31)  # a shift longer than this may change its UID daily
MAX_ICS_BYTES = 1_048_576
LayerName = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f]+$")]
Priority = Annotated[int, Field(ge=0, le=100)]  # higher wins


class RotationIn(Strict):
    """A rotation layer: shifts of `shift_length` `shift_unit`s handed over at `handoff`
    (wall clock in `time_zone`) from `start_date`, taken in turn by `participants`."""

    pool: PoolName
    name: LayerName
    priority: Priority = 0
    time_zone: TimeZone
    start_date: ScheduleDate
    handoff: time
    shift_length: Annotated[int, Field(ge=1, le=1000)]
    shift_unit: ShiftUnit
    participants: Annotated[list[UUID], Field(min_length=1, max_length=100)]

    def check_first_handoff(self) -> None:
        """Raises ApiError 422 naming `handoff` when the first handoff's wall time does not
        exist (a spring-forward gap) or happens twice (a fall-back fold) on `start_date`."""
        problem = wall_time_problem(self.start_date, self.handoff, ZoneInfo(self.time_zone))
        if problem is not None:
            raise ApiError(422, problem[0], problem[1], "handoff")

    def to_rotation(self) -> Rotation:
        return Rotation(
            ZoneInfo(self.time_zone),
            self.start_date,
            self.handoff,
            self.shift_length,
            self.shift_unit,
            tuple(self.participants),
        )


class RotationOut(RotationIn):
    layer_id: UUID


class LayerOut(Strict):
    layer_id: UUID
    pool: str
    name: str
    priority: int
    kind: str


class LayerPriority(Strict):
    priority: Priority


class ShiftIn(Strict):
    coach_id: UUID
    start: ScheduleMoment
    end: ScheduleMoment


class TemporaryIn(Strict):
    """For [start, end), exactly `shifts` (none: nobody on call, before overrides)."""

    pool: PoolName
    start: ScheduleMoment
    end: ScheduleMoment
    shifts: Annotated[list[ShiftIn], Field(default_factory=list, max_length=1000)]

    @model_validator(mode="after")
    def _inside(self) -> "TemporaryIn":
        if self.end <= self.start:
            raise ValueError("end must be after start")
        for shift in self.shifts:
            if not self.start <= shift.start < shift.end <= self.end:
                raise ValueError("each shift must end after it starts, inside the window")
        return self


class TemporaryOut(TemporaryIn):
    temporary_id: UUID


class CalendarImported(Strict):
    layer_id: UUID
    shifts: int
    start: datetime
    end: datetime


class TokenFor(Strict):
    """Exactly one of a coach and a site."""

    coach_id: UUID | None = None
    site_id: SiteId | None = None

    @model_validator(mode="after")
    def _one(self) -> "TokenFor":
        if (self.coach_id is None) == (self.site_id is None):
            raise ValueError("name exactly one of coach_id and site_id")
        return self


class TokenOut(Strict):
    token_id: UUID
    path: str  # the feed's path on this service; the token in it is shown only now


class TokenListed(Strict):
    token_id: UUID
    coach_id: UUID | None
    site_id: str | None
    created_at: datetime


class Segment(Strict):
    """From `start` to `end`, the coaches the rota has on call at the site and in its state
    pool; of them, those who do not count as cover, with the reason (`why_not_cover`)."""

    start: datetime
    end: datetime
    site: list[UUID]
    state_pool: list[UUID]
    not_covering: dict[UUID, str] = Field(default_factory=dict)


class Stretch(Strict):
    start: datetime
    end: datetime
    minutes: int


class ScheduleOut(Strict):
    """A site's timeline; `gaps` are exactly the coverage report's over the same window."""

    site_id: str
    start: datetime
    end: datetime
    segments: list[Segment]
    gaps: list[Stretch] = Field(default_factory=list)


def _local(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%a %d %b %Y %H:%M")


def window_ahead(days: int) -> Interval:
    """The next `days` from now (UTC), as every coverage view reads them: the report and
    the timeline's segments and gaps."""
    now = datetime.now(UTC)
    return Interval(now, now + timedelta(days=days))


def _layer_out(row: LayerRow) -> LayerOut:
    return LayerOut(
        layer_id=row.layer_id,
        pool=f"{row.pool.kind.value}:{row.pool.key}",
        name=row.name,
        priority=row.priority,
        kind=row.kind,
    )


def _rotation_out(row: LayerRow) -> RotationOut:
    assert row.rotation is not None
    rotation = row.rotation
    return RotationOut(
        layer_id=row.layer_id,
        pool=f"{row.pool.kind.value}:{row.pool.key}",
        name=row.name,
        priority=row.priority,
        time_zone=rotation.zone.key,
        start_date=rotation.start_date,
        handoff=rotation.handoff,
        shift_length=rotation.shift_length,
        shift_unit=rotation.unit,
        participants=list(rotation.participants),
    )


async def _known_coaches(connection: Connection, coach_ids: list[UUID], field: str) -> None:
    unknown = await schedule_store.unknown_coaches(connection, coach_ids)
    if unknown:
        raise ApiError(422, "unknown_coach", f"no such coach in the roster: {unknown[0]}", field)


async def coaches_for(
    connection: Connection, target: Pool, coach_ids: list[UUID], field: str
) -> None:
    """Checks the coaches a schedule of `target` names: raises ApiError 422 `unknown_coach`
    for one not in the roster, `not_certified` for one with no certification in the pool's
    state valid today (matching would never page them there, so the schedule would show
    cover that does not exist). A site not registered yet has no known state: not checked."""
    await _known_coaches(connection, coach_ids, field)
    if target.kind is PoolKind.STATE:
        state: str | None = target.key
    else:
        facts = await roster_store.site_facts(connection, target.key)
        state = facts[0] if facts else None
    if state is None:
        return
    uncertified = await schedule_store.uncertified_coaches(
        connection, coach_ids, state, datetime.now(UTC).date()
    )
    if uncertified:
        raise ApiError(
            422,
            "not_certified",
            f"coach {uncertified[0]} holds no current certification in {state}, so is never "
            "paged there",
            field,
        )


async def _site_facts(connection: Connection, site_id: str) -> tuple[str, str]:
    facts = await roster_store.site_facts(connection, site_id)
    if facts is None:
        raise ApiError(404, "site_unknown", "no site with this id has been registered")
    return facts


async def store_rotation(connection: Connection, body: RotationIn) -> RotationOut:
    """Store a rotation layer (the API's and the CLI's way); raises ApiError 422 for a
    participant not in the roster or a first handoff that does not exist or happens twice
    (naming `handoff`), 409 for a layer name the pool already has."""
    body.check_first_handoff()
    await coaches_for(connection, _pool(body.pool), body.participants, "participants")
    try:
        layer_id = await schedule_store.add_rotation(
            connection, _pool(body.pool), body.name, body.priority, body.to_rotation()
        )
    except NameTaken:
        raise ApiError(409, "name_taken", "the pool has a layer of this name") from None
    await roster_changed(connection)  # someone may be on call now: serve the line
    metrics.SCHEDULE_CHANGES.labels("rotation").inc()
    return RotationOut(layer_id=layer_id, **body.model_dump())


async def change_rotation(connection: Connection, layer_id: UUID, body: RotationIn) -> RotationOut:
    """Rewrite a rotation in place (same layer id, so calendar UIDs and history stay), with
    the checks of `store_rotation`; raises ApiError 404 (no such rotation), 422 `other_pool`
    naming `pool` (a layer stays in its pool), 422 `unknown_coach` / `not_certified` naming
    `participants`, 409 `name_taken` naming `name`."""
    body.check_first_handoff()
    # Where the layer is first: a coach is checked against the pool it would serve.
    found = await schedule_store.layer_at(connection, layer_id)
    if found is None or found[1] != "rotation":
        raise ApiError(404, "not_found", "no such rotation")
    if found[0] != _pool(body.pool):
        raise ApiError(
            422, "other_pool", "this rotation belongs to another pool; a layer stays in its pool",
            "pool",
        )  # fmt: skip
    await coaches_for(connection, _pool(body.pool), body.participants, "participants")
    try:
        await schedule_store.replace_rotation(
            connection, layer_id, _pool(body.pool), body.name, body.priority, body.to_rotation()
        )
    except NotARotation:
        raise ApiError(404, "not_found", "no such rotation") from None
    except OtherPool:
        raise ApiError(
            422, "other_pool", "this rotation belongs to another pool; a layer stays in its pool",
            "pool",
        ) from None  # fmt: skip
    except NameTaken:
        raise ApiError(409, "name_taken", "the pool has a layer of this name", "name") from None
    await roster_changed(connection)  # someone else may be on call now: serve the line
    metrics.SCHEDULE_CHANGES.labels("rotation").inc()
    return RotationOut(layer_id=layer_id, **body.model_dump())


async def store_calendar(
    connection: Connection,
    target: Pool,
    name: str,
    priority: int,
    text: str,
    time_zone: str | None,
    days: int,
) -> CalendarImported:
    """Import an .ics as the pool's calendar layer `name`, expanded over the next `days`
    (the API's and the CLI's way); raises ApiError 422 (a state pool without `time_zone`,
    a calendar that cannot be read or names an unknown coach), 404 (an unknown site),
    409 (a layer of another kind has the name)."""
    if time_zone is None and target.kind is PoolKind.STATE:
        raise ApiError(422, "time_zone_needed", "a state pool needs time_zone", "time_zone")
    zone = time_zone or (await _site_facts(connection, target.key))[1]
    now = datetime.now(UTC)
    window = Interval(now - timedelta(days=1), now + timedelta(days=days))
    try:
        shifts = import_ics(
            text, window, ZoneInfo(zone), await schedule_store.coach_keys(connection)
        )
    except CalendarProblems as problems:
        raise ApiError(422, "calendar_invalid", str(problems), "body") from None
    await coaches_for(connection, target, [shift.coach_id for shift in shifts], "body")
    try:
        layer_id = await schedule_store.put_calendar_layer(
            connection, target, name, priority, shifts
        )
    except NameTaken:
        raise ApiError(409, "name_taken", "a layer of another kind has this name") from None
    await roster_changed(connection)
    metrics.SCHEDULE_CHANGES.labels("calendar_import").inc()
    return CalendarImported(
        layer_id=layer_id, shifts=len(shifts), start=window.start, end=window.end
    )


def add_schedule_routes(router: APIRouter, pool: asyncpg.Pool) -> None:
    """Adds the coordinators' schedule routes to the admin router (which checks the token)."""

    @router.post("/rotations", status_code=201, response_model=RotationOut)
    async def add_rotation(body: RotationIn) -> RotationOut:
        """A new rotation layer for a site or a state pool."""
        async with pool.acquire() as connection:
            return await store_rotation(connection, body)

    @router.put("/rotations/{layer_id}", response_model=RotationOut)
    async def replace_rotation(layer_id: UUID, body: RotationIn) -> RotationOut:
        """Change a rotation in place: every setting, as on create; the layer keeps its id
        (and so its calendar UIDs) and its pool."""
        async with pool.acquire() as connection:
            return await change_rotation(connection, layer_id, body)

    @router.get("/rotations", response_model=list[RotationOut])
    async def list_rotations(
        pool_name: Annotated[PoolName | None, Query(alias="pool")] = None,
    ) -> list[RotationOut]:
        """Rotations (of one pool, or all), highest priority first."""
        async with pool.acquire() as connection:
            rows = await schedule_store.list_layers(
                connection, _pool(pool_name) if pool_name else None
            )
        return [_rotation_out(row) for row in rows if row.kind == "rotation"]

    @router.get("/layers", response_model=list[LayerOut])
    async def list_layers(
        pool_name: Annotated[PoolName | None, Query(alias="pool")] = None,
    ) -> list[LayerOut]:
        """Every layer (weekly shifts, rotations, imported calendars) by pool and priority."""
        async with pool.acquire() as connection:
            rows = await schedule_store.list_layers(
                connection, _pool(pool_name) if pool_name else None
            )
        return [_layer_out(row) for row in rows]

    @router.patch("/layers/{layer_id}", response_model=LayerPriority)
    async def set_priority(layer_id: UUID, body: LayerPriority) -> LayerPriority:
        """Move a layer up or down: the highest with someone on call wins."""
        async with pool.acquire() as connection:
            if not await schedule_store.set_layer_priority(connection, layer_id, body.priority):
                raise ApiError(404, "not_found", "no such layer")
            await roster_changed(connection)
        metrics.SCHEDULE_CHANGES.labels("layer").inc()
        return body

    @router.delete("/layers/{layer_id}", status_code=204)
    async def delete_layer(layer_id: UUID) -> Response:
        """Remove a rotation or an imported calendar (weekly shifts change by roster import)."""
        async with pool.acquire() as connection:
            if not await schedule_store.delete_layer(connection, layer_id):
                raise ApiError(404, "not_found", "no such rotation or calendar layer")
        metrics.SCHEDULE_CHANGES.labels("layer").inc()
        return Response(status_code=204)

    @router.post("/temporary-schedules", status_code=201, response_model=TemporaryOut)
    async def add_temporary(body: TemporaryIn) -> TemporaryOut:
        """For a window (a holiday, a strike), these shifts replace every layer."""
        async with pool.acquire() as connection:
            coaches = [s.coach_id for s in body.shifts]
            await coaches_for(connection, _pool(body.pool), coaches, "shifts")
            try:
                temporary_id = await schedule_store.add_temporary(
                    connection,
                    _pool(body.pool),
                    Interval(body.start, body.end),
                    [Shift(s.coach_id, Interval(s.start, s.end)) for s in body.shifts],
                )
            except TemporaryOverlaps as clash:
                # In the pool's own clock, as the coordinator typed her times; the schedule
                # has no name, so it is named by its window (its id means nothing to her).
                zone = (await pool_site(connection, _pool(body.pool))).zone
                raise ApiError(
                    422,
                    "temporary_overlaps",
                    "the pool already has a temporary schedule from "
                    f"{_local(clash.window.start, zone)} to {_local(clash.window.end, zone)} "
                    f"({zone.key}); change or remove it first",
                    "start",
                ) from None
            await roster_changed(connection)
        metrics.SCHEDULE_CHANGES.labels("temporary").inc()
        return TemporaryOut(temporary_id=temporary_id, **body.model_dump())

    @router.delete("/temporary-schedules/{temporary_id}", status_code=204)
    async def delete_temporary(temporary_id: UUID) -> Response:
        async with pool.acquire() as connection:
            if not await schedule_store.delete_temporary(connection, temporary_id):
                raise ApiError(404, "not_found", "no such temporary schedule")
            await roster_changed(connection)
        metrics.SCHEDULE_CHANGES.labels("temporary").inc()
        return Response(status_code=204)

    @router.post(
        "/calendars/import",
        status_code=201,
        response_model=CalendarImported,
        openapi_extra={"requestBody": {"content": {"text/calendar": {}}, "required": True}},
    )
    async def import_calendar(
        request: Request,
        pool_name: Annotated[PoolName, Query(alias="pool")],
        name: Annotated[LayerName, Query()],
        priority: Annotated[Priority, Query()] = 0,
        time_zone: Annotated[TimeZone | None, Query()] = None,
        days: Annotated[int, Query(ge=1, le=730)] = 365,
    ) -> CalendarImported:
        """A layer from an `.ics` body (RRULE, EXDATE, RECURRENCE-ID, time zones), expanded
        over the next `days`; importing again under the same name replaces it. Floating
        times are read in `time_zone` (default: the site's)."""
        body = await request.body()
        if len(body) > MAX_ICS_BYTES:
            raise ApiError(413, "too_large", "an .ics file is at most 1 MiB")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise ApiError(422, "not_utf8", "the .ics file must be UTF-8", "body") from None
        async with pool.acquire() as connection:
            return await store_calendar(
                connection, _pool(pool_name), name, priority, text, time_zone, days
            )

    @router.post("/calendar-tokens", status_code=201, response_model=TokenOut)
    async def create_token(body: TokenFor) -> TokenOut:
        """A private iCalendar feed URL for a coach or a site (the next 60 days)."""
        async with pool.acquire() as connection:
            if body.coach_id is not None:
                await _known_coaches(connection, [body.coach_id], "coach_id")
            else:
                assert body.site_id is not None
                await _site_facts(connection, body.site_id)
            token_id, token = await schedule_store.create_calendar_token(
                connection, CalendarSubject(body.coach_id, body.site_id)
            )
        return TokenOut(token_id=token_id, path=f"/v1/calendars/{token}.ics")

    @router.get("/calendar-tokens", response_model=list[TokenListed])
    async def list_tokens(
        coach_id: Annotated[list[UUID], Query(max_length=1000)] = [],  # noqa: B006
        site_id: Annotated[list[SiteId], Query(max_length=1000)] = [],  # noqa: B006
    ) -> list[TokenListed]:
        """The calendar feeds of these coaches and sites (none named: every feed), newest
        first: who and since when, never the secret (shown only at creation)."""
        async with pool.acquire() as connection:
            found = await schedule_store.list_calendar_tokens(connection, coach_id, site_id)
        return [
            TokenListed(
                token_id=t.token_id,
                coach_id=t.subject.coach_id,
                site_id=t.subject.site_id,
                created_at=t.created_at,
            )
            for t in found
        ]

    @router.delete("/calendar-tokens/{token_id}", status_code=204)
    async def revoke_token(token_id: UUID) -> Response:
        """The feed stops answering at once."""
        async with pool.acquire() as connection:
            if not await schedule_store.revoke_calendar_token(connection, token_id):
                raise ApiError(404, "not_found", "no such calendar token")
        return Response(status_code=204)

    @router.get("/sites/{site_id}/schedule", response_model=ScheduleOut)
    async def get_schedule(
        site_id: str, days: Annotated[int, Query(ge=1, le=28)] = 14
    ) -> ScheduleOut:
        """Who is on call for the site and its state pool over the next `days`, as segments
        (what a coverage timeline draws), each naming the coaches who do not count as cover
        and why, and the gaps by the coverage report's rule."""
        window = window_ahead(days)
        async with pool.acquire() as connection:
            state, time_zone = await _site_facts(connection, site_id)
            site_pool, state_pool = Pool.site(site_id), Pool.state(state)
            schedules = await schedule_store.pool_schedules(
                connection, [site_pool, state_pool], window
            )
            coaches, unreachable = await cover_facts(connection, [site_pool, state_pool])
        site = SiteProfile(site_id, state, ZoneInfo(time_zone))
        site_line, state_line = (schedules[p].timeline(window) for p in (site_pool, state_pool))
        points = sorted(
            {*site_line.starts, *state_line.starts, *cover_changes(site, window, coaches)}
        )
        segments = []
        for start, end in zip(points, [*points[1:], window.end], strict=True):
            at_site, in_state = site_line.at(start), state_line.at(start)
            out = not_covering(at_site | in_state, site, start, coaches, unreachable)
            segments.append(
                Segment(
                    start=start,
                    end=end,
                    site=sorted(at_site, key=str),
                    state_pool=sorted(in_state, key=str),
                    not_covering={c: out[c].value for c in sorted(out, key=str)},
                )
            )
        gaps = coverage_gaps(site, window, list(schedules.values()), coaches, unreachable)
        return ScheduleOut(
            site_id=site_id,
            start=window.start,
            end=window.end,
            segments=segments,
            gaps=[
                Stretch(start=g.start, end=g.end, minutes=round((g.end - g.start) / _MINUTE))
                for g in gaps
            ],
        )


_MINUTE = timedelta(minutes=1)


def build_calendar_router(pool: asyncpg.Pool) -> APIRouter:
    """GET /v1/calendars/{token}.ics: the feed a calendar app subscribes to (no other auth:
    the token is the secret; revoking it ends the feed)."""
    router = APIRouter(tags=["calendars"])

    @router.get(
        "/v1/calendars/{token}.ics",
        response_class=Response,
        responses={200: {"content": {"text/calendar": {}}}, 404: {"description": "No feed."}},
    )
    async def feed(token: Annotated[str, Path(max_length=100)]) -> Response:
        now = datetime.now(UTC)
        # Computed from a fixed point well before now, so a shift under way keeps its true
        # start, hence its UID, from one refresh to the next (shifts over already are left out).
        since = now.replace(hour=0, minute=0, second=0, microsecond=0) - FEED_LOOKBACK
        window = Interval(since, now + timedelta(days=FEED_DAYS))
        async with pool.acquire() as connection:
            subject = await schedule_store.calendar_subject(connection, token)
            if subject is None:
                raise ApiError(404, "not_found", "no such calendar")
            if subject.site_id is not None:
                name, entries, zone = await _site_feed(connection, subject.site_id, window)
            else:
                assert subject.coach_id is not None
                name, entries, zone = await _coach_feed(connection, subject.coach_id, window)
        current = [entry for entry in entries if entry.shift.interval.end > now]
        return Response(
            export_ics(name, current, zone, now),
            media_type="text/calendar",
            headers={"Cache-Control": "private, max-age=300"},
        )

    return router


async def _site_feed(
    connection: Connection, site_id: str, window: Interval
) -> tuple[str, list[CalendarEntry], ZoneInfo]:
    """The site's cover: shifts (or the parts of them) in which the coach does not count as
    cover (`why_not_cover`) are left out, as the timeline and the gap report leave them."""
    state, time_zone = await _site_facts(connection, site_id)
    pools = [Pool.site(site_id), Pool.state(state)]
    schedules = await schedule_store.pool_schedules(connection, pools, window)
    coaches, unreachable = await cover_facts(connection, pools)
    site = SiteProfile(site_id, state, ZoneInfo(time_zone))
    entries = [
        CalendarEntry(
            pool,
            piece,
            (coaches[shift.coach_id].display_name if shift.coach_id in coaches else "a coach")
            + (" (state pool)" if pool.kind is PoolKind.STATE else ""),
        )
        for pool in pools
        for shift in schedules[pool].timeline(window).shifts()
        for piece, why in split_by_cover(
            shift, site, coaches.get(shift.coach_id), unreachable.get(shift.coach_id)
        )
        if why is None
    ]
    return f"On call: {site_id}", entries, ZoneInfo(time_zone)


async def pool_site(connection: Connection, pool: Pool) -> SiteProfile:
    """The site whose rule `why_not_cover` applies in the pool: the site itself, or for a
    state pool the state in the zone of its first registered site (UTC if none)."""
    if pool.kind is PoolKind.SITE:
        state, time_zone = await _site_facts(connection, pool.key)
        return SiteProfile(pool.key, state, ZoneInfo(time_zone))
    zones = [z for _, s, z in await roster_store.known_sites(connection) if s.strip() == pool.key]
    return SiteProfile(f"state:{pool.key}", pool.key, ZoneInfo(zones[0] if zones else "UTC"))


async def _coach_feed(
    connection: Connection, coach_id: UUID, window: Interval
) -> tuple[str, list[CalendarEntry], ZoneInfo]:
    """The coach's own shifts, every one of them; a shift (or part) in which she does not
    count as cover is titled with why, so she knows she will not be paged then."""
    pools = await schedule_store.coach_pools(connection, coach_id)
    schedules = await schedule_store.pool_schedules(connection, pools, window)
    coach = (await roster_store.coaches_by_id(connection, [coach_id])).get(coach_id)
    why_out = out_of_reach(await reachability_store.of_coaches(connection, [coach_id]))
    entries = []
    for pool in pools:
        site = await pool_site(connection, pool)
        for shift in schedules[pool].timeline(window).shifts():
            if shift.coach_id != coach_id:
                continue
            for piece, why in split_by_cover(shift, site, coach, why_out.get(coach_id)):
                title = f"On call: {pool.key}" + (
                    " state pool" if pool.kind is PoolKind.STATE else ""
                )
                if why is not None:
                    title += f" (not counted as cover: {why.value})"
                entries.append(CalendarEntry(pool, piece, title))
    return "My on-call shifts", entries, ZoneInfo("UTC")
