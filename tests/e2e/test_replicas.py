"""Two replicas of every service over 200 referrals, one of each killed mid-run and restarted:
every referral completed, no coach paged twice, no event lost or published twice."""

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from handoff_cli.demo import LINK
from handoff_devenv import KafkaCluster
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


@pytest.fixture(scope="module")
async def replicated(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[System]:
    # Two coaches take 200 referrals here, far beyond the flood guard meant for real life.
    running = await start_system(
        database_url,
        own_kafka,
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
                for message in found.json()["messages"]:
                    self.seen = max(self.seen, message["id"])
                    page = LINK.search(message["body"])
                    if page and "Reply 1" in message["body"]:
                        visit = asyncio.create_task(self._answer(client, page.group(0)))
                        self.visits.add(visit)
                        visit.add_done_callback(self.visits.discard)
                return

    async def _answer(self, client: httpx.AsyncClient, link: str) -> None:
        """Tap each button once the page shows it; a replica down is tried again."""
        for answer in ("accepted", "arrived", "completed"):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if f'value="{answer}"' in (await client.get(link)).text:
                        await client.post(link, data={"answer": answer})
                        break
                await asyncio.sleep(0.2)


async def _events(system: System, topic: str) -> list[Any]:
    records = await read_topic(system.bootstrap_servers, topic, within=60)
    return [decode_event(r.value) for r in records]


async def test_two_replicas_of_each_service_survive_a_sigkill_and_lose_or_double_nothing(
    replicated: System,
) -> None:
    system = replicated
    bot = CoachBot(system)
    bot_task = asyncio.create_task(bot.run())
    referral_ids: list[str] = []
    try:
        for number in range(REFERRALS):
            if number == REFERRALS // 3:
                for service in ("matching", "notify", "referral"):
                    await system.restart(service, 0, kill=True)
            replica = number % 2 if number < REFERRALS // 3 else 1 - number % 2
            posted = await system.post_referral(MAIN_SITE, replica=replica)
            referral_ids.append(posted["id"])
            await asyncio.sleep(0.1)  # a steady 10 referrals a second, as EDs send them

        async def all_accepted() -> bool:
            statuses = await asyncio.gather(
                *(system.referral_status(MAIN_SITE, r) for r in referral_ids)
            )
            return all(s["status"] == "completed" for s in statuses)

        await eventually(all_accepted, within=240, what="every referral completed", interval=2)
    finally:
        bot_task.cancel()

    mine = set(referral_ids)
    referrals = [e for e in await _events(system, Topic.REFERRALS) if str(e.subject) in mine]
    dispatch = [e for e in await _events(system, Topic.DISPATCH) if str(e.subject) in mine]
    pages = [e for e in await _events(system, Topic.PAGES) if str(e.subject) in mine]

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
