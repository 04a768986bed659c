"""PostgreSQL storage of site callbacks and their deliveries (migrations 0005, 0007).

Deliveries are queued by `postgres.record_step` and `postgres.insert_referral`, in the
transaction that records the timeline step; this module claims, settles, lists and
replays them. Every function runs on the caller's connection.
"""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from handoff_platform.database import Connection
from handoff_referral import SCHEMA


def queue_step(source: str, step: str, at: str) -> str:
    """The INSERT (for a CTE or a statement's end) that queues a delivery for each referral
    row of `source` (a CTE returning site_id, referral_id and the status after the step)
    whose site has a callback; `step` and `at` are SQL expressions (parameters)."""
    return f"""INSERT INTO {SCHEMA}.webhook_deliveries
            (delivery_id, site_id, referral_id, step, status, at)
        SELECT gen_random_uuid(), e.site_id, r.referral_id, {step}, r.status, {at}
        FROM {source} r JOIN {SCHEMA}.webhook_endpoints e USING (site_id)"""


@dataclass(frozen=True)
class Endpoint:
    site_id: str
    url: str
    created_at: datetime
    updated_at: datetime
    rotating_until: datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this process may send until its lease ends, with what signs it."""

    delivery_id: UUID
    site_id: str
    referral_id: UUID
    external_id: str
    step: str
    status: str
    at: datetime
    attempts: int
    due_since: datetime
    correlation_id: str
    url: str
    signing_secrets: list[str]


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: UUID
    site_id: str
    referral_id: UUID
    step: str
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None
    waiting_behind: UUID | None = None
    """A pending step not tried yet because this earlier step of its referral is failing."""


async def set_endpoint(connection: Connection, site_id: str, url: str, secret: str) -> bool:
    """Sets the site's callback URL. A new callback gets `secret`; an existing one keeps its
    secret (returns False). Raises asyncpg.ForeignKeyViolationError for an unknown site."""
    created = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.webhook_endpoints (site_id, url, secret) VALUES ($1, $2, $3)
            ON CONFLICT (site_id) DO UPDATE SET url = excluded.url, updated_at = now()
            RETURNING xmax = 0""",
        site_id,
        url,
        secret,
    )
    return bool(created)


async def rotate_secret(
    connection: Connection, site_id: str, secret: str, grace_until: datetime
) -> bool:
    """The site's deliveries are signed with `secret` from now on, and with the previous
    one as well until `grace_until` (UTC). False if the site has no callback."""
    rotated = await connection.fetchval(
        f"""UPDATE {SCHEMA}.webhook_endpoints
            SET previous_secret = secret, previous_secret_until = $3, secret = $2,
                updated_at = now()
            WHERE site_id = $1 RETURNING true""",
        site_id,
        secret,
        grace_until,
    )
    return bool(rotated)


async def remove_endpoint(connection: Connection, site_id: str, now: datetime) -> bool:
    """Removes the site's callback; what was still to send to it is abandoned (replayable
    once a callback is set again), to be counted by a sender (`count_abandoned`). False if
    it had none."""
    async with connection.transaction():
        removed = await connection.fetchval(
            f"DELETE FROM {SCHEMA}.webhook_endpoints WHERE site_id = $1 RETURNING true", site_id
        )
        await connection.execute(
            f"""UPDATE {SCHEMA}.webhook_deliveries
                SET state = 'abandoned', finished_at = $2, claimed_until = NULL,
                    last_error = 'callback removed', abandon_counted = false
                WHERE site_id = $1 AND state = 'pending'""",
            site_id,
            now,
        )
    return bool(removed)


async def endpoints(connection: Connection, site_id: str | None = None) -> list[Endpoint]:
    rows = await connection.fetch(
        f"""SELECT site_id, url, created_at, updated_at,
                   CASE WHEN previous_secret_until > now() THEN previous_secret_until END
                       AS rotating_until
            FROM {SCHEMA}.webhook_endpoints
            WHERE $1::text IS NULL OR site_id = $1 ORDER BY site_id""",
        site_id,
    )
    return [Endpoint(**dict(row)) for row in rows]


async def claim_due(
    connection: Connection,
    now: datetime,
    lease_until: datetime,
    limit: int,
    settle_seconds: float = 0.0,
) -> list[ClaimedDelivery]:
    """Claims up to `limit` deliveries due at `now`, each the first still pending of its
    referral in timeline order (the step's time, then the order recorded), so a referral's
    steps go one at a time, in order; not claimed by another process, of a site with a
    callback; leased until `lease_until`. A step waits `settle_seconds` after it was recorded:
    the steps come from two topics, and an earlier step recorded a moment later (an
    acceptance behind the coach's arrival) still goes first. A process that dies mid-send
    loses the lease and the delivery is sent again: at least once."""
    rows = await connection.fetch(
        f"""WITH heads AS (
                SELECT DISTINCT ON (referral_id)
                    delivery_id, referral_id, next_attempt_at, claimed_until, created_at
                FROM {SCHEMA}.webhook_deliveries WHERE state = 'pending'
                ORDER BY referral_id, at, seq),
            due AS (
                SELECT delivery_id FROM heads h
                WHERE next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
                  AND h.created_at <= now() - make_interval(secs => $4)
                  AND NOT EXISTS (  -- a later step of it already on its way: wait for it
                      SELECT 1 FROM {SCHEMA}.webhook_deliveries x
                      WHERE x.referral_id = h.referral_id AND x.state = 'pending'
                        AND x.claimed_until > $1)
                ORDER BY next_attempt_at LIMIT $3)
            UPDATE {SCHEMA}.webhook_deliveries d SET claimed_until = $2,
                -- A step's retry window runs from its first attempt: a step that waited
                -- behind a failing one gets its own 24 h, not what the other one left.
                due_since = CASE WHEN d.attempts = 0 THEN $1 ELSE d.due_since END
            FROM due, {SCHEMA}.referrals r, {SCHEMA}.webhook_endpoints e
            WHERE d.delivery_id = due.delivery_id AND r.referral_id = d.referral_id
              AND e.site_id = d.site_id AND d.state = 'pending'
              AND (d.claimed_until IS NULL OR d.claimed_until <= $1)
            RETURNING d.delivery_id, d.site_id, d.referral_id, r.external_id, d.step, d.status,
                d.at, d.attempts, d.due_since, r.correlation_id, e.url, e.secret, e.previous_secret,
                e.previous_secret_until""",
        now,
        lease_until,
        limit,
        settle_seconds,
    )
    claimed = []
    for row in rows:
        values = dict(row)
        signing = [values.pop("secret")]
        previous, until = values.pop("previous_secret"), values.pop("previous_secret_until")
        if previous is not None and until is not None and until > now:
            signing.append(previous)
        claimed.append(ClaimedDelivery(**values, signing_secrets=signing))
    return claimed


async def delivered(connection: Connection, delivery_id: UUID, now: datetime) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.webhook_deliveries
            SET state = 'delivered', attempts = attempts + 1, last_attempt_at = $2,
                finished_at = $2, claimed_until = NULL, last_error = NULL
            WHERE delivery_id = $1 AND state = 'pending'""",
        delivery_id,
        now,
    )


async def retry_at(
    connection: Connection, delivery_id: UUID, now: datetime, next_at: datetime, error: str
) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.webhook_deliveries
            SET attempts = attempts + 1, last_attempt_at = $2, next_attempt_at = $3,
                last_error = $4, claimed_until = NULL
            WHERE delivery_id = $1 AND state = 'pending'""",
        delivery_id,
        now,
        next_at,
        error,
    )


async def failed(connection: Connection, delivery_id: UUID, now: datetime, error: str) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.webhook_deliveries
            SET state = 'failed', attempts = attempts + 1, last_attempt_at = $2,
                finished_at = $2, last_error = $3, claimed_until = NULL
            WHERE delivery_id = $1 AND state = 'pending'""",
        delivery_id,
        now,
        error,
    )


async def backlog(connection: Connection) -> dict[str, tuple[int, datetime | None]]:
    """For every site with a callback: its pending deliveries and when the oldest became
    due (None when nothing is pending)."""
    rows = await connection.fetch(
        f"""SELECT e.site_id, count(d.delivery_id) AS pending, min(d.due_since) AS oldest
            FROM {SCHEMA}.webhook_endpoints e
            LEFT JOIN {SCHEMA}.webhook_deliveries d
                ON d.site_id = e.site_id AND d.state = 'pending'
            GROUP BY e.site_id"""
    )
    return {row["site_id"]: (row["pending"], row["oldest"]) for row in rows}


async def count_abandoned(connection: Connection) -> dict[str, int]:
    """Marks the deliveries abandoned since the last call as counted; returns how many per
    site. Each row is returned to one caller only, whichever replica asks first."""
    rows = await connection.fetch(
        f"""WITH counted AS (
                UPDATE {SCHEMA}.webhook_deliveries SET abandon_counted = true
                WHERE NOT abandon_counted RETURNING site_id)
            SELECT site_id, count(*) AS abandoned FROM counted GROUP BY site_id"""
    )
    return {row["site_id"]: int(row["abandoned"]) for row in rows}


async def list_deliveries(
    connection: Connection,
    site_id: str | None,
    referral_id: UUID | None,
    failing: bool,
    limit: int,
) -> list[DeliveryRow]:
    """Deliveries newest first, each pending one with the failing step of its referral it
    waits behind, if any. `failing`: only failed and abandoned ones, pending ones that have
    failed at least once, and pending ones waiting behind those (their referral's failure
    holds them too)."""
    rows = await connection.fetch(
        f"""SELECT d.delivery_id, d.site_id, d.referral_id, d.step, d.state, d.attempts,
                   d.created_at, d.next_attempt_at, d.last_error,
                   b.delivery_id AS waiting_behind
            FROM {SCHEMA}.webhook_deliveries d
            LEFT JOIN LATERAL (
                SELECT x.delivery_id FROM {SCHEMA}.webhook_deliveries x
                WHERE d.state = 'pending' AND x.referral_id = d.referral_id
                  AND x.state = 'pending' AND x.attempts > 0
                  AND x.delivery_id <> d.delivery_id
                ORDER BY x.at, x.seq LIMIT 1) b ON true
            WHERE ($1::text IS NULL OR d.site_id = $1)
              AND ($2::uuid IS NULL OR d.referral_id = $2)
              AND (NOT $3 OR d.state IN ('failed', 'abandoned')
                   OR (d.state = 'pending' AND (d.attempts > 0 OR b.delivery_id IS NOT NULL)))
            ORDER BY d.created_at DESC, d.seq DESC LIMIT $4""",
        site_id,
        referral_id,
        failing,
        limit,
    )
    return [DeliveryRow(**dict(row)) for row in rows]


async def replay(
    connection: Connection,
    now: datetime,
    site_id: str | None,
    referral_id: UUID | None,
    since: datetime | None,
    failed_only: bool,
) -> int:
    """Sends again the settled deliveries of the site (or the referral) created at or after
    `since`, in their original order per referral and with their original ids, each with a
    new retry window from `now`. Returns how many were queued again."""
    replayed = await connection.fetchval(
        f"""WITH replayed AS (
                UPDATE {SCHEMA}.webhook_deliveries
                SET state = 'pending', attempts = 0, next_attempt_at = $1, due_since = $1,
                    claimed_until = NULL, last_error = NULL, finished_at = NULL
                WHERE ($2::text IS NULL OR site_id = $2)
                  AND ($3::uuid IS NULL OR referral_id = $3)
                  AND ($4::timestamptz IS NULL OR created_at >= $4)
                  AND state <> 'pending' AND (NOT $5 OR state IN ('failed', 'abandoned'))
                RETURNING 1)
            SELECT count(*) FROM replayed""",
        now,
        site_id,
        referral_id,
        since,
        failed_only,
    )
    return int(replayed)


async def referral_exists(connection: Connection, referral_id: UUID) -> bool:
    """Whether a referral has this id."""
    found = await connection.fetchval(
        f"SELECT true FROM {SCHEMA}.referrals WHERE referral_id = $1", referral_id
    )
    return bool(found)
