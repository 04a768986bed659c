"""Benchmark: the time to find and rank the candidates for one referral.

A roster of 10,000 coaches in 50 states and 500 sites (20 coaches per site, plus a
state pool of 40 per state), each coach with a weekly rota of 7 shifts. For one
referral at a random site and instant it resolves who is on call for the site
and for the state pool, checks eligibility, and ranks them — the pure domain
work matching does per offer, given the rows of the two pools (in production,
an indexed query by pool).

The reference, measured in the same run: sorting the same number of
(score, id) pairs with `sorted`, the floor for any ranking.

    .venv/bin/python bench/matching.py [--referrals 2000]
"""

import argparse
import platform
import random
import statistics
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall
from zoneinfo import ZoneInfo

from handoff_matching.domain.eligibility import Certification, Coach, SiteProfile, why_ineligible
from handoff_matching.domain.ranking import Candidate, Need, rank
from handoff_matching.domain.schedules import Pool, WeeklyShift, on_call
from handoff_schemas.vocabulary import GenderPreference, Substance

STATES, SITES_PER_STATE, SITE_COACHES, POOL_COACHES = 50, 10, 16, 40
ZONES = [
    ZoneInfo(name)
    for name in ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
]
GOAL_P99_MS = 5.0


def build_roster(
    rng: random.Random,
) -> tuple[dict[uuid.UUID, Coach], dict[Pool, list[WeeklyShift]], list[SiteProfile]]:
    coaches: dict[uuid.UUID, Coach] = {}
    shifts: dict[Pool, list[WeeklyShift]] = defaultdict(list)
    sites: list[SiteProfile] = []

    def new_coach(state: str) -> uuid.UUID:
        coach_id = uuid.UUID(int=rng.getrandbits(128))
        coaches[coach_id] = Coach(
            coach_id=coach_id,
            display_name="Coach",
            languages=frozenset(rng.sample(["en", "es", "pt", "vi", "zh"], 2)),
            gender=rng.choice(list(GenderPreference)),
            lived_experience=frozenset(rng.sample(list(Substance), 2)),
            max_concurrent=2,
            certifications=(Certification(state, "CPRS", date(2027, rng.randint(1, 12), 1)),),
            last_assigned_at=datetime(2026, 11, 27, tzinfo=UTC)
            - timedelta(hours=rng.random() * 72),
        )
        return coach_id

    def rota(coach_id: uuid.UUID, pool: Pool, zone: ZoneInfo) -> None:
        start = rng.choice([wall(0), wall(8), wall(16), wall(20)])
        end = wall((start.hour + 12) % 24)
        shifts[pool].extend(WeeklyShift(coach_id, pool, day, start, end, zone) for day in range(7))

    for state_index in range(STATES):
        state = f"{chr(65 + state_index // 26)}{chr(65 + state_index % 26)}"  # AA, AB, …
        zone = ZONES[state_index % len(ZONES)]
        for _ in range(POOL_COACHES):
            rota(new_coach(state), Pool.state(state), zone)
        for site_index in range(SITES_PER_STATE):
            site = SiteProfile(
                f"{state.lower()}-ed-{site_index}",
                state,
                zone,
                interpreter_available=rng.random() < 0.5,
            )
            sites.append(site)
            for _ in range(SITE_COACHES):
                rota(new_coach(state), Pool.site(site.site_id), zone)
    return coaches, shifts, sites


def candidates_for(
    site: SiteProfile,
    now: datetime,
    need: Need,
    coaches: dict[uuid.UUID, Coach],
    shifts: dict[Pool, list[WeeklyShift]],
) -> list[uuid.UUID]:
    site_pool, state_pool = Pool.site(site.site_id), Pool.state(site.state)
    at_site = on_call(site_pool, now, shifts[site_pool], [])
    in_state = on_call(state_pool, now, shifts[state_pool], []) - at_site
    fit = [
        Candidate(coaches[coach_id], coach_id in at_site)
        for coach_id in (*at_site, *in_state)
        if why_ineligible(coaches[coach_id], site, now, 0, False, need.language, True) is None
    ]
    return [ranked.coach_id for ranked in rank(fit, need, now)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(referrals: int) -> None:
    rng = random.Random(20261127)
    coaches, shifts, sites = build_roster(rng)
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}; roster: "
        f"{len(coaches)} coaches, {len(sites)} sites, {STATES} states, "
        f"{sum(len(s) for s in shifts.values())} shifts; {referrals} referrals"
    )
    timings, reference, pool_sizes = [], [], []
    for _ in range(referrals):
        site = rng.choice(sites)
        now = datetime(2026, 11, 27, tzinfo=UTC) + timedelta(minutes=rng.randrange(7 * 24 * 60))
        need = Need(
            site.site_id,
            rng.choice(["en", "es", "vi"]),
            rng.choice([None, *GenderPreference]),
            frozenset({Substance.OPIOIDS}),
        )
        started = time.perf_counter()
        ranked = candidates_for(site, now, need, coaches, shifts)
        timings.append((time.perf_counter() - started) * 1000)
        considered = len(shifts[Pool.site(site.site_id)]) // 7 + POOL_COACHES
        pool_sizes.append(len(ranked))
        pairs = [(rng.random(), uuid.UUID(int=rng.getrandbits(128))) for _ in range(considered)]
        started = time.perf_counter()
        sorted(pairs, key=lambda pair: (-pair[0], str(pair[1])))
        reference.append((time.perf_counter() - started) * 1000)
    print(
        f"{'rank candidates for one referral':<36} p50 {statistics.median(timings):6.3f} ms  "
        f"p99 {percentile(timings, 0.99):6.3f} ms  max {max(timings):6.3f} ms  "
        f"(eligible candidates: median {statistics.median(pool_sizes):.0f})"
    )
    print(
        f"{'reference: sorted() of as many pairs':<36} p50 {statistics.median(reference):6.3f} ms"
        f"  p99 {percentile(reference, 0.99):6.3f} ms"
    )
    p99 = percentile(timings, 0.99)
    print(f"goal p99 <= {GOAL_P99_MS:.0f} ms: {'met' if p99 <= GOAL_P99_MS else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=2000)
    main(parser.parse_args().referrals)
