"""`handoff dev up` run again after a crash starts what stopped, on its own data, and leaves
what runs alone.

Fresh-eyes finding (shutdown26): with the dev broker killed, `dev up` said PostgreSQL's port
was "already in use: stop what holds it" (it was the dev PostgreSQL itself), stopped that
PostgreSQL on the way out, and did not bring Kafka back.
"""

import asyncio
import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from handoff_devenv import KafkaCluster
from handoff_devenv.ports import free_ports
from handoff_devenv.processes import is_running
from tests.integration.conftest import HANDOFF


async def query(url: str, sql: str) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


def dev(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOFF, "dev", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_dev_up_again_restarts_a_killed_broker_and_a_stopped_database_on_their_data() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="handoff-dev-again-"))
    state_dir.chmod(0o755)  # the postgres user runs the server in it
    kafka_port, postgres_port = free_ports(2)
    env = {**os.environ, "HANDOFF_DEV_DIR": str(state_dir)}
    env.pop("DATABASE_URL", None)
    url = f"postgresql://postgres@127.0.0.1:{postgres_port}/handoff"
    first = dev(env, "up", "--kafka-port", str(kafka_port), "--postgres-port", str(postgres_port))
    assert first.returncode == 0, first.stdout + first.stderr
    state = json.loads((state_dir / "state.json").read_text())
    kafka = KafkaCluster(
        state_dir / "kafka", ports=state["kafka"]["ports"],
        controller_ports=state["kafka"]["controller_ports"],
    )  # fmt: skip
    postmaster = state_dir / "postgres" / "data" / "postmaster.pid"
    try:
        asyncio.run(query(url, "CREATE TABLE marker AS SELECT 7 AS x"))
        database_pid = int(postmaster.read_text().split()[0])
        [broker_pid] = kafka.pids()
        os.kill(broker_pid, signal.SIGKILL)

        again = dev(env, "up")

        assert again.returncode == 0, again.stdout + again.stderr
        assert "started again: Kafka broker [1]" in again.stdout
        assert "in use" not in again.stdout + again.stderr
        assert dev(env, "status").returncode == 0
        assert int(postmaster.read_text().split()[0]) == database_pid  # left alone
        assert kafka.pids() != [broker_pid]

        assert dev(env, "pg", "stop", "--immediate").returncode == 0
        third = dev(env, "up")

        assert third.returncode == 0, third.stdout + third.stderr
        assert "started again: PostgreSQL" in third.stdout
        assert asyncio.run(query(url, "SELECT x FROM marker")) == 7
        assert "already up" in dev(env, "up").stdout
    finally:
        pids = kafka.pids()
        if postmaster.exists():
            pids.append(int(postmaster.read_text().split()[0]))
        down = dev(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in pids if is_running(pid)]
