"""Follow-up attempts in PostgreSQL (migration 0009), and the roster facts their choice reads."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from handoff_matching import SCHEMA
from handoff_platform.database import Connection
from handoff_schemas.events import FollowUpDue
from handoff_schemas.vocabulary import FollowUpAssignee


@dataclass(frozen=True)
class FollowUp:
    """One follow-up attempt as matching keeps it; `assignment_id` None while waiting."""

    task_id: UUID
    attempt: int
    referral_id: UUID
    correlation_id: str
    site_id: str
    window_days: int
    visiting_coach: UUID
    due_at: datetime
    window_ends_at: datetime
    state: str  # waiting | assigned | attempted | lapsed | cancelled
    assignment_id: UUID | None
    coach_id: UUID | None


_COLUMNS = """task_id, attempt, referral_id, correlation_id, site_id, window_days,
    visiting_coach, due_at, window_ends_at, state, assignment_id, coach_id"""


async def insert(connection: Connection, due: FollowUpDue, correlation_id: str) -> bool:
    """Keep a due attempt as `waiting`; False if this (task, attempt) is known already."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.follow_ups (task_id, attempt, referral_id, correlation_id,
                site_id, window_days, visiting_coach, due_at, window_ends_at, state)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'waiting')
            ON CONFLICT (task_id, attempt) DO NOTHING RETURNING true""",
        due.task_id,
        due.attempt,
        due.referral_id,
        correlation_id,
        due.site_id,
        due.window_days,
        due.coach_id,
        due.due_at,
        due.window_ends_at,
    )
    return bool(inserted)


async def lock(
    connection: Connection, task_id: UUID, attempt: int, wait: bool = True
) -> FollowUp | None:
    """The attempt, locked until the transaction ends; None if unknown. With `wait` False,
    raises asyncpg.LockNotAvailableError at once if another transaction holds it: a timer's
    handler, which must not wait for it (`handoff_platform.timers`)."""
    row = await connection.fetchrow(
        f"""SELECT {_COLUMNS} FROM {SCHEMA}.follow_ups
            WHERE task_id = $1 AND attempt = $2 FOR UPDATE{"" if wait else " NOWAIT"}""",
        task_id,
        attempt,
    )
    return FollowUp(**dict(row)) if row is not None else None


async def assign(
    connection: Connection,
    task_id: UUID,
    attempt: int,
    assignment_id: UUID,
    coach_id: UUID,
    assignee: FollowUpAssignee,
    at: datetime,
) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.follow_ups
            SET state = 'assigned', assignment_id = $3, coach_id = $4, assignee = $5,
                assigned_at = $6
            WHERE task_id = $1 AND attempt = $2""",
        task_id,
        attempt,
        assignment_id,
        coach_id,
        assignee.value,
        at,
    )


async def finish(connection: Connection, task_id: UUID, attempt: int, state: str) -> None:
    """End the attempt: `attempted` (recorded) or `lapsed` (its window ended unassigned)."""
    await connection.execute(
        f"UPDATE {SCHEMA}.follow_ups SET state = $3 WHERE task_id = $1 AND attempt = $2",
        task_id,
        attempt,
        state,
    )


async def assigned_to(connection: Connection, coach_ids: Iterable[UUID]) -> list[tuple[UUID, int]]:
    """(task, attempt) of the open assignments held by any of these coaches."""
    rows = await connection.fetch(
        f"""SELECT task_id, attempt FROM {SCHEMA}.follow_ups
            WHERE state = 'assigned' AND coach_id = ANY($1::uuid[])
            ORDER BY task_id, attempt""",
        list(coach_ids),
    )
    return [(row["task_id"], row["attempt"]) for row in rows]


async def site(connection: Connection, site_id: str) -> tuple[str, str, str] | None:
    """(short name, state, time zone) of a site matching has heard of."""
    row = await connection.fetchrow(
        f"SELECT short_name, state, time_zone FROM {SCHEMA}.site_facts WHERE site_id = $1",
        site_id,
    )
    return (row["short_name"], row["state"], row["time_zone"]) if row else None


async def state_supervisors(connection: Connection, site_id: str, state: str) -> list[UUID]:
    """The site's escalation list, then the other sites' of the same state (by site id),
    each supervisor once."""
    rows = await connection.fetch(
        f"""SELECT s.site_id, s.supervisors FROM {SCHEMA}.site_settings s
            JOIN {SCHEMA}.site_facts f USING (site_id)
            WHERE s.site_id = $1 OR f.state = $2
            ORDER BY s.site_id <> $1, s.site_id""",
        site_id,
        state,
    )
    return list(dict.fromkeys(s for row in rows for s in row["supervisors"]))


async def with_contacts(connection: Connection, coach_ids: Iterable[UUID]) -> set[UUID]:
    """The coaches whose roster entry has at least one contact method."""
    rows = await connection.fetch(
        f"""SELECT coach_id FROM {SCHEMA}.coaches
            WHERE coach_id = ANY($1::uuid[]) AND jsonb_array_length(contact_methods) > 0""",
        list(coach_ids),
    )
    return {row["coach_id"] for row in rows}


async def open_of_referral(connection: Connection, referral_id: UUID) -> list[tuple[UUID, int]]:
    """(task, attempt) of the referral's attempts still waiting or assigned."""
    rows = await connection.fetch(
        f"""SELECT task_id, attempt FROM {SCHEMA}.follow_ups
            WHERE referral_id = $1 AND state IN ('waiting', 'assigned')
            ORDER BY task_id, attempt""",
        referral_id,
    )
    return [(row["task_id"], row["attempt"]) for row in rows]


async def open_counts(connection: Connection, coach_ids: Iterable[UUID]) -> dict[UUID, int]:
    """Open follow-up assignments per coach (of these), to weigh with their referrals."""
    rows = await connection.fetch(
        f"""SELECT coach_id, count(*) AS n FROM {SCHEMA}.follow_ups
            WHERE state = 'assigned' AND coach_id = ANY($1::uuid[]) GROUP BY coach_id""",
        list(coach_ids),
    )
    return {row["coach_id"]: int(row["n"]) for row in rows}


async def claim_orphaned(connection: Connection) -> tuple[UUID, int, UUID, str] | None:
    """Lock one assigned attempt whose coach left the roster (deleted or inactive) before it
    was recorded: (task, attempt, that coach, site). Skips attempts another transaction
    holds."""
    row = await connection.fetchrow(
        f"""SELECT f.task_id, f.attempt, f.coach_id, f.site_id
            FROM {SCHEMA}.follow_ups f LEFT JOIN {SCHEMA}.coaches c USING (coach_id)
            WHERE f.state = 'assigned' AND (c.coach_id IS NULL OR NOT c.active)
            ORDER BY f.task_id, f.attempt
            LIMIT 1 FOR UPDATE OF f SKIP LOCKED"""
    )
    if row is None:
        return None
    return row["task_id"], row["attempt"], row["coach_id"], row["site_id"]
