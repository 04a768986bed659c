"""Dispatches and site settings in PostgreSQL, each dispatch saved whole under its row lock."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from uuid import UUID

from pydantic import TypeAdapter

from handoff_matching import SCHEMA
from handoff_matching.domain.dispatch import Dispatch, DispatchMode, DispatchSettings
from handoff_matching.domain.load import PRIORITY
from handoff_platform.database import Connection

_DOCUMENT = TypeAdapter(Dispatch)


async def site_settings(
    connection: Connection, site_id: str
) -> tuple[DispatchSettings, bool, tuple[UUID, ...]]:
    """The site's dispatch settings, interpreter availability and supervisors (defaults if none)."""
    row = await connection.fetchrow(
        f"""SELECT mode, ack_timeout_seconds, arrival_target_seconds, broadcast_size,
                   interpreter_available, supervisors, page_deadline_seconds,
                   reoffer_every_seconds, give_up_after_seconds
            FROM {SCHEMA}.site_settings WHERE site_id = $1""",
        site_id,
    )
    if row is None:
        return DispatchSettings(), True, ()
    settings = DispatchSettings(
        mode=DispatchMode(row["mode"]),
        ack_timeout=timedelta(seconds=row["ack_timeout_seconds"]),
        arrival_target=timedelta(seconds=row["arrival_target_seconds"]),
        broadcast_size=row["broadcast_size"],
        page_deadline=timedelta(seconds=row["page_deadline_seconds"]),
        reoffer_every=timedelta(seconds=row["reoffer_every_seconds"]),
        give_up_after=timedelta(seconds=row["give_up_after_seconds"]),
    )
    return settings, row["interpreter_available"], tuple(row["supervisors"])


async def put_site_settings(
    connection: Connection,
    site_id: str,
    settings: DispatchSettings,
    interpreter_available: bool,
    supervisors: tuple[UUID, ...],
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.site_settings (site_id, mode, ack_timeout_seconds,
                arrival_target_seconds, broadcast_size, interpreter_available, supervisors,
                page_deadline_seconds, reoffer_every_seconds, give_up_after_seconds)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (site_id) DO UPDATE SET mode = excluded.mode,
                ack_timeout_seconds = excluded.ack_timeout_seconds,
                arrival_target_seconds = excluded.arrival_target_seconds,
                broadcast_size = excluded.broadcast_size,
                interpreter_available = excluded.interpreter_available,
                supervisors = excluded.supervisors,
                page_deadline_seconds = excluded.page_deadline_seconds,
                reoffer_every_seconds = excluded.reoffer_every_seconds,
                give_up_after_seconds = excluded.give_up_after_seconds""",
        site_id,
        settings.mode.value,
        settings.ack_timeout.total_seconds(),
        settings.arrival_target.total_seconds(),
        settings.broadcast_size,
        interpreter_available,
        list(supervisors),
        settings.page_deadline.total_seconds(),
        settings.reoffer_every.total_seconds(),
        settings.give_up_after.total_seconds(),
    )


async def insert(connection: Connection, dispatch: Dispatch) -> bool:
    """False if this referral already has a dispatch."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.dispatches (referral_id, state, assigned_coach, document,
                line_priority)
            VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT DO NOTHING RETURNING true""",
        dispatch.facts.referral_id,
        dispatch.state.value,
        dispatch.assigned_coach,
        _DOCUMENT.dump_json(dispatch).decode(),
        PRIORITY[dispatch.facts.urgency],
    )
    return bool(inserted)


async def lock(connection: Connection, referral_id: UUID, wait: bool = True) -> Dispatch | None:
    """The referral's dispatch, its row locked until the transaction ends; None if unknown.
    With `wait` False, raises asyncpg.LockNotAvailableError at once if another transaction
    holds the row: a timer's handler, which must not wait for it (`handoff_platform.timers`)."""
    document = await connection.fetchval(
        f"""SELECT document FROM {SCHEMA}.dispatches WHERE referral_id = $1
            FOR UPDATE{"" if wait else " NOWAIT"}""",
        referral_id,
    )
    return _DOCUMENT.validate_json(document) if document is not None else None


async def save(connection: Connection, dispatch: Dispatch) -> frozenset[UUID]:
    """Store the dispatch with the coaches it holds; returns those it held before (the
    caller holds the row lock, so "before" is this transaction's own starting point)."""
    held_before = await connection.fetchval(
        f"""UPDATE {SCHEMA}.dispatches AS d
            SET state = $2, assigned_coach = $3, document = $4::jsonb, updated_at = now(),
                holding = $5
            FROM (SELECT holding FROM {SCHEMA}.dispatches WHERE referral_id = $1) AS old
            WHERE d.referral_id = $1
            RETURNING old.holding""",
        dispatch.facts.referral_id,
        dispatch.state.value,
        dispatch.assigned_coach,
        _DOCUMENT.dump_json(dispatch).decode(),
        list(dispatch.holding),
    )
    return frozenset(held_before or ())


async def lock_coaches(connection: Connection, coach_ids: list[UUID]) -> None:
    """Serialise, until the transaction ends, every transaction that may add to these
    coaches' load: advisory locks taken in one global order (no deadlock between them),
    always after the dispatch's row lock and never before another dispatch's."""
    await connection.execute(
        """SELECT pg_advisory_xact_lock(key) FROM (
               SELECT DISTINCT hashtextextended(coach_id::text, 0) AS key
               FROM unnest($1::uuid[]) AS coach_id ORDER BY key) AS keys""",
        coach_ids,
    )


async def loads(connection: Connection, coach_ids: list[UUID]) -> dict[UUID, int]:
    """Each coach's load: the referrals holding them (open offers + assignments), all sites."""
    rows = await connection.fetch(
        f"""SELECT coach_id, count(*) AS load
            FROM {SCHEMA}.dispatches, unnest(holding) AS coach_id
            WHERE holding && $1::uuid[] AND coach_id = ANY($1::uuid[])
            GROUP BY coach_id""",
        coach_ids,
    )
    return {row["coach_id"]: row["load"] for row in rows}


async def assignments(connection: Connection, coach_id: UUID) -> int:
    """How many referrals the coach is assigned to now (arrival not yet reported)."""
    held: int = await connection.fetchval(
        f"""SELECT count(*) FROM {SCHEMA}.dispatches
            WHERE state = 'assigned' AND assigned_coach = $1""",
        coach_id,
    )
    return held


async def waiting_ahead(
    connection: Connection, state: str, priority: int, referral_id: UUID
) -> bool:
    """True if a referral of a site in `state` other than `referral_id` waits in line for
    capacity (state `waiting`) with a line priority of `priority` or more urgent (lower):
    a referral arriving now queues behind it."""
    found: bool = await connection.fetchval(
        f"""SELECT EXISTS (
                SELECT 1 FROM {SCHEMA}.dispatches
                WHERE state = 'waiting' AND line_priority <= $2 AND referral_id <> $3
                  AND document->'facts'->>'site_state' = $1)""",
        state,
        priority,
        referral_id,
    )
    return found


LinePlace = tuple[int, datetime, UUID]
"""(priority, arrival, referral id): a referral's place in the waiting line."""


async def anyone_in_line(connection: Connection) -> bool:
    """Whether any referral waits in line or is unassigned (what `claim_next_in_line` takes
    from), read without locking anything."""
    # In the line's order, as claim_next_in_line reads it: PostgreSQL then reads the line's
    # own index, where an EXISTS over the same states scanned the whole table (0.5 ms a
    # call in the end-to-end bench, against 0.016 ms).
    return bool(
        await connection.fetchval(
            f"""SELECT true FROM {SCHEMA}.dispatches WHERE state IN ('waiting', 'unassigned')
                ORDER BY line_priority, created_at, referral_id LIMIT 1"""
        )
    )


async def claim_next_in_line(
    connection: Connection, after: LinePlace | None, passing_over: Iterable[str] = ()
) -> tuple[LinePlace, Dispatch] | None:
    """Lock the first referral in line after `after`, of a site not in `passing_over`, that
    no other transaction holds (SKIP LOCKED: replicas serve the line side by side), most
    urgent and longest first."""
    row = await connection.fetchrow(
        f"""SELECT line_priority, created_at, referral_id, document
            FROM {SCHEMA}.dispatches
            WHERE state IN ('waiting', 'unassigned')
              AND ($1::smallint IS NULL
                   OR (line_priority, created_at, referral_id) > ($1, $2, $3))
              AND NOT document->'facts'->>'site_id' = ANY($4::text[])
            ORDER BY line_priority, created_at, referral_id
            LIMIT 1 FOR UPDATE SKIP LOCKED""",
        *(after or (None, None, None)),
        list(passing_over),
    )
    if row is None:
        return None
    place = (row["line_priority"], row["created_at"], row["referral_id"])
    return place, _DOCUMENT.validate_json(row["document"])


async def awaiting_acceptance(connection: Connection) -> dict[str, tuple[int, float]]:
    """Per site: referrals no coach has accepted yet (offered, waiting in line or
    unassigned), and how long the oldest has waited (s)."""
    rows = await connection.fetch(
        f"""SELECT document->'facts'->>'site_id' AS site_id, count(*) AS waiting,
                   extract(epoch FROM now() - min(created_at))::float8 AS oldest
            FROM {SCHEMA}.dispatches WHERE state IN ('offering', 'waiting', 'unassigned')
            GROUP BY 1"""
    )
    return {row["site_id"]: (row["waiting"], row["oldest"]) for row in rows}


async def in_line(connection: Connection) -> dict[tuple[str, str], int]:
    """Per (site, state): referrals waiting in line or unassigned."""
    rows = await connection.fetch(
        f"""SELECT document->'facts'->>'site_id' AS site_id, state, count(*) AS n
            FROM {SCHEMA}.dispatches WHERE state IN ('waiting', 'unassigned') GROUP BY 1, 2"""
    )
    return {(row["site_id"], row["state"]): row["n"] for row in rows}


async def load_against_capacity(connection: Connection) -> tuple[int, int, int]:
    """Across active coaches: (slots held, slots there are, coaches at capacity)."""
    row = await connection.fetchrow(
        f"""SELECT coalesce(sum(l.load), 0)::int AS used,
                   coalesce(sum(c.max_concurrent), 0)::int AS slots,
                   count(*) FILTER (WHERE l.load >= c.max_concurrent)::int AS full
            FROM {SCHEMA}.coaches c LEFT JOIN (
                SELECT coach_id, count(*) AS load
                FROM {SCHEMA}.dispatches, unnest(holding) AS coach_id
                WHERE state IN ('offering', 'assigned')  -- the others hold nobody
                GROUP BY coach_id
            ) l USING (coach_id)
            WHERE c.active"""
    )
    assert row is not None  # an aggregate always has its one row
    return row["used"], row["slots"], row["full"]
