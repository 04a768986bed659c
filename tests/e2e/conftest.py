"""The whole system as production runs it: referral, matching and notify as processes, on
their own Kafka broker and a fresh database, with notify paging into the sandbox."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import ServiceProcess, start_service
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations, import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_platform.kafka import ensure_topics
from tests.integration.conftest import create_database, handoff_command
from tests.support.follow_ups import FOLLOW_UP_KEYS
from tests.support.matching import always_on_call
from tests.support.otlp import OtlpCollector
from tests.support.patients import (
    SERVICE_LOGS,
    own_report_spool,
    record_page_body,
    referral_body,
)
from tests.support.waiting import eventually

MAIN_SITE, LADDER_SITE = "md-e2e-main", "md-e2e-ladder"


HTTP_TIMEOUT_SECONDS = 30.0
"""The hospital's client waits this long for an answer: what these tests check is what the
answer says, and on a loaded two-core runner a service busy with a burst or just restarted
may take more than httpx's default 5 s (a ReadTimeout then ended a test that polled)."""


@dataclass(frozen=True)
class Coach:
    coach_id: UUID
    phone: str
    pool: str | None  # None: on no rota (a supervisor)


COACHES = {
    "main-1": Coach(uuid.uuid4(), "+14105557001", f"site:{MAIN_SITE}"),
    "main-2": Coach(uuid.uuid4(), "+14105557002", f"site:{MAIN_SITE}"),
    "ladder-1": Coach(uuid.uuid4(), "+14105557011", f"site:{LADDER_SITE}"),
    "ladder-2": Coach(uuid.uuid4(), "+14105557012", f"site:{LADDER_SITE}"),
    "state": Coach(uuid.uuid4(), "+14105557021", "state:MD"),
    "supervisor": Coach(uuid.uuid4(), "+14105557031", None),
}


@dataclass
class System:
    database_url: str
    bootstrap_servers: str
    env: dict[str, str]
    replicas: dict[str, list[ServiceProcess]]
    keys: dict[str, str]

    @property
    def referral(self) -> ServiceProcess:
        return self.replicas["referral"][0]

    @property
    def matching(self) -> ServiceProcess:
        return self.replicas["matching"][0]

    @property
    def notify(self) -> ServiceProcess:
        return self.replicas["notify"][0]

    async def restart(self, service: str, replica: int, *, kill: bool) -> None:
        process = self.replicas[service][replica]
        (process.kill if kill else process.stop)()
        port = int(process.url.rsplit(":", 1)[1])
        self.replicas[service][replica] = await asyncio.to_thread(
            _start, service, self.env, port, replica
        )

    async def post_referral(self, site: str, replica: int = 0, **changes: Any) -> dict[str, Any]:
        body = referral_body(f"e2e-{uuid.uuid4().hex[:10]}", **changes)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
            response = await client.post(
                f"{self.replicas['referral'][replica].url}/v1/referrals",
                json=body,
                headers={"Authorization": f"Bearer {self.keys[site]}"},
            )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def rows(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """What a query of the system's database answers, on a connection of its own."""
        connection = await asyncpg.connect(self.database_url)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    async def cancel(self, site: str, referral_id: str, reason: str = "patient_left") -> None:
        """The ED cancels the referral; fails the test unless it is a 200."""
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
            cancelled = await client.post(
                f"{self.referral.url}/v1/referrals/{referral_id}/cancel",
                json={"reason": reason},
                headers={"Authorization": f"Bearer {self.keys[site]}"},
            )
        assert cancelled.status_code == 200, cancelled.text

    async def referral_status(self, site: str, referral_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
            response = await client.get(
                f"{self.referral.url}/v1/referrals/{referral_id}",
                headers={"Authorization": f"Bearer {self.keys[site]}"},
            )
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def inbox(self, phone: str) -> list[str]:
        """What the sandbox phone `phone` received, oldest first."""
        connection = await asyncpg.connect(self.database_url)
        try:
            rows = await connection.fetch(
                """SELECT body FROM notify.sandbox_messages
                   WHERE destination = $1 ORDER BY sandbox_id""",
                phone,
            )
        finally:
            await connection.close()
        return [r["body"] for r in rows]

    async def page(self, phone: str, count: int, within: float = 10) -> list[str]:
        async def arrived() -> list[str] | None:
            bodies = await self.inbox(phone)
            return bodies if len(bodies) >= count else None

        return await eventually(arrived, within=within, what=f"{count} pages to {phone}")


def _roster(max_concurrent: int) -> RosterFile:
    return RosterFile.model_validate(
        {
            "coaches": [
                {
                    "coach_id": str(c.coach_id),
                    "display_name": name,
                    "contact_methods": [{"channel": "sms", "destination": c.phone}],
                    "languages": ["en", "es"],
                    "max_concurrent": max_concurrent,
                    "certifications": [
                        {"state": "MD", "credential": "CPRS", "expires_on": "2030-01-01"}
                    ],
                }
                for name, c in COACHES.items()
            ],
            "shifts": [
                shift
                for c in COACHES.values()
                if c.pool is not None
                for shift in always_on_call(c.coach_id, c.pool)
            ],
        }
    )


async def _prepare(database_url: str, max_concurrent: int) -> dict[str, str]:
    keys = {}
    for site in (MAIN_SITE, LADDER_SITE):
        handoff_command(
            "referral", "site", "add", "--id", site, "--name", f"{site} hospital",
            "--short-name", "Mercy ED", "--state", "MD", "--time-zone", "America/New_York",
            database_url=database_url,
        )  # fmt: skip
        keys[site] = handoff_command(
            "referral", "key", "create", "--site", site, "--label", "e2e",
            database_url=database_url,
        ).strip()  # fmt: skip
    await apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await import_roster(connection, _roster(max_concurrent))
        await dispatch_store.put_site_settings(connection, MAIN_SITE, DispatchSettings(), True, ())
        await dispatch_store.put_site_settings(
            connection,
            LADDER_SITE,
            DispatchSettings(ack_timeout=timedelta(seconds=2)),
            True,
            (COACHES["supervisor"].coach_id,),
        )
    finally:
        await connection.close()
    return keys


def _start(service: str, env: dict[str, str], port: int | None, replica: int) -> ServiceProcess:
    log = SERVICE_LOGS / f"e2e-{service}-{replica}.log"
    return start_service(service, env, log, 120, port)  # three at once on a busy 2-core box


async def start_system(
    database_url: str,
    kafka: KafkaCluster,
    replicas: int = 1,
    max_concurrent: int = 10,
    **settings: str,
) -> System:
    """A fresh database, the demo sites and roster, and `replicas` processes of each service."""
    database = await create_database(database_url)
    await ensure_topics(kafka.bootstrap_servers)
    keys = await _prepare(database, max_concurrent)
    notify_ports = free_ports(replicas)
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "NOTIFY_DELIVERY": "sandbox",
        "NOTIFY_PUBLIC_URL": f"http://127.0.0.1:{notify_ports[0]}",
        "NOTIFY_LINK_SECRET": "e2e-link-secret",
        # Notify mints the referral service's visit and follow-up links; both check them.
        "FOLLOW_UP_LINK_SECRET": "e2e-follow-up-link-secret",
        "FOLLOW_UP_KEYS": FOLLOW_UP_KEYS,  # required to serve referral
        "NOTIFY_REPORT_SPOOL": own_report_spool(f"e2e-{notify_ports[0]}"),
        **settings,
    }
    starting = [
        (service, replica, notify_ports[replica] if service == "notify" else None)
        for service in ("referral", "matching", "notify")
        for replica in range(replicas)
    ]
    outcomes = await asyncio.gather(
        *(asyncio.to_thread(_start, s, env, port, r) for s, r, port in starting),
        return_exceptions=True,
    )
    started = [outcome for outcome in outcomes if isinstance(outcome, ServiceProcess)]
    if len(started) < len(outcomes):  # one did not start: stop the others, or they outlive us
        for process in started:
            process.stop()
        raise next(outcome for outcome in outcomes if isinstance(outcome, BaseException))
    processes: dict[str, list[ServiceProcess]] = {"referral": [], "matching": [], "notify": []}
    for (service, _, _), process in zip(starting, started, strict=True):
        processes[service].append(process)
    system = System(database, kafka.bootstrap_servers, env, processes, keys)
    try:
        await _first_referral_paged(system)
    except BaseException:
        for process in started:  # the fixture never yields, so nothing else stops them
            process.stop()
        raise
    return system


async def _first_referral_paged(system: System) -> None:
    """Wait out the consumer groups' first rebalance: tests measure a running system."""
    before = await pages_handed_over(system)

    async def paged() -> bool:
        return await pages_handed_over(system) > before

    await system.post_referral(MAIN_SITE)
    await eventually(paged, within=60, what="the first referral paged")


async def pages_handed_over(system: System) -> int:
    """Offer pages notify has handed to its provider, the sandbox or another."""
    connection = await asyncpg.connect(system.database_url)
    try:
        count: int = await connection.fetchval(
            """SELECT count(*) FROM notify.messages
               WHERE kind = 'offer' AND state IN ('sent', 'delivered')"""
        )
    finally:
        await connection.close()
    return count


async def stop_system(system: System) -> None:
    for processes in system.replicas.values():
        for process in processes:
            process.stop()
    connection = await asyncpg.connect(system.database_url)
    try:
        for row in await connection.fetch("SELECT body FROM notify.sandbox_messages"):
            record_page_body(row["body"])
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def otlp() -> AsyncIterator[OtlpCollector]:
    collector = OtlpCollector()
    await collector.start()
    try:
        yield collector
    finally:
        await collector.stop()


@pytest.fixture(scope="module")
async def system(
    database_url: str, own_kafka: KafkaCluster, otlp: OtlpCollector
) -> AsyncIterator[System]:
    running = await start_system(
        database_url,
        own_kafka,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    try:
        yield running
    finally:
        await stop_system(running)
