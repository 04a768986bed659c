"""Benchmark: a referral's POST answered → its first page handed to a provider, end to end,
stepping the offered rate up to find the knee.

Runs Kafka and PostgreSQL (the configured ones, or its own), then referral, matching
and notify as separate processes, notify paging into the sandbox provider. One
emergency department has fifty coaches on call, ten referrals each at most; with
`--sites N`, N departments share the fifty coaches between them (each its own on-call)
and the referrals arrive at each in turn: matching offers one site's referrals one at a
time (the coach locks that keep every coach within capacity), different sites' side by
side. Referrals
arrive open-loop at a fixed rate; the load generator plays the ED too and cancels each
referral ("patient left") once its first page is out, which frees the coach's slot as
an answer would, so the run measures the pipeline and not the roster's capacity. For each
step of the offered rate (default 25, 50, 100, 200, 300, 400/s, 30 s each) it prints:

- p50 and p99 from `POST /v1/referrals` answered to the first page handed to the provider
  (the sandbox row's commit time), how many were late (over 5 s or never) and errors;
- each service's consumer lag and the oldest outbox row at the end of the step;
- CPU milliseconds per referral per process, net of what the process uses idle (measured
  first, and printed): each service, PostgreSQL (postmaster and backends), the Kafka
  broker and the load generator (this process, which also plays the ED);
- whether the step was sustained: at least 95 % of the rate taken, no error, every
  referral paged within 5 s. Stepping stops at the first step not sustained (so its
  backlog does not spoil the next), unless `--keep-going`.

Then the highest rate sustained, peak memory per process, and the pipeline's p50 at
100/s as a multiple of the reference measured on the same broker in the same run: a
bare aiokafka produce → consume hop (acks=all).

With `--profile DIR`, py-spy samples each service during each step (`bench/profiles.py`):
the collapsed stacks go to DIR/<rate>/<service>.txt and a line per service says where its
CPU went (share of samples by package and the busiest functions, self time). py-spy's own
CPU then shares the two cores: compare figures from runs without it.

With `--statements` (only when the bench runs its own PostgreSQL), pg_stat_statements
counts what the clients sent during each step: statements per referral by the schema each
names (BEGIN/COMMIT apart), and the TOP (default 6) statements that cost the most time per
referral, lock waits included (a statement that waits for a lock is slow without using
CPU); `--statements 200` lists about every one, with its calls per referral.

    .venv/bin/python -m bench.e2e [--steps 25,50,100,200,300,400] [--step-seconds 30]
                                  [--profile DIR] [--statements [TOP]] [--sites N]
"""

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import profiles
from bench.common import (
    STEP_NUMBER,
    Servers,
    add_site,
    fresh_database,
    infrastructure,
    metric_total,
    percentile,
    rates,
    service_env,
    start_services,
)
from handoff_cli.demo import demo_referral
from handoff_devenv.service_process import ServiceProcess
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations, import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile

SITE = "md-bench"


def site_ids(sites: int) -> list[str]:
    """The benchmark's emergency departments: `SITE` alone, or `SITE`-1 … `SITE`-N."""
    return [SITE] if sites == 1 else [f"{SITE}-{n}" for n in range(1, sites + 1)]


COACHES = 50
MAX_CONCURRENT = 10
GOAL_P50_MS, GOAL_P99_MS, GOAL_SUSTAINED, GOAL_RSS_MB = 30.0, 100.0, 300, 150
PAGED_WITHIN_S = 5.0
LOAD_GENERATOR = "load generator"
POSTGRES = "postgres"


@dataclass
class Phase:
    rate: float
    seconds: float
    answered_at: dict[str, datetime] = field(default_factory=dict)
    errors: int = 0


@dataclass
class System:
    database_url: str
    tokens: list[str]  # one API key per site: a referral is posted and cancelled with its site's
    services: dict[str, ServiceProcess]
    broker_pids: list[int]
    postgres_pid: int | None
    peak_rss: dict[str, int] = field(default_factory=dict)
    token_of: dict[str, str] = field(default_factory=dict)  # referral id → its site's API key


@dataclass
class Step:
    """One offered rate's figures. Milliseconds for latencies and CPU, seconds for ages."""

    rate: float
    taken: float
    referrals: int
    latencies: list[float]
    late: int
    errors: int
    lag: dict[str, float]
    outbox_age: dict[str, float]
    cpu_ms_per_referral: dict[str, float]
    database_per_referral: dict[str, float]
    cpu_profiles: dict[str, profiles.Profile] = field(default_factory=dict)
    statements: list["StatementFigures"] = field(default_factory=list)

    @property
    def sustained(self) -> bool:
        return self.late == 0 and self.errors == 0 and self.taken >= 0.95 * self.rate


@dataclass
class StatementFigures:
    """One statement's figures over a step (pg_stat_statements): calls, and milliseconds
    of execution in all, lock waits included."""

    query: str
    calls: int
    total_ms: float

    @property
    def owner(self) -> str:
        """Whose statement: the first schema it names, "transaction" for BEGIN, COMMIT and
        ROLLBACK, else "other" (an advisory lock, a NOTIFY)."""
        if re.match(r"\s*(BEGIN|COMMIT|ROLLBACK)\b", self.query, re.IGNORECASE):
            return "transaction"
        found = _SCHEMA_NAMED.search(self.query)
        return found.group(1) if found else "other"


_SCHEMA_NAMED = re.compile(r'\b"?(referral|matching|notify)"?\.')


async def reset_statements(database_url: str) -> bool:
    """Start counting statements afresh; False if pg_stat_statements is not loaded."""
    monitor = await asyncpg.connect(database_url)
    try:
        await monitor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await monitor.execute("SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError:
        return False
    finally:
        await monitor.close()
    return True


async def counted_statements(database_url: str) -> list[StatementFigures]:
    """Every statement counted since `reset_statements`, in this database."""
    monitor = await asyncpg.connect(database_url)
    try:
        rows = await monitor.fetch(
            """SELECT query, calls, total_exec_time FROM pg_stat_statements
               WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"""
        )
    finally:
        await monitor.close()
    return [StatementFigures(r["query"], r["calls"], r["total_exec_time"]) for r in rows]


def statement_lines(statements: list[StatementFigures], referrals: int, top: int = 6) -> list[str]:
    """Statements per referral by owner, then the `top` costliest per referral."""
    by_owner: Counter[str] = Counter()
    for statement in statements:
        by_owner[statement.owner] += statement.calls
    total = by_owner.total() / referrals
    lines = [
        f"    statements per referral: {total:.1f} ("
        + ", ".join(f"{owner} {calls / referrals:.1f}" for owner, calls in by_owner.most_common())
        + ")"
    ]
    for statement in sorted(statements, key=lambda s: -s.total_ms)[:top]:
        text = " ".join(statement.query.split())
        calls, mean = statement.calls / referrals, statement.total_ms / statement.calls
        lines.append(
            f"      {statement.total_ms / referrals:6.2f} ms per referral"
            f" ({calls:5.2f} x {mean:6.2f} ms)  {text[:90]}"
        )
    return lines


def roster(sites: list[str]) -> RosterFile:
    """`COACHES` coaches on call around the clock, dealt to the sites in turn."""
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
                    "max_concurrent": MAX_CONCURRENT,
                    "certifications": [
                        {"state": "MD", "credential": "CPRS", "expires_on": "2030-01-01"}
                    ],
                }
                for n, c in enumerate(coaches)
            ],
            "shifts": [
                {
                    "coach_id": str(c),
                    "pool": f"site:{sites[n % len(sites)]}",
                    "weekday": day,
                    "start": "00:00",
                    "end": "00:00",
                    "time_zone": "America/New_York",
                }
                for n, c in enumerate(coaches)
                for day in days
            ],
        }
    )


async def seed(database_url: str, sites: list[str]) -> None:
    await apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await import_roster(connection, roster(sites))
        for site in sites:
            await dispatch_store.put_site_settings(
                connection, site, DispatchSettings(ack_timeout=timedelta(minutes=10)), True, ()
            )
    finally:
        await connection.close()


async def offer_referrals(system: System, phase: Phase) -> None:
    """Open loop: the i-th referral is posted at start + i / rate, answered or not, by
    site i mod the number of sites."""
    run = uuid.uuid4().hex[:6]
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(system.services["referral"].url, connector=connector) as http:

        async def post(number: int) -> None:
            token = system.tokens[number % len(system.tokens)]
            try:
                async with http.post(
                    "/v1/referrals",
                    json=demo_referral(f"bench-{run}-{number}"),
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    created = await response.json()
                    if response.status == 201:
                        phase.answered_at[created["id"]] = datetime.now(UTC)
                        system.token_of[created["id"]] = token
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


async def emergency_department(system: System) -> None:
    """Cancels each referral ("patient left") once its first page is in the sandbox, as a
    coach's answer would free the slot; every 0.25 s, oldest first."""
    referral_url, last = system.services["referral"].url, 0
    monitor = await asyncpg.connect(system.database_url)
    async with aiohttp.ClientSession(referral_url) as http:

        async def cancel(referral_id: str) -> None:
            token = system.token_of.get(referral_id)
            if token is None:  # the 201 not read yet: cancelled on a later round
                return
            with contextlib.suppress(aiohttp.ClientError):
                async with http.post(
                    f"/v1/referrals/{referral_id}/cancel",
                    json={"reason": "patient_left"},
                    headers={"Authorization": f"Bearer {token}"},
                ):
                    pass

        try:
            while True:
                rows = await monitor.fetch(
                    """SELECT s.sandbox_id, o.referral_id::text AS referral_id
                       FROM notify.sandbox_messages s
                       JOIN notify.messages m USING (message_id)
                       JOIN notify.offers o USING (offer_id)
                       WHERE m.kind = 'offer' AND s.sandbox_id > $1
                       ORDER BY s.sandbox_id""",
                    last,
                )
                if rows:
                    last = rows[-1]["sandbox_id"]
                    await asyncio.gather(*(cancel(r) for r in {r["referral_id"] for r in rows}))
                await asyncio.sleep(0.25)
        finally:
            await monitor.close()


def processes(system: System) -> dict[str, list[psutil.Process]]:
    """The processes each CPU figure covers, by name (PostgreSQL: postmaster and backends)."""
    return process_groups(
        {name: s.process.pid for name, s in system.services.items()},
        system.postgres_pid,
        system.broker_pids,
    )


def process_groups(
    services: Mapping[str, int], postgres_pid: int | None, broker_pids: Sequence[int]
) -> dict[str, list[psutil.Process]]:
    """The processes each CPU column covers, by name: each service's pid, PostgreSQL's
    postmaster (`cpu_seconds` adds the backends alive when it counts), the brokers, and
    this process as the load generator."""
    groups = {name: [psutil.Process(pid)] for name, pid in services.items()}
    if postgres_pid is not None:
        groups[POSTGRES] = [psutil.Process(postgres_pid)]
    if broker_pids:
        groups["kafka"] = [psutil.Process(p) for p in broker_pids]
    groups[LOAD_GENERATOR] = [psutil.Process()]
    return groups


def cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """CPU seconds used so far per group, user and system, with reaped children (a
    PostgreSQL backend that ended counts in its postmaster's children_* times). PostgreSQL's
    backends are listed at each call: a connection opened between two calls is a backend
    the first did not see, and its whole time belongs between them. Raises psutil.Error if a
    measured process other than a backend is gone (a zombie still counts)."""
    used: dict[str, float] = {}
    for name, members in groups.items():
        if name == POSTGRES:
            with contextlib.suppress(psutil.Error):
                members = [members[0], *members[0].children(recursive=True)]
        total = 0.0
        for process in members:
            try:
                times = process.cpu_times()
            except psutil.Error:
                if name != POSTGRES or process is members[0]:
                    raise  # a measured process is gone: its figures would read as negative
                continue  # a backend that ended meanwhile: counted in its postmaster's times
            total += times.user + times.system + times.children_user + times.children_system
        used[name] = total
    return used


async def backlog(system: System) -> tuple[dict[str, float], dict[str, float]]:
    """Now: each service's consumer lag (messages) and its oldest outbox row's age (s)."""
    lag: dict[str, float] = {}
    age: dict[str, float] = {}
    monitor = await asyncpg.connect(system.database_url)
    try:
        for schema in system.services:
            age[schema] = await monitor.fetchval(
                f"SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
                f"FROM {schema}.outbox"
            )
    finally:
        await monitor.close()
    async with aiohttp.ClientSession() as http:
        for name, service in system.services.items():
            lag[name] = 0.0
            with contextlib.suppress(aiohttp.ClientError):
                lag[name] = await metric_total(http, service.url, "handoff_consumer_lag_messages")
    return lag, age


async def drained(system: System, deadline_s: float = 60.0) -> None:
    """Waits until no consumer lags and no outbox row waits, so a step starts clean."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        lag, age = await backlog(system)
        if not any(lag.values()) and not any(age.values()):
            return
        await asyncio.sleep(0.5)


async def peak_memory(system: System) -> None:
    """Peak resident memory of every service and broker, every 0.5 s."""
    watched = {name: psutil.Process(s.process.pid) for name, s in system.services.items()}
    watched |= {f"kafka broker {i}": psutil.Process(p) for i, p in enumerate(system.broker_pids)}
    while True:
        for name, process in watched.items():
            with contextlib.suppress(psutil.Error):
                rss = process.memory_info().rss
                system.peak_rss[name] = max(system.peak_rss.get(name, 0), rss)
        await asyncio.sleep(0.5)


async def idle_cpu(
    groups: dict[str, list[psutil.Process]], seconds: float = 5.0
) -> dict[str, float]:
    """CPU seconds per second each group uses with no referral arriving (timers, polls,
    lag exporters), to take off each step's figure."""
    before, started = cpu_seconds(groups), time.monotonic()
    await asyncio.sleep(seconds)
    after, elapsed = cpu_seconds(groups), time.monotonic() - started
    return {name: (after[name] - before[name]) / elapsed for name in groups}


async def database_work(database_url: str) -> dict[str, float]:
    """This database's commits and rows written (inserted, updated, deleted) so far, from
    PostgreSQL's cumulative statistics (`pg_stat_database`), the bench's own reads included."""
    monitor = await asyncpg.connect(database_url)
    try:
        row = await monitor.fetchrow(
            """SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS written
               FROM pg_stat_database WHERE datname = current_database()"""
        )
    finally:
        await monitor.close()
    assert row is not None
    return {"commits": float(row["xact_commit"]), "rows written": float(row["written"])}


async def step(
    system: System,
    rate: float,
    seconds: float,
    idle: dict[str, float],
    profile: Path | None = None,
    statements: bool = False,
) -> Step:
    """Offers `rate` referrals a second for `seconds`; its figures. CPU per referral is net
    of what each process uses idle over the same time. With `profile` (a folder), each
    service is sampled by py-spy while referrals arrive, into `profile`/<rate>/<service>.txt."""
    groups = processes(system)
    recordings = [
        profiles.record(name, service.process.pid, seconds, profile / f"{rate:.0f}" / f"{name}.txt")
        for name, service in system.services.items()
        if profile is not None
    ]
    counting = statements and await reset_statements(system.database_url)
    work_before = await database_work(system.database_url)
    before, started = cpu_seconds(groups), time.monotonic()
    phase = Phase(rate, seconds)
    await offer_referrals(system, phase)
    lag, age = await backlog(system)
    latencies, late = await page_latencies(system, phase)
    after, elapsed = cpu_seconds(groups), time.monotonic() - started
    referrals = max(1, len(phase.answered_at))
    for recording in recordings:
        await asyncio.to_thread(recording.finish)
    # A busy backend flushes its statistics at least every second, an idle one within 10 s:
    # a step's figures may miss its last second and carry the step before's (a few %).
    await asyncio.sleep(1.0)
    work_after = await database_work(system.database_url)
    net = {n: after[n] - before[n] - idle.get(n, 0.0) * elapsed for n in groups}
    return Step(
        rate=rate,
        taken=len(phase.answered_at) / seconds,
        referrals=len(phase.answered_at),
        latencies=latencies,
        late=late,
        errors=phase.errors,
        lag=lag,
        outbox_age=age,
        cpu_ms_per_referral={n: max(0.0, used) * 1000 / referrals for n, used in net.items()},
        database_per_referral={
            name: (work_after[name] - work_before[name]) / referrals for name in work_after
        },
        cpu_profiles={r.name: profiles.Profile.read(r.output) for r in recordings},
        statements=await counted_statements(system.database_url) if counting else [],
    )


def step_row(result: Step) -> str:
    ms = result.latencies
    p50 = f"{statistics.median(ms):7.1f}" if ms else "      -"
    p99 = f"{percentile(ms, 0.99):7.1f}" if ms else "      -"
    cpu = result.cpu_ms_per_referral
    return (
        f"{result.rate:6.0f} {result.taken:7.0f} {p50} {p99} {result.late:5d} {result.errors:5d}"
        f" {sum(result.lag.values()):7.0f} {max(result.outbox_age.values(), default=0.0):7.2f}"
        + "".join(f" {cpu.get(name, 0.0):8.2f}" for name in CPU_COLUMNS)
        + f" {sum(cpu.values()):7.2f}  {'yes' if result.sustained else 'NO'}"
    )


CPU_COLUMNS = ("referral", "matching", "notify", POSTGRES, "kafka", LOAD_GENERATOR)
STEP_HEADER = (
    "  rate   taken  p50 ms  p99 ms  late  errs     lag  outbox"
    " referral matching   notify postgres    kafka  loadgen   total  sustained\n"
    "   (/s)    (/s)  201 → first page            (msgs)     (s)"
    "  CPU ms per referral ------------------------------------------"
)


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
    system: System,
    servers: Servers,
    rates: list[float],
    seconds: float,
    keep_going: bool,
    profile: Path | None,
    statements: int = 0,
) -> None:
    """Steps through `rates`; with `statements` > 0, lists that many costliest statements."""
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, "
        f"Python {platform.python_version()}; Kafka 4.1.1, PostgreSQL 15; "
        f"{COACHES} coaches, {MAX_CONCURRENT} each, at {len(system.tokens)} site(s)"
    )
    hop = await kafka_hop(servers.bootstrap_servers)
    print(line("reference: aiokafka produce → consume", hop))
    background = [
        asyncio.create_task(emergency_department(system)),
        asyncio.create_task(peak_memory(system)),
    ]
    steps: list[Step] = []
    try:
        # Consumer groups settle and connections open before anything is measured.
        warm_up = Phase(5.0, 2.0)
        await offer_referrals(system, warm_up)
        await page_latencies(system, warm_up)
        await drained(system)
        idle = await idle_cpu(processes(system))
        print(
            "idle CPU (% of a core): "
            + ", ".join(f"{name} {share * 100:.1f}" for name, share in idle.items())
        )
        print(STEP_HEADER, flush=True)
        for rate in rates:
            await drained(system)
            steps.append(await step(system, rate, seconds, idle, profile, statements > 0))
            print(step_row(steps[-1]), flush=True)
            work = steps[-1].database_per_referral
            print(
                "    postgres  per referral: "
                + ", ".join(f"{value:.1f} {name}" for name, value in work.items()),
                flush=True,
            )
            for name, sampled in steps[-1].cpu_profiles.items():
                print(f"    {name:<9} CPU by package: {sampled.summary()}", flush=True)
            if statements:
                counted = steps[-1].statements
                print(
                    "\n".join(statement_lines(counted, max(1, steps[-1].referrals), top=statements))
                    if counted
                    else "    statements: not counted (pg_stat_statements is not loaded)",
                    flush=True,
                )
            if not steps[-1].sustained and not keep_going:
                break
    finally:
        for task in background:
            task.cancel()
    for name, rss in sorted(system.peak_rss.items()):
        print(f"peak memory {name:<33} {rss / 2**20:7.0f} MB")
    sustained = max((s.rate for s in steps if s.sustained), default=0.0)
    print(f"highest rate sustained: {sustained:.0f}/s of {', '.join(f'{r:.0f}' for r in rates)}")
    at_100 = next((s.latencies for s in steps if s.rate == 100.0 and s.latencies), None)
    verdicts = [(f"sustained >= {GOAL_SUSTAINED}/s", sustained >= GOAL_SUSTAINED)]
    if at_100:
        p50, p99 = statistics.median(at_100), percentile(at_100, 0.99)
        print(
            f"pipeline p50 at 100/s: {p50 / statistics.median(hop):.1f}x the bare Kafka hop's p50"
        )
        verdicts += [
            (f"p50 at 100/s <= {GOAL_P50_MS:.0f} ms", p50 <= GOAL_P50_MS),
            (f"p99 at 100/s <= {GOAL_P99_MS:.0f} ms", p99 <= GOAL_P99_MS),
        ]
    verdicts.append(
        (
            f"every service <= {GOAL_RSS_MB} MB",
            all(
                rss <= GOAL_RSS_MB * 2**20 for n, rss in system.peak_rss.items() if "kafka" not in n
            ),
        )
    )
    for goal, met in verdicts:
        print(f"goal {goal}: {'met' if met else 'NOT met'}")


def main(
    rates: list[float],
    seconds: float,
    keep_going: bool,
    profile: Path | None,
    statements: int,
    sites: int,
) -> None:
    with infrastructure(statement_statistics=statements > 0) as servers:
        database_url = asyncio.run(fresh_database(servers.database_url))
        env = service_env(database_url, servers.bootstrap_servers)
        departments = site_ids(sites)
        tokens = [add_site(site, env) for site in departments]
        asyncio.run(seed(database_url, departments))
        services: dict[str, ServiceProcess] = {}
        try:
            start_services(env, services)
            system = System(
                database_url, tokens, services, servers.broker_pids, servers.postgres_pid
            )
            asyncio.run(measure(system, servers, rates, seconds, keep_going, profile, statements))
        finally:
            for service in services.values():
                service.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=rates, default="25,50,100,200,300,400", help="offered rates, per s"
    )
    parser.add_argument("--step-seconds", type=STEP_NUMBER, default=30.0)
    parser.add_argument(
        "--keep-going", action="store_true", help="go on stepping after a step not sustained"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each service with py-spy during each step; collapsed stacks into DIR",
    )
    parser.add_argument(
        "--statements",
        nargs="?",
        const=6,
        default=0,
        type=int,
        metavar="TOP",
        help="count each step's statements with pg_stat_statements (own PostgreSQL only) and "
        "list the TOP costliest per referral (default 6)",
    )
    parser.add_argument(
        "--sites",
        type=int,
        default=1,
        help=f"emergency departments sharing the {COACHES} coaches (default 1)",
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.sites <= COACHES:
        parser.error(f"--sites: between 1 and {COACHES}, the coaches to share between them")
    main(
        arguments.steps,
        arguments.step_seconds,
        arguments.keep_going,
        arguments.profile,
        arguments.statements,
        arguments.sites,
    )
