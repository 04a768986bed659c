"""Benchmark: how long pages pause when a Kafka broker is SIGKILLed, and what bounds it.

A three-broker cluster (RF 3, min ISR 2) from the jars, PostgreSQL, and referral,
matching and notify as processes given the full bootstrap list, notify paging into
the sandbox. Referrals arrive open-loop at a steady rate; part-way through, the broker
leading handoff.referrals' partition 0 (about a third of every topic's partitions) is
SIGKILLed and stays down. For each referral it takes the time from `POST /v1/referrals`
answered to its first page handed to the provider. It prints, per broker setting tried:

- the reference, in the same run: those latencies before the kill (p50, max);
- the pause: the worst latency of a referral posted after the kill, and how many
  were paged more than 1 s late; every referral must be paged (none lost).

The settings tried are Kafka's own failure detection (9 s broker session, 2 s
heartbeat: "stock") and Handoff's dev cluster's ("tuned", libs/handoff_devenv/kafka.py).

    .venv/bin/python -m bench.broker_failover [--settings stock,tuned]
"""

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from bench.common import add_site, fresh_database, percentile, service_env, start_services
from bench.e2e import SITE, Phase, System, first_pages, offer_referrals, seed
from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.kafka import FAILURE_DETECTION, KAFKA_DEFAULT_FAILURE_DETECTION
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import ServiceProcess
from handoff_schemas import Topic

RATE = 5.0  # referrals a second: 20 coaches x 10 offers each hold 200 open offers
SECONDS = 36.0
KILL_AFTER = 12.0
SETTINGS = {"stock": KAFKA_DEFAULT_FAILURE_DETECTION, "tuned": FAILURE_DETECTION}


async def _victim(cluster: KafkaCluster) -> int:
    """The node id to kill: the leader of handoff.referrals' partition 0."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([Topic.REFERRALS.value])
    finally:
        await admin.close()
    return int(next(p["leader"] for p in described["partitions"] if p["partition"] == 0))


async def _paged_latencies(database_url: str, phase: Phase, within: float) -> dict[str, float]:
    """Seconds from answered to first page, per referral, once all are paged or `within`."""
    deadline = time.monotonic() + within
    while True:
        paged = await first_pages(database_url, list(phase.answered_at))
        if len(paged) == len(phase.answered_at) or time.monotonic() > deadline:
            return {r: (paged[r] - phase.answered_at[r]).total_seconds() for r in paged}
        await asyncio.sleep(0.5)


async def _run(
    services: dict[str, ServiceProcess], token: str, database_url: str, kill: Callable[[], datetime]
) -> tuple[Phase, datetime, dict[str, float]]:
    system = System(database_url, [token], services, [], None)
    warm_up = Phase(RATE, 2.0)
    await offer_referrals(system, warm_up)
    await _paged_latencies(database_url, warm_up, 60)
    phase = Phase(RATE, SECONDS)
    posting = asyncio.create_task(offer_referrals(system, phase))
    await asyncio.sleep(KILL_AFTER)
    killed_at = kill()
    await posting
    return phase, killed_at, await _paged_latencies(database_url, phase, 120)


def measure(name: str, postgres_url: str) -> None:
    directory = Path(tempfile.mkdtemp(prefix=f"handoff-failover-{name}-"))
    cluster = KafkaCluster(directory, brokers=3, properties=SETTINGS[name])
    cluster.start()
    services: dict[str, ServiceProcess] = {}
    try:
        database_url = asyncio.run(fresh_database(postgres_url))
        env = service_env(database_url, cluster.bootstrap_servers)
        token = add_site(SITE, env)
        asyncio.run(seed(database_url, [SITE]))
        start_services(env, services)
        victim = asyncio.run(_victim(cluster))

        def kill() -> datetime:
            node = cluster.nodes[victim - 1]
            os.kill(int(node.pid_file.read_text()), signal.SIGKILL)
            return datetime.now().astimezone()

        phase, killed_at, latencies = asyncio.run(_run(services, token.strip(), database_url, kill))
    finally:
        for process in services.values():
            process.stop()
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
    before = [s for r, s in latencies.items() if phase.answered_at[r] < killed_at]
    after = [s for r, s in latencies.items() if phase.answered_at[r] >= killed_at]
    lost = len(phase.answered_at) - len(latencies)
    print(f"{name}: {SETTINGS[name]}; killed node {victim}")
    print(
        f"  reference before the kill ({len(before)}): p50 {statistics.median(before):.3f} s,"
        f"  p99 {percentile(before, 0.99):.3f} s,  max {max(before):.3f} s"
    )
    print(
        f"  after the kill ({len(after)}): pause (worst) {max(after):.2f} s,"
        f"  p50 {statistics.median(after):.3f} s,"
        f"  paged > 1 s late: {sum(1 for s in after if s > 1)},"
        f"  not paged: {lost},  post errors: {phase.errors}"
    )


def main(settings: list[str]) -> None:
    directory = Path(tempfile.mkdtemp(prefix="handoff-failover-pg-"))
    directory.chmod(0o755)
    postgres = PostgresCluster(directory / "postgres", free_ports(1)[0], durable=True)
    postgres.start()
    try:
        print(
            f"{RATE:.0f} referrals/s for {SECONDS:.0f} s, a broker SIGKILLed at {KILL_AFTER:.0f} s"
        )
        for name in settings:
            measure(name, postgres.url)
    finally:
        postgres.destroy()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="stock,tuned")
    arguments = parser.parse_args()
    main(arguments.settings.split(","))
