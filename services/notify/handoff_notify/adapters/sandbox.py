"""The sandbox provider: a phone, mailbox and webhook endpoint that live in the database.

For demos and local runs without any provider account: every message is kept in
`notify.sandbox_messages` and shown on the service's /sandbox page. Settings
refuse it in production.
"""

from datetime import datetime

import asyncpg

from handoff_notify import SCHEMA
from handoff_notify.adapters.providers import Outgoing
from handoff_notify.domain.delivery import (
    Accepted,
    Found,
    LookupOutcome,
    NotFound,
    SendOutcome,
    Transient,
)
from handoff_platform.transient import TRANSIENT_DATABASE_ERRORS, is_transient_database_error


class SandboxProvider:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def send(self, message: Outgoing) -> SendOutcome:
        """The database is this provider's network: unreachable, the send is retried later
        (safely: a message id is kept once, whatever the retries)."""
        try:
            sandbox_id = await self._keep(message)
        except TRANSIENT_DATABASE_ERRORS as error:
            if not is_transient_database_error(error):
                raise
            return Transient(type(error).__name__)
        return Accepted(f"sandbox-{sandbox_id}", delivered=True)

    async def _keep(self, message: Outgoing) -> int:
        sandbox_id: int = await self.pool.fetchval(
            f"""INSERT INTO {SCHEMA}.sandbox_messages
                    (message_id, channel, destination, subject, body)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (message_id) DO UPDATE SET message_id = excluded.message_id
                RETURNING sandbox_id""",
            message.message_id,
            message.channel.value,
            message.destination,
            message.content.subject,
            message.content.spoken if message.channel.value == "voice" else message.content.text,
        )
        return sandbox_id

    async def lookup(self, message: Outgoing, since: datetime) -> LookupOutcome:
        sandbox_id = await self.pool.fetchval(
            f"SELECT sandbox_id FROM {SCHEMA}.sandbox_messages WHERE message_id = $1",
            message.message_id,
        )
        return NotFound() if sandbox_id is None else Found(f"sandbox-{sandbox_id}", True)

    async def close(self) -> None:
        return None


async def inbox(
    pool: asyncpg.Pool, *, after: int = 0, to: str | None = None, limit: int = 200
) -> list[asyncpg.Record]:
    """The sandbox's messages after id `after` (to one destination if given), newest first."""
    return list(
        await pool.fetch(
            f"""SELECT sandbox_id, channel, destination, subject, body, sent_at
                FROM {SCHEMA}.sandbox_messages
                WHERE sandbox_id > $1 AND ($2::text IS NULL OR destination = $2)
                ORDER BY sandbox_id DESC LIMIT $3""",
            after,
            to,
            limit,
        )
    )
