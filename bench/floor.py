"""Benchmark: the floor under `bench/e2e.py`, what a referral costs when the three services
do nothing but what DESIGN.md's delivery guarantees ask of them.

It tells the design's cost from the code's. The same servers (a durable PostgreSQL 15 and
one Kafka broker on the same two cores), the same three processes and the same traffic as
`bench/e2e.py` a referral: received, offered, paged, cancelled by the ED once paged, the
offer withdrawn; five events, eight consumed. Every handler is cut to the guarantees alone:

- each consumed event is one transaction: its event id recorded (`processed_events`, so a
  redelivery changes nothing), one row written, and the event it causes queued in the
  service's outbox; one commit, durable;
- a relay per service publishes its outbox after each commit that queued events (the
  idempotent producer, acks=all) and deletes what the broker acknowledged;
- one consumer per service for all its topics, a fetch's partitions side by side, four
  events at once, offsets committed every 0.05 s (decision 0031).

The consumer and the relay are written here in a few lines rather than taken from
`handoff_platform` (IdempotentConsumer, OutboxRelay): those carry Handoff's own costs too
(FastStream, metrics, tracing, dead letters, backoff), which is what the floor leaves out.
No HTTP, no validation, no on-call, no ranking, no coach locks, no provider: the load
generator writes a referral and its `ReferralReceived` straight into the referral schema
(and the cancel the same way), then wakes the referral process's relay with a NOTIFY; the
page "handed over" is notify's row written in the transaction that queues `PageSent`.
Whatever `bench/e2e.py` spends above these figures is Handoff's code; what these figures
spend is the price of the design (one transaction per event, an outbox, three processes)
on this machine.

For each offered rate (default 25, 50, 100, 200, 300/s, 20 s each) it prints p50/p99 from
the referral's commit to its page's commit (both PostgreSQL's clock), how many were late
(over 5 s or never), CPU milliseconds per referral per process net of idle, PostgreSQL's
commits per referral (every transaction, reads and the bench's own polls included), the
WAL flushes per referral (`pg_stat_wal.wal_sync`: the durable commits, several sharing a
flush when they wait together; cluster-wide, so only meaningful on the bench's own servers)
and whether the step was sustained (95 % of the rate taken, every
referral paged within 5 s). Then the highest rate sustained.

`--one-statement` writes each event's three rows in one statement (data-modifying CTEs, as
`Outbox.queue_for_each` does on hot paths): still one transaction an event, in one round trip
instead of five. `--together` (a partition's run a transaction) takes precedence.

    .venv/bin/python -m bench.floor [--steps 25,50,100,200,300] [--step-seconds 20]
        [--together | --one-statement]
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import psutil
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import (
    STEP_NUMBER,
    fresh_database,
    infrastructure,
    percentile,
    rates,
)
from bench.e2e import LOAD_GENERATOR, POSTGRES, cpu_seconds, database_work, idle_cpu, process_groups
from handoff_platform.database import Connection, notify

ROLES = ("referral", "matching", "notify")
TOPICS = ("referrals", "dispatch", "pages")
PARTITIONS = 6
WORKERS = 4
OFFSET_COMMIT_SECONDS = 0.05
PAGED_WITHIN_S = 5.0
WARM_UP_PAGED_WITHIN_S = 60.0  # the groups form and the connections open meanwhile
WAKE_CHANNEL = "floor_referral_outbox"

CONSUMES: dict[str, tuple[str, ...]] = {
    "referral": ("dispatch",),
    "matching": ("referrals", "pages"),
    "notify": ("dispatch", "referrals"),
}
"""The topics each service reads, as in the system (a suffix is added per run)."""

CAUSES: dict[tuple[str, str], tuple[str, str] | None] = {
    ("matching", "ReferralReceived"): ("dispatch", "OfferMade"),
    ("matching", "ReferralCancelled"): ("dispatch", "OfferWithdrawn"),
    ("matching", "PageSent"): None,
    ("notify", "OfferMade"): ("pages", "PageSent"),
    ("notify", "OfferWithdrawn"): None,
    ("notify", "ReferralCancelled"): None,
    ("referral", "OfferMade"): None,
    ("referral", "OfferWithdrawn"): None,
}
"""(service, event consumed) → (topic, event queued in the same transaction), or None. Events
a service does not handle are skipped without a transaction, as the services skip them."""

SCHEMA = """
CREATE SCHEMA {role};
CREATE TABLE {role}.processed_events (
    consumer_group text NOT NULL, event_id uuid NOT NULL, PRIMARY KEY (consumer_group, event_id));
CREATE TABLE {role}.referrals (
    referral_id uuid PRIMARY KEY, status text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE {role}.outbox (
    position bigserial PRIMARY KEY, topic text NOT NULL, partition_key text NOT NULL,
    event_type text NOT NULL, body bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
"""

WRITE = """INSERT INTO {role}.referrals (referral_id, status) VALUES ($1, $2)
           ON CONFLICT (referral_id) DO UPDATE
           SET status = excluded.status, changed_at = clock_timestamp()"""


def topic_name(topic: str, run: str) -> str:
    """Topic `topic` ("referrals", "dispatch", "pages") of run `run`: runs never share one."""
    return f"floor-{run}-{topic}"


class Relay:
    """One service's outbox relay: after each wake-up, publishes the outbox in position order
    and deletes the rows the broker acknowledged, until the outbox is empty."""

    def __init__(self, role: str, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        self.role, self.pool, self.producer = role, pool, producer
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Publish after each wake-up, or each second, until cancelled."""
        while True:
            # A wake-up lost (a NOTIFY before LISTEN) costs a second, as the relay's idle beat.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)
            self.wake.clear()
            while await self._publish_batch():
                pass

    async def _publish_batch(self) -> int:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                f"SELECT position, topic, partition_key, event_type, body FROM {self.role}.outbox"
                " ORDER BY position LIMIT 200"
            )
            if not rows:
                return 0
            sent = [
                await self.producer.send(
                    row["topic"],
                    row["body"],
                    key=row["partition_key"].encode(),
                    headers=[("event_type", row["event_type"].encode())],
                )
                for row in rows
            ]
            await asyncio.gather(*sent)
            await connection.execute(
                f"DELETE FROM {self.role}.outbox WHERE position = ANY($1::bigint[])",
                [row["position"] for row in rows],
            )
            return len(rows)


async def queue_event(
    connection: Connection, role: str, topic: str, event_type: str, referral_id: str
) -> None:
    """Queue one event about `referral_id` in `role`'s outbox, in the caller's transaction."""
    await connection.execute(
        f"INSERT INTO {role}.outbox (topic, partition_key, event_type, body)"
        " VALUES ($1, $2, $3, $4)",
        topic,
        referral_id,
        event_type,
        event_body(event_type, referral_id),
    )


def event_body(event_type: str, referral_id: str) -> bytes:
    """A new event's body: its own id, its type and its referral."""
    return json.dumps(
        {"event_id": str(uuid.uuid4()), "event_type": event_type, "referral_id": referral_id}
    ).encode()


class Service:
    """One of the three processes: a consumer for its topics and a relay for its outbox."""

    def __init__(
        self,
        role: str,
        run: str,
        pool: asyncpg.Pool,
        relay: Relay,
        together: bool,
        one_statement: bool = False,
    ) -> None:
        self.role, self.run, self.pool, self.relay = role, run, pool, relay
        self.together, self.one_statement = together, one_statement
        self.slots = asyncio.Semaphore(WORKERS)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """One event in one transaction: recorded, its row written, what it causes queued."""
        event = json.loads(record.value or b"{}")
        if (self.role, event["event_type"]) not in CAUSES:
            return
        consequence = CAUSES[(self.role, event["event_type"])]
        if self.one_statement:
            await self.handle_in_one_statement(event, consequence)
            return
        async with self.pool.acquire() as connection, connection.transaction():
            first_time = await connection.fetchval(
                f"INSERT INTO {self.role}.processed_events (consumer_group, event_id)"
                " VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
                self.role,
                uuid.UUID(event["event_id"]),
            )
            if not first_time:
                return
            await connection.execute(
                WRITE.format(role=self.role), uuid.UUID(event["referral_id"]), event["event_type"]
            )
            if consequence is not None:
                topic, caused = consequence
                await queue_event(
                    connection, self.role, topic_name(topic, self.run), caused, event["referral_id"]
                )
        if consequence is not None:
            self.relay.wake.set()

    async def handle_in_one_statement(
        self, event: dict[str, str], consequence: tuple[str, str] | None
    ) -> None:
        """`handle` in one statement (`--one-statement`): the same three writes as
        data-modifying CTEs, so one round trip and one transaction; the row and the event it
        causes are written only if the event id was new."""
        fresh = (
            f"WITH fresh AS (INSERT INTO {self.role}.processed_events (consumer_group, event_id)"
            " VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING event_id)"
        )
        write = (
            f"INSERT INTO {self.role}.referrals (referral_id, status)"
            " SELECT $3::uuid, $4::text FROM fresh"
            " ON CONFLICT (referral_id) DO UPDATE"
            " SET status = excluded.status, changed_at = clock_timestamp()"
        )
        arguments: list[object] = [
            self.role,
            uuid.UUID(event["event_id"]),
            uuid.UUID(event["referral_id"]),
            event["event_type"],
        ]
        if consequence is None:
            await self.pool.execute(f"{fresh} {write}", *arguments)
            return
        topic, caused = consequence
        await self.pool.execute(
            f"{fresh}, written AS ({write})"
            f" INSERT INTO {self.role}.outbox (topic, partition_key, event_type, body)"
            " SELECT $5::text, $6::text, $7::text, $8::bytea FROM fresh",
            *arguments,
            topic_name(topic, self.run),
            event["referral_id"],
            caused,
            event_body(caused, event["referral_id"]),
        )
        self.relay.wake.set()

    async def partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """One partition's fetched `records`, in order: a run, or one event at a time."""
        if self.together:
            async with self.slots:
                await self.handle_run(records)
            return
        for record in records:
            async with self.slots:
                await self.handle(record)

    async def handle_run(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """A partition's run of events in one transaction (`--together`): recorded in one
        statement, their rows written in one, what they cause queued in one."""
        events = [json.loads(record.value or b"{}") for record in records]
        events = [e for e in events if (self.role, e["event_type"]) in CAUSES]
        if not events:
            return
        async with self.pool.acquire() as connection, connection.transaction():
            fresh = {
                row["event_id"]
                for row in await connection.fetch(
                    f"INSERT INTO {self.role}.processed_events (consumer_group, event_id)"
                    " SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
                    self.role,
                    [uuid.UUID(e["event_id"]) for e in events],
                )
            }
            events = [e for e in events if uuid.UUID(e["event_id"]) in fresh]
            if not events:
                return
            latest = {e["referral_id"]: e["event_type"] for e in events}  # one row each
            await connection.execute(
                f"INSERT INTO {self.role}.referrals (referral_id, status)"
                " SELECT * FROM unnest($1::uuid[], $2::text[])"
                " ON CONFLICT (referral_id) DO UPDATE"
                " SET status = excluded.status, changed_at = clock_timestamp()",
                [uuid.UUID(r) for r in latest],
                list(latest.values()),
            )
            caused = [
                (e["referral_id"], consequence)
                for e in events
                if (consequence := CAUSES[(self.role, e["event_type"])]) is not None
            ]
            if caused:
                await connection.execute(
                    f"INSERT INTO {self.role}.outbox (topic, partition_key, event_type, body)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])",
                    [topic_name(topic, self.run) for _, (topic, _) in caused],
                    [referral for referral, _ in caused],
                    [event_type for _, (_, event_type) in caused],
                    [event_body(event_type, referral) for referral, (_, event_type) in caused],
                )
        if caused:
            self.relay.wake.set()

    async def consume(self, consumer: AIOKafkaConsumer) -> None:
        """Fetch, handle a fetch's partitions side by side, commit the offsets handled at
        most every OFFSET_COMMIT_SECONDS; until cancelled."""
        committed_at = time.monotonic()
        handled: dict[TopicPartition, int] = {}
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            await asyncio.gather(*(self.partition(records) for records in batch.values()))
            for partition, records in batch.items():
                handled[partition] = records[-1].offset + 1
            if handled and time.monotonic() - committed_at >= OFFSET_COMMIT_SECONDS:
                await consumer.commit(handled)
                handled, committed_at = {}, time.monotonic()


async def serve(
    role: str,
    run: str,
    database_url: str,
    bootstrap_servers: str,
    together: bool,
    one_statement: bool = False,
) -> None:
    """Run service `role` until killed."""
    # Group coordination while the brokers' groups form is logged as warnings: not figures.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=10)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, enable_idempotence=True, acks="all"
    )
    consumer = AIOKafkaConsumer(
        *(topic_name(t, run) for t in CONSUMES[role]),
        bootstrap_servers=bootstrap_servers,
        group_id=f"floor-{run}-{role}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=1000,
    )
    relay = Relay(role, pool, producer)
    if role == "referral":
        # The load generator writes the referral service's outbox from its own process.
        listener = await asyncpg.connect(database_url)
        await listener.add_listener(WAKE_CHANNEL, lambda *_: relay.wake.set())
    await producer.start()
    await consumer.start()
    service = Service(role, run, pool, relay, together, one_statement)
    await asyncio.gather(relay.run(), service.consume(consumer), orphaned())


async def orphaned() -> None:
    """Return once the load generator that started this process is gone (SIGKILLed, say),
    so that a service never outlives its run."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            raise SystemExit("the load generator is gone")


@dataclass
class Step:
    """One offered rate's figures (milliseconds)."""

    rate: float
    taken: float
    latencies: list[float]
    late: int
    cpu_ms_per_referral: dict[str, float]
    commits_per_referral: float
    wal_syncs_per_referral: float = 0.0

    @property
    def sustained(self) -> bool:
        """Every referral paged within PAGED_WITHIN_S and 95 % of the rate taken."""
        return self.late == 0 and self.taken >= 0.95 * self.rate


@dataclass
class LoadGenerator:
    """Plays the hospital: writes referrals at a rate and cancels each once it is paged."""

    database_url: str
    run: str
    received_at: dict[str, datetime] = field(default_factory=dict)
    paged_at: dict[str, datetime] = field(default_factory=dict)
    # Received, not yet seen paged: what each look asks about, without scanning every
    # referral of the run (this process's CPU is a column of the figures).
    waiting: set[str] = field(default_factory=set)

    async def arrive(self, pool: asyncpg.Pool, rate: float, seconds: float) -> list[str]:
        """Write `rate` referrals a second for `seconds`, open loop; their ids."""
        ids: list[str] = []
        started = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            referral_id = str(uuid.uuid4())
            ids.append(referral_id)
            task = asyncio.create_task(self._write(pool, referral_id, "ReferralReceived"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        return ids

    async def _write(self, pool: asyncpg.Pool, referral_id: str, event_type: str) -> None:
        async with pool.acquire() as connection:
            async with connection.transaction():
                at = await connection.fetchval(
                    f"{WRITE.format(role='referral')} RETURNING changed_at",
                    uuid.UUID(referral_id),
                    event_type,
                )
                await queue_event(
                    connection, "referral", topic_name("referrals", self.run), event_type,
                    referral_id,
                )  # fmt: skip
            # As the platform wakes a relay in another process: a transaction of its own,
            # committed asynchronously. A plain NOTIFY is a durable commit of its own (it takes
            # an xid), an fsync per write that the design does not ask for.
            await notify(connection, WAKE_CHANNEL, "")
        if event_type == "ReferralReceived":
            self.received_at[referral_id] = at
            self.waiting.add(referral_id)

    async def cancel_when_paged(self, pool: asyncpg.Pool) -> None:
        """Every 50 ms, the pages of referrals not yet seen paged; cancels each of them."""
        while True:
            if self.waiting:
                async with pool.acquire() as connection:
                    rows = await connection.fetch(
                        "SELECT referral_id::text AS id, changed_at FROM notify.referrals"
                        " WHERE referral_id = ANY($1::uuid[]) AND status = 'OfferMade'",
                        list(self.waiting),
                    )
                for row in rows:
                    self.paged_at[row["id"]] = row["changed_at"]
                    self.waiting.discard(row["id"])
                await asyncio.gather(
                    *(self._write(pool, row["id"], "ReferralCancelled") for row in rows)
                )
            await asyncio.sleep(0.05)


async def wal_syncs(pool: asyncpg.Pool) -> float:
    """The server's WAL flushes to disk so far (PostgreSQL 14+), all databases."""
    return float(await pool.fetchval("SELECT wal_sync FROM pg_stat_wal"))


async def until(condition: Callable[[], Awaitable[bool]], deadline_s: float) -> bool:
    """Whether `condition` held within `deadline_s` seconds, asked every 0.2 s."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.2)
    return False


async def measure(
    database_url: str,
    run: str,
    groups_now: Callable[[], dict[str, list[psutil.Process]]],
    rates: list[float],
    seconds: float,
    dead: Callable[[], str | None] = lambda: None,
) -> list[Step]:
    """The warm-up, idle CPU, then each rate in turn until one is not sustained. `dead`
    names a service process that has exited, if any: figures taken without it are void,
    so the run stops (SystemExit) rather than print them as the floor's."""
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=20)
    load = LoadGenerator(database_url, run)
    canceller = asyncio.create_task(load.cancel_when_paged(pool))

    async def all_paged() -> bool:
        return len(load.paged_at) == len(load.received_at)

    async def outboxes_empty() -> bool:
        counts = [await pool.fetchval(f"SELECT count(*) FROM {role}.outbox") for role in ROLES]
        return not any(counts)

    try:
        # Consumer groups settle and connections open before anything is measured.
        await load.arrive(pool, 5.0, 3.0)
        if not await until(all_paged, WARM_UP_PAGED_WITHIN_S):
            raise SystemExit(
                f"the warm-up's referrals were never paged: {dead() or 'is a service down?'}"
            )
        await until(outboxes_empty, 30.0)
        idle = await idle_cpu(groups_now())
        print(
            "idle CPU (% of a core): "
            + ", ".join(f"{name} {share * 100:.1f}" for name, share in idle.items())
        )
        columns = (*ROLES, POSTGRES, "kafka", LOAD_GENERATOR)
        print(
            f"{'rate':>6} {'taken':>7} {'p50 ms':>8} {'p99 ms':>8} {'late':>5}  "
            + " ".join(f"{name[:9]:>9}" for name in columns)
            + f" {'total':>7} {'commits':>8} {'fsyncs':>7}  sustained"
        )
        steps: list[Step] = []
        for rate in rates:
            await until(outboxes_empty, 30.0)
            groups = groups_now()  # PostgreSQL's backends come and go
            work_before = await database_work(database_url)
            syncs_before = await wal_syncs(pool)
            cpu_before, started = cpu_seconds(groups), time.monotonic()
            ids = await load.arrive(pool, rate, seconds)
            elapsed = time.monotonic() - started
            await until(all_paged, PAGED_WITHIN_S)
            # Until the step's referrals are paged: a backlog's work counts for its step.
            cpu_after, ended = cpu_seconds(groups), time.monotonic()
            work_after = await database_work(database_url)
            syncs = (await wal_syncs(pool) - syncs_before) / len(ids)
            if (gone := dead()) is not None:
                raise SystemExit(f"{gone} during the step at {rate:.0f}/s: no figures for it")
            latencies = [
                (load.paged_at[r] - load.received_at[r]).total_seconds() * 1000
                for r in ids
                if r in load.paged_at
            ]
            late = sum(1 for r in ids if r not in load.paged_at) + sum(
                1 for ms in latencies if ms > PAGED_WITHIN_S * 1000
            )
            cpu = {
                name: (cpu_after[name] - cpu_before[name] - idle[name] * (ended - started))
                * 1000
                / len(ids)
                for name in groups
            }
            commits = (work_after["commits"] - work_before["commits"]) / len(ids)
            steps.append(Step(rate, len(ids) / elapsed, latencies, late, cpu, commits, syncs))
            p50 = statistics.median(latencies) if latencies else float("nan")
            p99 = percentile(latencies, 0.99) if latencies else float("nan")
            print(
                f"{rate:>6.0f} {len(ids) / elapsed:>7.1f} {p50:>8.1f} {p99:>8.1f} {late:>5}  "
                + " ".join(f"{cpu[name]:>9.2f}" for name in columns)
                + f" {sum(cpu.values()):>7.2f} {commits:>8.1f} {syncs:>7.1f}  "
                + ("yes" if steps[-1].sustained else "NO"),
                flush=True,
            )
            if not steps[-1].sustained:
                break
        return steps
    finally:
        canceller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await canceller
        await pool.close()


async def prepare(database_url: str, bootstrap_servers: str, run: str) -> None:
    """The three schemas and the three topics, six partitions each."""
    connection = await asyncpg.connect(database_url)
    try:
        for role in ROLES:
            await connection.execute(SCHEMA.format(role=role))
    finally:
        await connection.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name(t, run), PARTITIONS, 1) for t in TOPICS])
    finally:
        await admin.close()


def main(rates: list[float], seconds: float, together: bool, one_statement: bool = False) -> None:
    """Servers, schemas, topics and the three services for one run; each step's figures."""
    run = uuid.uuid4().hex[:6]
    with infrastructure() as servers:
        database_url = asyncio.run(fresh_database(servers.database_url))
        asyncio.run(prepare(database_url, servers.bootstrap_servers, run))
        children: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for role in ROLES:
                children[role] = subprocess.Popen(
                    [sys.executable, "-m", "bench.floor", "--role", role, "--run", run,
                     "--database-url", database_url, "--bootstrap-servers",
                     servers.bootstrap_servers, *(["--together"] if together else []),
                     *(["--one-statement"] if one_statement else [])],
                )  # fmt: skip
            print(
                f"machine: {platform.machine()}, {os.cpu_count()} cores, "
                f"{psutil.virtual_memory().total // 2**30} GiB, "
                f"Python {platform.python_version()}; Kafka 4.1.1, PostgreSQL 15; "
                "the design's guarantees alone (bench/floor.py)",
                flush=True,
            )
            steps = asyncio.run(
                measure(
                    database_url,
                    run,
                    lambda: process_groups(
                        {role: child.pid for role, child in children.items()},
                        servers.postgres_pid,
                        servers.broker_pids,
                    ),
                    rates,
                    seconds,
                    lambda: next(
                        (
                            f"the {role} process exited (code {child.returncode})"
                            for role, child in children.items()
                            if child.poll() is not None
                        ),
                        None,
                    ),
                )
            )
        finally:
            for child in children.values():
                child.terminate()
            for child in children.values():
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    sustained = max((s.rate for s in steps if s.sustained), default=0.0)
    print(f"highest rate sustained: {sustained:.0f}/s of {', '.join(f'{r:.0f}' for r in rates)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=rates, default="25,50,100,200,300", help="offered rates, per s"
    )
    parser.add_argument("--step-seconds", type=STEP_NUMBER, default=20.0)
    parser.add_argument(
        "--together",
        action="store_true",
        help="handle a partition's run of fetched events in one transaction, not one each",
    )
    parser.add_argument(
        "--one-statement",
        action="store_true",
        help="each event's three writes in one statement (CTEs): one round trip, not five",
    )
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap-servers", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.role:
        # On uvloop, as the services run.
        uvloop.run(
            serve(
                arguments.role,
                arguments.run,
                arguments.database_url,
                arguments.bootstrap_servers,
                arguments.together,
                arguments.one_statement,
            )
        )
    else:
        main(
            arguments.steps,
            arguments.step_seconds,
            arguments.together,
            arguments.one_statement,
        )
