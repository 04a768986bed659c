"""Which coaches notify can reach: contact methods' standing as notify reported it, read
against each coach's roster methods (decision 0019)."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from handoff_matching import SCHEMA
from handoff_platform.database import Connection
from handoff_schemas.vocabulary import OFFER_CEILING_REACHED, Channel


@dataclass(frozen=True)
class Reach:
    """A coach's reachability: `reachable` False when every roster method is blocked;
    `again_at` (UTC) the last time one of their methods came back into good standing;
    `spent` True when every method is blocked only by notify's offer ceiling (decision
    0032), for a while, not by the coach or the carrier."""

    reachable: bool
    again_at: datetime | None
    spent: bool = False


async def record(
    connection: Connection,
    channel: Channel,
    destination: str,
    reachable: bool,
    reason: str,
    changed_at: datetime,
) -> bool:
    """Keep a method's standing unless a newer change is already kept; True if kept."""
    kept = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.contact_reachability
                (channel, destination, reachable, reason, changed_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (channel, destination) DO UPDATE
            SET reachable = excluded.reachable, reason = excluded.reason,
                changed_at = excluded.changed_at
            WHERE contact_reachability.changed_at <= excluded.changed_at
            RETURNING true""",
        channel.value,
        destination,
        reachable,
        reason,
        changed_at,
    )
    return bool(kept)


async def of_coaches(connection: Connection, coach_ids: Iterable[UUID]) -> dict[UUID, Reach]:
    """The coaches (of these) any of whose methods notify ever reported on. A coach not
    in the answer has every method in good standing."""
    rows = await connection.fetch(
        f"""SELECT c.coach_id,
                   bool_or(r.reachable IS NOT FALSE) AS reachable,
                   max(r.changed_at) FILTER (WHERE r.reachable) AS again_at,
                   coalesce(bool_and(r.reason = $2) FILTER (WHERE NOT r.reachable),
                            false) AS spent
            FROM {SCHEMA}.coaches c
            CROSS JOIN LATERAL jsonb_array_elements(c.contact_methods) AS m
            LEFT JOIN {SCHEMA}.contact_reachability r
                   ON r.channel = m->>'channel' AND r.destination = m->>'destination'
            WHERE c.coach_id = ANY($1::uuid[])
            GROUP BY c.coach_id
            HAVING count(r.channel) > 0""",
        list(coach_ids),
        OFFER_CEILING_REACHED,
    )
    return {
        row["coach_id"]: Reach(
            row["reachable"], row["again_at"], not row["reachable"] and row["spent"]
        )
        for row in rows
    }


async def coaches_with_method(
    connection: Connection, channel: Channel, destination: str
) -> list[UUID]:
    """The roster's coaches that list this contact method."""
    rows = await connection.fetch(
        f"""SELECT coach_id FROM {SCHEMA}.coaches
            WHERE contact_methods @> jsonb_build_array(
                jsonb_build_object('channel', $1::text, 'destination', $2::text))""",
        channel.value,
        destination,
    )
    return [row["coach_id"] for row in rows]
