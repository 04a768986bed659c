"""PostgreSQL: notices that belong to no offer (a referral gone unassigned, told to the
site's supervisors), with a small state machine of their own: pending → sending → sent |
failed | cancelled."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from handoff_notify import SCHEMA
from handoff_notify.adapters.send_state import SendStates
from handoff_platform.database import Connection
from handoff_schemas.events import ContactPoint
from handoff_schemas.vocabulary import Channel


@dataclass(frozen=True)
class NoticeRecord:
    notice_id: UUID
    referral_id: UUID
    correlation_id: str
    site_short_name: str | None
    unassigned_at: datetime
    channel: Channel
    destination: str
    attempts: int


_COLUMNS = """notice_id, referral_id, correlation_id, site_short_name, unassigned_at, channel,
    destination, attempts"""
_SENDS = SendStates(f"{SCHEMA}.notices", "notice_id")
mark_sending = _SENDS.mark_sending
retry_later = _SENDS.retry_later
next_due = _SENDS.next_due


async def add(
    connection: Connection,
    event_id: UUID,
    referral_id: UUID,
    correlation_id: str,
    site_short_name: str | None,
    unassigned_at: datetime,
    contacts: tuple[ContactPoint, ...],
) -> None:
    """Queue one notice per contact; an event seen before queues nothing more."""
    await connection.executemany(
        f"""INSERT INTO {SCHEMA}.notices (notice_id, event_id, contact_index, referral_id,
                correlation_id, site_short_name, unassigned_at, channel, destination, state)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending')
            ON CONFLICT (event_id, contact_index) DO NOTHING""",
        [
            (
                uuid4(),
                event_id,
                index,
                referral_id,
                correlation_id,
                site_short_name,
                unassigned_at,
                contact.channel.value,
                contact.destination,
            )
            for index, contact in enumerate(contacts)
        ],
    )


async def fail_lost(connection: Connection) -> list[Channel]:
    """Notices left `sending` past their deadline, failed and never sent again (the send
    may have gone out; a supervisor told twice is worse than a notice lost to a crash);
    the channel of each. Skips notices another transaction holds: replicas failing the
    same lost notices at once would otherwise lock them in different orders."""
    rows = await connection.fetch(
        f"""UPDATE {SCHEMA}.notices SET state = 'failed', finished_at = now()
            WHERE notice_id IN (
                SELECT notice_id FROM {SCHEMA}.notices
                WHERE state = 'sending' AND sending_deadline <= now()
                ORDER BY notice_id FOR UPDATE SKIP LOCKED)
            RETURNING channel"""
    )
    return [Channel(row["channel"]) for row in rows]


async def claim_due(connection: Connection, limit: int) -> list[NoticeRecord]:
    """Lock due pending notices for this transaction; other replicas skip them."""
    rows = await _SENDS.claim_due(connection, _COLUMNS, limit)
    return [
        NoticeRecord(
            notice_id=row["notice_id"],
            referral_id=row["referral_id"],
            correlation_id=row["correlation_id"],
            site_short_name=row["site_short_name"],
            unassigned_at=row["unassigned_at"],
            channel=Channel(row["channel"]),
            destination=row["destination"],
            attempts=row["attempts"],
        )
        for row in rows
    ]


async def attempts(connection: Connection, notice_id: UUID) -> int | None:
    """The notice's send attempts, if it is still `sending` (locked); None otherwise."""
    value = await connection.fetchval(
        f"""SELECT attempts FROM {SCHEMA}.notices
            WHERE notice_id = $1 AND state = 'sending' FOR UPDATE""",
        notice_id,
    )
    return None if value is None else int(value)


async def finish(
    connection: Connection, notice_id: UUID, state: str, provider_ref: str | None = None
) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.notices
            SET state = $2, provider_ref = $3, sending_deadline = NULL, finished_at = now()
            WHERE notice_id = $1""",
        notice_id,
        state,
        provider_ref,
    )


async def reported(connection: Connection, notice_id: UUID, provider_ref: str) -> bool:
    """The provider reports on a notice whose send's answer was lost: it is sent, as
    `provider_ref`, even if already failed as lost. False if no such notice was waiting
    for its answer (unknown id, or its reference stored already)."""
    status = await connection.execute(
        f"""UPDATE {SCHEMA}.notices
            SET state = 'sent', provider_ref = $2, sending_deadline = NULL,
                finished_at = coalesce(finished_at, now())
            WHERE notice_id = $1 AND state IN ('sending', 'failed') AND provider_ref IS NULL""",
        notice_id,
        provider_ref,
    )
    return bool(status == "UPDATE 1")
