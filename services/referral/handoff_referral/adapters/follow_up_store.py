"""PostgreSQL storage of visits and follow-ups (migration 0008). Every function runs on
the caller's connection, so the use case decides the transaction. Contact details are
stored and returned sealed only (adapters/contact_vault.py)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from handoff_platform.database import Connection
from handoff_referral import SCHEMA
from handoff_referral.domain.follow_ups import TaskState, Window
from handoff_referral.domain.status import Status
from handoff_schemas.vocabulary import FollowUpResult, RecoveryOutcome


@dataclass(frozen=True)
class AcceptedOffer:
    """The offer a referral's coach accepted, with the referral as it stands."""

    offer_id: UUID
    referral_id: UUID
    coach_id: UUID
    site_id: str
    time_zone: str
    short_name: str
    follow_up_days: tuple[int, ...]
    status: Status
    correlation_id: str
    latest: bool  # the referral's most recent accepted offer (a re-offer replaces one)


@dataclass(frozen=True)
class Visit:
    referral_id: UUID
    offer_id: UUID
    coach_id: UUID
    site_id: str
    follow_up_consent: bool
    recorded_at: datetime
    consent_revoked_at: datetime | None


@dataclass(frozen=True)
class Task:
    task_id: UUID
    referral_id: UUID
    site_id: str
    coach_id: UUID
    window_days: int
    window_opens_at: datetime
    window_ends_at: datetime
    attempt: int
    due_at: datetime
    state: TaskState


@dataclass(frozen=True)
class Assignment:
    """A FollowUpAssigned as kept; `latest` is False once another replaced it."""

    assignment_id: UUID
    task_id: UUID
    attempt: int
    coach_id: UUID
    latest: bool


async def accept_offer(
    connection: Connection, offer_id: UUID, referral_id: UUID, coach_id: UUID, at: datetime
) -> None:
    """Keep the accepted offer (CoachAssigned); a redelivery changes nothing."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.accepted_offers (offer_id, referral_id, coach_id, assigned_at)
            VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        offer_id,
        referral_id,
        coach_id,
        at,
    )


async def accepted_offer(
    connection: Connection, offer_id: UUID, for_update: bool = False
) -> AcceptedOffer | None:
    """The accepted offer and its referral (locked with `for_update`); None if unknown."""
    row = await connection.fetchrow(
        f"""SELECT a.offer_id, a.referral_id, a.coach_id, r.site_id, s.time_zone, s.short_name,
                   s.follow_up_days, r.status, r.correlation_id,
                   NOT EXISTS (SELECT 1 FROM {SCHEMA}.accepted_offers later
                               WHERE later.referral_id = a.referral_id
                                 AND later.assigned_at > a.assigned_at) AS latest
            FROM {SCHEMA}.accepted_offers a
            JOIN {SCHEMA}.referrals r USING (referral_id)
            JOIN {SCHEMA}.sites s ON s.site_id = r.site_id
            WHERE a.offer_id = $1 {"FOR UPDATE OF r" if for_update else ""}""",
        offer_id,
    )
    if row is None:
        return None
    values = dict(row)
    return AcceptedOffer(
        **{
            **values,
            "status": Status(values["status"]),
            "follow_up_days": tuple(values["follow_up_days"]),
        }
    )


_VISIT_COLUMNS = """referral_id, offer_id, coach_id, site_id, follow_up_consent, recorded_at,
    consent_revoked_at"""


async def visit(
    connection: Connection, referral_id: UUID, for_update: bool = False
) -> Visit | None:
    row = await connection.fetchrow(
        f"""SELECT {_VISIT_COLUMNS} FROM {SCHEMA}.visits WHERE referral_id = $1
            {"FOR UPDATE" if for_update else ""}""",
        referral_id,
    )
    return Visit(**dict(row)) if row else None


async def site_visit(
    connection: Connection, site_id: str, referral_id: UUID, for_update: bool = False
) -> Visit | None:
    """The visit of the site's referral; None for another site's (its existence is not
    the caller's business) or one not recorded."""
    found = await visit(connection, referral_id, for_update)
    return found if found is not None and found.site_id == site_id else None


async def insert_visit(
    connection: Connection,
    offer: AcceptedOffer,
    consent: bool,
    outcomes: frozenset[RecoveryOutcome],
    at: datetime,
) -> bool:
    """Record the visit; False, storing nothing, if the referral's visit is recorded."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.visits (referral_id, offer_id, coach_id, site_id,
                follow_up_consent, outcomes, recorded_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING true""",
        offer.referral_id,
        offer.offer_id,
        offer.coach_id,
        offer.site_id,
        consent,
        sorted(o.value for o in outcomes),
        at,
    )
    return bool(inserted)


async def mark_consent_revoked(connection: Connection, referral_id: UUID, at: datetime) -> None:
    await connection.execute(
        f"UPDATE {SCHEMA}.visits SET consent_revoked_at = $2 WHERE referral_id = $1",
        referral_id,
        at,
    )


async def store_contact(connection: Connection, referral_id: UUID, sealed: bytes) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.follow_up_contacts (referral_id, sealed) VALUES ($1, $2)
            ON CONFLICT (referral_id) DO UPDATE SET sealed = excluded.sealed, updated_at = now()""",
        referral_id,
        sealed,
    )


async def sealed_contact(connection: Connection, referral_id: UUID) -> bytes | None:
    sealed: bytes | None = await connection.fetchval(
        f"SELECT sealed FROM {SCHEMA}.follow_up_contacts WHERE referral_id = $1", referral_id
    )
    return sealed


async def erase_contact(connection: Connection, referral_id: UUID) -> bool:
    """Delete the row: the sealed number is gone, not flagged. False if there was none."""
    status = await connection.execute(
        f"DELETE FROM {SCHEMA}.follow_up_contacts WHERE referral_id = $1", referral_id
    )
    return bool(status != "DELETE 0")


async def sealed_contacts_batch(
    connection: Connection, after: UUID | None, limit: int
) -> list[tuple[UUID, bytes]]:
    """Up to `limit` sealed contacts after `after` by referral id, locked to re-seal."""
    rows = await connection.fetch(
        f"""SELECT referral_id, sealed FROM {SCHEMA}.follow_up_contacts
            WHERE $1::uuid IS NULL OR referral_id > $1
            ORDER BY referral_id LIMIT $2 FOR UPDATE""",
        after,
        limit,
    )
    return [(r["referral_id"], r["sealed"]) for r in rows]


async def insert_tasks(
    connection: Connection, visit: Visit, task_ids: Sequence[UUID], windows: Sequence[Window]
) -> None:
    await connection.executemany(
        f"""INSERT INTO {SCHEMA}.follow_up_tasks (task_id, referral_id, site_id, coach_id,
                window_days, window_opens_at, window_ends_at, due_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $6)""",
        [
            (t, visit.referral_id, visit.site_id, visit.coach_id, w.days, w.opens_at, w.ends_at)
            for t, w in zip(task_ids, windows, strict=True)
        ],
    )


_TASK_COLUMNS = """task_id, referral_id, site_id, coach_id, window_days, window_opens_at,
    window_ends_at, attempt, due_at, state"""


def _task(row: dict[str, object]) -> Task:
    return Task(**{**row, "state": TaskState(row["state"])})  # type: ignore[arg-type]


async def task(connection: Connection, task_id: UUID, for_update: bool = False) -> Task | None:
    row = await connection.fetchrow(
        f"""SELECT {_TASK_COLUMNS} FROM {SCHEMA}.follow_up_tasks WHERE task_id = $1
            {"FOR UPDATE" if for_update else ""}""",
        task_id,
    )
    return _task(dict(row)) if row else None


async def tasks(connection: Connection, referral_id: UUID, for_update: bool = False) -> list[Task]:
    """The referral's tasks by window (locked with `for_update`)."""
    rows = await connection.fetch(
        f"""SELECT {_TASK_COLUMNS} FROM {SCHEMA}.follow_up_tasks WHERE referral_id = $1
            ORDER BY window_days {"FOR UPDATE" if for_update else ""}""",
        referral_id,
    )
    return [_task(dict(r)) for r in rows]


async def set_task_state(
    connection: Connection,
    task_id: UUID,
    state: TaskState,
    at: datetime | None = None,
    attempt: int | None = None,
    due_at: datetime | None = None,
) -> None:
    """Move the task to `state`; a closing state records `at`; a retry its new attempt
    and due time."""
    await connection.execute(
        f"""UPDATE {SCHEMA}.follow_up_tasks
            SET state = $2, closed_at = coalesce($3, closed_at),
                attempt = coalesce($4, attempt), due_at = coalesce($5, due_at)
            WHERE task_id = $1""",
        task_id,
        state.value,
        None if state.open else at,
        attempt,
        due_at,
    )


async def add_assignment(
    connection: Connection,
    assignment_id: UUID,
    task_id: UUID,
    attempt: int,
    coach_id: UUID,
    at: datetime,
) -> None:
    """Keep a FollowUpAssigned; a redelivery changes nothing."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.follow_up_assignments
                (assignment_id, task_id, attempt, coach_id, assigned_at)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        assignment_id,
        task_id,
        attempt,
        coach_id,
        at,
    )


async def assignment(connection: Connection, assignment_id: UUID) -> Assignment | None:
    """The assignment, and whether it is the latest of its (task, attempt): ties in time
    go to the larger id, so every replica agrees."""
    row = await connection.fetchrow(
        f"""SELECT a.assignment_id, a.task_id, a.attempt, a.coach_id,
                   NOT EXISTS (SELECT 1 FROM {SCHEMA}.follow_up_assignments later
                               WHERE later.task_id = a.task_id AND later.attempt = a.attempt
                                 AND (later.assigned_at, later.assignment_id)
                                     > (a.assigned_at, a.assignment_id)) AS latest
            FROM {SCHEMA}.follow_up_assignments a WHERE a.assignment_id = $1""",
        assignment_id,
    )
    return Assignment(**dict(row)) if row else None


async def add_attempt(
    connection: Connection,
    task: Task,
    coach_id: UUID,
    result: FollowUpResult,
    outcomes: frozenset[RecoveryOutcome],
    at: datetime,
) -> bool:
    """Record the task's current attempt; False if it was recorded already."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.follow_up_attempts
                (task_id, attempt, coach_id, result, outcomes, attempted_at)
            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true""",
        task.task_id,
        task.attempt,
        coach_id,
        result.value,
        sorted(o.value for o in outcomes),
        at,
    )
    return bool(inserted)


@dataclass(frozen=True)
class RecordedAttempt:
    """The result a task's attempt was recorded with."""

    result: FollowUpResult
    outcomes: frozenset[RecoveryOutcome]


async def recorded_attempt(
    connection: Connection, task_id: UUID, attempt: int
) -> RecordedAttempt | None:
    """The task's attempt `attempt` as recorded; None if it was not."""
    row = await connection.fetchrow(
        f"""SELECT result, outcomes FROM {SCHEMA}.follow_up_attempts
            WHERE task_id = $1 AND attempt = $2""",
        task_id,
        attempt,
    )
    if row is None:
        return None
    return RecordedAttempt(
        FollowUpResult(row["result"]), frozenset(RecoveryOutcome(o) for o in row["outcomes"])
    )


async def set_schedule(connection: Connection, site_id: str, days: Sequence[int]) -> bool:
    """Set the site's follow-up days; False if there is no such site."""
    updated = await connection.fetchval(
        f"""UPDATE {SCHEMA}.sites SET follow_up_days = $2 WHERE site_id = $1 RETURNING true""",
        site_id,
        list(days),
    )
    return bool(updated)


async def schedule(connection: Connection, site_id: str) -> tuple[int, ...] | None:
    days = await connection.fetchval(
        f"SELECT follow_up_days FROM {SCHEMA}.sites WHERE site_id = $1", site_id
    )
    return tuple(days) if days is not None else None


async def correlation_id(connection: Connection, referral_id: UUID) -> str:
    found: str = await connection.fetchval(
        f"SELECT correlation_id FROM {SCHEMA}.referrals WHERE referral_id = $1", referral_id
    )
    return found


async def time_zone(connection: Connection, site_id: str) -> str:
    found: str = await connection.fetchval(
        f"SELECT time_zone FROM {SCHEMA}.sites WHERE site_id = $1", site_id
    )
    return found
