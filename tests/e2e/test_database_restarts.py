"""PostgreSQL crashing under a running system: nothing stops for good, nothing pages twice.

The operator's finding (issue 13): after `pg_ctl -m immediate restart` paging stopped until
matching and notify were restarted by hand, while /readyz said 200 throughout. Here the
database is restarted ten times with that very command while hospitals keep posting
referrals, and notify pages in live mode through a Twilio-compatible fake over a real socket,
outside the database: a send that a crash made notify forget would reach the provider twice.
Afterwards every offer was paged exactly once at the provider, every offer-expiry timer has
fired once (the ladder site's referrals climbed every rung once), and each service's /readyz
was 503 during each outage and 200 after it. While the server recovers it refuses connections
with CannotConnectNowError, the race that killed the loops; a prober connecting in a tight
loop checks the restarts really hit that window.
"""

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from handoff_cli.demo import LINK
from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.ports import free_ports
from handoff_notify.domain.links import LinkSigner
from tests.e2e.conftest import COACHES, LADDER_SITE, MAIN_SITE, System, start_system, stop_system
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio
from tests.support.patients import referral_body
from tests.support.waiting import eventually

RESTARTS = 10
ADMIN_TOKEN = "e2e-admin-token"
LADDER_RUNGS = ("ladder-1", "ladder-2", "state", "supervisor")
SERVICES = ("referral", "matching", "notify")


@pytest.fixture(scope="module")
def postgres(infrastructure_dir: Path) -> Iterator[PostgresCluster]:
    """A cluster of this module's own: crashing the session's would fail other tests. Durable,
    as in production: without synchronous commit a crash loses what was just committed."""
    cluster = PostgresCluster(
        infrastructure_dir / f"pg-restarts-{uuid.uuid4().hex[:6]}", free_ports(1)[0]
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as provider:
        yield provider


@pytest.fixture(scope="module")
async def system(
    postgres: PostgresCluster, own_kafka: KafkaCluster, twilio: FakeTwilio
) -> AsyncIterator[System]:
    # The hospital here pages the same six coaches far faster than any rota would: lift the
    # per-phone limits, or the throttle, not a restart, would decide who is paged.
    running = await start_system(
        postgres.url,
        own_kafka,
        MATCHING_ADMIN_TOKEN=ADMIN_TOKEN,
        NOTIFY_ADMIN_TOKEN=ADMIN_TOKEN,
        OFFERS_PER_15_MINUTES="100000",
        NOTICES_PER_15_MINUTES="100000",
        # A send whose outcome a crash lost is looked up after this; the default is 30 s.
        SENDING_DEADLINE_SECONDS="3",
        NOTIFY_DELIVERY="live",
        TWILIO_BASE_URL=twilio.base_url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        # Live mode wants email and webhooks configured; no coach here has either.
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(free_ports(1)[0]),
        WEBHOOK_SECRET="e2e-webhook-secret",
    )
    try:
        yield running
    finally:
        with contextlib.suppress(Exception):  # the database may be what failed
            await stop_system(running)


def _by_site() -> dict[str, list[str]]:
    return {MAIN_SITE: [], LADDER_SITE: []}


@dataclass
class Hospital:
    """Posts referrals as an ED's system does: the same body again after a 503 or a dropped
    connection (replaying an external_id is safe). Any answer but 201/200/503 fails."""

    system: System
    client: httpx.AsyncClient
    referrals: dict[str, list[str]] = field(default_factory=lambda: _by_site())
    unavailable: int = 0

    async def refer(self, site: str) -> None:
        body = referral_body(f"restart-{uuid.uuid4().hex[:10]}")
        while True:
            try:
                response = await self.client.post(
                    f"{self.system.referral.url}/v1/referrals",
                    json=body,
                    headers={"Authorization": f"Bearer {self.system.keys[site]}"},
                )
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            if response.status_code in (200, 201):
                self.referrals[site].append(response.json()["id"])
                return
            assert response.status_code == 503, (response.status_code, response.text)
            assert response.headers["retry-after"].isdigit()
            assert response.json()["error"]["code"] == "service_unavailable"
            self.unavailable += 1
            await asyncio.sleep(0.1)  # shorter than Retry-After, to press on the restart

    async def keep_referring(self, stop: asyncio.Event) -> None:
        """One referral a second to the ladder site, whose 2 s offers expire by timer, rung by
        rung. The main site's offers stay open: its two coaches get one referral per restart,
        so neither reaches its load limit (10), which would send referrals up the ladder or
        make them wait whatever the database did."""
        while not stop.is_set():
            await self.refer(LADDER_SITE)
            await asyncio.sleep(1.0)


@dataclass
class Outage:
    """What was seen while the database restarted once."""

    readiness: dict[str, Counter[int]] = field(
        default_factory=lambda: {service: Counter() for service in SERVICES}
    )
    connect_errors: Counter[str] = field(default_factory=Counter)
    page_statuses: Counter[int] = field(default_factory=Counter)


async def watch_readiness(
    client: httpx.AsyncClient, url: str, seen: Counter[int], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(httpx.TransportError):
            seen[(await client.get(f"{url}/readyz", timeout=3.0)).status_code] += 1
        await asyncio.sleep(0.03)


async def probe_connections(url: str, errors: Counter[str], stop: asyncio.Event) -> None:
    """Connect in a tight loop, as the services' loops do on restart, and record the refusals."""
    while not stop.is_set():
        try:
            connection = await asyncpg.connect(url, timeout=2.0)
        except Exception as error:
            errors[type(error).__name__] += 1
        else:
            await connection.close()
        await asyncio.sleep(0.005)


async def watch_page(
    client: httpx.AsyncClient, link: str, seen: Counter[int], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(httpx.TransportError):
            seen[(await client.get(link, timeout=3.0)).status_code] += 1
        await asyncio.sleep(0.05)


async def ready_again(client: httpx.AsyncClient, system: System) -> None:
    async def all_ready() -> bool:
        for process in (system.referral, system.matching, system.notify):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{process.url}/readyz", timeout=3.0)).status_code != 200:
                    return False
                continue
            return False
        return True

    await eventually(all_ready, within=30, what="every service ready again", interval=0.1)


async def restart_once(
    postgres: PostgresCluster, system: System, client: httpx.AsyncClient, page_link: str
) -> Outage:
    outage = Outage()
    stop = asyncio.Event()
    urls = {"referral": system.referral.url, "matching": system.matching.url}
    urls["notify"] = system.notify.url
    watchers = [
        *(
            asyncio.create_task(watch_readiness(client, urls[s], outage.readiness[s], stop))
            for s in SERVICES
        ),
        asyncio.create_task(probe_connections(system.database_url, outage.connect_errors, stop)),
        asyncio.create_task(watch_page(client, page_link, outage.page_statuses, stop)),
    ]
    try:
        await asyncio.to_thread(postgres.restart, "immediate")
        await ready_again(client, system)
    finally:
        stop.set()
        await asyncio.gather(*watchers)
    return outage


async def settled(system: System) -> bool:
    """No message waiting to be sent and no timer overdue, in any service."""
    connection = await asyncpg.connect(system.database_url)
    try:
        unsent = await connection.fetchval(
            "SELECT count(*) FROM notify.messages WHERE state IN ('pending', 'sending')"
        )
        overdue = 0
        for schema in ("matching", "notify"):
            overdue += await connection.fetchval(
                f"SELECT count(*) FROM {schema}.timers WHERE due_at < now() - interval '3 s'"
            )
    finally:
        await connection.close()
    return bool(unsent == 0 and overdue == 0)


async def unassigned(system: System, referral_id: str) -> None:
    """Wait until a ladder referral has climbed every rung: each offer expired by its timer."""

    seen: dict[str, object] = {}

    async def climbed() -> bool:
        seen.update(await system.referral_status(LADDER_SITE, referral_id))
        return bool(seen["status"] == "unassigned")

    try:
        await eventually(climbed, within=60, what=f"{referral_id} unassigned", interval=0.2)
    except AssertionError as error:
        raise AssertionError(f"{error}; its timeline: {seen.get('timeline')}") from None


@dataclass
class Sent:
    """Per referral, by coach name: offers notify was told of, and offer pages the provider
    accepted for them."""

    offers: dict[str, Counter[str]]
    pages: dict[str, Counter[str]]


def offer_pages(system: System, twilio: FakeTwilio) -> Counter[str]:
    """Offer pages the provider accepted, by offer id. Only an offer page (or the
    confirmation of an acceptance, and no coach accepts here) carries an offer's link."""
    signer = LinkSigner(system.env["NOTIFY_LINK_SECRET"])
    pages: Counter[str] = Counter()
    for message in twilio.accepted:
        if message.kind == "sms" and (link := LINK.search(message.body)):
            offer_id = signer.offer_id(link.group(0).rsplit("/", 1)[1])
            assert offer_id is not None, f"a link notify did not sign: {link.group(0)}"
            pages[str(offer_id)] += 1
    return pages


async def offers_and_pages(system: System, twilio: FakeTwilio) -> Sent:
    names = {coach.coach_id: name for name, coach in COACHES.items()}
    connection = await asyncpg.connect(system.database_url)
    try:
        rows = await connection.fetch("SELECT offer_id, referral_id, coach_id FROM notify.offers")
    finally:
        await connection.close()
    pages = offer_pages(system, twilio)
    offered = {str(row["offer_id"]) for row in rows}
    assert set(pages) <= offered, f"pages for offers notify never had: {set(pages) - offered}"
    sent = Sent({}, {})
    for row in rows:
        referral, coach = str(row["referral_id"]), names[row["coach_id"]]
        sent.offers.setdefault(referral, Counter())[coach] += 1
        sent.pages.setdefault(referral, Counter())[coach] += pages[str(row["offer_id"])]
    return sent


async def sids_notify_never_stored(system: System, twilio: FakeTwilio) -> list[str]:
    """SIDs of messages the provider accepted that no page (notify.messages) or supervisor
    notice (notify.notices) holds: a send whose outcome a restart lost and that was never
    reconciled, or was failed as "not found" though it reached a phone."""
    connection = await asyncpg.connect(system.database_url)
    try:
        rows = await connection.fetch(
            """SELECT provider_ref FROM notify.messages WHERE provider_ref IS NOT NULL
               UNION SELECT provider_ref FROM notify.notices WHERE provider_ref IS NOT NULL"""
        )
    finally:
        await connection.close()
    stored = {row["provider_ref"] for row in rows}
    return [message.sid for message in twilio.accepted if message.sid not in stored]


def first_page_link(twilio: FakeTwilio) -> str:
    """The link of the page of the referral `start_system` waited for: a coach's page to probe."""
    main = {COACHES["main-1"].phone, COACHES["main-2"].phone}
    for message in twilio.accepted:
        if message.to in main and (link := LINK.search(message.body)):
            return link.group(0)
    raise AssertionError(f"no page to a main-site coach among {len(twilio.accepted)} sent")


async def test_ten_crash_restarts_lose_no_referral_and_double_no_page(
    system: System, postgres: PostgresCluster, twilio: FakeTwilio
) -> None:
    started = time.monotonic()
    page_link = first_page_link(twilio)
    async with httpx.AsyncClient() as client:
        hospital = Hospital(system, client)
        stop_referring = asyncio.Event()
        referring = asyncio.create_task(hospital.keep_referring(stop_referring))
        outages = []
        try:
            for _ in range(RESTARTS):
                await hospital.refer(MAIN_SITE)  # at least one between restarts
                outages.append(await restart_once(postgres, system, client, page_link))
        finally:
            stop_referring.set()
            await referring

        for number, outage in enumerate(outages, start=1):
            for service in SERVICES:
                statuses = outage.readiness[service]
                assert statuses[503] >= 1, f"restart {number}: {service} /readyz {statuses}"
                assert set(statuses) <= {200, 503}, f"restart {number}: {service} {statuses}"
            assert set(outage.page_statuses) <= {200, 503}, outage.page_statuses
        refused = sum((o.connect_errors for o in outages), Counter())
        assert refused["CannotConnectNowError"] >= 1, f"never hit the startup window: {refused}"

        for referral_id in hospital.referrals[LADDER_SITE]:
            await unassigned(system, referral_id)
        await eventually(lambda: settled(system), within=30, what="pages sent, timers fired")
        unrecorded = await sids_notify_never_stored(system, twilio)
        assert not unrecorded, f"sends at the provider notify holds no record of: {unrecorded}"
        sent = await offers_and_pages(system, twilio)
        for referral_id in hospital.referrals[MAIN_SITE]:
            # One offer, to one of the two coaches, paged once at the provider.
            paged = sent.pages.get(referral_id, Counter())
            assert sum(sent.offers[referral_id].values()) == 1, sent.offers[referral_id]
            assert sum(paged.values()) == 1, f"{referral_id}: {paged}"
        for referral_id in hospital.referrals[LADDER_SITE]:
            # Each rung offered once: each offer-expiry timer fired once. A rung whose offer
            # expired while the database was away may never have been paged, never twice.
            offers = sent.offers.get(referral_id)
            assert offers == Counter(dict.fromkeys(LADDER_RUNGS, 1)), f"{referral_id}: {offers}"
            assert set(sent.pages[referral_id].values()) <= {0, 1}, sent.pages[referral_id]
        for referral_id in hospital.referrals[MAIN_SITE]:
            status = await system.referral_status(MAIN_SITE, referral_id)
            assert status["status"] == "offered", status["status"]
    assert len(hospital.referrals[LADDER_SITE]) >= 3
    assert len(hospital.referrals[MAIN_SITE]) == RESTARTS
    # About 70-90 s on two shared cores; the ceiling catches a run that recovers only by luck.
    assert time.monotonic() - started < 240


async def test_with_the_database_stopped_every_surface_answers_503_never_500(
    system: System, postgres: PostgresCluster, twilio: FakeTwilio
) -> None:
    referral = await first_referral(system)
    page_link = first_page_link(twilio)
    hospital = {"Authorization": f"Bearer {system.keys[MAIN_SITE]}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    await asyncio.to_thread(postgres.stop)
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            answers = {
                "referral POST": await client.post(
                    f"{system.referral.url}/v1/referrals",
                    json=referral_body(f"down-{uuid.uuid4().hex[:10]}"),
                    headers=hospital,
                ),
                "referral GET": await client.get(
                    f"{system.referral.url}/v1/referrals/{referral}", headers=hospital
                ),
                "matching admin": await client.get(
                    f"{system.matching.url}/v1/admin/sites/{MAIN_SITE}/dispatch", headers=admin
                ),
                "notify admin": await client.get(
                    f"{system.notify.url}/v1/admin/contact-methods", headers=admin
                ),
            }
            pages = {
                "page GET": await client.get(page_link),
                "page POST": await client.post(page_link, data={"answer": "accepted"}),
            }
            for service in (system.referral, system.matching, system.notify):
                ready = await client.get(f"{service.url}/readyz")
                assert ready.status_code == 503, (service.service, ready.text)
    finally:
        await asyncio.to_thread(postgres.start)
    for surface, answer in answers.items():
        assert answer.status_code == 503, (surface, answer.status_code, answer.text)
        assert answer.headers["retry-after"].isdigit(), surface
        assert answer.json()["error"]["code"] == "service_unavailable", surface
    for surface, answer in pages.items():
        assert answer.status_code == 503, (surface, answer.status_code, answer.text)
        assert answer.headers["retry-after"].isdigit(), surface
        assert answer.headers["content-type"].startswith("text/html"), surface
        assert "Try again in a moment" in answer.text, surface
    async with httpx.AsyncClient() as client:
        await ready_again(client, system)


async def first_referral(system: System) -> str:
    """The id of a referral of the main site already in the database."""
    connection = await asyncpg.connect(system.database_url)
    try:
        found: str = str(
            await connection.fetchval(
                "SELECT referral_id FROM notify.offers WHERE site_id = $1 LIMIT 1", MAIN_SITE
            )
        )
    finally:
        await connection.close()
    return found
