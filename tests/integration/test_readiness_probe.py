"""/readyz asks the database on a connection of its own (issue 13): under load every pool
connection can be busy for seconds, and a probe that queued behind them timed out (the
operator's ReadTimeout at 3 s) and flapped the replica out of its load balancer. Kafka is
asked at every bootstrap broker at once, and one answer is enough."""

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from handoff_devenv import PostgresCluster
from handoff_devenv.ports import free_ports
from handoff_platform.database import DatabaseProbe
from handoff_platform.kafka import any_broker_answers
from handoff_platform.runtime import KAFKA_PING_SECONDS


async def test_a_probe_answers_while_the_pool_is_saturated_without_waiting_for_it(
    database_url: str,
) -> None:
    """The pool is held for 10 s; the probe answers on a connection of its own. Its timeout
    is 3 s here, not production's 0.8 s: opening a backend on a loaded runner took longer."""
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=2)
    probe = DatabaseProbe(database_url, timeout=3.0)
    busy: list[asyncio.Task[object]] = []
    try:
        busy = [asyncio.create_task(pool.fetchval("SELECT pg_sleep(10)")) for _ in range(2)]
        await asyncio.sleep(0)  # let both take their connections
        with pytest.raises(TimeoutError):  # what the old check waited for: the pool
            async with pool.acquire(timeout=0.5):
                pass

        started = time.monotonic()
        answered = await probe.answers()
        took = time.monotonic() - started
    finally:
        await asyncio.gather(*busy, return_exceptions=True)
        await probe.close()
        await pool.close()
    assert answered is True
    assert took < 4.0, f"the probe took {took:.2f} s, as if it had waited for the pool"


async def test_a_probe_says_no_at_once_while_the_database_is_down_and_yes_after(
    infrastructure_dir: Path,
) -> None:
    cluster = PostgresCluster(
        infrastructure_dir / f"probe-{uuid.uuid4().hex[:6]}", free_ports(1)[0]
    )
    cluster.start()
    probe = DatabaseProbe(cluster.url)
    try:
        assert await probe.answers() is True
        await asyncio.to_thread(cluster.stop, "immediate")
        started = time.monotonic()
        down = await probe.answers()
        took = time.monotonic() - started
        await asyncio.to_thread(cluster.start)
        back = await probe.answers()  # a new connection: the old one died with the server
    finally:
        await probe.close()
        await asyncio.to_thread(cluster.destroy)
    assert (down, back) == (False, True)
    assert took < 1.0, f"the probe took {took:.2f} s"


async def test_the_kafka_probe_gets_an_answer_from_a_real_broker_beside_a_dead_one(
    kafka_bootstrap_servers: str,
) -> None:
    """The fake brokers of tests/unit/test_kafka_probe.py answer as the protocol says; this
    checks a real broker answers the probe's ApiVersions request the same way."""
    (dead,) = free_ports(1)
    servers = [f"127.0.0.1:{dead}", *kafka_bootstrap_servers.split(",")]
    assert await any_broker_answers(servers, within=KAFKA_PING_SECONDS)
    assert not await any_broker_answers([f"127.0.0.1:{dead}"], within=KAFKA_PING_SECONDS)
