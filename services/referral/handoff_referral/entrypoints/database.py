"""How the referral CLI's commands reach their database."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from handoff_platform.database import Connection
from handoff_platform.settings import settings_or_exit
from handoff_referral.app import apply_migrations
from handoff_referral.settings import ReferralSettings

T = TypeVar("T")


async def with_connection(work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run `work` on one connection to the referral database of the environment's settings
    (DATABASE_URL), its migrations applied first; returns what `work` returns.

    Exits 2 with one line on a configuration error; raises what asyncpg raises when the
    database cannot be reached."""
    settings = settings_or_exit(ReferralSettings)
    await apply_migrations(settings.database_url)
    connection = await asyncpg.connect(settings.database_url)
    try:
        return await work(connection)
    finally:
        await connection.close()
