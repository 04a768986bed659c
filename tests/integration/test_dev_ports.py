"""`handoff dev up` refuses a port that is taken, and says which and why."""

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from handoff_devenv import KafkaCluster, PortInUse, PostgresCluster
from handoff_devenv.ports import free_ports


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_ports(1)[0]))
        holder.listen()
        yield holder.getsockname()[1]


def test_kafka_and_postgres_refuse_a_taken_port_with_a_clear_message(taken_port: int) -> None:
    directory = tempfile.mkdtemp(prefix="handoff-ports-")
    kafka_message = f"port {taken_port} on 127.0.0.1, wanted for Kafka broker 1, is already in use"
    with pytest.raises(PortInUse, match=re.escape(kafka_message)):
        KafkaCluster(Path(directory), ports=[taken_port]).start()
    with pytest.raises(PortInUse, match=f"port {taken_port} on 127.0.0.1, wanted for PostgreSQL"):
        PostgresCluster(Path(directory) / "pg", taken_port).start()


def test_the_cli_reports_the_conflict_and_fails(taken_port: int) -> None:
    env = {**os.environ, "HANDOFF_DEV_DIR": tempfile.mkdtemp(prefix="handoff-ports-cli-")}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "handoff_cli", "dev", "up", "--postgres-port", str(taken_port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"port {taken_port}" in result.stdout + result.stderr
    assert "already in use" in result.stdout + result.stderr
