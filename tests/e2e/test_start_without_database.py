"""Services start while PostgreSQL is down, and stop in order on SIGTERM (issue 13).

A service that could not reach the database at start used to crash, so after a node
restart that brought the services up before PostgreSQL, nothing was listening and the
orchestrator restarted them in a loop. Here the database of a module's own is stopped
before referral, matching, notify and the console start: each listens at once, /healthz
200 (the process is fine) and /readyz 503; once PostgreSQL starts, each migrates, starts
its loops and turns ready, and a referral is paged. Then each gets SIGTERM and ends with
exit status 0 after its orderly stop: uvicorn used to re-raise the signal with its default
action, which killed the process before the loops, the Kafka producer and the pool stopped.
"""

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import ServiceProcess, launch_service
from handoff_platform.kafka import ensure_topics
from tests.e2e.conftest import MAIN_SITE, System, _first_referral_paged, _prepare
from tests.integration.conftest import create_database
from tests.support.follow_ups import FOLLOW_UP_ENV
from tests.support.patients import SERVICE_LOGS, own_report_spool
from tests.support.waiting import eventually

SERVICES = ("referral", "matching", "notify", "console")


@pytest.fixture(scope="module")
def postgres(infrastructure_dir: Path) -> Iterator[PostgresCluster]:
    """A cluster of this module's own: stopping the session's would fail other tests."""
    cluster = PostgresCluster(
        infrastructure_dir / f"pg-start-{uuid.uuid4().hex[:6]}", free_ports(1)[0]
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def _status(url: str, path: str) -> int | None:
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(f"{url}{path}")).status_code
    except httpx.HTTPError:
        return None


def _log_levels(log: Path) -> list[str]:
    """The level of every JSON log line the process wrote."""
    levels = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            levels.append(str(json.loads(line).get("level", "")))
    return levels


async def test_services_start_with_the_database_down_and_stop_cleanly_on_sigterm(
    postgres: PostgresCluster, own_kafka: KafkaCluster
) -> None:
    database = await create_database(postgres.url)
    await ensure_topics(own_kafka.bootstrap_servers)
    keys = await _prepare(database, 10)
    postgres.stop("immediate")

    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "KAFKA_BOOTSTRAP_SERVERS": own_kafka.bootstrap_servers,
        "LOG_FORMAT": "json",
        "NOTIFY_DELIVERY": "sandbox",
        "NOTIFY_PUBLIC_URL": f"http://127.0.0.1:{ports['notify']}",
        "NOTIFY_LINK_SECRET": "start-link-secret",
        **FOLLOW_UP_ENV,  # referral serves only with its follow-up keys
        "NOTIFY_REPORT_SPOOL": own_report_spool("start-without-database"),
        "CONSOLE_REFERRAL_URL": f"http://127.0.0.1:{ports['referral']}",
        "CONSOLE_MATCHING_URL": f"http://127.0.0.1:{ports['matching']}",
        "CONSOLE_NOTIFY_URL": f"http://127.0.0.1:{ports['notify']}",
    }
    tag = uuid.uuid4().hex[:6]
    logs = {service: SERVICE_LOGS / f"start-{service}-{tag}.log" for service in SERVICES}
    processes: dict[str, ServiceProcess] = {}
    try:
        for service in SERVICES:
            processes[service] = launch_service(service, env, logs[service], ports[service])

        async def listening_not_ready() -> bool:
            for process in processes.values():
                assert process.process.poll() is None, f"{process.service} exited at start"
            statuses = [
                (await _status(p.url, "/healthz"), await _status(p.url, "/readyz"))
                for p in processes.values()
            ]
            return all(status == (200, 503) for status in statuses)

        await eventually(listening_not_ready, within=120, what="healthz 200, readyz 503")
        async with httpx.AsyncClient() as client:
            refused = await client.post(
                f"{processes['referral'].url}/v1/referrals",
                json={},
                headers={"Authorization": f"Bearer {keys[MAIN_SITE]}"},
            )
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]

        await asyncio.to_thread(postgres.start)

        async def all_ready() -> bool:
            statuses = [await _status(p.url, "/readyz") for p in processes.values()]
            return all(status == 200 for status in statuses)

        await eventually(all_ready, within=120, what="every service ready once PostgreSQL is up")
        system = System(
            database,
            own_kafka.bootstrap_servers,
            env,
            {s: [processes[s]] for s in ("referral", "matching", "notify")},
            keys,
        )
        await _first_referral_paged(system)
    finally:
        for process in processes.values():
            process.process.terminate()
        exits = {s: await asyncio.to_thread(p.process.wait, 60) for s, p in processes.items()}
    assert exits == dict.fromkeys(SERVICES, 0)
    for service in SERVICES:
        levels = _log_levels(logs[service])
        assert not {"ERROR", "CRITICAL"} & set(levels), service
        assert "WARNING" in levels  # the retries while the database was down
