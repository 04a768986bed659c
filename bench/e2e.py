"""Benchmark: a referral's POST answered → its first page handed to a provider, end to end.

Runs Kafka and PostgreSQL (the configured ones, or its own), then referral, matching
and notify as separate processes, notify paging into the sandbox provider. One
emergency department has twenty coaches on call; a bot plays them, accepting,
arriving and completing one page in ten through the links in the sandbox (the
others wait out a ten-minute ack timeout, so offers, not assignments, pile up).
Referrals arrive open-loop at a fixed rate. It prints:

- the time from `POST /v1/referrals` answered to the first page handed to the
  provider (the sandbox row's commit time): p50, p95, p99, max at 20 and 100/s;
- the highest rate, of those tried, sustained with every referral paged within 5 s
  and the outbox and consumer lag bounded;
- each service's peak resident memory, and the broker's;
- the reference, on the same broker in the same run: a bare aiokafka produce →
  consume hop (acks=all), so the pipeline's three hops and three commits read as a
  multiple of the floor.

    .venv/bin/python -m bench.e2e [--seconds 20] [--sustain-seconds 60] [--rates 100,200,300]
"""

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import (
    Servers,
    add_site,
    fresh_database,
    infrastructure,
    percentile,
    sandbox_messages,
    service_env,
    start_services,
)
from handoff_cli.demo import LINK, demo_referral
from handoff_devenv.service_process import ServiceProcess
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations, import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile

SITE = "md-bench"
COACHES = 20
GOAL_P50_MS, GOAL_P99_MS, GOAL_SUSTAINED = 50.0, 250.0, 300
PAGED_WITHIN_S = 5.0


@dataclass
class Phase:
    rate: float
    seconds: float
    answered_at: dict[str, datetime] = field(default_factory=dict)
    errors: int = 0


@dataclass
class System:
    database_url: str
    token: str
    services: dict[str, ServiceProcess]
    broker_pids: list[int]
    peak_rss: dict[str, int] = field(default_factory=dict)
    worst_lag: dict[str, float] = field(default_factory=dict)


def roster() -> RosterFile:
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    coaches = [uuid.uuid4() for _ in range(COACHES)]
    return RosterFile.model_validate(
        {
            "coaches": [
                {
                    "coach_id": str(c),
                    "display_name": f"Coach {n}",
                    "contact_methods": [{"channel": "sms", "destination": f"+1410556{n:04d}"}],
                    "languages": ["en"],
                    "max_concurrent": 10,
                    "certifications": [
                        {"state": "MD", "credential": "CPRS", "expires_on": "2030-01-01"}
                    ],
                }
                for n, c in enumerate(coaches)
            ],
            "shifts": [
                {
                    "coach_id": str(c),
                    "pool": f"site:{SITE}",
                    "weekday": day,
                    "start": "00:00",
                    "end": "00:00",
                    "time_zone": "America/New_York",
                }
                for c in coaches
                for day in days
            ],
        }
    )


async def seed(database_url: str) -> None:
    await apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await import_roster(connection, roster())
        await dispatch_store.put_site_settings(
            connection, SITE, DispatchSettings(ack_timeout=timedelta(minutes=10)), True, ()
        )
    finally:
        await connection.close()


async def offer_referrals(referral_url: str, token: str, phase: Phase) -> None:
    """Open loop: the i-th referral is posted at start + i / rate, answered or not."""
    run = uuid.uuid4().hex[:6]
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(
        referral_url, connector=connector, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def post(number: int) -> None:
            try:
                async with http.post(
                    "/v1/referrals", json=demo_referral(f"bench-{run}-{number}")
                ) as response:
                    created = await response.json()
                    if response.status == 201:
                        phase.answered_at[created["id"]] = datetime.now(UTC)
                    else:
                        phase.errors += 1
            except aiohttp.ClientError:
                phase.errors += 1

        started = time.monotonic()
        posts = []
        for number in range(int(phase.rate * phase.seconds)):
            await asyncio.sleep(max(0.0, started + number / phase.rate - time.monotonic()))
            posts.append(asyncio.create_task(post(number)))
        await asyncio.gather(*posts)


async def first_pages(database_url: str, referral_ids: list[str]) -> dict[str, datetime]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            """SELECT o.referral_id::text AS referral_id, min(s.sent_at) AS paged_at
               FROM notify.sandbox_messages s
               JOIN notify.messages m USING (message_id)
               JOIN notify.offers o USING (offer_id)
               WHERE m.kind = 'offer' AND o.referral_id = ANY($1::uuid[])
               GROUP BY o.referral_id""",
            referral_ids,
        )
    finally:
        await connection.close()
    return {r["referral_id"]: r["paged_at"] for r in rows}


async def page_latencies(system: System, phase: Phase) -> tuple[list[float], int]:
    """Milliseconds from answered to paged; and how many were not paged within 5 s."""
    deadline = time.monotonic() + PAGED_WITHIN_S + 5
    ids = list(phase.answered_at)
    while True:
        paged = await first_pages(system.database_url, ids)
        if len(paged) == len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    latencies = [
        (paged[r] - phase.answered_at[r]).total_seconds() * 1000 for r in ids if r in paged
    ]
    late = sum(1 for ms in latencies if ms > PAGED_WITHIN_S * 1000) + len(ids) - len(paged)
    return latencies, late


async def coach_bot(notify_url: str) -> None:
    """Answers one page in ten: accept, then arrived and completed once matching confirms."""
    seen, visits = 0, set()
    async with aiohttp.ClientSession() as http:

        async def tap(link: str, answer: str) -> bool:
            async with http.get(link) as page:
                if f'value="{answer}"' not in await page.text():
                    return False
            async with http.post(link, data={"answer": answer}, allow_redirects=False):
                return True

        async def visit(link: str) -> None:
            for answer in ("accepted", "arrived", "completed"):
                while not await tap(link, answer):  # noqa: ASYNC110 - the page is remote
                    await asyncio.sleep(0.2)

        while True:
            messages, seen = await sandbox_messages(http, notify_url, seen)
            for message in messages:
                page = LINK.search(message["body"])
                if page and "Reply 1" in message["body"] and message["id"] % 10 == 0:
                    task = asyncio.create_task(visit(page.group(0)))
                    visits.add(task)
                    task.add_done_callback(visits.discard)
            await asyncio.sleep(0.5)


async def watch(system: System) -> None:
    """Peak memory of every process, and the worst outbox age and consumer lag."""
    processes = {name: psutil.Process(s.process.pid) for name, s in system.services.items()}
    processes |= {f"kafka broker {i}": psutil.Process(p) for i, p in enumerate(system.broker_pids)}
    monitor = await asyncpg.connect(system.database_url)
    async with aiohttp.ClientSession() as http:
        while True:
            for name, process in processes.items():
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    system.peak_rss[name] = max(system.peak_rss.get(name, 0), rss)
            for schema in system.services:
                age = await monitor.fetchval(
                    f"SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
                    f"FROM {schema}.outbox"
                )
                key = f"{schema} outbox age (s)"
                system.worst_lag[key] = max(system.worst_lag.get(key, 0.0), age)
            for name, service in system.services.items():
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{service.url}/metrics") as metrics:
                        text = await metrics.text()
                lag = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("handoff_consumer_lag_messages{")
                )
                key = f"{name} consumer lag (messages)"
                system.worst_lag[key] = max(system.worst_lag.get(key, 0.0), lag)
            await asyncio.sleep(0.5)


async def kafka_hop(bootstrap_servers: str, messages: int = 2000, rate: float = 200) -> list[float]:
    """The floor: one acks=all produce and its consumption, in milliseconds."""
    topic = f"bench-hop-{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True
    )
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up")  # creates the topic
    await consumer.start()
    latencies: list[float] = []

    async def consume() -> None:
        async for record in consumer:
            if record.value != b"warm-up":
                latencies.append((time.perf_counter() - float(record.value or b"0")) * 1000)
                if len(latencies) == messages:
                    return

    reading = asyncio.create_task(consume())
    try:
        for _ in range(messages):
            await producer.send(topic, str(time.perf_counter()).encode())
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(reading, timeout=30)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def line(name: str, latencies: list[float]) -> str:
    if not latencies:
        return f"{name:<44} no data"
    return (
        f"{name:<44} p50 {statistics.median(latencies):7.1f}"
        f"  p95 {percentile(latencies, 0.95):7.1f}"
        f"  p99 {percentile(latencies, 0.99):7.1f}"
        f"  max {max(latencies):7.1f} ms"
    )


async def measure(
    system: System, servers: Servers, seconds: float, sustain: float, rates: list[float]
) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, "
        f"Python {platform.python_version()}; Kafka 4.1.1, PostgreSQL 15; {COACHES} coaches"
    )
    hop = await kafka_hop(servers.bootstrap_servers)
    print(line("reference: aiokafka produce → consume", hop))
    background = [
        asyncio.create_task(coach_bot(system.services["notify"].url)),
        asyncio.create_task(watch(system)),
    ]
    try:
        # Consumer groups settle and connections open before anything is measured.
        warm_up = Phase(5.0, 2.0)
        await offer_referrals(system.services["referral"].url, system.token, warm_up)
        await page_latencies(system, warm_up)
        results: dict[float, list[float]] = {}
        for rate in (20.0, 100.0):
            phase = Phase(rate, seconds)
            await offer_referrals(system.services["referral"].url, system.token, phase)
            latencies, late = await page_latencies(system, phase)
            results[rate] = latencies
            print(
                line(f"answered → first page at {rate:.0f}/s ({len(phase.answered_at)})", latencies)
                + f"  late {late}  errors {phase.errors}"
            )
        sustained = 0.0
        for rate in rates:
            phase = Phase(rate, sustain)
            await offer_referrals(system.services["referral"].url, system.token, phase)
            latencies, late = await page_latencies(system, phase)
            achieved = len(phase.answered_at) / sustain
            held = late == 0 and phase.errors == 0 and achieved >= 0.95 * rate
            print(
                line(f"{sustain:.0f} s at {rate:.0f}/s offered, {achieved:.0f}/s taken", latencies)
                + f"  late {late}  errors {phase.errors}"
                + ("  sustained" if held else "  NOT sustained")
            )
            if not held:
                break
            sustained = rate
    finally:
        for task in background:
            task.cancel()
    for name, worst in sorted(system.worst_lag.items()):
        print(f"worst {name:<40} {worst:8.2f}")
    for name, rss in sorted(system.peak_rss.items()):
        print(f"peak memory {name:<33} {rss / 2**20:7.0f} MB")
    at_100 = results[100.0]
    p50, p99 = statistics.median(at_100), percentile(at_100, 0.99)
    print(f"pipeline p50 at 100/s: {p50 / statistics.median(hop):.1f}x the bare Kafka hop's p50")
    verdicts = [
        (f"p50 at 100/s <= {GOAL_P50_MS:.0f} ms", p50 <= GOAL_P50_MS),
        (f"p99 at 100/s <= {GOAL_P99_MS:.0f} ms", p99 <= GOAL_P99_MS),
        (f"sustained >= {GOAL_SUSTAINED}/s", sustained >= GOAL_SUSTAINED),
        (
            "every service <= 150 MB",
            all(rss <= 150 * 2**20 for n, rss in system.peak_rss.items() if "kafka" not in n),
        ),
    ]
    print(f"highest rate sustained: {sustained:.0f}/s of those tried")
    for goal, met in verdicts:
        print(f"goal {goal}: {'met' if met else 'NOT met'}")


def main(seconds: float, sustain: float, rates: list[float]) -> None:
    with infrastructure() as servers:
        database_url = asyncio.run(fresh_database(servers.database_url))
        env = service_env(database_url, servers.bootstrap_servers)
        token = add_site(SITE, env)
        asyncio.run(seed(database_url))
        services: dict[str, ServiceProcess] = {}
        try:
            start_services(env, services)
            system = System(database_url, token, services, servers.broker_pids)
            asyncio.run(measure(system, servers, seconds, sustain, rates))
        finally:
            for service in services.values():
                service.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="length of the 20/s and 100/s runs"
    )
    parser.add_argument("--sustain-seconds", type=float, default=60.0)
    parser.add_argument(
        "--rates", default="100,200,300", help="rates tried in turn, until one is not sustained"
    )
    arguments = parser.parse_args()
    main(
        arguments.seconds, arguments.sustain_seconds, [float(r) for r in arguments.rates.split(",")]
    )
