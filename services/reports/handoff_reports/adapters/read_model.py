"""The read model in PostgreSQL (schema `reports`): facts kept from the events, and the
facts a month's report needs.

Each writer runs in the consumer's transaction, which records the event id too, so a
redelivered event is skipped before it gets here. The writers are idempotent besides:
times are kept as the earliest seen (LEAST), outcomes as a set, so the same fact told
twice, or told again by a later event, changes nothing.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from handoff_platform.database import Connection, migrate_database
from handoff_reports import SCHEMA
from handoff_reports.domain.figures import FollowUpFacts, Month, ReferralFacts
from handoff_schemas.vocabulary import RecoveryOutcome, Tier

MIGRATIONS = "handoff_reports.adapters.migrations"

_TIME_COLUMNS = frozenset(
    {
        "received_at",
        "first_page_at",
        "arrived_at",
        "completed_at",
        "unassigned_at",
        "expired_at",
        "cancelled_at",
    }
)


async def apply_migrations(database_url: str) -> list[str]:
    """The platform's tables and the read model's, in schema `reports`; names applied now."""
    return await migrate_database(database_url, SCHEMA, MIGRATIONS)


async def site_seen(
    connection: Connection, referral_id: UUID, site_id: str, state: str, received_at: datetime
) -> None:
    """ReferralCreated: the referral's site, state and the time the request came in."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.referral_facts (referral_id, site_id, state, received_at)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (referral_id) DO UPDATE SET
                site_id = excluded.site_id, state = excluded.state,
                received_at = LEAST(referral_facts.received_at, excluded.received_at)""",
        referral_id,
        site_id,
        state,
        received_at,
    )


async def referral_time(
    connection: Connection, referral_id: UUID, column: str, moment: datetime
) -> None:
    """A moment of the referral's story (`column`, one of `_TIME_COLUMNS`): the earliest
    told wins. Raises ValueError for any other column."""
    if column not in _TIME_COLUMNS:
        raise ValueError(f"not a time of the read model: {column}")
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.referral_facts (referral_id, {column}) VALUES ($1, $2)
            ON CONFLICT (referral_id) DO UPDATE SET
                {column} = LEAST(referral_facts.{column}, excluded.{column})""",
        referral_id,
        moment,
    )


async def offer_made(connection: Connection, offer_id: UUID, referral_id: UUID, tier: Tier) -> None:
    """OfferMade: the tier the offer was made at, for its CoachAssigned."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.offer_tiers (offer_id, referral_id, tier) VALUES ($1, $2, $3)
            ON CONFLICT (offer_id) DO NOTHING""",
        offer_id,
        referral_id,
        tier.value,
    )


async def accepted(
    connection: Connection, referral_id: UUID, offer_id: UUID, moment: datetime
) -> None:
    """CoachAssigned: accepted at `moment`, at the tier of its offer (unknown: no tier);
    the first acceptance of a referral wins."""
    tier = await connection.fetchval(
        f"SELECT tier FROM {SCHEMA}.offer_tiers WHERE offer_id = $1", offer_id
    )
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.referral_facts (referral_id, accepted_at, accepted_tier)
            VALUES ($1, $2, $3)
            ON CONFLICT (referral_id) DO UPDATE SET
                accepted_tier = CASE
                    WHEN referral_facts.accepted_at IS NULL
                        OR excluded.accepted_at < referral_facts.accepted_at
                    THEN excluded.accepted_tier ELSE referral_facts.accepted_tier END,
                accepted_at = LEAST(referral_facts.accepted_at, excluded.accepted_at)""",
        referral_id,
        moment,
        tier,
    )


async def visit_recorded(
    connection: Connection,
    referral_id: UUID,
    outcomes: frozenset[RecoveryOutcome],
    moment: datetime,
) -> None:
    """VisitRecorded: the outcomes of the bedside visit (a set: told again, unchanged)."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.referral_facts (referral_id, visit_recorded_at, visit_outcomes)
            VALUES ($1, $2, $3)
            ON CONFLICT (referral_id) DO UPDATE SET
                visit_recorded_at = LEAST(referral_facts.visit_recorded_at,
                                          excluded.visit_recorded_at),
                visit_outcomes = ARRAY(
                    SELECT DISTINCT unnest(referral_facts.visit_outcomes
                                           || excluded.visit_outcomes) ORDER BY 1)""",
        referral_id,
        moment,
        sorted(outcome.value for outcome in outcomes),
    )


async def follow_up_due(
    connection: Connection,
    task_id: UUID,
    referral_id: UUID,
    site_id: str,
    window_days: int,
    moment: datetime,
) -> None:
    """FollowUpDue: the task fell due at `moment`; a later attempt's due changes nothing."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.follow_up_facts
                (task_id, referral_id, site_id, window_days, due_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (task_id) DO UPDATE SET
                due_at = LEAST(follow_up_facts.due_at, excluded.due_at)""",
        task_id,
        referral_id,
        site_id,
        window_days,
        moment,
    )


async def follow_up_attempted(
    connection: Connection,
    task_id: UUID,
    referral_id: UUID,
    site_id: str,
    window_days: int,
    moment: datetime,
    reached: bool,
    outcomes: frozenset[RecoveryOutcome],
) -> None:
    """FollowUpAttempted: the task's first attempt, and whether (when) the patient was
    reached and the outcomes they reported then."""
    reached_at = moment if reached else None
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.follow_up_facts
                (task_id, referral_id, site_id, window_days, attempted_at, reached_at,
                 reached_outcomes)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (task_id) DO UPDATE SET
                attempted_at = LEAST(follow_up_facts.attempted_at, excluded.attempted_at),
                reached_at = LEAST(follow_up_facts.reached_at, excluded.reached_at),
                reached_outcomes = ARRAY(
                    SELECT DISTINCT unnest(follow_up_facts.reached_outcomes
                                           || excluded.reached_outcomes) ORDER BY 1)""",
        task_id,
        referral_id,
        site_id,
        window_days,
        moment,
        reached_at,
        sorted(outcome.value for outcome in outcomes) if reached else [],
    )


def _outcomes(values: list[str]) -> frozenset[RecoveryOutcome]:
    return frozenset(RecoveryOutcome(value) for value in values)


def _filters(state: str | None, site_id: str | None, first: int) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if state is not None:
        args.append(state)
        clauses.append(f"r.state = ${first + len(args) - 1}")
    if site_id is not None:
        args.append(site_id)
        clauses.append(f"r.site_id = ${first + len(args) - 1}")
    return "".join(f" AND {clause}" for clause in clauses), args


async def month_facts(
    connection: Connection, month: Month, state: str | None = None, site_id: str | None = None
) -> tuple[list[ReferralFacts], list[FollowUpFacts]]:
    """The referrals and follow-up tasks with any moment in `month`, of referrals whose
    site is known (their ReferralCreated seen), optionally of one state and/or site."""
    where, args = _filters(state, site_id, 3)
    referrals = await connection.fetch(
        f"""SELECT * FROM {SCHEMA}.referral_facts r
            WHERE r.site_id IS NOT NULL AND r.state IS NOT NULL{where}
              AND (r.received_at >= $1 AND r.received_at < $2
                   OR r.accepted_at >= $1 AND r.accepted_at < $2
                   OR r.unassigned_at >= $1 AND r.unassigned_at < $2
                   OR r.expired_at >= $1 AND r.expired_at < $2
                   OR r.completed_at >= $1 AND r.completed_at < $2
                   OR r.cancelled_at >= $1 AND r.cancelled_at < $2
                   OR r.visit_recorded_at >= $1 AND r.visit_recorded_at < $2)""",
        month.start,
        month.end,
        *args,
    )
    tasks = await connection.fetch(
        f"""SELECT f.*, r.state FROM {SCHEMA}.follow_up_facts f
            JOIN {SCHEMA}.referral_facts r USING (referral_id)
            WHERE r.state IS NOT NULL{where}
              AND (f.due_at >= $1 AND f.due_at < $2
                   OR f.attempted_at >= $1 AND f.attempted_at < $2
                   OR f.reached_at >= $1 AND f.reached_at < $2)""",
        month.start,
        month.end,
        *args,
    )
    return (
        [
            ReferralFacts(
                site_id=row["site_id"],
                state=row["state"],
                received_at=row["received_at"],
                first_page_at=row["first_page_at"],
                accepted_at=row["accepted_at"],
                accepted_tier=Tier(row["accepted_tier"]) if row["accepted_tier"] else None,
                arrived_at=row["arrived_at"],
                completed_at=row["completed_at"],
                unassigned_at=row["unassigned_at"],
                expired_at=row["expired_at"],
                cancelled_at=row["cancelled_at"],
                visit_recorded_at=row["visit_recorded_at"],
                visit_outcomes=_outcomes(row["visit_outcomes"]),
            )
            for row in referrals
        ],
        [
            FollowUpFacts(
                site_id=row["site_id"],
                state=row["state"],
                window_days=row["window_days"],
                due_at=row["due_at"],
                attempted_at=row["attempted_at"],
                reached_at=row["reached_at"],
                reached_outcomes=_outcomes(row["reached_outcomes"]),
            )
            for row in tasks
        ],
    )
