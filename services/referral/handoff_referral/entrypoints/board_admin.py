"""The referral service's admin API for a coordinator console: the sites, and each site's
open referrals as a board shows them — status, urgency, location and times, never patient
details, notes or the call-back number.

Every call needs `Authorization: Bearer <REFERRAL_ADMIN_TOKEN>`; without a token configured
the admin API refuses everything.
"""

from datetime import datetime
from uuid import UUID

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel, SecretStr

from handoff_platform.http import ADMIN_ERRORS, ApiError, SitePath, admin_token_required
from handoff_referral import SCHEMA

OPEN_STATUSES = ("received", "offered", "waiting", "unassigned", "accepted", "arrived")


class SiteOut(BaseModel):
    site_id: str
    name: str
    short_name: str
    state: str
    time_zone: str


class OpenReferral(BaseModel):
    referral_id: UUID
    status: str
    urgency: str
    location: str
    received_at: datetime  # UTC
    updated_at: datetime  # UTC


def build_board_router(pool: asyncpg.Pool, token: SecretStr | None) -> APIRouter:
    """GET /v1/admin/sites and GET /v1/admin/sites/{id}/open-referrals."""
    router = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        responses=ADMIN_ERRORS,
        dependencies=[admin_token_required(token, "The referral service's admin token.")],
    )

    @router.get("/sites", response_model=list[SiteOut])
    async def list_sites() -> list[SiteOut]:
        """Every registered site, by id."""
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT site_id, name, short_name, state, time_zone FROM {SCHEMA}.sites
                    ORDER BY site_id"""
            )
        return [SiteOut(**{**dict(r), "state": r["state"].strip()}) for r in rows]

    @router.get("/sites/{site_id}/open-referrals", response_model=list[OpenReferral])
    async def open_referrals(
        site_id: SitePath,
    ) -> list[OpenReferral]:
        """The site's referrals not yet completed, cancelled or expired, oldest first."""
        async with pool.acquire() as connection:
            known = await connection.fetchval(
                f"SELECT true FROM {SCHEMA}.sites WHERE site_id = $1", site_id
            )
            if not known:
                raise ApiError(404, "site_unknown", "no site with this id")
            rows = await connection.fetch(
                f"""SELECT referral_id, status, urgency, location, received_at, updated_at
                    FROM {SCHEMA}.referrals
                    WHERE site_id = $1 AND status = ANY($2::text[])
                    ORDER BY received_at, referral_id LIMIT 500""",
                site_id,
                list(OPEN_STATUSES),
            )
        return [OpenReferral(**dict(r)) for r in rows]

    return router
