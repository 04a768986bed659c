"""Session-wide infrastructure for integration and end-to-end tests.

A Kafka bootstrap address and a database URL come, in this order of preference,
from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, from testcontainers when a Docker
engine answers, or from local processes started here (Kafka from its jars,
PostgreSQL 15 from Debian's package). If none can be had the run fails: an
integration test is never skipped for want of a broker or a database.
"""

import io
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.kafka import JVM_OPTIONS_VARIABLE
from handoff_devenv.ports import free_ports
from handoff_platform.kafka import ensure_topics
from handoff_platform.logs import json_handler
from tests.support.patients import ARTIFACTS, PHI_MARKERS, SERVICE_LOGS, WORKER

# Brokers here live for a test module or a session: C1 alone compiles enough (decision 0030).
os.environ.setdefault(JVM_OPTIONS_VARIABLE, "-XX:TieredStopAtLevel=1")

KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:15"
TIER_MARKERS = ("unit", "integration", "e2e", "browser", "chaos")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's folder is its tier: tests/unit → unit, and so on."""
    for item in items:
        tier = Path(str(item.path)).relative_to(Path(__file__).parent).parts[0]
        if tier in TIER_MARKERS:
            item.add_marker(getattr(pytest.mark, tier))


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def infrastructure_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: that folder is private to root, and PostgreSQL runs as `postgres`.
    directory = Path(tempfile.mkdtemp(prefix="handoff-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap_servers(infrastructure_dir: Path) -> Iterator[str]:
    if configured := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield configured
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        cluster = KafkaCluster(infrastructure_dir / "kafka")
        try:
            cluster.start()
        except Exception as error:
            cluster.stop()
            pytest.fail(
                f"no Kafka broker: KAFKA_BOOTSTRAP_SERVERS unset, no Docker, and "
                f"the local broker did not start: {error}",
                pytrace=False,
            )
        try:
            yield cluster.bootstrap_servers
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def database_url(infrastructure_dir: Path) -> Iterator[str]:
    if configured := os.environ.get("DATABASE_URL"):
        yield configured
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        cluster = PostgresCluster(infrastructure_dir / "postgres", free_ports(1)[0], durable=False)
        try:
            cluster.start()
        except Exception as error:
            cluster.stop()
            pytest.fail(
                f"no PostgreSQL: DATABASE_URL unset, no Docker, and the local "
                f"cluster did not start: {error}",
                pytrace=False,
            )
        try:
            yield cluster.url
        finally:
            cluster.destroy()


@pytest.fixture(scope="module")
def own_kafka(infrastructure_dir: Path) -> Iterator[KafkaCluster]:
    """A broker for one test module alone: to stop it, or to keep other tests' events out."""
    cluster = KafkaCluster(infrastructure_dir / f"kafka-{uuid.uuid4().hex[:6]}")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
async def kafka_topics(kafka_bootstrap_servers: str) -> str:
    """The catalog's topics exist; returns the bootstrap address for convenience."""
    await ensure_topics(kafka_bootstrap_servers)
    return kafka_bootstrap_servers


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="session", autouse=True)
def no_phi_in_any_log_line() -> Iterator[None]:
    """Every log line of the run, in-process and from service processes, and every page body
    a test provider received, is scanned for PHI.

    The run fails at the end if a test patient's initials, notes or substances
    appear in any line: logs are shipped and kept far longer than the data.
    """
    captured = io.StringIO()
    handler = json_handler("tests", captured)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    shutil.rmtree(SERVICE_LOGS, ignore_errors=True)
    SERVICE_LOGS.mkdir(parents=True)
    logging.getLogger("tests").info("PHI scan started")  # proves the capture works
    yield
    root.removeHandler(handler)
    root.setLevel(previous_level)
    sources = {"in-process logs": captured.getvalue()}
    sources |= {str(path): path.read_text() for path in SERVICE_LOGS.glob("*.log")}
    (ARTIFACTS / f"in-process-{WORKER}.log").write_text(sources["in-process logs"])
    leaks = [
        f"{source}: {line[:200]}"
        for source, text in sources.items()
        for line in text.splitlines()
        if any(marker in line for marker in PHI_MARKERS)
    ]
    assert "PHI scan started" in sources["in-process logs"], "the log capture is broken"
    assert not leaks, "PHI in log lines:\n" + "\n".join(leaks[:20])
