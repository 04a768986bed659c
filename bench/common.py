"""What the benchmarks share: the servers they run on, a fresh database, the CLI, percentiles."""

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.ports import free_ports


@dataclass
class Servers:
    database_url: str
    bootstrap_servers: str
    broker_pids: list[int] = field(default_factory=list)


@contextlib.contextmanager
def infrastructure() -> Iterator[Servers]:
    """Configured servers if given, else a local broker and a durable PostgreSQL."""
    if os.environ.get("DATABASE_URL") and os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield Servers(os.environ["DATABASE_URL"], os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        return
    directory = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    directory.chmod(0o755)
    postgres = PostgresCluster(directory / "postgres", free_ports(1)[0], durable=True)
    kafka = KafkaCluster(directory / "kafka")
    print("starting PostgreSQL 15 (durable settings) and Kafka ...", flush=True)
    postgres.start()
    kafka.start()
    try:
        yield Servers(postgres.url, kafka.bootstrap_servers, kafka.pids())
    finally:
        kafka.stop()
        postgres.destroy()


async def fresh_database(server_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(server_url)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def handoff(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "handoff_cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
