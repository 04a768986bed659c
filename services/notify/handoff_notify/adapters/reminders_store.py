"""PostgreSQL: follow-up reminders (issue #16), one per FollowUpAssigned and contact method,
with the send state machine of the supervisors' notices (migration 0011): pending ->
sending -> sent | failed | cancelled. A send whose outcome was lost is failed, never sent
again. No patient data is kept: the body is rendered at send time from the site's short
name, the window and the signed link."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from handoff_notify import SCHEMA
from handoff_notify.adapters.send_state import SendStates
from handoff_platform.database import Connection
from handoff_schemas.events import ContactPoint, FollowUpAssigned
from handoff_schemas.vocabulary import Channel

REMINDED = (Channel.SMS, Channel.EMAIL, Channel.WEBHOOK)
"""The channels a reminder goes on, the coach's first method of each: a link read aloud
by a call helps nobody."""


@dataclass(frozen=True)
class ReminderRecord:
    reminder_id: UUID
    assignment_id: UUID
    task_id: UUID
    attempt: int
    referral_id: UUID
    correlation_id: str
    site_short_name: str
    window_days: int
    channel: Channel
    destination: str
    attempts: int


_COLUMNS = """reminder_id, assignment_id, task_id, attempt, referral_id, correlation_id,
    site_short_name, window_days, channel, destination, attempts"""
_SENDS = SendStates(f"{SCHEMA}.reminders", "reminder_id", "sent_at = now()")
mark_sending = _SENDS.mark_sending
retry_later = _SENDS.retry_later
next_due = _SENDS.next_due


def reminded_methods(contacts: tuple[ContactPoint, ...]) -> list[tuple[int, ContactPoint]]:
    """The contacts a reminder goes to, with their index: the first of each channel in
    `REMINDED`, in the coach's order of preference."""
    chosen: dict[Channel, tuple[int, ContactPoint]] = {}
    for index, point in enumerate(contacts):
        if point.channel in REMINDED and point.channel not in chosen:
            chosen[point.channel] = (index, point)
    return sorted(chosen.values(), key=lambda pair: pair[0])


async def add(
    connection: Connection, event_id: UUID, correlation_id: str, event: FollowUpAssigned
) -> int:
    """Queue the assignment's reminders unless its attempt was closed already (recorded,
    or consent revoked); an event seen before queues nothing more. How many were queued."""
    if await closed(connection, event.referral_id, event.task_id, event.attempt):
        return 0
    queued = 0
    for index, contact in reminded_methods(event.contacts):
        inserted = await connection.fetchval(
            f"""INSERT INTO {SCHEMA}.reminders (reminder_id, event_id, contact_index,
                    assignment_id, task_id, attempt, referral_id, coach_id, correlation_id,
                    site_short_name, window_days, channel, destination, state)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending')
                ON CONFLICT (event_id, contact_index) DO NOTHING RETURNING true""",
            uuid4(),
            event_id,
            index,
            event.assignment_id,
            event.task_id,
            event.attempt,
            event.referral_id,
            event.coach_id,
            correlation_id,
            event.site_short_name,
            event.window_days,
            contact.channel.value,
            contact.destination,
        )
        queued += bool(inserted)
    return queued


async def replaced(connection: Connection, event: FollowUpAssigned) -> list[Channel]:
    """A new assignment of the same attempt replaces the older ones: their reminders not
    yet sent are cancelled; the channel of each."""
    rows = await connection.fetch(
        f"""UPDATE {SCHEMA}.reminders SET state = 'cancelled', finished_at = now()
            WHERE task_id = $1 AND attempt = $2 AND assignment_id <> $3 AND state = 'pending'
            RETURNING channel""",
        event.task_id,
        event.attempt,
        event.assignment_id,
    )
    return [Channel(row["channel"]) for row in rows]


async def close(
    connection: Connection,
    referral_id: UUID,
    task_id: UUID | None,
    attempt: int,
    reason: str,
    at: datetime,
) -> list[Channel]:
    """No reminder is sent any more for the attempt (`task_id` None: for any attempt of the
    referral, its consent revoked): those pending are cancelled, and one heard of later is
    never queued. The channel of each reminder cancelled."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.follow_ups_closed (referral_id, task_id, attempt, closed_at,
                reason)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        referral_id,
        task_id,
        attempt,
        at,
        reason,
    )
    rows = await connection.fetch(
        f"""UPDATE {SCHEMA}.reminders SET state = 'cancelled', finished_at = now()
            WHERE referral_id = $1 AND state = 'pending'
              AND ($2::uuid IS NULL OR (task_id = $2 AND attempt = $3))
            RETURNING channel""",
        referral_id,
        task_id,
        attempt,
    )
    return [Channel(row["channel"]) for row in rows]


async def closed(connection: Connection, referral_id: UUID, task_id: UUID, attempt: int) -> bool:
    """Whether the attempt was recorded, or the referral's follow-up consent revoked."""
    found = await connection.fetchval(
        f"""SELECT EXISTS (SELECT 1 FROM {SCHEMA}.follow_ups_closed
                WHERE referral_id = $1
                  AND (task_id IS NULL OR (task_id = $2 AND attempt = $3)))""",
        referral_id,
        task_id,
        attempt,
    )
    return bool(found)


async def claim_due(connection: Connection, limit: int) -> list[ReminderRecord]:
    """Lock due pending reminders for this transaction; other replicas skip them."""
    rows = await _SENDS.claim_due(connection, _COLUMNS, limit)
    return [
        ReminderRecord(
            reminder_id=row["reminder_id"],
            assignment_id=row["assignment_id"],
            task_id=row["task_id"],
            attempt=row["attempt"],
            referral_id=row["referral_id"],
            correlation_id=row["correlation_id"],
            site_short_name=row["site_short_name"],
            window_days=row["window_days"],
            channel=Channel(row["channel"]),
            destination=row["destination"],
            attempts=row["attempts"],
        )
        for row in rows
    ]


async def sends_in_window(
    connection: Connection, channel: Channel, destination: str, since: datetime
) -> int:
    """Reminders that left for a destination after `since` (in flight or sent)."""
    sends = await connection.fetchval(
        f"""SELECT count(*) FROM {SCHEMA}.reminders
            WHERE channel = $1 AND destination = $2 AND sent_at > $3
              AND state IN ('sending', 'sent')""",
        channel.value,
        destination,
        since,
    )
    return int(sends)


async def fail_lost(connection: Connection) -> list[Channel]:
    """Reminders left `sending` past their deadline, failed and never sent again (the send
    may have gone out: a coach reminded twice is worse than a reminder lost to a crash)."""
    rows = await connection.fetch(
        f"""UPDATE {SCHEMA}.reminders SET state = 'failed', finished_at = now()
            WHERE reminder_id IN (
                SELECT reminder_id FROM {SCHEMA}.reminders
                WHERE state = 'sending' AND sending_deadline <= now()
                ORDER BY reminder_id FOR UPDATE SKIP LOCKED)
            RETURNING channel"""
    )
    return [Channel(row["channel"]) for row in rows]


async def sending_attempts(connection: Connection, reminder_id: UUID) -> int | None:
    """The reminder's send attempts if it is still `sending` (locked); None otherwise."""
    attempts = await connection.fetchval(
        f"""SELECT attempts FROM {SCHEMA}.reminders
            WHERE reminder_id = $1 AND state = 'sending' FOR UPDATE""",
        reminder_id,
    )
    return None if attempts is None else int(attempts)


async def finish(
    connection: Connection, reminder_id: UUID, state: str, provider_ref: str | None = None
) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.reminders
            SET state = $2, provider_ref = $3, sending_deadline = NULL, finished_at = now()
            WHERE reminder_id = $1""",
        reminder_id,
        state,
        provider_ref,
    )


async def reported(connection: Connection, reminder_id: UUID, provider_ref: str) -> bool:
    """The provider reports on a reminder whose send's answer was lost: it is sent, as
    `provider_ref`, even if already failed as lost."""
    status = await connection.execute(
        f"""UPDATE {SCHEMA}.reminders
            SET state = 'sent', provider_ref = $2, sending_deadline = NULL,
                finished_at = coalesce(finished_at, now())
            WHERE reminder_id = $1 AND state IN ('sending', 'failed') AND provider_ref IS NULL""",
        reminder_id,
        provider_ref,
    )
    return bool(status == "UPDATE 1")


async def last_sent_to(
    connection: Connection, channel: Channel, destination: str, since: datetime
) -> UUID | None:
    """The assignment of the latest reminder sent to the destination after `since`."""
    found: UUID | None = await connection.fetchval(
        f"""SELECT assignment_id FROM {SCHEMA}.reminders
            WHERE channel = $1 AND destination = $2 AND state = 'sent' AND sent_at > $3
            ORDER BY sent_at DESC LIMIT 1""",
        channel.value,
        destination,
        since,
    )
    return found
