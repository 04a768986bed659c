"""Database connections that swallow every query and never answer: nothing waits forever.

Issue 18's network fault: when a stateful firewall or NAT forgets a flow, a query sent on
that connection waits for an answer that cannot come, and nothing closes the connection,
though a new one would work. Without a command timeout the referral service's outbox relay,
which asks PostgreSQL every second, waited on such a query for good, and every referral
taken afterwards stayed `received` until a restart (seen in the chaos suite, decision 0027).
Here the services reach PostgreSQL through a proxy that turns every connection open at one
moment into a black hole (`tests/support/black_hole.py`) and lets new ones through. Then a
hospital's referral is taken, offered to a coach and paged, and every service is ready, with
no process restarted.
"""

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_platform.database import COMMAND_TIMEOUT_SECONDS, CONNECT_TIMEOUT_SECONDS
from tests.e2e.conftest import MAIN_SITE, System, start_system, stop_system
from tests.support.black_hole import BlackHoleProxy
from tests.support.patients import referral_body
from tests.support.waiting import eventually

SERVICES = ("referral", "matching", "notify")
ANSWER_SECONDS = 4 * COMMAND_TIMEOUT_SECONDS + CONNECT_TIMEOUT_SECONDS + 5
"""The longest a hospital waits for an answer (a 503 or a 201) while connections are dark: a
query times out, its cancel waits as long for the lost query's end, and a request may meet a
second dead connection (the API key's, then the referral's) or wait to connect afresh.
A fresh tester saw minutes with 30 requests at once before this was bounded (issue 18)."""
RECOVERY_SECONDS = 8 * COMMAND_TIMEOUT_SECONDS + 30
"""A hospital's retries may meet a few dead pooled connections in turn, and the loops'
supervisors back off a few seconds; then the referral crosses the three services."""
BURST = 12
"""Referrals posted at once into the black hole: more than a pool holds connections (10)."""


def _at_port(database_url: str, port: int) -> str:
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _port(database_url: str) -> int:
    port = urlsplit(database_url).port
    assert port is not None, "the test database URL names no port"
    return port


@pytest.fixture(scope="module")
def proxy(database_url: str) -> Iterator[BlackHoleProxy]:
    with BlackHoleProxy(_port(database_url)) as running:
        yield running


@pytest.fixture(scope="module")
async def system(
    database_url: str, own_kafka: KafkaCluster, proxy: BlackHoleProxy
) -> AsyncIterator[System]:
    running = await start_system(_at_port(database_url, proxy.port), own_kafka)
    try:
        yield running
    finally:
        with contextlib.suppress(Exception):
            await stop_system(running)


async def _all_ready(client: httpx.AsyncClient, system: System) -> bool:
    for service in SERVICES:
        try:
            response = await client.get(f"{system.replicas[service][0].url}/readyz", timeout=3)
        except httpx.TransportError:
            return False
        if response.status_code != 200:
            return False
    return True


async def _post_until_taken(
    client: httpx.AsyncClient, system: System, body: dict[str, object]
) -> str:
    """Post as a hospital does: the same body again after a 503 (its external id makes the
    repeat safe); the referral's id. Fails if an attempt goes unanswered ANSWER_SECONDS."""
    while True:
        started = time.monotonic()
        try:
            response = await client.post(
                f"{system.referral.url}/v1/referrals",
                json=body,
                headers={"Authorization": f"Bearer {system.keys[MAIN_SITE]}"},
                timeout=ANSWER_SECONDS,
            )
        except httpx.TimeoutException:
            waited = time.monotonic() - started
            raise AssertionError(f"a POST went unanswered for {waited:.0f} s") from None
        if response.status_code in (200, 201):
            return str(response.json()["id"])
        assert response.status_code == 503, (response.status_code, response.text)
        await asyncio.sleep(0.2)


async def _offered_and_paged(system: System, database_url: str, referral_id: str) -> bool:
    """The hospital sees the referral offered, and notify handed the offer's page over."""
    status = (await system.referral_status(MAIN_SITE, referral_id))["status"]
    if status == "received":
        return False
    assert status == "offered", f"referral {referral_id} is {status}, not offered"
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        paged: bool = await connection.fetchval(
            """SELECT EXISTS (SELECT 1 FROM notify.messages m JOIN notify.offers o USING (offer_id)
                              WHERE o.referral_id = $1 AND m.kind = 'offer'
                                AND m.state IN ('sent', 'delivered'))""",
            uuid.UUID(referral_id),
        )
    finally:
        await connection.close()
    return paged


async def _answer_while_dark(client: httpx.AsyncClient, system: System) -> float:
    """One POST while every connection is dark: it must be a 503 with Retry-After within
    ANSWER_SECONDS; how long it took (seconds)."""
    started = time.monotonic()
    try:
        response = await client.post(
            f"{system.referral.url}/v1/referrals",
            json=referral_body(f"dark-{uuid.uuid4().hex[:10]}"),
            headers={"Authorization": f"Bearer {system.keys[MAIN_SITE]}"},
            timeout=ANSWER_SECONDS,
        )
    except httpx.TimeoutException:
        raise AssertionError(f"a POST went unanswered for {ANSWER_SECONDS:.0f} s") from None
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["retry-after"].isdigit()
    return time.monotonic() - started


async def test_queries_the_network_swallows_stop_nothing_for_good(
    system: System, proxy: BlackHoleProxy, database_url: str
) -> None:
    direct = _at_port(system.database_url, _port(database_url))  # the test's reads bypass it
    async with httpx.AsyncClient() as client:
        swallowing = proxy.swallow_all()
        assert swallowing >= 6, f"only {swallowing} connections open: the services' are missing"
        # The network is away: every hospital is told so, in bounded time, even a burst.
        waits = await asyncio.gather(*(_answer_while_dark(client, system) for _ in range(BURST)))
        # It comes back for new connections; the dark ones stay dark until given up on.
        proxy.heal()
        healed = time.monotonic()
        hospitals = [
            _post_until_taken(client, system, referral_body(f"hole-{uuid.uuid4().hex[:10]}"))
            for _ in range(BURST)
        ]
        referral_ids = await asyncio.wait_for(asyncio.gather(*hospitals), RECOVERY_SECONDS)
        for referral_id in referral_ids:
            await eventually(
                functools.partial(_offered_and_paged, system, direct, referral_id),
                within=RECOVERY_SECONDS,
                what=f"referral {referral_id} offered and paged after its connections went dark",
                interval=0.5,
            )
        await eventually(
            functools.partial(_all_ready, client, system),
            within=RECOVERY_SECONDS,
            what="every service ready",
        )
        # Proof the fault bit: queries went into the hole (the relay asks every second).
        assert proxy.swallowed_bytes > 0, "no query was sent into the black hole"
        print(
            f"{swallowing} connections went dark; {BURST} POSTs answered 503 in at most "
            f"{max(waits):.1f} s; after healing, {BURST} referrals paged and services ready "
            f"{time.monotonic() - healed:.1f} s later; {proxy.swallowed_bytes} bytes swallowed"
        )
