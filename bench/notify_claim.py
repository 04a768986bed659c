"""Benchmark: what reply codes cost notify's delivery claim, per offer page.

Claiming an SMS offer page now also takes the phone's reply-code lock, reads the
phone's codes of the last day and stores the new one, and every claim reads the
blocked contact methods. This measures `NotifyService.claim_due` (batches of 50,
as the delivery worker claims them) over pending offer pages, each to its own
destination, on PostgreSQL with durable settings.

The reference, measured in the same run on the same database: the same number of
email offer pages, which take every step of the claim but the reply code. Each
round alternates the two, so load from elsewhere on the machine hits both alike.

    .venv/bin/python -m bench.notify_claim [--pages 1000] [--rounds 3]
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.common import fresh_database
from handoff_devenv import PostgresCluster
from handoff_devenv.ports import free_ports
from handoff_notify.adapters import pages_store
from handoff_notify.domain.content import MessageKind
from handoff_notify.service import NotifyService
from handoff_notify.settings import NotifySettings
from handoff_platform.outbox import Outbox
from handoff_platform.timers import Timers
from handoff_schemas.events import ContactPoint, OfferBriefing, OfferMade
from handoff_schemas.vocabulary import Channel, Consent, Tier, Urgency

BRIEFING = OfferBriefing(
    location="ED bay 4",
    callback_phone="+14105550100",
    preferred_language="en",
    interpreter_needed=False,
    consent=Consent.OBTAINED,
)


async def queue(pool: asyncpg.Pool, channel: Channel, pages: int, round_no: int) -> None:
    """`pages` offers, each with its first page pending to a destination of its own."""
    now = datetime.now(UTC)
    async with pool.acquire() as connection, connection.transaction():
        for n in range(pages):
            destination = (
                f"+1410{round_no:02d}{n:05d}"
                if channel is Channel.SMS
                else f"coach-{round_no}-{n}@example.org"
            )
            contact = ContactPoint(channel=channel, destination=destination)
            offer = OfferMade(
                referral_id=uuid.uuid4(),
                offer_id=uuid.uuid4(),
                coach_id=uuid.uuid4(),
                site_id="md-mercy",
                site_short_name="Mercy ED",
                urgency=Urgency.URGENT,
                tier=Tier.SITE,
                expires_at=now + timedelta(minutes=10),
                briefing=BRIEFING,
                contacts=(contact,),
            )
            await pages_store.save_offer(connection, offer, str(uuid.uuid4()), now)
            await pages_store.add_message(
                connection, uuid.uuid4(), offer.offer_id, MessageKind.OFFER, 0, contact, now
            )


async def claim_all(service: NotifyService, pages: int) -> float:
    """Seconds to claim `pages` due pages in the delivery worker's batches."""
    claimed = 0
    started = time.perf_counter()
    while claimed < pages:
        batch = await service.claim_due(50)
        assert batch, f"only {claimed} of {pages} pages were claimable"
        claimed += len(batch)
    return time.perf_counter() - started


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """`DATABASE_URL` if given, else a local PostgreSQL 15 with durable settings."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    directory = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    directory.chmod(0o755)
    cluster = PostgresCluster(directory / "postgres", free_ports(1)[0], durable=True)
    print("starting PostgreSQL 15 (durable settings) ...", flush=True)
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.destroy()


async def run(server_url: str, pages: int, rounds: int) -> None:
    database = await fresh_database(server_url)
    await pages_store.apply_migrations(database)
    settings = NotifySettings(
        database_url=database,
        notify_delivery="sandbox",
        notify_link_secret=uuid.uuid4().hex,  # links are never opened here
        offers_per_15_minutes=1_000_000,
    )
    pool = await asyncpg.create_pool(database, min_size=2, max_size=4)
    assert pool is not None
    service = NotifyService(pool, Outbox("notify"), Timers("notify"), settings)
    per_page: dict[Channel, list[float]] = {Channel.SMS: [], Channel.EMAIL: []}
    try:
        for round_no in range(rounds):
            for channel in (Channel.EMAIL, Channel.SMS):
                await queue(pool, channel, pages, round_no)
                seconds = await claim_all(service, pages)
                per_page[channel].append(seconds / pages * 1000)
    finally:
        await pool.close()
    print(f"claim_due over {pages} offer pages, batches of 50, {rounds} rounds (ms per page)")
    for channel, label in ((Channel.EMAIL, "reference: email pages"), (Channel.SMS, "SMS pages")):
        figures = per_page[channel]
        print(
            f"    {label:<40} median {statistics.median(figures):6.3f}"
            f"   min {min(figures):6.3f}   max {max(figures):6.3f}"
        )
    extra = statistics.median(per_page[Channel.SMS]) - statistics.median(per_page[Channel.EMAIL])
    print(f"    {'reply code, per SMS page':<40} median {extra:+6.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    with postgres() as server_url:
        asyncio.run(run(server_url, arguments.pages, arguments.rounds))
