"""Benchmark: who is on call for a referral, with rotations, layers and overrides.

A national roster in PostgreSQL: 10,000 coaches, referrals from 500 sites in 50 states.
The weekly shifts of bench/roster_queries.py (70,000 rows, priority 0; its seed puts
them at 400 of the sites and 10 of the state pools) and, above them in each of those
pools, a rotation of the pool's coaches (sites: daily at 08:00; state pools: weekly,
Monday 08:00); 2,000 overrides (replace and remove) lie around now.
For each of 2,000 referrals at a random site, the on-call of the site and its state
pool is read:

- `OnCall` (what matching does now): cached per pool, the schedule version read each time;
- the same with the cache emptied before each referral (every read recomputes both pools);
- reference, measured in the same run on the same connection: the weekly-shift lookup
  matching used before (the two pools' shifts and overrides read, `schedules.on_call`).

    .venv/bin/python -m bench.on_call [--referrals 2000]
"""

import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.common import lookup_bench, percentile
from bench.roster_queries import SITES, STATES, seed
from handoff_matching.adapters import roster_store
from handoff_matching.domain.schedules import Interval, Pool, on_call
from handoff_matching.on_call import OnCall


async def seed_rotations_and_overrides(connection: asyncpg.Connection) -> None:
    await connection.execute(
        """INSERT INTO matching.layers (layer_id, pool_kind, pool_key, name, priority, kind)
           SELECT gen_random_uuid(), pool_kind, pool_key, 'weekly shifts', 0, 'weekly'
           FROM matching.shifts GROUP BY pool_kind, pool_key"""
    )
    await connection.execute(
        """WITH pools AS (
               SELECT pool_kind, pool_key, array_agg(DISTINCT coach_id) AS coaches
               FROM matching.shifts GROUP BY pool_kind, pool_key),
           layers AS (
               INSERT INTO matching.layers (layer_id, pool_kind, pool_key, name, priority, kind)
               SELECT gen_random_uuid(), pool_kind, pool_key, 'rotation', 1, 'rotation'
               FROM pools RETURNING layer_id, pool_kind, pool_key)
           INSERT INTO matching.rotations (layer_id, time_zone, start_date, handoff,
               shift_length, shift_unit, participants)
           SELECT l.layer_id, 'America/New_York', date '2026-10-05', '08:00', 1,
                  CASE WHEN l.pool_kind = 'site' THEN 'days' ELSE 'weeks' END, p.coaches
           FROM layers l JOIN pools p USING (pool_kind, pool_key)"""
    )
    await connection.execute(
        """INSERT INTO matching.overrides (override_id, kind, pool_kind, pool_key, coach_id,
               replaces, starts_at, ends_at)
           SELECT gen_random_uuid(), CASE WHEN n % 2 = 0 THEN 'replace' ELSE 'remove' END,
                  s.pool_kind, s.pool_key, s.coach_id,
                  CASE WHEN n % 2 = 0 THEN s.coach_id END,
                  now() - interval '1 hour' * (n % 24), now() + interval '1 hour' * (n % 48 + 1)
           FROM (SELECT DISTINCT ON (coach_id) coach_id, pool_kind, pool_key,
                        row_number() OVER () AS n
                 FROM matching.shifts ORDER BY coach_id LIMIT 2000) s"""
    )
    await connection.execute("VACUUM ANALYZE")
    await connection.execute("CHECKPOINT")


def summary(name: str, times: list[float]) -> str:
    return (
        f"{name:<46} p50 {statistics.median(times):7.2f} ms  "
        f"p99 {percentile(times, 0.99):7.2f} ms  max {max(times):7.2f} ms"
    )


async def measure(database_url: str, referrals: int) -> None:
    await roster_store.apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await seed(connection)
        await seed_rotations_and_overrides(connection)
        rng = random.Random(20261201)
        cached, cold, reference = OnCall(), [], []
        warm: list[float] = []
        for _ in range(referrals):
            site = rng.randrange(SITES)
            pools = [Pool.site(f"site-{site}"), Pool.state(f"S{site % STATES}")]
            now = datetime.now(UTC)

            started = time.perf_counter()
            found = await cached(connection, pools, now)
            warm.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            assert await OnCall()(connection, pools, now) == found
            cold.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            window = Interval(now, now + timedelta(microseconds=1))
            shifts = await roster_store.shifts_for(connection, pools)
            overrides = await roster_store.overrides_for(connection, pools, window)
            for pool in pools:
                on_call(pool, now, shifts, overrides)
            reference.append((time.perf_counter() - started) * 1000)
        counts = await connection.fetchrow(
            """SELECT (SELECT count(*) FROM matching.shifts) AS shifts,
                      (SELECT count(*) FROM matching.layers WHERE kind = 'rotation'
                          AND pool_kind = 'site') AS site_rotations,
                      (SELECT count(*) FROM matching.layers WHERE kind = 'rotation'
                          AND pool_kind = 'state') AS state_rotations,
                      (SELECT count(*) FROM matching.overrides) AS overrides"""
        )
    finally:
        await connection.close()
    assert counts is not None
    print(
        f"{counts['shifts']} weekly shifts; rotations at {counts['site_rotations']} sites and "
        f"{counts['state_rotations']} state pools; {counts['overrides']} overrides; "
        f"{referrals} referrals at random sites of {SITES} in {STATES} states"
    )
    print(summary("OnCall, cached per pool (matching now)", warm))
    print(summary("OnCall, recomputed for every referral", cold))
    print(summary("reference: weekly-shift lookup (before)", reference))


if __name__ == "__main__":
    lookup_bench(measure, __doc__ or "")
