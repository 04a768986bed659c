"""Dispatches and site settings in PostgreSQL, each dispatch saved whole under its row lock."""

from datetime import timedelta
from uuid import UUID

from pydantic import TypeAdapter

from handoff_matching import SCHEMA
from handoff_matching.domain.dispatch import Dispatch, DispatchMode, DispatchSettings
from handoff_platform.database import Connection

_DOCUMENT = TypeAdapter(Dispatch)


async def site_settings(
    connection: Connection, site_id: str
) -> tuple[DispatchSettings, bool, tuple[UUID, ...]]:
    """The site's dispatch settings, interpreter availability and supervisors (defaults if none)."""
    row = await connection.fetchrow(
        f"""SELECT mode, ack_timeout_seconds, arrival_target_seconds, broadcast_size,
                   interpreter_available, supervisors
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
                arrival_target_seconds, broadcast_size, interpreter_available, supervisors)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (site_id) DO UPDATE SET mode = excluded.mode,
                ack_timeout_seconds = excluded.ack_timeout_seconds,
                arrival_target_seconds = excluded.arrival_target_seconds,
                broadcast_size = excluded.broadcast_size,
                interpreter_available = excluded.interpreter_available,
                supervisors = excluded.supervisors""",
        site_id,
        settings.mode.value,
        settings.ack_timeout.total_seconds(),
        settings.arrival_target.total_seconds(),
        settings.broadcast_size,
        interpreter_available,
        list(supervisors),
    )


async def insert(connection: Connection, dispatch: Dispatch) -> bool:
    """False if this referral already has a dispatch."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.dispatches (referral_id, state, assigned_coach, document)
            VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING RETURNING true""",
        dispatch.facts.referral_id,
        dispatch.state.value,
        dispatch.assigned_coach,
        _DOCUMENT.dump_json(dispatch).decode(),
    )
    return bool(inserted)


async def lock(connection: Connection, referral_id: UUID) -> Dispatch | None:
    document = await connection.fetchval(
        f"SELECT document FROM {SCHEMA}.dispatches WHERE referral_id = $1 FOR UPDATE",
        referral_id,
    )
    return _DOCUMENT.validate_json(document) if document is not None else None


async def save(connection: Connection, dispatch: Dispatch) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.dispatches
            SET state = $2, assigned_coach = $3, document = $4::jsonb, updated_at = now()
            WHERE referral_id = $1""",
        dispatch.facts.referral_id,
        dispatch.state.value,
        dispatch.assigned_coach,
        _DOCUMENT.dump_json(dispatch).decode(),
    )


async def open_assignments(connection: Connection, coach_ids: list[UUID]) -> dict[UUID, int]:
    rows = await connection.fetch(
        f"""SELECT assigned_coach, count(*) AS holding FROM {SCHEMA}.dispatches
            WHERE state = 'assigned' AND assigned_coach = ANY($1::uuid[])
            GROUP BY assigned_coach""",
        coach_ids,
    )
    return {row["assigned_coach"]: row["holding"] for row in rows}


async def awaiting_acceptance(connection: Connection) -> dict[str, tuple[int, float]]:
    """Per site: referrals still being offered, and how long the oldest has waited (s)."""
    rows = await connection.fetch(
        f"""SELECT document->'facts'->>'site_id' AS site_id, count(*) AS waiting,
                   extract(epoch FROM now() - min(created_at))::float8 AS oldest
            FROM {SCHEMA}.dispatches WHERE state = 'offering' GROUP BY 1"""
    )
    return {row["site_id"]: (row["waiting"], row["oldest"]) for row in rows}
