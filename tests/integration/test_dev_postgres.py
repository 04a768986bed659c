"""The dev PostgreSQL keeps its port and settings however it is started (issue 13): after
`pg_ctl -m immediate stop`, the operator's plain `pg_ctl start` comes up where the services
look for it, not on 5432 with the defaults; and `handoff dev pg restart --immediate` crashes
and restarts it in one command."""

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from handoff_devenv import PostgresCluster
from handoff_devenv.ports import accepts_connections, free_ports
from handoff_devenv.postgres import PG_BIN
from tests.integration.conftest import HANDOFF


@pytest.fixture
def dev_dir(infrastructure_dir: Path) -> Iterator[Path]:
    """A `handoff dev` state directory whose PostgreSQL is up (its Kafka is not needed)."""
    directory = infrastructure_dir / f"dev-pg-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    directory.chmod(0o755)
    cluster = PostgresCluster(directory / "postgres", free_ports(1)[0])
    state = {
        "kafka": {"ports": free_ports(1), "controller_ports": free_ports(1)},
        "postgres": {"port": cluster.port},
    }
    (directory / "state.json").write_text(json.dumps(state))
    cluster.start()
    try:
        yield directory
    finally:
        cluster.destroy()


def _cluster(directory: Path) -> PostgresCluster:
    port = json.loads((directory / "state.json").read_text())["postgres"]["port"]
    return PostgresCluster(directory / "postgres", port)


def _as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, *command], capture_output=True, text=True, timeout=60, check=False
    )


async def _server(cluster: PostgresCluster) -> tuple[str, str]:
    """(listen_addresses, when the server started) as the running server says."""
    connection = await asyncpg.connect(cluster.url)
    try:
        listen = await connection.fetchval("SHOW listen_addresses")
        started = await connection.fetchval("SELECT pg_postmaster_start_time()::text")
    finally:
        await connection.close()
    return str(listen), str(started)


async def test_a_plain_pg_ctl_start_after_a_crash_keeps_the_clusters_port(dev_dir: Path) -> None:
    cluster = _cluster(dev_dir)
    data = str(cluster.data_dir)
    crashed = _as_postgres(str(PG_BIN / "pg_ctl"), "-D", data, "-m", "immediate", "stop")
    assert crashed.returncode == 0, crashed.stderr
    assert not accepts_connections(cluster.port)

    started = _as_postgres(
        str(PG_BIN / "pg_ctl"), "-D", data, "-l", str(cluster.log_file), "-w", "start"
    )

    assert started.returncode == 0, started.stderr
    assert accepts_connections(cluster.port)
    listen, _ = await _server(cluster)
    assert listen == "127.0.0.1"


async def test_handoff_dev_pg_restart_immediate_crashes_and_brings_it_back(
    dev_dir: Path,
) -> None:
    cluster = _cluster(dev_dir)
    _, first_start = await _server(cluster)
    env = {**os.environ, "HANDOFF_DEV_DIR": str(dev_dir)}

    result = await asyncio.to_thread(
        subprocess.run,
        [*HANDOFF, "dev", "pg", "restart", "--immediate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"postgres restarted  {cluster.url}" in result.stdout
    listen, second_start = await _server(cluster)
    assert (listen, second_start != first_start) == ("127.0.0.1", True)
    log = cluster.log_file.read_text()
    assert "database system was interrupted" in log or "was not properly shut down" in log
