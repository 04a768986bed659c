"""Benchmark: POST /v1/referrals at 32 concurrent clients, against plain asyncpg inserts.

Runs the referral service as its own process on a real PostgreSQL and Kafka (the
ones in DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, or its own local ones with
PostgreSQL's durable defaults), drives it for a fixed time, and prints:

- requests/s and p50 / p99 / max latency of POST /v1/referrals, first back to back
  (the most the service takes), then paced at the goal's 500/s over the same
  clients (its latency at that load);
- the outbox lag: the age of the oldest unpublished event, sampled every 250 ms;
- the reference, measured in the same run on the same database: single-row
  INSERTs with asyncpg at the same concurrency, i.e. the cost of one durable
  commit without HTTP, validation, the timeline or the outbox;
- the floor, also in the same run: the same posts, back to back, to the least an HTTP
  intake in Python can do (`bench/intake_floor.py`: a bare ASGI app under uvicorn that
  writes the referral, its timeline step and its outbox row in one statement, with no
  authentication, validation or relay), which says how much of the gap to the reference
  any Python HTTP service on this machine would pay.
- CPU milliseconds a referral per process, and the relay's events a batch; with
  `--statements`, what PostgreSQL ran a referral in the back-to-back phase.

    .venv/bin/python -m bench.referral_intake [--seconds 30] [--clients 32] [--replicas N]
                                              [--profile DIR] [--statements]
"""

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import psutil
from cryptography.fernet import Fernet

from bench import profiles
from bench.common import (
    Servers,
    at_least,
    fresh_database,
    handoff,
    infrastructure,
    metric_total,
    percentile,
)
from bench.e2e import (
    counted_statements,
    cpu_seconds,
    idle_cpu,
    process_groups,
    reset_statements,
    statement_lines,
)
from handoff_cli.demo import demo_referral
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import ServiceProcess, start_service

GOAL_RATE = 500
"""The paced phase's rate (requests a second)."""
GOAL_SHARE_OF_REFERENCE = 1 / 3
"""Back to back, the share of the reference's rate the service should reach (issue 17)."""
GOAL_P99_MS = 50.0
GOAL_OUTBOX_LAG_S = 1.0


async def drive(
    clients: int,
    seconds: float,
    one_request: Callable[[int], Awaitable[bool]],
    rate: float | None = None,
) -> tuple[list[float], int, float]:
    """`clients` loops issuing requests for `seconds`; latencies in ms, errors, and the
    seconds until the last answer (requests sent before the deadline are waited for, so a
    rate is the answers over this, not over `seconds`: paced, the schedule alone would
    always read as `rate`).

    Without a `rate`, each client sends its next request as soon as the last one is
    answered: the most the service takes. With one, the clients share a schedule of
    `rate` requests a second, and a latency runs from a request's scheduled time, not
    from when it was sent, so a stall counts for every request it held up (what wrk2
    calls coordinated omission).
    """
    latencies: list[float] = []
    errors = 0
    started_at = time.perf_counter()
    deadline = started_at + seconds
    counter = 0

    async def client(index: int) -> None:
        nonlocal errors, counter
        turn = 0
        while True:
            if rate is None:
                due = time.perf_counter()
            else:
                due = started_at + (turn * clients + index) / rate
                turn += 1
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if due >= deadline:
                return
            counter += 1
            ok = await one_request(counter)
            latencies.append((time.perf_counter() - due) * 1000)
            errors += 0 if ok else 1

    await asyncio.gather(*(client(index) for index in range(clients)))
    return latencies, errors, time.perf_counter() - started_at


async def reference_inserts(
    database_url: str, clients: int, seconds: float
) -> tuple[list[float], int, float]:
    """Single-row INSERTs back to back from `clients` connections for `seconds`: the
    reference. Latencies (ms), errors and the seconds to the last answer, as `drive`."""
    pool = await asyncpg.create_pool(database_url, min_size=clients, max_size=clients)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_rows (id uuid PRIMARY KEY, body text)")

    async def insert(_: int) -> bool:
        await pool.execute("INSERT INTO bench_rows VALUES ($1, $2)", uuid.uuid4(), "x" * 400)
        return True

    try:
        return await drive(clients, seconds, insert)
    finally:
        await pool.close()


async def referral_posts(
    url: str,
    token: str,
    database_url: str,
    clients: int,
    seconds: float,
    rate: float | None = None,
) -> tuple[list[float], int, float, float]:
    """POST /v1/referrals from `clients` clients for `seconds`, back to back or paced at
    `rate`; latencies (ms), errors, seconds to the last answer, worst outbox lag (s)."""
    # aiohttp, not httpx: on two cores the load generator shares the CPU with the
    # service, and httpx spent several times more of it per request.
    run = uuid.uuid4().hex[:6]
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        url, connector=connector, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def post(number: int) -> bool:
            body = demo_referral(f"bench-{run}-{number}")
            async with http.post("/v1/referrals", json=body) as response:
                await response.read()
                return response.status == 201

        worst_lag = 0.0
        monitor = await asyncpg.connect(database_url)

        async def watch_outbox() -> None:
            nonlocal worst_lag
            while True:
                lag = await monitor.fetchval(
                    "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
                    "FROM referral.outbox"
                )
                worst_lag = max(worst_lag, lag)
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch_outbox())
        try:
            latencies, errors, elapsed = await drive(clients, seconds, post, rate)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await monitor.close()
    return latencies, errors, elapsed, worst_lag


async def floor_posts(
    database_url: str, clients: int, seconds: float, servers: Servers
) -> tuple[list[float], int, float, dict[str, float]]:
    """The same referrals posted back to back to `bench/intake_floor.py`, run for the phase;
    as `drive`, and the CPU seconds each process used (`cpu_used`)."""
    port = free_ports(1)[0]
    floor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.intake_floor", "--port", str(port),
        "--database-url", database_url, "--pool-size", str(clients),
    )  # fmt: skip
    run = uuid.uuid4().hex[:6]
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{port}", connector=aiohttp.TCPConnector(limit=clients)
        ) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get("/") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    if floor.returncode is not None:
                        raise SystemExit(
                            f"the intake floor exited (code {floor.returncode})"
                        ) from None
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.2)

            async def post(number: int) -> bool:
                async with http.post("/", json=demo_referral(f"floor-{run}-{number}")) as answer:
                    await answer.read()
                    return answer.status == 201

            groups = process_groups({"floor": floor.pid}, servers.postgres_pid, servers.broker_pids)
            with cpu_used(groups) as used:
                latencies, errors, took = await drive(clients, seconds, post)
            return latencies, errors, took, used
    finally:
        with contextlib.suppress(ProcessLookupError):  # it has exited: say why, not this
            floor.terminate()
        await asyncio.wait_for(floor.wait(), timeout=10)


def report(name: str, latencies: list[float], errors: int, seconds: float) -> float:
    """Print one phase's line; its rate, successful answers per second over `seconds`, the
    time from the first request to the last answer (an error answered fast must not read
    as throughput)."""
    rate = (len(latencies) - errors) / seconds
    print(
        f"{name:<34} {rate:8.0f}/s  p50 {statistics.median(latencies):6.1f} ms  "
        f"p99 {percentile(latencies, 0.99):6.1f} ms  max {max(latencies):7.1f} ms  "
        f"errors {errors}"
    )
    return rate


@contextlib.contextmanager
def cpu_used(groups: dict[str, list[psutil.Process]]) -> Iterator[dict[str, float]]:
    """CPU seconds each group of processes uses inside the block, filled in as it ends."""
    used: dict[str, float] = {}
    before = cpu_seconds(groups)
    yield used
    after = cpu_seconds(groups)
    used.update({name: after[name] - before[name] for name in groups})


def report_cpu(used: dict[str, float], referrals: int) -> None:
    """Print a phase's CPU milliseconds per referral taken (a `201`), per group of processes."""
    taken = max(referrals, 1)
    shares = ", ".join(f"{name} {seconds / taken * 1000:.2f}" for name, seconds in used.items())
    print(f"{'':<4}CPU ms per referral: {shares}; total {sum(used.values()) / taken * 1000:.2f}")


async def measure(
    url: str,
    token: str,
    database_url: str,
    clients: int,
    seconds: float,
    pids: list[int],
    servers: Servers,
    profile: Path | None = None,
    statements: bool = False,
) -> None:
    """Each phase in turn, its line, and the goals' verdicts. With `profile` (a folder),
    py-spy samples each referral process (`pids`) through the back-to-back phase, into
    `profile`/referral-<n>.txt, and its summary is printed. With `statements`, the
    statements PostgreSQL ran in that phase (pg_stat_statements), a referral each."""
    replicas = len(pids)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {clients} clients, {seconds:g} s each, "
        f"{replicas} referral process{'es' if replicas > 1 else ''}"
    )
    reference, reference_errors, took = await reference_inserts(database_url, clients, seconds)
    reference_rate = report("reference: asyncpg INSERT", reference, reference_errors, took)
    floor, floor_errors, took, used = await floor_posts(database_url, clients, seconds, servers)
    floor_rate = report("floor: bare ASGI, one statement", floor, floor_errors, took)
    report_cpu(used, len(floor) - floor_errors)
    groups = process_groups(
        {f"referral-{n}": pid for n, pid in enumerate(pids, 1)},
        servers.postgres_pid,
        servers.broker_pids,
    )
    idle = await idle_cpu(groups)
    print(
        f"{'idle, before it':<34} CPU ms a second: "
        + ", ".join(f"{name} {per_second * 1000:.0f}" for name, per_second in idle.items())
    )
    recordings = [
        profiles.record(f"referral-{n}", pid, seconds, profile / f"referral-{n}.txt")
        for n, pid in enumerate(pids, 1)
        if profile is not None
    ]
    counting = statements and await reset_statements(database_url)
    relay_before = await relay_totals(url)
    with cpu_used(groups) as used:
        posts, errors, took, worst_lag = await referral_posts(
            url, token, database_url, clients, seconds
        )
    relay_after = await relay_totals(url)
    rate = report("POST /v1/referrals, back to back", posts, errors, took)
    report_cpu(used, len(posts) - errors)
    if replicas == 1:  # with more, /metrics on the shared port is any replica's
        events, batches = (b - a for a, b in zip(relay_before, relay_after, strict=True))
        print(
            f"{'  relay':<34} {events:.0f} events in {batches:.0f} batches "
            f"({events / max(batches, 1):.1f} a batch)"
        )
    if statements:
        counted = await counted_statements(database_url) if counting else []
        for line in (
            statement_lines(counted, max(len(posts) - errors, 1), top=8)
            if counted
            else ["    statements: not counted (pg_stat_statements is not loaded)"]
        ):
            print(line)
    for recording in recordings:
        await asyncio.to_thread(recording.finish)
        print(f"  {recording.name}: {profiles.Profile.read(recording.output).summary()}")
    paced, paced_errors, took, paced_lag = await referral_posts(
        url, token, database_url, clients, seconds, rate=GOAL_RATE
    )
    report(f"POST /v1/referrals, {GOAL_RATE}/s paced", paced, paced_errors, took)
    worst_lag = max(worst_lag, paced_lag)
    print(f"{'outbox lag (oldest unpublished)':<34} max {worst_lag * 1000:7.1f} ms")
    print(f"pipeline cost: {reference_rate / rate:.1f}x the reference insert rate")
    print(
        f"floor cost: {reference_rate / floor_rate:.1f}x the reference insert rate; "
        f"the referral service takes {rate / floor_rate:.2f}x the floor's rate"
    )
    verdicts = [
        (
            "rate",
            rate >= reference_rate * GOAL_SHARE_OF_REFERENCE,
            f">= a third of the reference ({reference_rate * GOAL_SHARE_OF_REFERENCE:.0f}/s) "
            "back to back",
        ),
        (
            "p99",
            percentile(paced, 0.99) <= GOAL_P99_MS,
            f"<= {GOAL_P99_MS:.0f} ms at {GOAL_RATE}/s",
        ),
        ("outbox lag", worst_lag <= GOAL_OUTBOX_LAG_S, f"<= {GOAL_OUTBOX_LAG_S:.0f} s"),
    ]
    if profile is not None:
        print("note: a profiled run; py-spy used the same two cores through the back-to-back phase")
    failed = errors + paced_errors
    for name, met, goal in verdicts:
        verdict = "met" if met else "NOT met"
        print(f"goal {name} {goal}: {f'NOT met ({failed} errors)' if failed else verdict}")


async def relay_totals(url: str) -> tuple[float, float]:
    """The referral service's relay so far: events published, batches published."""
    async with aiohttp.ClientSession() as http:
        return (
            await metric_total(http, url, "handoff_outbox_published_events_total"),
            await metric_total(http, url, "handoff_outbox_batches_total"),
        )


def check_running(replicas: list[ServiceProcess]) -> None:
    """SystemExit naming the first replica that has exited: its run's figures are not what
    they say (fewer processes served them)."""
    for number, replica in enumerate(replicas, 1):
        if replica.process.poll() is not None:
            raise SystemExit(
                f"referral process {number} of {len(replicas)} exited "
                f"(code {replica.process.returncode}): the figures are void"
            )


def main(
    seconds: float, clients: int, replicas_wanted: int, profile: Path | None, statements: bool
) -> None:
    """Servers, a site and its key, `replicas_wanted` referral processes; then `measure`."""
    with infrastructure(statement_statistics=statements) as servers:
        database_url = asyncio.run(fresh_database(servers.database_url))
        bootstrap = servers.bootstrap_servers
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LOG_LEVEL": "WARNING",
            "DATABASE_POOL_SIZE": str(clients),
            "FOLLOW_UP_KEYS": Fernet.generate_key().decode(),  # referral serves only with a key
        }
        handoff(
            "referral",
            "site",
            "add",
            "--id",
            "md-bench",
            "--name",
            "Bench",
            "--short-name",
            "Bench ED",
            "--state",
            "MD",
            "--time-zone",
            "America/New_York",
            env=env,
        )
        token = handoff(
            "referral", "key", "create", "--site", "md-bench", "--label", "bench", env=env
        )
        port = free_ports(1)[0]
        replicas: list[ServiceProcess] = []
        try:
            for _ in range(replicas_wanted):
                replicas.append(start_service("referral", env, port=port))
            # From the second on, /readyz on the shared port may be answered by an earlier
            # replica: a replica that failed to start shows only as an exited process.
            check_running(replicas)
            asyncio.run(
                measure(
                    replicas[0].url,
                    token,
                    database_url,
                    clients,
                    seconds,
                    [replica.process.pid for replica in replicas],
                    servers,
                    profile,
                    statements,
                )
            )
            check_running(replicas)
        finally:
            for replica in replicas:
                replica.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=at_least(0.1, float), default=30.0)
    parser.add_argument("--clients", type=at_least(1, int), default=32)
    parser.add_argument(
        "--replicas",
        type=at_least(1, int),
        default=1,
        help="referral processes sharing the port (default 1)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each referral process with py-spy in the back-to-back phase, into DIR",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="count the back-to-back phase's statements with pg_stat_statements (own PostgreSQL)",
    )
    arguments = parser.parse_args()
    main(
        arguments.seconds,
        int(arguments.clients),
        int(arguments.replicas),
        arguments.profile,
        arguments.statements,
    )
