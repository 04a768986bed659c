"""The admin API for program coordinators: the coaches' contact methods notify no longer
sends to (opted out by STOP, or unreachable by the provider's word), to fix the roster,
and clearing one once it is fixed.

Every call needs `Authorization: Bearer <NOTIFY_ADMIN_TOKEN>`; without a token
configured the admin API refuses everything. Destinations are staff contact data,
shown only to an authorised coordinator.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, SecretStr

from handoff_notify.adapters import pages_store as store
from handoff_notify.adapters.pages_store import MethodState
from handoff_platform.http import ADMIN_ERRORS, ApiError, admin_token_required
from handoff_schemas.vocabulary import Channel


class ContactMethod(BaseModel):
    channel: Channel
    destination: str
    state: MethodState
    reason: str  # stop_keyword, or provider:<HTTP status>:<provider code>
    since: datetime  # UTC


class ContactMethods(BaseModel):
    contact_methods: list[ContactMethod]


def build_admin_router(
    pool: asyncpg.Pool,
    token: SecretStr | None,
    clear_method: Callable[[Channel, str], Awaitable[bool]],
) -> APIRouter:
    """`clear_method(channel, destination)` puts a method back in good standing (and tells
    matching); False if it was not blocked."""
    router = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        responses=ADMIN_ERRORS,
        dependencies=[admin_token_required(token, "The notify service's admin token.")],
    )

    @router.get("/contact-methods")
    async def contact_methods(
        state: Annotated[
            MethodState | None, Query(description="Only opted_out, or only unreachable.")
        ] = None,
    ) -> ContactMethods:
        """Contact methods nothing is sent to, newest first, of one state or both."""
        async with pool.acquire() as connection:
            blocked = await store.list_blocked(connection, state)
        return ContactMethods(
            contact_methods=[
                ContactMethod(
                    channel=m.channel,
                    destination=m.destination,
                    state=m.state,
                    reason=m.reason,
                    since=m.since,
                )
                for m in blocked
            ]
        )

    @router.delete(
        "/contact-methods", status_code=204, responses={404: {"description": "Not blocked."}}
    )
    async def clear_contact_method(
        channel: Annotated[Channel, Query()],
        destination: Annotated[
            # No control character (fresh34b: a NUL byte was a 500 from PostgreSQL).
            str, Query(min_length=1, max_length=320, pattern=r"^[^\x00-\x1f\x7f]+$")
        ],
    ) -> Response:
        """Put a method back in good standing, once the roster no longer lists it or the
        coach confirmed it works: pages go to it again and it leaves the gauge."""
        if not await clear_method(channel, destination):
            raise ApiError(404, "not_found", "that contact method is not blocked")
        return Response(status_code=204)

    return router
