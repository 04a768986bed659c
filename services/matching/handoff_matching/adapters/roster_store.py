"""The roster in PostgreSQL (schema `matching`): coaches, certifications, weekly shifts."""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from handoff_matching import SCHEMA, SOURCE
from handoff_matching.domain.eligibility import Certification, Coach
from handoff_matching.domain.schedules import (
    Interval,
    Override,
    OverrideKind,
    Pool,
    PoolKind,
    WeeklyShift,
)
from handoff_matching.roster_file import OverrideRow, RosterFile
from handoff_platform.database import Connection, migrate_database, notify
from handoff_platform.outbox import Outbox
from handoff_schemas import Envelope
from handoff_schemas.events import CoachPhonesChanged, ContactPoint
from handoff_schemas.vocabulary import Channel, GenderPreference, Substance

MIGRATIONS = "handoff_matching.adapters.migrations"

# Rows of any of the pools given as $1 (kinds) and $2 (keys), in a form that can use
# the (pool_kind, pool_key) indexes: matching on `pool_kind || ':' || pool_key` could
# not, and read the whole shifts table for every referral (bench/roster_queries.py at
# 70,000 shifts: p50 24 ms that way, 2 ms this way).
_IN_POOLS = "(pool_kind, pool_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"


def _pools(pools: Iterable[Pool]) -> tuple[list[str], list[str]]:
    given = list(pools)
    return [pool.kind.value for pool in given], [pool.key for pool in given]


async def apply_migrations(database_url: str) -> list[str]:
    return await migrate_database(database_url, SCHEMA, MIGRATIONS)


@dataclass(frozen=True)
class ImportSummary:
    coaches: int
    certifications: int
    shifts: int
    overrides: int


LINE_CHANNEL = "handoff_matching_line"
"""NOTIFY channel: the roster or the on-call changed (a CLI import, another replica's
admin API, a coach reachable again); every replica's waiting line looks again."""


async def tell_line(connection: Connection) -> None:
    """Wake every replica's waiting line; inside a transaction, once it commits."""
    await notify(connection, LINE_CHANNEL, "roster")


async def import_roster(connection: Connection, roster: RosterFile) -> ImportSummary:
    """Upsert the file's coaches; their certifications and shifts become exactly the file's.
    Every replica's waiting line is woken once it commits: a coach added, activated or
    given a higher max_concurrent may take a waiting referral at once, whoever imports."""
    coach_ids = [coach.coach_id for coach in roster.coaches]
    async with connection.transaction():
        await connection.executemany(
            f"""INSERT INTO {SCHEMA}.coaches (coach_id, display_name, contact_methods, languages,
                    gender, lived_experience, veteran, lgbtq_affirming, telehealth,
                    max_concurrent, home_sites, active)
                VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (coach_id) DO UPDATE SET
                    display_name = excluded.display_name,
                    contact_methods = excluded.contact_methods,
                    languages = excluded.languages, gender = excluded.gender,
                    lived_experience = excluded.lived_experience, veteran = excluded.veteran,
                    lgbtq_affirming = excluded.lgbtq_affirming, telehealth = excluded.telehealth,
                    max_concurrent = excluded.max_concurrent, home_sites = excluded.home_sites,
                    active = excluded.active, updated_at = now()""",
            [
                (
                    c.coach_id,
                    c.display_name,
                    json.dumps([m.model_dump(mode="json") for m in c.contact_methods]),
                    list(c.languages),
                    c.gender.value if c.gender else None,
                    [s.value for s in c.lived_experience],
                    c.veteran,
                    c.lgbtq_affirming,
                    c.telehealth,
                    c.max_concurrent,
                    list(c.home_sites),
                    c.active,
                )
                for c in roster.coaches
            ],
        )
        await connection.execute(
            f"DELETE FROM {SCHEMA}.certifications WHERE coach_id = ANY($1::uuid[])", coach_ids
        )
        certifications = [
            (c.coach_id, cert.state, cert.credential, cert.expires_on)
            for c in roster.coaches
            for cert in c.certifications
        ]
        await connection.executemany(
            f"""INSERT INTO {SCHEMA}.certifications (coach_id, state, credential, expires_on)
                VALUES ($1, $2, $3, $4)""",
            certifications,
        )
        await connection.execute(
            f"DELETE FROM {SCHEMA}.shifts WHERE coach_id = ANY($1::uuid[])", coach_ids
        )
        shifts = [shift.to_shift() for shift in roster.shifts]
        await connection.executemany(
            f"""INSERT INTO {SCHEMA}.shifts
                    (coach_id, pool_kind, pool_key, weekday, starts, ends, time_zone)
                VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [
                (s.coach_id, s.pool.kind.value, s.pool.key, s.weekday, s.start, s.end, s.zone.key)
                for s in shifts
            ],
        )
        # Each pool's weekly shifts are one schedule layer (decision 0017), priority 0 at first.
        await connection.executemany(
            f"""INSERT INTO {SCHEMA}.layers (layer_id, pool_kind, pool_key, name, priority, kind)
                VALUES ($1, $2, $3, 'weekly shifts', 0, 'weekly') ON CONFLICT DO NOTHING""",
            [(uuid4(), pool.kind.value, pool.key) for pool in {s.pool for s in shifts}],
        )
        for override in roster.overrides:
            await put_override(connection, override)
        await announce_phones(connection, coach_ids)
    await tell_line(connection)
    return ImportSummary(
        len(roster.coaches), len(certifications), len(shifts), len(roster.overrides)
    )


async def announce_phones(connection: Connection, coach_ids: list[UUID] | None = None) -> int:
    """Put a CoachPhonesChanged for each of these coaches (None: every coach) in the outbox,
    within the caller's transaction: the phones their roster entry lists now, so notify
    knows which numbers are a coach's. Returns how many were put."""
    rows = await connection.fetch(
        f"""SELECT coach_id, contact_methods, active FROM {SCHEMA}.coaches
            WHERE $1::uuid[] IS NULL OR coach_id = ANY($1::uuid[])""",
        coach_ids,
    )
    now = datetime.now(UTC)
    events = []
    for row in rows:
        methods = json.loads(row["contact_methods"])
        phones = tuple(
            dict.fromkeys(
                m["destination"] for m in methods if m["channel"] in (Channel.SMS, Channel.VOICE)
            )
        )
        changed = CoachPhonesChanged(
            coach_id=row["coach_id"], phones=phones, active=row["active"], changed_at=now
        )
        events.append(
            Envelope.wrap(changed, source=SOURCE, correlation_id=f"coach:{row['coach_id']}")
        )
    if events:
        await Outbox(SCHEMA).put(connection, *events)
    return len(events)


async def shifts_for(connection: Connection, pools: Iterable[Pool]) -> list[WeeklyShift]:
    rows = await connection.fetch(
        f"""SELECT coach_id, pool_kind, pool_key, weekday, starts, ends, time_zone
            FROM {SCHEMA}.shifts
            WHERE {_IN_POOLS}""",
        *_pools(pools),
    )
    return [
        WeeklyShift(
            row["coach_id"],
            Pool(PoolKind(row["pool_kind"]), row["pool_key"]),
            row["weekday"],
            row["starts"],
            row["ends"],
            ZoneInfo(row["time_zone"]),
        )
        for row in rows
    ]


async def coaches_by_id(connection: Connection, coach_ids: Iterable[UUID]) -> dict[UUID, Coach]:
    rows = await connection.fetch(
        f"""SELECT c.coach_id, c.display_name, c.languages, c.gender, c.lived_experience,
                   c.max_concurrent, c.active, c.home_sites,
                   coalesce(array_agg(ROW(t.state, t.credential, t.expires_on))
                            FILTER (WHERE t.state IS NOT NULL), '{{}}') AS certifications
            FROM {SCHEMA}.coaches c LEFT JOIN {SCHEMA}.certifications t USING (coach_id)
            WHERE c.coach_id = ANY($1::uuid[])
            GROUP BY c.coach_id""",
        list(coach_ids),
    )
    return {
        row["coach_id"]: Coach(
            coach_id=row["coach_id"],
            display_name=row["display_name"],
            languages=frozenset(row["languages"]),
            gender=GenderPreference(row["gender"]) if row["gender"] else None,
            lived_experience=frozenset(Substance(s) for s in row["lived_experience"]),
            max_concurrent=row["max_concurrent"],
            certifications=tuple(
                Certification(state.strip(), credential, expires_on)
                for state, credential, expires_on in row["certifications"]
            ),
            active=row["active"],
            home_sites=frozenset(row["home_sites"]),
        )
        for row in rows
    }


async def contact_points(connection: Connection, coach_id: UUID) -> tuple[ContactPoint, ...]:
    """A coach's contact methods in order of preference, as notify needs them to page."""
    stored = await connection.fetchval(
        f"SELECT contact_methods FROM {SCHEMA}.coaches WHERE coach_id = $1", coach_id
    )
    return tuple(ContactPoint.model_validate(m) for m in json.loads(stored or "[]"))


async def overrides_for(
    connection: Connection, pools: Iterable[Pool], window: Interval
) -> list[Override]:
    """The pools' overrides in force at some time in the window, in the order they were made,
    with those applying to every pool (a coach's own OFF)."""
    rows = await connection.fetch(
        f"""SELECT kind, pool_kind, pool_key, coach_id, replaces, starts_at, ends_at
            FROM {SCHEMA}.overrides
            WHERE ({_IN_POOLS} OR pool_kind IS NULL) AND starts_at < $4 AND $3 < ends_at
            ORDER BY created_at""",
        *_pools(pools),
        window.start,
        window.end,
    )
    return [
        Override(
            OverrideKind(row["kind"]),
            Pool(PoolKind(row["pool_kind"]), row["pool_key"]) if row["pool_kind"] else None,
            Interval(row["starts_at"], row["ends_at"]),
            row["coach_id"],
            row["replaces"],
        )
        for row in rows
    ]


async def put_override(connection: Connection, override: OverrideRow) -> None:
    kind, key = override.pool.split(":", 1)
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.overrides (override_id, kind, pool_kind, pool_key, coach_id,
                replaces, starts_at, ends_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (override_id) DO UPDATE SET kind = excluded.kind,
                pool_kind = excluded.pool_kind, pool_key = excluded.pool_key,
                coach_id = excluded.coach_id, replaces = excluded.replaces,
                starts_at = excluded.starts_at, ends_at = excluded.ends_at""",
        override.override_id,
        override.kind.value,
        kind,
        key,
        override.coach_id,
        override.replaces,
        override.starts_at,
        override.ends_at,
    )


async def same_override(connection: Connection, override: OverrideRow) -> UUID | None:
    """The id of another override with exactly the same kind, pool, coaches and window,
    if one is stored (a form or a script that sent it twice)."""
    found: UUID | None = await connection.fetchval(
        f"""SELECT override_id FROM {SCHEMA}.overrides
            WHERE override_id <> $1 AND kind = $2 AND pool_kind = $3 AND pool_key = $4
              AND coach_id = $5 AND replaces IS NOT DISTINCT FROM $6
              AND starts_at = $7 AND ends_at = $8
            LIMIT 1""",
        override.override_id,
        override.kind.value,
        *override.pool.split(":", 1),
        override.coach_id,
        override.replaces,
        override.starts_at,
        override.ends_at,
    )
    return found


async def delete_override(connection: Connection, override_id: UUID) -> bool:
    deleted = await connection.fetchval(
        f"DELETE FROM {SCHEMA}.overrides WHERE override_id = $1 RETURNING true", override_id
    )
    return bool(deleted)


async def remember_site(
    connection: Connection,
    site_id: str,
    short_name: str,
    state: str,
    time_zone: str,
    as_of: datetime,
) -> None:
    """Keep the site's facts as the referral service described them at `as_of` (UTC), unless
    a description from after `as_of` is kept already: SiteRegistered and a referral's
    ReferralCreated travel on different topics, so a referral received before a site's
    change can be heard after it.

    Writes only when the facts are new or changed: an upsert on every referral would take
    the site's row lock each time and hold it to the commit, so that one site's referrals
    were handled one after another on it (issue 17)."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.site_facts (site_id, short_name, state, time_zone, facts_at)
            SELECT $1, $2, $3, $4, $5
            WHERE NOT EXISTS (
                SELECT FROM {SCHEMA}.site_facts
                WHERE site_id = $1
                  AND ((short_name, state, time_zone) = ($2, $3, $4) OR facts_at > $5))
            ON CONFLICT (site_id) DO UPDATE SET short_name = excluded.short_name,
                state = excluded.state, time_zone = excluded.time_zone,
                facts_at = excluded.facts_at, changed_at = now()
            WHERE site_facts.facts_at IS NULL OR site_facts.facts_at <= excluded.facts_at""",
        site_id,
        short_name,
        state,
        time_zone,
        as_of,
    )


async def site_facts(connection: Connection, site_id: str) -> tuple[str, str] | None:
    """(state, time zone) of the site, once it was registered (or referred from)."""
    row = await connection.fetchrow(
        f"SELECT state, time_zone FROM {SCHEMA}.site_facts WHERE site_id = $1", site_id
    )
    return (row["state"], row["time_zone"]) if row else None


async def known_sites(connection: Connection) -> list[tuple[str, str, str]]:
    """(site id, state, time zone) of every site registered (or referred from)."""
    rows = await connection.fetch(
        f"SELECT site_id, state, time_zone FROM {SCHEMA}.site_facts ORDER BY site_id"
    )
    return [(row["site_id"], row["state"], row["time_zone"]) for row in rows]
