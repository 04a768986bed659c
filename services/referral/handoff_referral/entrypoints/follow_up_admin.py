"""The referral service's admin API for a site's follow-up schedule (issue #16): the days
after a visit each follow-up window opens. Behind `REFERRAL_ADMIN_TOKEN`."""

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictInt

from handoff_platform.http import ADMIN_ERRORS, ApiError, SitePath, admin_token_required
from handoff_referral.adapters import follow_up_store as store
from handoff_referral.domain.follow_ups import BadInput, check_schedule


class ScheduleIn(BaseModel):
    # Strict: true is not 1 and "7" is not 7, and an unknown field is a mistake to name.
    model_config = ConfigDict(extra="forbid", strict=True)

    follow_up_days: list[StrictInt] = Field(
        description="Days after the visit each follow-up window opens: 1..365, ascending "
        "(default 1, 30, 90). Applies to visits recorded from now on.",
        examples=[[1, 30, 90]],
    )


class ScheduleOut(BaseModel):
    site_id: str
    follow_up_days: list[int]


def build_schedule_router(pool: asyncpg.Pool, token: SecretStr | None) -> APIRouter:
    """GET and PUT /v1/admin/sites/{site_id}/follow-up-schedule."""
    router = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        responses=ADMIN_ERRORS,
        dependencies=[admin_token_required(token, "The referral service's admin token.")],
    )

    @router.get("/sites/{site_id}/follow-up-schedule", response_model=ScheduleOut)
    async def get_schedule(site_id: SitePath) -> ScheduleOut:
        """The site's follow-up days."""
        async with pool.acquire() as connection:
            days = await store.schedule(connection, site_id)
        if days is None:
            raise ApiError(404, "site_unknown", "no site with this id")
        return ScheduleOut(site_id=site_id, follow_up_days=list(days))

    @router.put("/sites/{site_id}/follow-up-schedule", response_model=ScheduleOut)
    async def put_schedule(site_id: SitePath, body: ScheduleIn) -> ScheduleOut:
        """Set the site's follow-up days (visits recorded before keep their tasks)."""
        try:
            days = check_schedule(body.follow_up_days)
        except BadInput as error:
            raise ApiError(422, "invalid_schedule", str(error), field=error.field) from None
        async with pool.acquire() as connection:
            if not await store.set_schedule(connection, site_id, days):
                raise ApiError(404, "site_unknown", "no site with this id")
        return ScheduleOut(site_id=site_id, follow_up_days=list(days))

    return router
