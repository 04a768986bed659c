"""The referral service's admin API: a site's status webhook and its deliveries.

Every call needs `Authorization: Bearer <REFERRAL_ADMIN_TOKEN>`; without a token
configured every call is refused.
"""

from datetime import datetime
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, SecretStr, StrictBool

from handoff_platform.http import ADMIN_ERRORS, ApiError, SitePath, SiteQuery, admin_token_required
from handoff_referral import webhook_admin
from handoff_referral.domain.webhooks import BadCallbackUrl
from handoff_schemas.envelope import UtcDateTime
from handoff_schemas.vocabulary import SiteId


class CallbackIn(BaseModel):
    url: str = Field(max_length=2048, description="Where every timeline step is POSTed.")


class CallbackOut(BaseModel):
    site_id: str
    url: str
    secret: str | None = Field(
        default=None,
        description="The signing secret (`whsec_…`), only in the answer that created it.",
    )


class SecretOut(BaseModel):
    site_id: str
    secret: str = Field(description="The new signing secret, shown this once.")
    previous_valid_until: datetime = Field(description="The old secret also signs until then.")


class CallbackState(BaseModel):
    site_id: str
    url: str
    created_at: datetime
    updated_at: datetime
    previous_secret_valid_until: datetime | None


class DeliveryOut(BaseModel):
    delivery_id: UUID = Field(description="The `webhook-id` header of each attempt.")
    site_id: str
    referral_id: UUID
    step: str
    state: str = Field(description="pending, delivered, failed or abandoned")
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_error: str | None
    waiting_behind: UUID | None = Field(
        default=None,
        description="For a pending step not tried yet: the failing step of its referral "
        "it waits behind.",
    )


class ReplayIn(BaseModel):
    site_id: SiteId | None = None
    referral_id: UUID | None = None
    since: UtcDateTime | None = Field(default=None, description="ISO 8601 with its offset.")
    failed_only: StrictBool = False


class ReplayOut(BaseModel):
    replayed: int


def build_admin_router(pool: asyncpg.Pool, token: SecretStr | None, https_only: bool) -> APIRouter:
    router = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        responses=ADMIN_ERRORS,
        dependencies=[admin_token_required(token, "The referral service's admin token.")],
    )

    @router.put(
        "/sites/{site_id}/webhook",
        response_model=CallbackOut,
        status_code=200,
        responses={
            201: {"model": CallbackOut, "description": "Created: `secret` shown this once."},
            404: {"description": "No such site."},
        },
    )
    async def put_callback(site_id: SitePath, body: CallbackIn, response: Response) -> CallbackOut:
        """Set or change the site's callback URL. `201` with the new signing secret when the
        site had none; `200` (secret unchanged, not shown) when only the URL changed."""
        try:
            async with pool.acquire() as connection:
                result = await webhook_admin.set_callback(connection, site_id, body.url, https_only)
        except BadCallbackUrl as error:
            raise ApiError(422, "invalid_url", str(error), field="url") from None
        except webhook_admin.UnknownSite:
            raise ApiError(404, "not_found", f"no site {site_id}") from None
        if result.secret is not None:
            response.status_code = 201
        return CallbackOut(site_id=site_id, url=result.url, secret=result.secret)

    @router.get(
        "/sites/{site_id}/webhook",
        response_model=CallbackState,
        responses={404: {"description": "The site has no callback."}},
    )
    async def get_callback(site_id: SitePath) -> CallbackState:
        """The site's callback (never its secret)."""
        async with pool.acquire() as connection:
            found = await webhook_admin.callbacks(connection, site_id)
        if not found:
            raise ApiError(404, "not_found", f"site {site_id} has no callback")
        endpoint = found[0]
        return CallbackState(
            site_id=endpoint.site_id,
            url=endpoint.url,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            previous_secret_valid_until=endpoint.rotating_until,
        )

    @router.post("/sites/{site_id}/webhook/rotate-secret", response_model=SecretOut)
    async def rotate(site_id: SitePath) -> SecretOut:
        """A new signing secret; the previous one also signs for 24 hours."""
        try:
            async with pool.acquire() as connection:
                secret, until = await webhook_admin.rotate_secret(connection, site_id)
        except webhook_admin.NoCallback:
            raise ApiError(404, "not_found", f"site {site_id} has no callback") from None
        return SecretOut(site_id=site_id, secret=secret, previous_valid_until=until)

    @router.delete("/sites/{site_id}/webhook", status_code=204)
    async def remove(site_id: SitePath) -> Response:
        """Stop the site's webhooks; steps not yet delivered are abandoned (replayable)."""
        try:
            async with pool.acquire() as connection:
                await webhook_admin.remove_callback(connection, site_id)
        except webhook_admin.NoCallback:
            raise ApiError(404, "not_found", f"site {site_id} has no callback") from None
        return Response(status_code=204)

    @router.get("/webhook-deliveries", response_model=list[DeliveryOut])
    async def list_deliveries(
        site_id: SiteQuery = None,
        referral_id: UUID | None = None,
        failing: Annotated[
            bool,
            Query(description="Only failed, abandoned, being retried or waiting behind those."),
        ] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[DeliveryOut]:
        """Deliveries, newest first."""
        async with pool.acquire() as connection:
            rows = await webhook_admin.deliveries(connection, site_id, referral_id, failing, limit)
        return [
            DeliveryOut(
                delivery_id=row.delivery_id,
                site_id=row.site_id,
                referral_id=row.referral_id,
                step=row.step,
                state=row.state,
                attempts=row.attempts,
                created_at=row.created_at,
                next_attempt_at=row.next_attempt_at if row.state == "pending" else None,
                last_error=row.last_error,
                waiting_behind=row.waiting_behind,
            )
            for row in rows
        ]

    @router.post("/webhook-deliveries/replay", response_model=ReplayOut)
    async def replay(body: ReplayIn) -> ReplayOut:
        """Send a site's (since a time) or a referral's settled deliveries again, in order."""
        if body.site_id is None and body.referral_id is None:
            raise ApiError(422, "missing", "name site_id or referral_id", field="site_id")
        async with pool.acquire() as connection:
            try:
                count = await webhook_admin.replay(
                    connection, body.site_id, body.referral_id, body.since, body.failed_only
                )
            except webhook_admin.UnknownSite:
                raise ApiError(404, "site_unknown", "no site with this id") from None
            except webhook_admin.UnknownReferral:
                raise ApiError(404, "referral_unknown", "no referral with this id") from None
        return ReplayOut(replayed=count)

    return router
