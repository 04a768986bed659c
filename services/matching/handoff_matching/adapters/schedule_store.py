"""Schedules in PostgreSQL (schema `matching`): layers, rotations, imported calendars,
temporary schedules, calendar tokens, coaches' own OFF / ON, and the schedule version."""

import hashlib
import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg

from handoff_matching import SCHEMA
from handoff_matching.adapters import roster_store
from handoff_matching.adapters.roster_store import _IN_POOLS, _pools
from handoff_matching.domain.layers import Layer, PoolSchedule, ShiftSource, TemporarySchedule
from handoff_matching.domain.rotations import Rotation, ShiftUnit
from handoff_matching.domain.schedules import Interval, Pool, PoolKind, Shift
from handoff_platform.database import Connection


@dataclass(frozen=True)
class LayerRow:
    """A layer as coordinators see it; `rotation` only for a rotation layer."""

    layer_id: UUID
    pool: Pool
    name: str
    priority: int
    kind: str  # weekly, rotation or calendar
    rotation: Rotation | None


async def schedule_version(connection: Connection) -> tuple[UUID, int]:
    """(epoch, version): changes whenever anything that decides the on-call changes."""
    row = await connection.fetchrow(f"SELECT epoch, version FROM {SCHEMA}.schedule_version")
    assert row is not None  # the migration inserted it
    return row["epoch"], row["version"]


def _pool(kind: str, key: str) -> Pool:
    return Pool(PoolKind(kind), key)


def _rotation(row: asyncpg.Record) -> Rotation:
    return Rotation(
        ZoneInfo(row["time_zone"]),
        row["start_date"],
        row["handoff"],
        row["shift_length"],
        ShiftUnit(row["shift_unit"]),
        tuple(row["participants"]),
    )


async def pool_schedules(
    connection: Connection, pools: Sequence[Pool], window: Interval
) -> dict[Pool, PoolSchedule]:
    """Everything deciding each pool's on-call in the window (UTC)."""
    kinds, keys = _pools(pools)
    sources: dict[UUID, list[ShiftSource]] = defaultdict(list)
    layer_rows = await connection.fetch(
        f"""SELECT l.layer_id, l.pool_kind, l.pool_key, l.priority, l.kind, r.time_zone,
                   r.start_date, r.handoff, r.shift_length, r.shift_unit, r.participants
            FROM {SCHEMA}.layers l LEFT JOIN {SCHEMA}.rotations r USING (layer_id)
            WHERE {_IN_POOLS}""",
        kinds,
        keys,
    )
    weekly_priority = {
        _pool(r["pool_kind"], r["pool_key"]): r["priority"]
        for r in layer_rows
        if r["kind"] == "weekly"
    }
    for row in layer_rows:
        if row["kind"] == "rotation":
            sources[row["layer_id"]].append(_rotation(row))
    calendar_rows = await connection.fetch(
        f"""SELECT layer_id, coach_id, starts_at, ends_at FROM {SCHEMA}.calendar_shifts
            WHERE layer_id = ANY($1::uuid[]) AND starts_at < $3 AND $2 < ends_at""",
        [r["layer_id"] for r in layer_rows if r["kind"] == "calendar"],
        window.start,
        window.end,
    )
    for row in calendar_rows:
        sources[row["layer_id"]].append(
            Shift(row["coach_id"], Interval(row["starts_at"], row["ends_at"]))
        )
    layers: dict[Pool, list[Layer]] = defaultdict(list)
    for row in layer_rows:
        if row["kind"] != "weekly" and sources[row["layer_id"]]:
            layers[_pool(row["pool_kind"], row["pool_key"])].append(
                Layer(row["priority"], tuple(sources[row["layer_id"]]))
            )
    weekly: dict[Pool, list[ShiftSource]] = defaultdict(list)
    for shift in await roster_store.shifts_for(connection, pools):
        weekly[shift.pool].append(shift)
    for pool, shifts in weekly.items():
        layers[pool].append(Layer(weekly_priority.get(pool, 0), tuple(shifts)))
    overrides = await roster_store.overrides_for(connection, pools, window)
    temporaries = await _temporaries(connection, pools, window)
    return {
        pool: PoolSchedule(
            pool,
            tuple(layers[pool]),
            tuple(o for o in overrides if o.pool is None or o.pool == pool),
            tuple(temporaries[pool]),
        )
        for pool in pools
    }


async def _temporaries(
    connection: Connection, pools: Sequence[Pool], window: Interval
) -> dict[Pool, list[TemporarySchedule]]:
    rows = await connection.fetch(
        f"""SELECT t.temporary_id, t.pool_kind, t.pool_key, t.starts_at, t.ends_at,
                   coalesce(array_agg(ROW(s.coach_id, s.starts_at, s.ends_at))
                            FILTER (WHERE s.coach_id IS NOT NULL), '{{}}') AS shifts
            FROM {SCHEMA}.temporary_schedules t
                LEFT JOIN {SCHEMA}.temporary_shifts s USING (temporary_id)
            WHERE {_IN_POOLS}
              AND t.starts_at < $4 AND $3 < t.ends_at
            GROUP BY t.temporary_id ORDER BY t.created_at""",
        *_pools(pools),
        window.start,
        window.end,
    )
    found: dict[Pool, list[TemporarySchedule]] = defaultdict(list)
    for row in rows:
        found[_pool(row["pool_kind"], row["pool_key"])].append(
            TemporarySchedule(
                Interval(row["starts_at"], row["ends_at"]),
                tuple(Shift(c, Interval(s, e)) for c, s, e in row["shifts"]),
            )
        )
    return found


async def scheduled_coaches(connection: Connection, pools: Iterable[Pool]) -> list[UUID]:
    """Every coach any layer, override or temporary schedule of the pools names."""
    kinds, keys = _pools(pools)
    rows = await connection.fetch(
        f"""SELECT coach_id FROM {SCHEMA}.shifts WHERE {_IN_POOLS}
            UNION SELECT coach_id FROM {SCHEMA}.overrides WHERE {_IN_POOLS}
            UNION SELECT unnest(r.participants) FROM {SCHEMA}.rotations r
                JOIN {SCHEMA}.layers USING (layer_id) WHERE {_IN_POOLS}
            UNION SELECT c.coach_id FROM {SCHEMA}.calendar_shifts c
                JOIN {SCHEMA}.layers USING (layer_id) WHERE {_IN_POOLS}
            UNION SELECT s.coach_id FROM {SCHEMA}.temporary_shifts s
                JOIN {SCHEMA}.temporary_schedules USING (temporary_id) WHERE {_IN_POOLS}""",
        kinds,
        keys,
    )
    return [row["coach_id"] for row in rows]


async def coach_pools(connection: Connection, coach_id: UUID) -> list[Pool]:
    """Every pool in which the coach has weekly shifts, a rotation turn, calendar or
    temporary shifts, or an override adding them."""
    rows = await connection.fetch(
        f"""SELECT pool_kind, pool_key FROM {SCHEMA}.shifts WHERE coach_id = $1
            UNION SELECT pool_kind, pool_key FROM {SCHEMA}.overrides
                WHERE coach_id = $1 AND kind <> 'remove'
            UNION SELECT pool_kind, pool_key FROM {SCHEMA}.layers
                JOIN {SCHEMA}.rotations USING (layer_id) WHERE $1 = ANY(participants)
            UNION SELECT pool_kind, pool_key FROM {SCHEMA}.layers
                JOIN {SCHEMA}.calendar_shifts USING (layer_id) WHERE coach_id = $1
            UNION SELECT pool_kind, pool_key FROM {SCHEMA}.temporary_schedules
                JOIN {SCHEMA}.temporary_shifts USING (temporary_id) WHERE coach_id = $1
            ORDER BY 1, 2""",
        coach_id,
    )
    return [_pool(row["pool_kind"], row["pool_key"]) for row in rows]


class NameTaken(ValueError):
    """The pool already has a layer of that name."""


async def add_rotation(
    connection: Connection, pool: Pool, name: str, priority: int, rotation: Rotation
) -> UUID:
    """A new rotation layer; raises NameTaken, or asyncpg's ForeignKeyViolationError never
    (participants are checked by `unknown_coaches` first)."""
    layer_id = uuid4()
    async with connection.transaction():
        await _insert_layer(connection, layer_id, pool, name, priority, "rotation")
        await connection.execute(
            f"""INSERT INTO {SCHEMA}.rotations (layer_id, time_zone, start_date, handoff,
                    shift_length, shift_unit, participants)
                VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            layer_id,
            rotation.zone.key,
            rotation.start_date,
            rotation.handoff,
            rotation.shift_length,
            rotation.unit.value,
            list(rotation.participants),
        )
    return layer_id


class NotARotation(LookupError):
    """No rotation layer has this id (none at all, or a weekly or calendar layer)."""


class OtherPool(ValueError):
    """The rotation belongs to another pool than the one named: a layer stays in its pool."""


async def layer_at(connection: Connection, layer_id: UUID) -> tuple[Pool, str] | None:
    """(pool, kind) of the layer, or None when there is no such layer."""
    row = await connection.fetchrow(
        f"SELECT pool_kind, pool_key, kind FROM {SCHEMA}.layers WHERE layer_id = $1", layer_id
    )
    return (_pool(row["pool_kind"], row["pool_key"]), row["kind"]) if row else None


async def replace_rotation(
    connection: Connection,
    layer_id: UUID,
    pool: Pool,
    name: str,
    priority: int,
    rotation: Rotation,
) -> None:
    """Rewrite the rotation layer `layer_id` in place (same id, so calendar UIDs and the
    change history stay): its name, priority and every rotation setting. Raises
    NotARotation, OtherPool (the layer is in another pool), NameTaken (another layer of the
    pool has `name`)."""
    async with connection.transaction():
        row = await connection.fetchrow(
            f"""SELECT pool_kind, pool_key, kind FROM {SCHEMA}.layers
                WHERE layer_id = $1 FOR UPDATE""",
            layer_id,
        )
        if row is None or row["kind"] != "rotation":
            raise NotARotation(layer_id)
        if _pool(row["pool_kind"], row["pool_key"]) != pool:
            raise OtherPool(layer_id)
        try:
            async with connection.transaction():  # a savepoint: the name clash is ours to say
                await connection.execute(
                    f"UPDATE {SCHEMA}.layers SET name = $2, priority = $3 WHERE layer_id = $1",
                    layer_id,
                    name,
                    priority,
                )
        except asyncpg.UniqueViolationError:
            raise NameTaken(name) from None
        await connection.execute(
            f"""UPDATE {SCHEMA}.rotations SET time_zone = $2, start_date = $3, handoff = $4,
                    shift_length = $5, shift_unit = $6, participants = $7
                WHERE layer_id = $1""",
            layer_id,
            rotation.zone.key,
            rotation.start_date,
            rotation.handoff,
            rotation.shift_length,
            rotation.unit.value,
            list(rotation.participants),
        )


async def _insert_layer(
    connection: Connection, layer_id: UUID, pool: Pool, name: str, priority: int, kind: str
) -> None:
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.layers (layer_id, pool_kind, pool_key, name, priority, kind)
            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pool_kind, pool_key, name) DO NOTHING
            RETURNING true""",
        layer_id,
        pool.kind.value,
        pool.key,
        name,
        priority,
        kind,
    )
    if not inserted:
        raise NameTaken(name)


async def put_calendar_layer(
    connection: Connection, pool: Pool, name: str, priority: int, shifts: Sequence[Shift]
) -> UUID:
    """The pool's calendar layer of that name now holds exactly `shifts` (created if new);
    raises NameTaken when a layer of another kind has the name."""
    async with connection.transaction():
        row = await connection.fetchrow(
            f"""SELECT layer_id, kind FROM {SCHEMA}.layers
                WHERE pool_kind = $1 AND pool_key = $2 AND name = $3 FOR UPDATE""",
            pool.kind.value,
            pool.key,
            name,
        )
        if row is None:
            layer_id = uuid4()
            await _insert_layer(connection, layer_id, pool, name, priority, "calendar")
        elif row["kind"] != "calendar":
            raise NameTaken(name)
        else:
            layer_id = row["layer_id"]
            await connection.execute(
                f"UPDATE {SCHEMA}.layers SET priority = $2 WHERE layer_id = $1", layer_id, priority
            )
            await connection.execute(
                f"DELETE FROM {SCHEMA}.calendar_shifts WHERE layer_id = $1", layer_id
            )
        await connection.executemany(
            f"""INSERT INTO {SCHEMA}.calendar_shifts (layer_id, coach_id, starts_at, ends_at)
                VALUES ($1, $2, $3, $4)""",
            [(layer_id, s.coach_id, s.interval.start, s.interval.end) for s in shifts],
        )
    return layer_id


async def list_layers(connection: Connection, pool: Pool | None = None) -> list[LayerRow]:
    """Layers (of one pool, or all), by pool, then highest priority first."""
    rows = await connection.fetch(
        f"""SELECT l.layer_id, l.pool_kind, l.pool_key, l.name, l.priority, l.kind, r.time_zone,
                   r.start_date, r.handoff, r.shift_length, r.shift_unit, r.participants
            FROM {SCHEMA}.layers l LEFT JOIN {SCHEMA}.rotations r USING (layer_id)
            WHERE $1::text IS NULL OR (l.pool_kind = $1 AND l.pool_key = $2)
            ORDER BY l.pool_kind, l.pool_key, l.priority DESC, l.name""",
        pool.kind.value if pool else None,
        pool.key if pool else None,
    )
    return [
        LayerRow(
            row["layer_id"],
            _pool(row["pool_kind"], row["pool_key"]),
            row["name"],
            row["priority"],
            row["kind"],
            _rotation(row) if row["kind"] == "rotation" else None,
        )
        for row in rows
    ]


async def set_layer_priority(connection: Connection, layer_id: UUID, priority: int) -> bool:
    """False when there is no such layer."""
    updated = await connection.fetchval(
        f"UPDATE {SCHEMA}.layers SET priority = $2 WHERE layer_id = $1 RETURNING true",
        layer_id,
        priority,
    )
    return bool(updated)


async def delete_layer(connection: Connection, layer_id: UUID) -> bool:
    """Deletes a rotation or calendar layer (a weekly layer goes with its shifts, by roster
    import); False when there is no such layer of those kinds."""
    deleted = await connection.fetchval(
        f"""DELETE FROM {SCHEMA}.layers WHERE layer_id = $1 AND kind <> 'weekly'
            RETURNING true""",
        layer_id,
    )
    return bool(deleted)


class TemporaryOverlaps(Exception):
    """The pool already has a temporary schedule over part of the window: two would leave
    which one holds undefined."""

    def __init__(self, temporary_id: UUID, window: Interval) -> None:
        super().__init__(f"temporary schedule {temporary_id} overlaps")
        self.temporary_id = temporary_id
        self.window = window


async def add_temporary(
    connection: Connection, pool: Pool, window: Interval, shifts: Sequence[Shift]
) -> UUID:
    """A temporary schedule: for the window, exactly these shifts. Raises TemporaryOverlaps
    if one of the pool's temporary schedules overlaps the window (checked under a lock per
    pool, so two at once cannot both pass)."""
    temporary_id = uuid4()
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext('handoff_temporary:' || $1))",
            f"{pool.kind.value}:{pool.key}",
        )
        clash = await connection.fetchrow(
            f"""SELECT temporary_id, starts_at, ends_at FROM {SCHEMA}.temporary_schedules
                WHERE pool_kind = $1 AND pool_key = $2 AND starts_at < $4 AND ends_at > $3
                ORDER BY starts_at LIMIT 1""",
            pool.kind.value,
            pool.key,
            window.start,
            window.end,
        )
        if clash is not None:
            raise TemporaryOverlaps(
                clash["temporary_id"], Interval(clash["starts_at"], clash["ends_at"])
            )
        await connection.execute(
            f"""INSERT INTO {SCHEMA}.temporary_schedules
                    (temporary_id, pool_kind, pool_key, starts_at, ends_at)
                VALUES ($1, $2, $3, $4, $5)""",
            temporary_id,
            pool.kind.value,
            pool.key,
            window.start,
            window.end,
        )
        await connection.executemany(
            f"""INSERT INTO {SCHEMA}.temporary_shifts (temporary_id, coach_id, starts_at, ends_at)
                VALUES ($1, $2, $3, $4)""",
            [(temporary_id, s.coach_id, s.interval.start, s.interval.end) for s in shifts],
        )
    return temporary_id


async def delete_temporary(connection: Connection, temporary_id: UUID) -> bool:
    deleted = await connection.fetchval(
        f"DELETE FROM {SCHEMA}.temporary_schedules WHERE temporary_id = $1 RETURNING true",
        temporary_id,
    )
    return bool(deleted)


async def unknown_coaches(connection: Connection, coach_ids: Iterable[UUID]) -> list[UUID]:
    """Those of the ids not in the roster."""
    wanted = list(dict.fromkeys(coach_ids))
    rows = await connection.fetch(
        f"SELECT coach_id FROM {SCHEMA}.coaches WHERE coach_id = ANY($1::uuid[])", wanted
    )
    known = {row["coach_id"] for row in rows}
    return [c for c in wanted if c not in known]


async def uncertified_coaches(
    connection: Connection, coach_ids: Iterable[UUID], state: str, on: date
) -> list[UUID]:
    """Those of the coaches with no certification in `state` (USPS code) valid on `on`:
    matching never offers them a referral there."""
    wanted = list(dict.fromkeys(coach_ids))
    rows = await connection.fetch(
        f"""SELECT DISTINCT coach_id FROM {SCHEMA}.certifications
            WHERE coach_id = ANY($1::uuid[]) AND state = $2 AND expires_on >= $3""",
        wanted,
        state,
        on,
    )
    certified = {row["coach_id"] for row in rows}
    return [c for c in wanted if c not in certified]


async def coach_keys(connection: Connection) -> dict[str, UUID]:
    """Lower-cased coach ids, `mailto:` e-mail addresses and names, for calendar import."""
    rows = await connection.fetch(
        f"SELECT coach_id, display_name, contact_methods FROM {SCHEMA}.coaches"
    )
    keys: dict[str, UUID] = {}
    for row in rows:
        keys[str(row["coach_id"])] = row["coach_id"]
        keys.setdefault(row["display_name"].lower(), row["coach_id"])
        for method in _json_list(row["contact_methods"]):
            if method.get("channel") == "email":
                keys.setdefault(f"mailto:{method['destination'].lower()}", row["coach_id"])
    return keys


def _json_list(text: str) -> list[dict[str, str]]:
    loaded: list[dict[str, str]] = json.loads(text or "[]")
    return loaded


@dataclass(frozen=True)
class CalendarSubject:
    """Whose feed a token opens: a coach's, or a site's."""

    coach_id: UUID | None
    site_id: str | None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_calendar_token(
    connection: Connection, subject: CalendarSubject
) -> tuple[UUID, str]:
    """(token id, secret token): the token is shown once; only its hash is kept."""
    token_id, token = uuid4(), secrets.token_urlsafe(32)
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.calendar_tokens (token_id, token_hash, coach_id, site_id)
            VALUES ($1, $2, $3, $4)""",
        token_id,
        _hash(token),
        subject.coach_id,
        subject.site_id,
    )
    return token_id, token


@dataclass(frozen=True)
class CalendarToken:
    """A feed as coordinators list it (never the secret: only its hash is kept)."""

    token_id: UUID
    subject: CalendarSubject
    created_at: datetime


async def list_calendar_tokens(
    connection: Connection, coach_ids: Sequence[UUID], site_ids: Sequence[str]
) -> list[CalendarToken]:
    """The feeds of these coaches and sites (both empty: every feed), newest first."""
    rows = await connection.fetch(
        f"""SELECT token_id, coach_id, site_id, created_at FROM {SCHEMA}.calendar_tokens
            WHERE (cardinality($1::uuid[]) = 0 AND cardinality($2::text[]) = 0)
               OR coach_id = ANY($1::uuid[]) OR site_id = ANY($2::text[])
            ORDER BY created_at DESC, token_id""",
        list(coach_ids),
        list(site_ids),
    )
    return [
        CalendarToken(
            row["token_id"], CalendarSubject(row["coach_id"], row["site_id"]), row["created_at"]
        )
        for row in rows
    ]


async def revoke_calendar_token(connection: Connection, token_id: UUID) -> bool:
    """The feed stops answering at once; False when there is no such token."""
    deleted = await connection.fetchval(
        f"DELETE FROM {SCHEMA}.calendar_tokens WHERE token_id = $1 RETURNING true", token_id
    )
    return bool(deleted)


async def calendar_subject(connection: Connection, token: str) -> CalendarSubject | None:
    row = await connection.fetchrow(
        f"SELECT coach_id, site_id FROM {SCHEMA}.calendar_tokens WHERE token_hash = $1",
        _hash(token),
    )
    return CalendarSubject(row["coach_id"], row["site_id"]) if row else None


async def mark_unavailable(
    connection: Connection, coach_id: UUID, since: datetime, until: datetime
) -> int:
    """A coach's own OFF: removed from every pool from `since` to `until` (replacing any
    OFF of theirs still in force); returns how many coaches the phone matched (0 or 1)."""
    async with connection.transaction():
        await _end_own_off(connection, coach_id, since)
        inserted = await connection.execute(
            f"""INSERT INTO {SCHEMA}.overrides (override_id, kind, pool_kind, pool_key, coach_id,
                    starts_at, ends_at, source)
                SELECT $1, 'remove', NULL, NULL, coach_id, $3, $4, 'sms'
                FROM {SCHEMA}.coaches WHERE coach_id = $2""",
            uuid4(),
            coach_id,
            since,
            until,
        )
    return int(inserted.split()[-1])


async def off_now(connection: Connection, coach_ids: Iterable[UUID], now: datetime) -> set[UUID]:
    """The coaches among `coach_ids` with an OFF of their own (or any removal from every
    pool) in force at `now` (UTC)."""
    rows = await connection.fetch(
        f"""SELECT DISTINCT coach_id FROM {SCHEMA}.overrides
            WHERE coach_id = ANY($1::uuid[]) AND kind = 'remove' AND pool_kind IS NULL
              AND starts_at <= $2 AND $2 < ends_at""",
        list(coach_ids),
        now,
    )
    return {row["coach_id"] for row in rows}


async def mark_available(connection: Connection, coach_id: UUID, at: datetime) -> int:
    """A coach's own ON: their OFF ends at `at`; returns how many were ended."""
    return await _end_own_off(connection, coach_id, at)


async def _end_own_off(connection: Connection, coach_id: UUID, at: datetime) -> int:
    await connection.execute(
        f"""DELETE FROM {SCHEMA}.overrides
            WHERE coach_id = $1 AND source = 'sms' AND starts_at >= $2""",
        coach_id,
        at,
    )
    ended = await connection.execute(
        f"""UPDATE {SCHEMA}.overrides SET ends_at = $2
            WHERE coach_id = $1 AND source = 'sms' AND starts_at < $2 AND ends_at > $2""",
        coach_id,
        at,
    )
    return int(ended.split()[-1])


async def coaches_with_phone(connection: Connection, phone: str) -> list[UUID]:
    """The coaches with this number among their contact methods (SMS or voice)."""
    rows = await connection.fetch(
        f"""SELECT coach_id FROM {SCHEMA}.coaches
            WHERE contact_methods @> jsonb_build_array(jsonb_build_object('destination', $1::text))
            ORDER BY coach_id""",
        phone,
    )
    return [row["coach_id"] for row in rows]
