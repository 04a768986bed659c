"""What the benchmarks share: the servers they run on, a fresh database, the CLI, the three
services with a site to post to, percentiles."""

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import ServiceProcess, start_service


@dataclass
class Servers:
    """Where a bench's PostgreSQL and Kafka answer, and their processes when the bench runs
    its own (empty when configured servers are used)."""

    database_url: str
    bootstrap_servers: str
    broker_pids: list[int] = field(default_factory=list)
    postgres_pid: int | None = None  # the postmaster; its children are the backends


STATEMENT_STATISTICS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",  # what clients sent, not what triggers ran for them
}
"""Server settings that count each statement's calls and time (PostgreSQL's contrib
module pg_stat_statements, shipped with the Debian server package)."""


@contextlib.contextmanager
def infrastructure(statement_statistics: bool = False) -> Iterator[Servers]:
    """Configured servers if given, else a local broker and a durable PostgreSQL, with
    pg_stat_statements loaded if `statement_statistics`. From here on a SIGTERM unwinds like
    Ctrl-C (`stop_on_sigterm`), so whatever the bench starts inside is stopped."""
    stop_on_sigterm()
    if os.environ.get("DATABASE_URL") and os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield Servers(os.environ["DATABASE_URL"], os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        return
    directory = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    directory.chmod(0o755)
    postgres = PostgresCluster(
        directory / "postgres",
        free_ports(1)[0],
        durable=True,
        extra_settings=STATEMENT_STATISTICS if statement_statistics else None,
    )
    kafka = KafkaCluster(directory / "kafka")
    print("starting PostgreSQL 15 (durable settings) and Kafka ...", flush=True)
    try:
        postgres.start()
        kafka.start()
        postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
        yield Servers(postgres.url, kafka.bootstrap_servers, kafka.pids(), postmaster)
    finally:
        # Whatever started, even if Kafka did not: nothing outlives the run, not even its files.
        kafka.stop()
        postgres.destroy()
        shutil.rmtree(directory, ignore_errors=True)


def lookup_bench(measure: Callable[[str, int], Coroutine[Any, Any, None]], doc: str) -> None:
    """The command line of a bench that times `--referrals` (default 2,000) lookups:
    `measure(database_url, referrals)` runs on a fresh database of the benchmark servers."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=2000)
    referrals = parser.parse_args().referrals
    with infrastructure() as servers:
        database_url = asyncio.run(fresh_database(servers.database_url))
        asyncio.run(measure(database_url, referrals))


async def sandbox_messages(
    http: aiohttp.ClientSession, notify_url: str, after: int
) -> tuple[list[dict[str, Any]], int]:
    """One poll of notify's sandbox: the messages with an id above `after` (dicts with id, to,
    body, ...), and the highest id seen so far. A connection error reads as no new message."""
    with contextlib.suppress(aiohttp.ClientError):
        async with http.get(f"{notify_url}/sandbox/messages?after={after}") as found:
            messages: list[dict[str, Any]] = (await found.json())["messages"]
        return messages, max([after, *(message["id"] for message in messages)])
    return [], after


async def fresh_database(server_url: str) -> str:
    """A new, empty database on the server of `server_url`; its URL."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(server_url)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def handoff(*args: str, env: dict[str, str]) -> str:
    """Run the `handoff` CLI with `args` in `env`; its output. Raises CalledProcessError."""
    return subprocess.run(
        [sys.executable, "-m", "handoff_cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def service_env(database_url: str, bootstrap_servers: str) -> dict[str, str]:
    """The environment the services run in for a benchmark: notify pages into the sandbox,
    with no per-coach throttle, and logs only warnings."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "LOG_LEVEL": "WARNING",
        "NOTIFY_DELIVERY": "sandbox",
        "NOTIFY_LINK_SECRET": uuid.uuid4().hex,
        "OFFERS_PER_15_MINUTES": "1000000",
        # Required to serve referral; a key made for this run, never a real one.
        "FOLLOW_UP_KEYS": Fernet.generate_key().decode(),
    }


def add_site(site: str, env: dict[str, str]) -> str:
    """Register the benchmark's emergency department `site` (Maryland); its new API key."""
    handoff(
        "referral", "site", "add", "--id", site, "--name", "Bench", "--short-name",
        "Bench ED", "--state", "MD", "--time-zone", "America/New_York", env=env,
    )  # fmt: skip
    return handoff("referral", "key", "create", "--site", site, "--label", "bench", env=env)


def start_services(env: dict[str, str], services: dict[str, ServiceProcess]) -> None:
    """Start referral, matching and notify as processes, each into `services` as it starts
    (the caller stops those, even when a later one fails to start). Sets
    `NOTIFY_PUBLIC_URL` in `env` to notify's own address, for the links it sends."""
    notify_port = free_ports(1)[0]
    env["NOTIFY_PUBLIC_URL"] = f"http://127.0.0.1:{notify_port}"
    for service, port in (("referral", None), ("matching", None), ("notify", notify_port)):
        services[service] = start_service(service, env, port=port)


async def metric_total(http: aiohttp.ClientSession, url: str, name: str) -> float:
    """The sum of a service's samples of metric `name` (every label set) on its `/metrics`
    at `url`; 0 if it has none. aiohttp errors propagate."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` (0 to 1) of `values` lie, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def at_least(
    minimum: float, kind: type[int] | type[float], maximum: float = float("inf")
) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind`, `minimum` or more, and `maximum` or less
    when one is given."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}: {text!r}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}: {text!r}")
        return value

    return parse


STEP_NUMBER = at_least(0.1, float)
"""An offered rate (per s) or a step's length (s), for argparse."""


def rates(text: str) -> list[float]:
    """Comma-separated offered rates per second, each at least 0.1, for argparse."""
    return [float(STEP_NUMBER(rate.strip())) for rate in text.split(",")]


def stop_on_sigterm() -> None:
    """SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the services, Kafka and
    PostgreSQL are stopped by the `finally` blocks instead of left running.

    By sending this process SIGINT: inside `asyncio.run` that cancels the main task, which
    unwinds at its await; a KeyboardInterrupt raised from a SIGTERM handler instead lands
    wherever the loop happens to be, and was seen swallowed there (the run went on)."""

    def interrupt(signum: int, frame: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A background job of a non-interactive shell (`cmd &` in a script, CI) starts with
        # SIGINT ignored: the SIGINT sent above would be dropped and the run go on.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
