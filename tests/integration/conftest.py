"""Fixtures for running the referral service in-process against the real servers."""

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from handoff_devenv.service_process import running_service
from handoff_matching.adapters.roster_store import apply_migrations as apply_matching_migrations
from handoff_referral.adapters import postgres as referral_store
from handoff_referral.app import ReferralRuntime
from handoff_referral.domain.api_keys import issue_key
from handoff_referral.domain.referral import Site
from handoff_referral.settings import ReferralSettings
from tests.support.follow_ups import FOLLOW_UP_ENV, FOLLOW_UP_KEYS, FOLLOW_UP_LINK_SECRET
from tests.support.patients import SERVICE_LOGS
from tests.support.waiting import eventually

HANDOFF = [sys.executable, "-m", "handoff_cli"]


async def create_database(server_url: str) -> str:
    """A new, empty database on the same server, for a test that needs a world of its own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def start_referral(
    database_url: str, bootstrap_servers: str, group: str = "handoff-referral"
) -> ReferralRuntime:
    settings = ReferralSettings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap_servers,
        consumer_group=group,
        follow_up_keys=SecretStr(FOLLOW_UP_KEYS),
        follow_up_link_secret=SecretStr(FOLLOW_UP_LINK_SECRET),
    )
    return await ReferralRuntime.start(settings)


@dataclass
class Hospital:
    """A site with a valid key, and an HTTP client speaking for it."""

    site: Site
    key_id: str
    client: httpx.AsyncClient


HospitalFactory = Callable[..., Awaitable[Hospital]]


@pytest.fixture(scope="module")
async def matching_database(database_url: str) -> str:
    """A migrated matching database of the test module's own: its roster meets no other's."""
    database = await create_database(database_url)
    await apply_matching_migrations(database)
    return database


@pytest.fixture(scope="session")
async def referral_database(database_url: str) -> str:
    return await create_database(database_url)


@pytest.fixture(scope="session")
async def referral(referral_database: str, kafka_topics: str) -> AsyncIterator[ReferralRuntime]:
    runtime = await start_referral(referral_database, kafka_topics)
    await eventually(lambda: _is_set(runtime), within=60, what="the referral service on Kafka")
    try:
        yield runtime
    finally:
        await runtime.stop()


async def _is_set(runtime: ReferralRuntime) -> bool:
    return runtime.kafka_connected.is_set()


async def register_site(runtime: ReferralRuntime, state: str = "MD") -> tuple[Site, str, str]:
    suffix = uuid.uuid4().hex[:8]
    site = Site(
        site_id=f"{state.lower()}-ed-{suffix}",
        name=f"Test ED {suffix}",
        short_name=f"ED {suffix}",
        state=state,
        time_zone="America/New_York",
    )
    key = issue_key()
    async with runtime.pool.acquire() as connection:
        await referral_store.add_site(connection, site)
        await referral_store.add_key(connection, site.site_id, key, "tests")
    return site, key.key_id, key.token


@pytest.fixture
async def hospital(referral: ReferralRuntime) -> AsyncIterator[HospitalFactory]:
    clients: list[httpx.AsyncClient] = []

    async def make(runtime: ReferralRuntime = referral, state: str = "MD") -> Hospital:
        site, key_id, token = await register_site(runtime, state)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=runtime.app),
            base_url="http://referral",
            headers={"Authorization": f"Bearer {token}"},
        )
        clients.append(client)
        return Hospital(site, key_id, client)

    yield make
    for client in clients:
        await client.aclose()


async def outbox_empty(runtime: ReferralRuntime) -> bool:
    async with runtime.pool.acquire() as connection:
        return bool(await connection.fetchval("SELECT count(*) = 0 FROM referral.outbox"))


def handoff_command(
    *args: str,
    database_url: str | None = None,
    bootstrap_servers: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> str:
    """Run the `handoff` CLI as an operator would, with these servers and further `env`
    variables over the test's environment, `stdin` typed in; returns its standard output.
    A non-zero exit fails the test with the command's output."""
    result = handoff_run(
        *args, database_url=database_url, bootstrap_servers=bootstrap_servers, env=env, stdin=stdin
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def handoff_run(
    *args: str,
    database_url: str | None = None,
    bootstrap_servers: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`handoff_command`, whatever the exit status: for tests of a refusal."""
    servers = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    chosen = {name: url for name, url in servers.items() if url is not None}
    return subprocess.run(
        [*HANDOFF, *args],
        env={**os.environ, **chosen, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def referral_process(referral_database: str, kafka_topics: str) -> Iterator[str]:
    """The referral service as its own process, as it runs in production; yields its URL."""
    env = {
        **os.environ,
        **FOLLOW_UP_ENV,
        "DATABASE_URL": referral_database,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_topics,
    }
    log = SERVICE_LOGS / f"referral-{uuid.uuid4().hex[:6]}.log"
    with running_service("referral", env, log) as url:
        yield url
