"""PostgreSQL storage of the referral schema. Every function runs on the caller's connection,
so the use case decides the transaction."""

from collections import defaultdict
from datetime import datetime
from uuid import UUID

import asyncpg

from handoff_platform.database import Connection
from handoff_platform.outbox import Outbox
from handoff_referral import SCHEMA
from handoff_referral.adapters import webhook_store
from handoff_referral.adapters.key_cache import REVOCATION_CHANNEL, SITE_CHANGED_PREFIX
from handoff_referral.domain.api_keys import IssuedKey
from handoff_referral.domain.intake import Patient, ReferralRequest
from handoff_referral.domain.referral import (
    NO_DETAILS,
    Referral,
    Site,
    StepDetails,
    TimelineStep,
)
from handoff_referral.domain.status import Status, Step
from handoff_schemas import Envelope
from handoff_schemas.events import ReferralCreated

_REFERRAL_COLUMNS = """referral_id, site_id, external_id, status, urgency, location,
    callback_phone, patient, notes, cancel_reason, correlation_id, received_at, updated_at"""


async def add_site(connection: Connection, site: Site) -> bool:
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.sites (site_id, name, short_name, state, time_zone)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
        *_site_row(site),
    )
    return bool(inserted)


async def update_site(connection: Connection, site: Site) -> bool:
    """Gives the registered site `site.site_id` `site`'s name, short name, state and time
    zone; False, with nothing written, when it has them already or is not registered."""
    changed = await connection.fetchval(
        f"""UPDATE {SCHEMA}.sites SET name = $2, short_name = $3, state = $4, time_zone = $5
            WHERE site_id = $1
              AND (name, short_name, state, time_zone)
                  IS DISTINCT FROM ($2::text, $3::text, $4::text, $5::text)
            RETURNING true""",
        *_site_row(site),
    )
    return bool(changed)


def _site_row(site: Site) -> tuple[str, str, str, str, str]:
    """The site's columns in the order the statements above take them."""
    return site.site_id, site.name, site.short_name, site.state, site.time_zone


async def forget_cached_keys(connection: Connection, site_id: str) -> None:
    """Tells every replica's key cache, when the transaction commits, to drop the keys of
    `site_id`: a cached key carries its site's facts."""
    await connection.execute(
        "SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, f"{SITE_CHANGED_PREFIX}{site_id}"
    )


async def get_site(connection: Connection, site_id: str) -> Site | None:
    row = await connection.fetchrow(
        f"""SELECT site_id, name, short_name, state, time_zone FROM {SCHEMA}.sites
            WHERE site_id = $1""",
        site_id,
    )
    return Site(**dict(row)) if row else None


async def add_key(connection: Connection, site_id: str, key: IssuedKey, label: str) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.api_keys (key_id, site_id, secret_sha256, label)
            VALUES ($1, $2, $3, $4)""",
        key.key_id,
        site_id,
        key.secret_sha256,
        label,
    )


async def revoke_key(connection: Connection, key_id: str) -> bool:
    """Revokes the key and tells every replica's key cache, in one transaction."""
    async with connection.transaction():
        revoked = await connection.fetchval(
            f"""UPDATE {SCHEMA}.api_keys SET revoked_at = now()
                WHERE key_id = $1 AND revoked_at IS NULL RETURNING true""",
            key_id,
        )
        await connection.execute("SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, key_id)
    return bool(revoked)


async def active_key(connection: Connection, key_id: str) -> tuple[Site, bytes] | None:
    row = await connection.fetchrow(
        f"""SELECT s.site_id, s.name, s.short_name, s.state, s.time_zone, k.secret_sha256
            FROM {SCHEMA}.api_keys k JOIN {SCHEMA}.sites s USING (site_id)
            WHERE k.key_id = $1 AND k.revoked_at IS NULL""",
        key_id,
    )
    if row is None:
        return None
    values = dict(row)
    secret_sha256: bytes = values.pop("secret_sha256")
    return Site(**values), secret_sha256


async def insert_referral(
    connection: Connection,
    outbox: Outbox,
    referral_id: UUID,
    site_id: str,
    request: ReferralRequest,
    created: Envelope[ReferralCreated],
    now: datetime,
) -> bool:
    """Stores a new referral at status received, with that first timeline step, and queues
    its ReferralCreated and the site's webhook delivery of the step: one statement, so
    atomic without a transaction block, and one round trip on the API's busiest path
    instead of five.

    False, storing nothing, if the site already has a referral with this external id.
    """
    inserted = await connection.fetchval(
        f"""WITH referral AS (
                INSERT INTO {SCHEMA}.referrals (referral_id, site_id, external_id,
                    request_fingerprint, status, urgency, location, callback_phone, patient,
                    notes, correlation_id, received_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
                ON CONFLICT (site_id, external_id) DO NOTHING
                RETURNING referral_id, site_id, status, received_at),
            first_step AS (
                INSERT INTO {SCHEMA}.timeline (referral_id, status, at)
                SELECT referral_id, status, received_at FROM referral),
            webhook AS ({webhook_store.queue_step("referral", "$5", "$12")}),
            event AS ({outbox.queue_for_each("referral", first_parameter=13)})
            SELECT count(*) = 1 FROM referral""",
        referral_id,
        site_id,
        request.external_id,
        request.fingerprint(),
        Status.RECEIVED.value,
        request.urgency.value,
        request.location,
        request.callback_phone,
        request.patient.model_dump_json(),
        request.notes,
        created.correlationid,
        now,
        *outbox.row(created),
    )
    return bool(inserted)


async def find_by_external_id(
    connection: Connection, site_id: str, external_id: str
) -> tuple[UUID, bytes] | None:
    row = await connection.fetchrow(
        f"""SELECT referral_id, request_fingerprint FROM {SCHEMA}.referrals
            WHERE site_id = $1 AND external_id = $2""",
        site_id,
        external_id,
    )
    return (row["referral_id"], row["request_fingerprint"]) if row else None


async def get_referral(
    connection: Connection, site_id: str, referral_id: UUID, for_update: bool = False
) -> Referral | None:
    row = await connection.fetchrow(
        f"""SELECT {_REFERRAL_COLUMNS} FROM {SCHEMA}.referrals
            WHERE referral_id = $1 AND site_id = $2 {"FOR UPDATE" if for_update else ""}""",
        referral_id,
        site_id,
    )
    if row is None:
        return None
    timelines = await _timelines(connection, [referral_id])
    return _referral(row, timelines[referral_id])


async def list_referrals(
    connection: Connection,
    site_id: str,
    status: Status | None,
    since: datetime | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[Referral]:
    """The site's referrals in the order received, from `since`, after the cursor position."""
    rows = await connection.fetch(
        f"""SELECT {_REFERRAL_COLUMNS} FROM {SCHEMA}.referrals
            WHERE site_id = $1
              AND ($2::text IS NULL OR status = $2)
              AND ($3::timestamptz IS NULL OR received_at >= $3)
              AND ($4::timestamptz IS NULL OR (received_at, referral_id) > ($4, $5::uuid))
            ORDER BY received_at, referral_id
            LIMIT $6""",
        site_id,
        status.value if status else None,
        since,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    timelines = await _timelines(connection, [row["referral_id"] for row in rows])
    return [_referral(row, timelines[row["referral_id"]]) for row in rows]


async def lock_status(
    connection: Connection, referral_id: UUID
) -> tuple[str, Status, frozenset[Status]] | None:
    """The referral's site, status and the statuses on its timeline, locked until the
    transaction ends; None if there is no such referral."""
    row = await connection.fetchrow(
        f"SELECT site_id, status FROM {SCHEMA}.referrals WHERE referral_id = $1 FOR UPDATE",
        referral_id,
    )
    if row is None:
        return None
    steps = await connection.fetch(
        f"SELECT DISTINCT status FROM {SCHEMA}.timeline WHERE referral_id = $1", referral_id
    )
    statuses = {s.value for s in Status}
    recorded = frozenset(Status(r["status"]) for r in steps if r["status"] in statuses)
    return row["site_id"], Status(row["status"]), recorded


async def record_step(
    connection: Connection,
    referral_id: UUID,
    step: Step,
    at: datetime,
    new_status: Status,
    now: datetime,
    cancel_reason: str | None = None,
    details: StepDetails = NO_DETAILS,
) -> None:
    """Adds one timeline entry, sets the referral's status and queues the site's webhook
    delivery of the step (if it has a callback), in one statement; the caller holds the
    referral's row lock (lock_status), so entries are decided, and queued, one at a time."""
    await connection.execute(
        f"""WITH entry AS (
                INSERT INTO {SCHEMA}.timeline
                    (referral_id, status, at, coaches, batch_id, coach_id, arrive_by)
                VALUES ($1, $2, $3, $7, $8, $9, $10)),
            referral AS (
                UPDATE {SCHEMA}.referrals
                SET status = $4, updated_at = $5, cancel_reason = coalesce($6, cancel_reason)
                WHERE referral_id = $1
                RETURNING referral_id, site_id, status)
            {webhook_store.queue_step("referral", "$2", "$3")}""",
        referral_id,
        step.value,
        at,
        new_status.value,
        now,
        cancel_reason,
        details.coaches,
        details.batch_id,
        details.coach_id,
        details.arrive_by,
    )


async def batch_recorded(connection: Connection, referral_id: UUID, batch_id: UUID) -> bool:
    """Whether the referral's timeline has the `offered` step of this batch of offers."""
    found: bool = await connection.fetchval(
        f"""SELECT EXISTS (SELECT 1 FROM {SCHEMA}.timeline
                           WHERE referral_id = $1 AND batch_id = $2)""",
        referral_id,
        batch_id,
    )
    return found


async def _timelines(
    connection: Connection, referral_ids: list[UUID]
) -> dict[UUID, list[TimelineStep]]:
    rows = await connection.fetch(
        f"""SELECT referral_id, status, at, coaches, batch_id, coach_id, arrive_by
            FROM {SCHEMA}.timeline
            WHERE referral_id = ANY($1::uuid[]) ORDER BY at, seq""",
        referral_ids,
    )
    timelines: dict[UUID, list[TimelineStep]] = defaultdict(list)
    for row in rows:
        details = StepDetails(row["coaches"], row["coach_id"], row["arrive_by"], row["batch_id"])
        timelines[row["referral_id"]].append(TimelineStep(Step(row["status"]), row["at"], details))
    return timelines


def _referral(row: asyncpg.Record, timeline: list[TimelineStep]) -> Referral:
    request = ReferralRequest(
        external_id=row["external_id"],
        urgency=row["urgency"],
        location=row["location"],
        callback_phone=row["callback_phone"],
        patient=Patient.model_validate_json(row["patient"]),
        notes=row["notes"],
    )
    return Referral(
        referral_id=row["referral_id"],
        site_id=row["site_id"],
        request=request,
        status=Status(row["status"]),
        received_at=row["received_at"],
        updated_at=row["updated_at"],
        timeline=tuple(timeline),
        cancel_reason=row["cancel_reason"],
        correlation_id=row["correlation_id"],
    )
