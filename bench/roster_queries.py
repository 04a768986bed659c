"""Benchmark: reading one referral's rota from PostgreSQL, at a national roster's size.

The roster of bench/matching.py, stored: 10,000 coaches in 50 states and 500 sites,
7 weekly shifts each (70,000 rows). For each of 2,000 referrals at a random site,
matching's own queries read the shifts and the overrides of the site's pool and
its state's pool, as `MatchingService` does before ranking.

The reference, measured in the same run on the same connection: reading one
shift by its primary key, the floor for any indexed read.

    .venv/bin/python -m bench.roster_queries [--referrals 2000]
"""

import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.common import lookup_bench, percentile
from handoff_matching.adapters import roster_store
from handoff_matching.domain.schedules import Interval, Pool

STATES, SITES = 50, 500


async def seed(connection: asyncpg.Connection) -> None:
    await connection.execute(
        """INSERT INTO matching.coaches (coach_id, display_name, contact_methods, languages,
               gender, lived_experience, veteran, lgbtq_affirming, telehealth, max_concurrent,
               home_sites, active)
           SELECT gen_random_uuid(), 'Coach', '[]', '{en}', NULL, '{}', false, false, false,
                  2, '{}', true
           FROM generate_series(1, 10000)"""
    )
    # Four in five coaches on a site's rota, the others in their state's pool.
    await connection.execute(
        f"""INSERT INTO matching.shifts (coach_id, pool_kind, pool_key, weekday, starts, ends,
               time_zone)
           SELECT coach_id,
                  CASE WHEN n % 5 = 0 THEN 'state' ELSE 'site' END,
                  CASE WHEN n % 5 = 0 THEN 'S' || (n % {STATES}) ELSE 'site-' || (n % {SITES}) END,
                  weekday, '08:00', '20:00', 'America/New_York'
           FROM (SELECT coach_id, row_number() OVER () AS n FROM matching.coaches) numbered,
                generate_series(0, 6) AS weekday"""
    )
    # Settled, as a roster is between imports: no autovacuum or checkpoint mid-run.
    await connection.execute("VACUUM ANALYZE")
    await connection.execute("CHECKPOINT")


async def measure(database_url: str, referrals: int) -> None:
    await roster_store.apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await seed(connection)
        rng = random.Random(20261127)
        now = datetime.now(UTC)
        window = Interval(now, now + timedelta(microseconds=1))
        rota, floor = [], []
        for _ in range(referrals):
            site = rng.randrange(SITES)
            pools = [Pool.site(f"site-{site}"), Pool.state(f"S{site % STATES}")]
            started = time.perf_counter()
            await roster_store.shifts_for(connection, pools)
            await roster_store.overrides_for(connection, pools, window)
            rota.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await connection.fetchrow(
                "SELECT * FROM matching.shifts WHERE shift_id = $1", rng.randint(1, 70_000)
            )
            floor.append((time.perf_counter() - started) * 1000)
        shifts = await connection.fetchval("SELECT count(*) FROM matching.shifts")
    finally:
        await connection.close()
    print(f"roster: {shifts} shifts; {referrals} referrals at random sites")
    for name, times in (
        ("shifts + overrides of two pools", rota),
        ("reference: one row by key", floor),
    ):
        print(
            f"{name:<34} p50 {statistics.median(times):6.2f} ms  "
            f"p99 {percentile(times, 0.99):6.2f} ms  max {max(times):6.2f} ms"
        )


if __name__ == "__main__":
    lookup_bench(measure, __doc__ or "")
