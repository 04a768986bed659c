"""PostgreSQL: the send state machine that offer messages and supervisor notices share.

A row is `pending` until due (`due_at`), `sending` while one replica sends it (with a
`sending_deadline` after which the send counts as lost), then final. The table's own
store module keeps what differs (its columns, its final states); this is the SQL that
is the same for both, once.
"""

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from handoff_platform.database import Connection


@dataclass(frozen=True)
class SendStates:
    """The send state of one table: `table` schema-qualified, `key` its id column, and
    `on_sending` an extra `SET` assignment for `mark_sending` (empty for none)."""

    table: str
    key: str
    on_sending: str = ""

    async def claim_due(
        self, connection: Connection, columns: str, limit: int
    ) -> list[asyncpg.Record]:
        """Lock up to `limit` due pending rows (`columns` of each) for this transaction,
        oldest due first; other replicas skip them."""
        return list(
            await connection.fetch(
                f"""SELECT {columns} FROM {self.table}
                    WHERE state = 'pending' AND due_at <= now()
                    ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
                limit,
            )
        )

    async def mark_sending(
        self, connection: Connection, key: UUID, deadline_seconds: float
    ) -> None:
        """The row is being sent: one more attempt, lost unless finished within
        `deadline_seconds`."""
        also = f", {self.on_sending}" if self.on_sending else ""
        await connection.execute(
            f"""UPDATE {self.table}
                SET state = 'sending', attempts = attempts + 1{also},
                    sending_deadline = now() + make_interval(secs => $2)
                WHERE {self.key} = $1""",
            key,
            deadline_seconds,
        )

    async def retry_later(self, connection: Connection, key: UUID, seconds: float) -> None:
        """Back to `pending`, due again in `seconds`."""
        await connection.execute(
            f"""UPDATE {self.table}
                SET state = 'pending', sending_deadline = NULL,
                    due_at = now() + make_interval(secs => $2)
                WHERE {self.key} = $1""",
            key,
            seconds,
        )

    async def next_due(self, connection: Connection) -> float | None:
        """Seconds until the next pending row or sending deadline (negative if overdue);
        None when nothing waits."""
        value = await connection.fetchval(
            f"""SELECT extract(epoch FROM least(
                    (SELECT min(due_at) FROM {self.table} WHERE state = 'pending'),
                    (SELECT min(sending_deadline) FROM {self.table} WHERE state = 'sending')
                ) - now())::float8"""
        )
        return None if value is None else float(value)
