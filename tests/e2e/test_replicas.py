"""Two replicas of every service over 200 referrals on a three-broker cluster (RF 3, min ISR
2), every service given all three brokers: one replica of each service killed mid-run and
restarted, then one broker SIGKILLed for good. Every referral completed, no coach paged
twice, no event lost or published twice, nothing dead-lettered."""

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from handoff_cli.demo import LINK
from handoff_devenv import KafkaCluster
from handoff_devenv.ports import free_port_block
from handoff_schemas import Topic, dead_letter_topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferMade,
    PageSent,
    ReferralCreated,
)
from handoff_schemas.vocabulary import CoachResponse
from tests.e2e.conftest import MAIN_SITE, System, start_system, stop_system
from tests.support.kafka import read_topic
from tests.support.waiting import eventually

REFERRALS = 200
SERVICES_KILLED_AT, BROKER_KILLED_AT = REFERRALS // 3, REFERRALS // 2
STATUS_CHECKS_PER_POLL = 20


@pytest.fixture(scope="module")
def three_brokers(infrastructure_dir: Path) -> Iterator[KafkaCluster]:
    """The dev cluster of `handoff dev up --brokers 3`; its ports below the ephemeral range."""
    first, controllers = free_port_block(3), free_port_block(3)
    cluster = KafkaCluster(
        infrastructure_dir / "kafka-three",
        ports=[first + i for i in range(3)],
        brokers=3,
        controller_ports=[controllers + i for i in range(3)],
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
async def replicated(database_url: str, three_brokers: KafkaCluster) -> AsyncIterator[System]:
    # Two coaches take 200 referrals here, far beyond the flood guard meant for real life.
    running = await start_system(
        database_url,
        three_brokers,
        replicas=2,
        OFFERS_PER_15_MINUTES="1000",
        NOTICES_PER_15_MINUTES="1000",
    )
    try:
        yield running
    finally:
        await stop_system(running)


class CoachBot:
    """Every coach at once: accepts each offer page that reaches the sandbox, then reports
    arrival and completion, which frees the coach for the next referral."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.seen = 0
        self.visits: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    await self._poll(client)
                await asyncio.sleep(0.1)

    async def _poll(self, client: httpx.AsyncClient) -> None:
        for notify in self.system.replicas["notify"]:
            with contextlib.suppress(httpx.HTTPError):
                found = await client.get(
                    f"{notify.url}/sandbox/messages", params={"after": self.seen}
                )
                if found.status_code != 200:
                    # A replica restarting answers 503 until it has started: ask the other.
                    # (Reading that body as an inbox ended this bot, and the test, silently.)
                    continue
                for message in found.json()["messages"]:
                    self.seen = max(self.seen, message["id"])
                    page = LINK.search(message["body"])
                    if page and "Reply 1" in message["body"]:
                        visit = asyncio.create_task(self._answer(client, page.group(0)))
                        self.visits.add(visit)
                        visit.add_done_callback(self.visits.discard)
                return

    async def _answer(self, client: httpx.AsyncClient, link: str) -> None:
        """Tap the next button the page shows (accept, arrive, complete); a replica down is
        tried again. Led by the page, not by the taps: a tap recorded whose answer was lost
        (its replica SIGKILLed, a timeout) is not waited on. Gives up on a page that shows
        no button for a minute (an offer that expired is offered again on a page of its own)."""
        left = ["accepted", "arrived", "completed"]
        shown_at = time.monotonic()
        while left and time.monotonic() - shown_at < 60:
            with contextlib.suppress(httpx.HTTPError):
                page = (await client.get(link)).text
                shown = next((answer for answer in left if f'value="{answer}"' in page), None)
                if shown is not None:
                    shown_at = time.monotonic()
                    await client.post(link, data={"answer": shown})
                    left = left[left.index(shown) + 1 :]
            await asyncio.sleep(0.2)


async def sigkill_a_leader(cluster: KafkaCluster) -> int:
    """SIGKILL the broker leading handoff.dispatch's partition 0 (and, with RF 3 over three
    brokers, about a third of every topic's partitions). Returns its node id."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([Topic.DISPATCH.value])
    finally:
        await admin.close()
    leader = int(next(p["leader"] for p in described["partitions"] if p["partition"] == 0))
    node = cluster.nodes[leader - 1]
    os.kill(int(node.pid_file.read_text()), signal.SIGKILL)
    return leader


async def _events(system: System, topic: str) -> list[Any]:
    records = await read_topic(system.bootstrap_servers, topic, within=60)
    return [decode_event(r.value) for r in records]


async def test_two_replicas_of_each_service_survive_a_sigkill_and_lose_or_double_nothing(
    replicated: System, three_brokers: KafkaCluster
) -> None:
    system = replicated
    bot = CoachBot(system)
    bot_task = asyncio.create_task(bot.run())
    referral_ids: list[str] = []
    try:
        for number in range(REFERRALS):
            if number == SERVICES_KILLED_AT:
                for service in ("matching", "notify", "referral"):
                    await system.restart(service, 0, kill=True)
            if number == BROKER_KILLED_AT:
                await sigkill_a_leader(three_brokers)
            replica = number % 2 if number < SERVICES_KILLED_AT else 1 - number % 2
            posted = await system.post_referral(MAIN_SITE, replica=replica)
            referral_ids.append(posted["id"])
            await asyncio.sleep(0.1)  # a steady 10 referrals a second, as EDs send them

        pending = set(referral_ids)

        async def all_completed() -> bool:
            # A few at a time, as a hospital polls: 200 GETs at once each wait their turn
            # for the service's pool and hit the client's 5 s timeout on a loaded machine.
            for referral_id in sorted(pending)[:STATUS_CHECKS_PER_POLL]:
                status = await system.referral_status(MAIN_SITE, referral_id)
                if status["status"] == "completed":
                    pending.discard(referral_id)
            return not pending

        await eventually(all_completed, within=240, what="every referral completed", interval=2)
    finally:
        bot_task.cancel()

    mine = set(referral_ids)
    referrals = [e for e in await _events(system, Topic.REFERRALS) if str(e.subject) in mine]
    dispatch = [e for e in await _events(system, Topic.DISPATCH) if str(e.subject) in mine]
    pages = [e for e in await _events(system, Topic.PAGES) if str(e.subject) in mine]
    # A relay SIGKILLed between publishing and deleting its outbox rows publishes them again
    # (consumers skip the copy): that is at-least-once. Referrals posted after the services
    # were killed lived through the broker's death alone, which must double nothing.
    later = set(referral_ids[SERVICES_KILLED_AT + 1 :])
    lived_through = [e for e in (*referrals, *dispatch, *pages) if str(e.subject) in later]
    published = Counter(e.id for e in lived_through)
    doubled = Counter(type(e.data).__name__ for e in lived_through if published[e.id] > 1)
    assert not doubled, f"published twice while a broker died, by type: {doubled}"

    def distinct(events: list[Any], kind: type) -> list[Any]:
        return list({e.id: e.data for e in events if isinstance(e.data, kind)}.values())

    created = distinct(referrals, ReferralCreated)
    offers = distinct(dispatch, OfferMade)
    assigned = distinct(dispatch, CoachAssigned)
    sent = distinct(pages, PageSent)
    answers = distinct(pages, CoachResponded)
    assert sorted(str(c.referral_id) for c in created) == sorted(referral_ids)
    assert len({o.offer_id for o in offers}) == len(offers), "an offer made twice"
    assert sorted(str(a.referral_id) for a in assigned) == sorted(referral_ids)
    assert Counter(p.offer_id for p in sent) == Counter(o.offer_id for o in offers), (
        "every offer paged exactly once"
    )
    assert len(answers) == len({(a.offer_id, a.response) for a in answers}), "an answer twice"
    assert Counter(a.response for a in answers) == dict.fromkeys(
        (CoachResponse.ACCEPTED, CoachResponse.ARRIVED, CoachResponse.COMPLETED), REFERRALS
    )
    for group in ("handoff-referral", "handoff-matching", "handoff-notify"):
        assert await read_topic(system.bootstrap_servers, dead_letter_topic(group)) == []
