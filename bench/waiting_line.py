"""Benchmark: serving the waiting line when one coach's slot frees, against its length.

One site, one coach on call with max_concurrent 1, and a line of N referrals
waiting for her (N = 25, 100, 500; each round leaves the declined one in line,
unassigned, so the pass walks all N every time). Her offer is declined; the line pass that the
decline's commit wakes walks the line in order, most urgent and longest first, and
offers the first referral she may be asked (the declined referral itself, next in
line, may not: she declined it). Measured: the decline's transaction, and the pass
that finds and offers the next one; both as matching's service layer runs them on
PostgreSQL, without Kafka.

The reference, measured in the same run on the same database: a new referral
arriving (`referral_created`, which here joins the line), the transaction every
referral pays.

    .venv/bin/python -m bench.waiting_line [--rounds 20]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.common import fresh_database, percentile
from handoff_devenv import PostgresCluster
from handoff_devenv.ports import free_ports
from handoff_matching import SCHEMA
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations, import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_matching.service import MatchingService
from handoff_platform.outbox import Outbox
from handoff_platform.timers import Timers
from handoff_schemas import Envelope
from handoff_schemas.events import CoachResponded, OfferMade, ReferralCreated, SiteFacts
from handoff_schemas.vocabulary import CoachResponse, Consent, ResponseVia, Urgency

COACH = uuid.uuid4()


def roster(site_id: str) -> RosterFile:
    return RosterFile.model_validate(
        {
            "coaches": [
                {
                    "coach_id": str(COACH),
                    "display_name": "Coach",
                    "contact_methods": [{"channel": "sms", "destination": "+14105550199"}],
                    "languages": ["en"],
                    "max_concurrent": 1,
                    "certifications": [
                        {"state": "MD", "credential": "CPRS", "expires_on": "2030-01-01"}
                    ],
                }
            ],
            "shifts": [
                {
                    "coach_id": str(COACH),
                    "pool": f"site:{site_id}",
                    "weekday": day,
                    "start": "00:00",
                    "end": "00:00",
                    "time_zone": "America/New_York",
                }
                for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                            "sunday")
            ],
        }
    )  # fmt: skip


def created(site_id: str) -> Envelope[ReferralCreated]:
    return Envelope.wrap(
        ReferralCreated(
            referral_id=uuid.uuid4(),
            site=SiteFacts(
                site_id=site_id, short_name="Bench ED", state="MD", time_zone="America/New_York"
            ),
            urgency=Urgency.URGENT,
            location="ED bay 4",
            callback_phone="+14105550100",
            preferred_language="en",
            interpreter_needed=False,
            substances=frozenset(),
            consent=Consent.OBTAINED,
            received_at=datetime.now(UTC),
        ),
        source="/handoff/bench",
        correlation_id="bench",
    )


async def open_offer(pool: asyncpg.Pool) -> OfferMade:
    """The coach's one open offer, from the outbox."""
    row = await pool.fetchval(
        f"""SELECT body FROM {SCHEMA}.outbox WHERE event_type = $1
            ORDER BY position DESC LIMIT 1""",
        OfferMade.event_type,
    )
    return Envelope[OfferMade].model_validate_json(row).data


async def measure(server_url: str, lengths: list[int], rounds: int) -> None:
    for length in lengths:  # a database each: one line alone
        database_url = await fresh_database(server_url)
        await apply_migrations(database_url)
        pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
        service = MatchingService(Outbox(SCHEMA), Timers(SCHEMA))
        try:
            site_id = f"bench-{uuid.uuid4().hex[:6]}"
            async with pool.acquire() as connection:
                await import_roster(connection, roster(site_id))
                await dispatch_store.put_site_settings(
                    connection, site_id, DispatchSettings(), True, ()
                )
            first: list[float] = []
            for _ in range(length + 1):  # the first takes her slot, the others wait
                started = time.perf_counter()
                async with pool.acquire() as connection, connection.transaction():
                    await service.referral_created(connection, created(site_id))
                first.append((time.perf_counter() - started) * 1000)
            decline, serve = [], []
            for _ in range(rounds):
                offer = await open_offer(pool)
                answer = Envelope.wrap(
                    CoachResponded(
                        referral_id=offer.referral_id,
                        offer_id=offer.offer_id,
                        coach_id=offer.coach_id,
                        response=CoachResponse.DECLINED,
                        via=ResponseVia.LINK,
                        responded_at=datetime.now(UTC),
                    ),
                    source="/handoff/bench",
                    correlation_id="bench",
                )
                started = time.perf_counter()
                async with pool.acquire() as connection, connection.transaction():
                    await service.coach_responded(connection, answer)
                decline.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                moved = await service.serve_line(pool)
                serve.append((time.perf_counter() - started) * 1000)
                assert moved == 1, f"the freed slot went to {moved} referrals"
            waiting = await pool.fetchval(
                f"""SELECT count(*) FROM {SCHEMA}.dispatches
                    WHERE state = 'waiting' AND document->'facts'->>'site_id' = $1""",
                site_id,
            )
            print(f"line of {length} (still {waiting} waiting at the end), {rounds} rounds:")
            for name, times in (
                ("decline (frees her slot)", decline),
                ("line pass: next referral offered", serve),
                ("reference: a new referral arriving", first[1:]),
            ):
                print(
                    f"  {name:<38} p50 {statistics.median(times):7.2f} ms  "
                    f"p99 {percentile(times, 0.99):7.2f} ms  max {max(times):7.2f} ms"
                )
        finally:
            await pool.close()


def main(rounds: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    directory.chmod(0o755)
    postgres = PostgresCluster(directory / "postgres", free_ports(1)[0], durable=True)
    print("starting PostgreSQL 15 (durable settings) ...", flush=True)
    postgres.start()
    try:
        asyncio.run(measure(postgres.url, [25, 100, 500], rounds))
    finally:
        postgres.destroy()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="at most 25")
    main(parser.parse_args().rounds)
