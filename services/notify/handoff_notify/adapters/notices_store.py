"""PostgreSQL: notices that belong to no offer (a referral gone unassigned, told to the
site's supervisors), with a small state machine of their own: pending → sending → sent |
failed | cancelled. Notices folded into a digest follow their carrier's state."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from handoff_notify import SCHEMA
from handoff_notify.adapters.send_state import SendStates
from handoff_platform.database import Connection
from handoff_schemas.events import ReferralUnassigned
from handoff_schemas.vocabulary import Channel, UnassignedReason, Urgency


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
    urgency: Urgency | None = None
    site_time_zone: str | None = None  # IANA
    reason: UnassignedReason | None = None  # None: queued before notices kept it
    nobody_reached: bool = False


_COLUMNS = """notice_id, referral_id, correlation_id, site_short_name, unassigned_at, channel,
    destination, attempts, urgency, site_time_zone, reason, nobody_reached"""
_SENDS = SendStates(f"{SCHEMA}.notices", "notice_id")
mark_sending = _SENDS.mark_sending
next_due = _SENDS.next_due


async def retry_later(connection: Connection, notice_id: UUID, seconds: float) -> None:
    """The send failed for now: the notice is due again in `seconds`, and a digest's
    folded notices go back to pending, to be planned again with whatever came since."""
    await _SENDS.retry_later(connection, notice_id, seconds)
    await connection.execute(
        f"UPDATE {SCHEMA}.notices SET sent_at = NULL WHERE notice_id = $1", notice_id
    )
    await connection.execute(
        f"""UPDATE {SCHEMA}.notices
            SET state = 'pending', digest_of = NULL, sending_deadline = NULL
            WHERE digest_of = $1""",
        notice_id,
    )


async def add(
    connection: Connection, event_id: UUID, correlation_id: str, event: ReferralUnassigned
) -> None:
    """Queue one notice per supervisor contact; an event seen before queues nothing more."""
    await connection.executemany(
        f"""INSERT INTO {SCHEMA}.notices (notice_id, event_id, contact_index, referral_id,
                correlation_id, site_short_name, unassigned_at, channel, destination, state,
                urgency, site_time_zone, reason, nobody_reached)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13)
            ON CONFLICT (event_id, contact_index) DO NOTHING""",
        [
            (
                uuid4(),
                event_id,
                index,
                event.referral_id,
                correlation_id,
                event.site_short_name,
                event.unassigned_at,
                contact.channel.value,
                contact.destination,
                event.urgency.value if event.urgency else None,
                event.site_time_zone,
                event.reason.value,
                event.nobody_reached,
            )
            for index, contact in enumerate(event.supervisor_contacts)
        ],
    )


async def lock_destinations(connection: Connection, destinations: list[str]) -> None:
    """Hold each destination's notice lock to the end of the transaction, in sorted order
    (no deadlock): two replicas planning notices to one supervisor count each other's."""
    if not destinations:
        return
    await connection.execute(
        """SELECT pg_advisory_xact_lock(hashtext('notify-notices:' || destination))
           FROM (SELECT DISTINCT unnest($1::text[]) AS destination ORDER BY 1) AS d""",
        sorted(set(destinations)),
    )


async def sends_in_window(
    connection: Connection, channel: Channel, destination: str, since: datetime
) -> tuple[int, datetime | None]:
    """Sends (a digest counts once) that left for a destination after `since`, and when
    the oldest of them left."""
    row = await connection.fetchrow(
        f"""SELECT count(*) AS sends, min(sent_at) AS oldest FROM {SCHEMA}.notices
            WHERE channel = $1 AND destination = $2 AND sent_at > $3 AND digest_of IS NULL
              AND state IN ('sending', 'sent')""",
        channel.value,
        destination,
        since,
    )
    assert row is not None  # an aggregate always answers one row
    return int(row["sends"]), row["oldest"]


async def mark_leaving(
    connection: Connection, notice_id: UUID, folded: list[UUID], deadline_seconds: float
) -> None:
    """The notice is being sent now, carrying the `folded` ones (a digest): all of them
    `sending` with one deadline, the send counted from now."""
    await mark_sending(connection, notice_id, deadline_seconds)
    await connection.execute(
        f"UPDATE {SCHEMA}.notices SET sent_at = now() WHERE notice_id = $1", notice_id
    )
    if folded:
        await connection.execute(
            f"""UPDATE {SCHEMA}.notices
                SET state = 'sending', attempts = attempts + 1, digest_of = $1,
                    sending_deadline = now() + make_interval(secs => $3)
                WHERE notice_id = ANY($2::uuid[])""",
            notice_id,
            folded,
            deadline_seconds,
        )


async def hold(connection: Connection, notice_ids: list[UUID], until: datetime) -> None:
    """Back to `pending`, due at `until`: the destination's window is full."""
    await connection.execute(
        f"""UPDATE {SCHEMA}.notices SET state = 'pending', sending_deadline = NULL, due_at = $2
            WHERE notice_id = ANY($1::uuid[])""",
        notice_ids,
        until,
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
            urgency=Urgency(row["urgency"]) if row["urgency"] else None,
            site_time_zone=row["site_time_zone"],
            reason=UnassignedReason(row["reason"]) if row["reason"] else None,
            nobody_reached=row["nobody_reached"],
        )
        for row in rows
    ]


async def attempts(connection: Connection, notice_id: UUID) -> tuple[int, datetime] | None:
    """The notice's send attempts and when its referral went unassigned (UTC), if it is
    still `sending` (locked); None otherwise."""
    row = await connection.fetchrow(
        f"""SELECT attempts, unassigned_at FROM {SCHEMA}.notices
            WHERE notice_id = $1 AND state = 'sending' FOR UPDATE""",
        notice_id,
    )
    return None if row is None else (int(row["attempts"]), row["unassigned_at"])


async def finish(
    connection: Connection, notice_id: UUID, state: str, provider_ref: str | None = None
) -> None:
    """End a notice, and the notices its digest carried, in `state`."""
    await connection.execute(
        f"""UPDATE {SCHEMA}.notices
            SET state = $2, provider_ref = $3, sending_deadline = NULL, finished_at = now()
            WHERE notice_id = $1 OR digest_of = $1""",
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


async def record_outcome(
    connection: Connection, referral_id: UUID, outcome: str, at: datetime
) -> None:
    """The referral was `outcome` ("assigned" or "cancelled") at `at` (UTC): notices of
    its unassigned spells before then are no longer true. The latest outcome is kept."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.referral_outcomes (referral_id, outcome, at)
            VALUES ($1, $2, $3)
            ON CONFLICT (referral_id) DO UPDATE SET outcome = excluded.outcome, at = excluded.at
            WHERE referral_outcomes.at < excluded.at""",
        referral_id,
        outcome,
        at,
    )


async def resolved(connection: Connection, claimed: list[NoticeRecord]) -> set[UUID]:
    """The notices among `claimed` whose referral was assigned or cancelled since it went
    unassigned (a later outcome than the notice's `unassigned_at`)."""
    if not claimed:
        return set()
    rows = await connection.fetch(
        f"""SELECT n.notice_id FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[])
                AS n(notice_id, referral_id, unassigned_at)
            JOIN {SCHEMA}.referral_outcomes o USING (referral_id)
            WHERE o.at >= n.unassigned_at""",
        [n.notice_id for n in claimed],
        [n.referral_id for n in claimed],
        [n.unassigned_at for n in claimed],
    )
    return {row["notice_id"] for row in rows}


async def destinations_of(
    connection: Connection, referral_ids: Iterable[UUID]
) -> dict[UUID, set[str]]:
    """Every destination a notice about each referral was queued for, sent or not."""
    rows = await connection.fetch(
        f"""SELECT DISTINCT referral_id, destination FROM {SCHEMA}.notices
            WHERE referral_id = ANY($1::uuid[])""",
        list(referral_ids),
    )
    found: dict[UUID, set[str]] = {}
    for row in rows:
        found.setdefault(row["referral_id"], set()).add(row["destination"])
    return found


async def still_unassigned(connection: Connection, referral_id: UUID, destination: str) -> bool:
    """Whether `destination` was told (or is to be told) the referral has no coach, and
    no assignment or cancel has been heard of since."""
    told = await connection.fetchval(
        f"""SELECT EXISTS (
                SELECT 1 FROM {SCHEMA}.notices n
                WHERE n.referral_id = $1 AND n.destination = $2
                  AND n.state IN ('pending', 'sending', 'sent')
                  AND NOT EXISTS (
                      SELECT 1 FROM {SCHEMA}.referral_outcomes o
                      WHERE o.referral_id = n.referral_id AND o.at >= n.unassigned_at))""",
        referral_id,
        destination,
    )
    return bool(told)
