"""The chaos suite's world (decision 0027): a three-broker KRaft cluster (RF 3, min ISR 2), a
durable PostgreSQL of its own, toxiproxy in front of PostgreSQL and of broker 3 (which
advertises the proxy's address, so every client and the other brokers reach it through it),
two replicas of each service, and notify in live mode against a Twilio-compatible fake that
fails 30 % of sends with a 500 and times out on 5 %, seeded."""

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.ports import free_port_block, free_ports
from handoff_devenv.toxiproxy import Toxiproxy
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile
from tests.e2e.conftest import MAIN_SITE, System, start_system, stop_system
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, Flakiness
from tests.support.matching import always_on_call

SEED = int(os.environ.get("CHAOS_SEED", "18"))
"""One seed for the provider's failures and the fault script's choices: a failing run is
replayed with CHAOS_SEED=<its seed> (printed in the report)."""

SITE_COACHES = 100
"""Coaches on call for the chaos site beside the end-to-end roster's: with max_concurrent 10
each, a slot for every referral of the run, which bot coaches accept and never finish. So
the run measures faults and the flaky provider, not a rota too thin for a thousand
referrals in a few minutes (the waiting line, tested in tests/e2e/test_dispatch_load.py)."""

PROXIED_BROKER = 3
PG_PROXY, BROKER_PROXY = "postgres", f"broker-{PROXIED_BROKER}"


@dataclass
class ChaosRig:
    system: System
    kafka: KafkaCluster
    postgres: PostgresCluster
    toxiproxy: Toxiproxy
    twilio: FakeTwilio


@pytest.fixture(scope="module")
def toxiproxy(infrastructure_dir: Path) -> Iterator[Toxiproxy]:
    proxy = Toxiproxy(infrastructure_dir / "toxiproxy.log")
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def chaos_kafka(infrastructure_dir: Path, toxiproxy: Toxiproxy) -> Iterator[KafkaCluster]:
    """Three brokers below the ephemeral range; broker 3 advertised at its proxy's port."""
    first, controllers = free_port_block(3), free_port_block(3)
    ports = [first + i for i in range(3)]
    proxied = toxiproxy.proxy(BROKER_PROXY, ports[PROXIED_BROKER - 1])
    cluster = KafkaCluster(
        infrastructure_dir / "kafka-chaos",
        ports=ports,
        brokers=3,
        controller_ports=[controllers + i for i in range(3)],
        advertised_ports={PROXIED_BROKER: proxied},
    )
    cluster.start(timeout=120)
    try:
        yield cluster
    finally:
        for node in cluster.nodes:  # a broker left paused ignores SIGTERM
            with contextlib.suppress(Exception):
                cluster.signal_node(node.node_id, 18)  # SIGCONT
        cluster.stop()


@pytest.fixture(scope="module")
def chaos_postgres(infrastructure_dir: Path) -> Iterator[PostgresCluster]:
    """Durable, as in production: without synchronous commit a crash loses what was just
    committed, which is not the fault under test."""
    cluster = PostgresCluster(
        infrastructure_dir / f"pg-chaos-{uuid.uuid4().hex[:6]}", free_ports(1)[0]
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
async def flaky_twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(Flakiness(seed=SEED)) as provider:
        yield provider


@pytest.fixture(scope="module")
async def rig(
    chaos_kafka: KafkaCluster,
    chaos_postgres: PostgresCluster,
    toxiproxy: Toxiproxy,
    flaky_twilio: FakeTwilio,
) -> AsyncIterator[ChaosRig]:
    pg_port = toxiproxy.proxy(PG_PROXY, chaos_postgres.port)
    proxied_url = chaos_postgres.url.replace(f":{chaos_postgres.port}/", f":{pg_port}/")
    # Six coaches take a thousand referrals here, far beyond the flood guards meant for real
    # life; the provider's timeouts (4 s) outlast notify's wait (2 s), and a send whose fate
    # is unknown is looked up after 3 s, not 30.
    system = await start_system(
        proxied_url,
        chaos_kafka,
        replicas=2,
        OFFERS_PER_15_MINUTES="100000",
        NOTICES_PER_15_MINUTES="100000",
        NOTIFY_DELIVERY="live",
        PROVIDER_TIMEOUT_SECONDS="2",
        SENDING_DEADLINE_SECONDS="3",
        TWILIO_BASE_URL=flaky_twilio.base_url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        # Live mode wants email and webhooks configured; no coach here has either.
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(free_ports(1)[0]),
        WEBHOOK_SECRET="chaos-webhook-secret",
    )
    try:
        # An offer whose page a fault swallowed is asked of the next coach after 30 s, not
        # the default 5 min: a run must end within its budget either way.
        connection = await asyncpg.connect(system.database_url)
        try:
            await import_roster(connection, site_coaches())
            await dispatch_store.put_site_settings(
                connection, MAIN_SITE, DispatchSettings(ack_timeout=timedelta(seconds=30)), True, ()
            )
        finally:
            await connection.close()
        yield ChaosRig(system, chaos_kafka, chaos_postgres, toxiproxy, flaky_twilio)
    finally:
        with contextlib.suppress(Exception):
            await stop_system(system)


def site_coaches() -> RosterFile:
    """SITE_COACHES more coaches of the chaos site, each on call around the clock with a
    phone of their own (the provider counts pages by phone and offer)."""
    coaches = [(uuid.uuid4(), f"+1410556{number:04d}") for number in range(SITE_COACHES)]
    return RosterFile.model_validate(
        {
            "coaches": [
                {
                    "coach_id": str(coach_id),
                    "display_name": f"chaos-{number}",
                    "contact_methods": [{"channel": "sms", "destination": phone}],
                    "languages": ["en", "es"],
                    "max_concurrent": 10,
                    "certifications": [
                        {"state": "MD", "credential": "CPRS", "expires_on": "2030-01-01"}
                    ],
                }
                for number, (coach_id, phone) in enumerate(coaches)
            ],
            "shifts": [
                shift
                for coach_id, _ in coaches
                for shift in always_on_call(coach_id, f"site:{MAIN_SITE}")
            ],
        }
    )
