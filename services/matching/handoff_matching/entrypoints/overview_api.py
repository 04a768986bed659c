"""Read-only admin listings a coordinator console draws (behind the admin token): sites as
matching knows them, the roster's coaches, overrides, a pool's timeline, and the offers
each open referral of a site holds. Nothing here carries patient data."""

import json
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from handoff_matching import SCHEMA
from handoff_matching.adapters import schedule_store
from handoff_matching.domain.coverage import cover_changes, not_covering
from handoff_matching.entrypoints.schedules_api import pool_site, window_ahead
from handoff_matching.roster_file import PoolName, _pool
from handoff_matching.service import cover_facts
from handoff_platform.http import SitePath


class SiteOut(BaseModel):
    site_id: str
    short_name: str
    state: str
    time_zone: str


class CertificationOut(BaseModel):
    state: str
    credential: str
    expires_on: date


class CoachOut(BaseModel):
    coach_id: UUID
    display_name: str
    contact_methods: list[dict[str, str]]  # channel, destination; in order of preference
    languages: list[str]
    max_concurrent: int
    active: bool
    home_sites: list[str]
    certifications: list[CertificationOut]


class OverrideOut(BaseModel):
    override_id: UUID
    kind: str
    pool: str | None  # None: every pool (a coach's own OFF)
    coach_id: UUID
    replaces: UUID | None
    starts_at: datetime
    ends_at: datetime
    source: str  # admin or sms


class PoolSegment(BaseModel):
    start: datetime
    end: datetime
    coaches: list[UUID]
    not_covering: dict[UUID, str] = Field(default_factory=dict)  # of `coaches`: why


class PoolScheduleOut(BaseModel):
    pool: str
    start: datetime
    end: datetime
    segments: list[PoolSegment]


class TemporaryListed(BaseModel):
    temporary_id: UUID
    pool: str
    start: datetime
    end: datetime
    coaches: list[UUID]  # on call for some of the window; none: nobody


class OpenDispatch(BaseModel):
    referral_id: UUID
    state: str  # the dispatch's state: offering, waiting, unassigned, assigned…
    holding: list[UUID]  # coaches holding an open offer or the assignment


def add_overview_routes(router: APIRouter, pool: asyncpg.Pool) -> None:
    """Adds the console's listings to the admin router (which checks the token)."""

    @router.get("/sites", response_model=list[SiteOut])
    async def list_sites() -> list[SiteOut]:
        """Every site registered (from `SiteRegistered`), by id."""
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT site_id, short_name, state, time_zone FROM {SCHEMA}.site_facts
                    ORDER BY site_id"""
            )
        return [
            SiteOut(
                site_id=r["site_id"],
                short_name=r["short_name"],
                state=r["state"].strip(),
                time_zone=r["time_zone"],
            )
            for r in rows
        ]

    @router.get("/coaches", response_model=list[CoachOut])
    async def list_coaches() -> list[CoachOut]:
        """The roster: every coach with contact methods, languages, capacity, certifications."""
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT c.coach_id, c.display_name, c.contact_methods, c.languages,
                           c.max_concurrent, c.active, c.home_sites,
                           coalesce(array_agg(ROW(t.state, t.credential, t.expires_on)
                                    ORDER BY t.expires_on)
                                    FILTER (WHERE t.state IS NOT NULL), '{{}}') AS certifications
                    FROM {SCHEMA}.coaches c LEFT JOIN {SCHEMA}.certifications t USING (coach_id)
                    GROUP BY c.coach_id ORDER BY c.display_name"""
            )
        return [
            CoachOut(
                coach_id=r["coach_id"],
                display_name=r["display_name"],
                contact_methods=[
                    {"channel": m["channel"], "destination": m["destination"]}
                    for m in json.loads(r["contact_methods"])
                ],
                languages=list(r["languages"]),
                max_concurrent=r["max_concurrent"],
                active=r["active"],
                home_sites=list(r["home_sites"]),
                certifications=[
                    CertificationOut(state=s.strip(), credential=c, expires_on=e)
                    for s, c, e in r["certifications"]
                ],
            )
            for r in rows
        ]

    @router.get("/overrides", response_model=list[OverrideOut])
    async def list_overrides(
        pool_name: Annotated[PoolName, Query(alias="pool")],
    ) -> list[OverrideOut]:
        """The pool's overrides not yet ended, and every-pool ones (OFF), in the order made."""
        target = _pool(pool_name)
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT override_id, kind, pool_kind, pool_key, coach_id, replaces,
                           starts_at, ends_at, source
                    FROM {SCHEMA}.overrides
                    WHERE ((pool_kind = $1 AND pool_key = $2) OR pool_kind IS NULL)
                      AND ends_at > now()
                    ORDER BY created_at""",
                target.kind.value,
                target.key,
            )
        return [
            OverrideOut(
                override_id=r["override_id"],
                kind=r["kind"],
                pool=f"{r['pool_kind']}:{r['pool_key']}" if r["pool_kind"] else None,
                coach_id=r["coach_id"],
                replaces=r["replaces"],
                starts_at=r["starts_at"],
                ends_at=r["ends_at"],
                source=r["source"],
            )
            for r in rows
        ]

    @router.get("/pools/{pool_name}/schedule", response_model=PoolScheduleOut)
    async def pool_schedule(
        pool_name: Annotated[PoolName, Path()],
        days: Annotated[int, Query(ge=1, le=28)] = 14,
    ) -> PoolScheduleOut:
        """Who is on call in one pool (a site's or a state's) over the next `days`; each
        segment names the coaches who do not count as cover there, and why (a state pool is
        judged in the zone of its first registered site)."""
        target = _pool(pool_name)
        window = window_ahead(days)
        async with pool.acquire() as connection:
            schedules = await schedule_store.pool_schedules(connection, [target], window)
            coaches, unreachable = await cover_facts(connection, [target])
            site = await pool_site(connection, target)
        line = schedules[target].timeline(window)
        points = sorted({*line.starts, *cover_changes(site, window, coaches)})
        segments = []
        for start, end in zip(points, [*points[1:], window.end], strict=True):
            on_call = line.at(start)
            out = not_covering(on_call, site, start, coaches, unreachable)
            segments.append(
                PoolSegment(
                    start=start,
                    end=end,
                    coaches=sorted(on_call, key=str),
                    not_covering={c: out[c].value for c in sorted(out, key=str)},
                )
            )
        return PoolScheduleOut(
            pool=pool_name, start=window.start, end=window.end, segments=segments
        )

    @router.get("/temporary-schedules", response_model=list[TemporaryListed])
    async def list_temporary(
        pool_name: Annotated[PoolName, Query(alias="pool")],
    ) -> list[TemporaryListed]:
        """The pool's temporary schedules not yet ended, by start (as a coordinator reads a
        calendar; at most one holds any moment, so the order is the windows' order)."""
        target = _pool(pool_name)
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT t.temporary_id, t.starts_at, t.ends_at,
                           coalesce(array_agg(DISTINCT s.coach_id)
                                    FILTER (WHERE s.coach_id IS NOT NULL), '{{}}') AS coaches
                    FROM {SCHEMA}.temporary_schedules t
                        LEFT JOIN {SCHEMA}.temporary_shifts s USING (temporary_id)
                    WHERE t.pool_kind = $1 AND t.pool_key = $2 AND t.ends_at > now()
                    GROUP BY t.temporary_id ORDER BY t.starts_at, t.created_at""",
                target.kind.value,
                target.key,
            )
        return [
            TemporaryListed(
                temporary_id=r["temporary_id"],
                pool=pool_name,
                start=r["starts_at"],
                end=r["ends_at"],
                coaches=r["coaches"],
            )
            for r in rows
        ]

    @router.get("/sites/{site_id}/open-dispatches", response_model=list[OpenDispatch])
    async def open_dispatches(
        site_id: SitePath,
    ) -> list[OpenDispatch]:
        """The site's referrals not yet settled, with the coaches holding their offers."""
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT referral_id, state, holding FROM {SCHEMA}.dispatches
                    WHERE document->'facts'->>'site_id' = $1
                      AND state NOT IN ('closed', 'cancelled', 'expired')
                    ORDER BY created_at""",
                site_id,
            )
        return [
            OpenDispatch(referral_id=r["referral_id"], state=r["state"], holding=r["holding"])
            for r in rows
        ]
