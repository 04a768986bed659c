"""Load-aware dispatch through the three services as processes: a burst at a site with
one site coach and two pool coaches, and a paging outage that must not burn the ladder.

Each test has a site (and a state pool) of its own, added to the running system as an
operator would: the site and key from the `handoff` command, the coaches by roster import.
"""

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import import_roster
from handoff_matching.domain.dispatch import DispatchMode, DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    CoachAssigned,
    OfferMade,
    OfferWithdrawn,
    PageSent,
    ReferralExpired,
)
from handoff_schemas.vocabulary import WithdrawReason
from tests.e2e.conftest import System, start_system, stop_system
from tests.integration.conftest import handoff_command
from tests.support.kafka import read_topic
from tests.support.matching import always_on_call
from tests.support.notify import link_in, reply_code_in
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def system(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[System]:
    running = await start_system(database_url, own_kafka, max_concurrent=2)
    try:
        yield running
    finally:
        await stop_system(running)


@dataclass
class Site:
    site_id: str
    key: str
    state: str
    site_coach: str  # phone numbers: what the test sees of each coach
    pool_coaches: list[str]
    other_site_coaches: list[str] = field(default_factory=list)
    coach_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by phone

    async def import_roster(self, system: System, max_concurrent: dict[str, int]) -> None:
        """Its coaches on their rotas, each of capacity `max_concurrent[phone]` (else 2)."""
        rota = [self.site_coach, *self.other_site_coaches]
        roster = RosterFile.model_validate(
            {
                "coaches": [
                    {
                        "coach_id": str(coach_id),
                        "display_name": "Coach",
                        "contact_methods": [{"channel": "sms", "destination": phone}],
                        "languages": ["en", "es"],
                        "max_concurrent": max_concurrent.get(phone, 2),
                        "certifications": [
                            {"state": self.state, "credential": "CPRS", "expires_on": "2030-01-01"}
                        ],
                    }
                    for phone, coach_id in self.coach_ids.items()
                ],
                "shifts": [
                    *(
                        s
                        for p in rota
                        for s in always_on_call(self.coach_ids[p], f"site:{self.site_id}")
                    ),
                    *(
                        s
                        for p in self.pool_coaches
                        for s in always_on_call(self.coach_ids[p], f"state:{self.state}")
                    ),
                ],
            }
        )
        connection = await asyncpg.connect(system.database_url)
        try:
            await import_roster(connection, roster)
        finally:
            await connection.close()

    def phone_of(self, coach_id: uuid.UUID) -> str:
        return next(phone for phone, c in self.coach_ids.items() if c == coach_id)


async def _site(
    system: System, state: str, pool: int, settings: DispatchSettings, site_coaches: int = 1
) -> Site:
    """A site in `state` with `site_coaches` on its own rota and `pool` in the state pool,
    each max_concurrent 2, added to the running system."""
    site_id = f"{state.lower()}-load-{uuid.uuid4().hex[:6]}"
    handoff_command(
        "referral", "site", "add", "--id", site_id, "--name", f"{site_id} hospital",
        "--short-name", "Mercy ED", "--state", state, "--time-zone", "America/New_York",
        database_url=system.database_url,
    )  # fmt: skip
    key = handoff_command(
        "referral", "key", "create", "--site", site_id, "--label", "e2e",
        database_url=system.database_url,
    ).strip()  # fmt: skip
    prefix = {"DE": "+1302555", "VT": "+1802555", "ME": "+1207555", "NH": "+1603555"}[state]
    phones = [f"{prefix}{n:04d}" for n in range(site_coaches + pool)]
    site = Site(
        site_id,
        key,
        state,
        phones[0],
        phones[site_coaches:],
        phones[1:site_coaches],
        {phone: uuid.uuid4() for phone in phones},
    )
    await site.import_roster(system, {})
    connection = await asyncpg.connect(system.database_url)
    try:
        await dispatch_store.put_site_settings(connection, site_id, settings, True, ())
    finally:
        await connection.close()
    system.keys[site_id] = key
    return site


async def _post(system: System, site: Site) -> str:
    referral_id: str = (await system.post_referral(site.site_id))["id"]
    return referral_id


async def _story(system: System, topic: Topic, referral_ids: list[str]) -> dict[str, list[Any]]:
    """Each referral's events on `topic`, in order, each once."""
    wanted = {r.encode(): r for r in referral_ids}
    stories: dict[str, dict[uuid.UUID, Any]] = {r: {} for r in referral_ids}
    for record in await read_topic(system.bootstrap_servers, topic):
        if record.key in wanted:
            event = decode_event(record.value)
            stories[wanted[record.key]][event.id] = event.data
    return {r: list(events.values()) for r, events in stories.items()}


def _of(kind: type, events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def _page_of(system: System, offer_id: uuid.UUID) -> str | None:
    """The body of the page notify sent the coach for this offer, once it is in the sandbox."""
    connection = await asyncpg.connect(system.database_url)
    try:
        body: str | None = await connection.fetchval(
            """SELECT s.body FROM notify.sandbox_messages s
               JOIN notify.messages m USING (message_id)
               WHERE m.offer_id = $1 AND m.kind = 'offer' ORDER BY s.sandbox_id LIMIT 1""",
            offer_id,
        )
    finally:
        await connection.close()
    return body


async def _page_body(system: System, offer_id: uuid.UUID) -> str:
    async def probe() -> str | None:
        return await _page_of(system, offer_id)

    return await eventually(probe, within=10, what="the offer's page in the sandbox")


async def _accept(body: str) -> None:
    async with httpx.AsyncClient(follow_redirects=True) as client:
        response = await client.post(link_in(body), data={"answer": "accepted"})
    assert response.status_code == 200


async def test_six_referrals_in_a_second_spread_over_three_coaches_of_capacity_two(
    system: System,
) -> None:
    site = await _site(system, "DE", pool=2, settings=DispatchSettings())
    referrals = list(await asyncio.gather(*(_post(system, site) for _ in range(6))))

    async def all_offered() -> dict[str, list[Any]] | None:
        stories = await _story(system, Topic.DISPATCH, referrals)
        return stories if all(_of(OfferMade, s) for s in stories.values()) else None

    stories = await eventually(all_offered, within=20, what="an offer for each of six")
    offers = [o for s in stories.values() for o in _of(OfferMade, s)]
    assert len(offers) == 6  # one each: nobody's offer was refused or passed on
    by_coach = Counter(o.coach_id for o in offers)
    assert sorted(by_coach.values()) == [2, 2, 2]  # three coaches, two each: none above 2

    # Each coach got her two pages; the site coach's two are for the site tier.
    pages = {phone: await system.page(phone, 2) for phone in [site.site_coach, *site.pool_coaches]}
    assert all(len(bodies) == 2 for bodies in pages.values())

    # The site coach taps Accept four times: each of her two pages, twice, at once.
    hers = [o for o in offers if o.tier == "site"]
    assert len(hers) == 2
    bodies = [await _page_body(system, o.offer_id) for o in hers]
    await asyncio.gather(*(_accept(body) for body in bodies * 2))

    async def assigned() -> list[Any] | None:
        stories = await _story(system, Topic.DISPATCH, referrals)
        found = [a for s in stories.values() for a in _of(CoachAssigned, s)]
        return found if len(found) >= 2 else None

    assignments = await eventually(assigned, within=20, what="her two assignments")
    stories = await _story(system, Topic.DISPATCH, referrals)
    assert len([a for s in stories.values() for a in _of(CoachAssigned, s)]) == 2
    assert {a.offer_id for a in assignments} == {o.offer_id for o in hers}
    assert [w for s in stories.values() for w in _of(OfferWithdrawn, s)] == []

    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{system.matching.url}/metrics")).text
    assert "handoff_coach_slots_held" in metrics


async def test_a_paging_outage_ends_offers_not_contacted_and_pages_on_return(
    system: System,
) -> None:
    settings = DispatchSettings(
        ack_timeout=timedelta(seconds=15), page_deadline=timedelta(seconds=10)
    )
    site = await _site(system, "VT", pool=2, settings=settings)  # md-mercy's ladder
    system.notify.stop()
    stopped = time.monotonic()
    referrals = [await _post(system, site), await _post(system, site)]

    async def burnt_through(needed: int) -> Any:
        async def probe() -> dict[str, list[Any]] | None:
            stories = await _story(system, Topic.DISPATCH, referrals)
            ended = [len(_of(OfferWithdrawn, s)) for s in stories.values()]
            return stories if min(ended) >= needed else None

        return probe

    # The three coaches of the ladder, each offer ended at its 10 s page deadline.
    await eventually(await burnt_through(3), within=50, what="three offers each ended")
    # The outage lasts 50 s, as reported: this is the scenario's length, not a wait for a state.
    await asyncio.sleep(max(0.0, stopped + 50 - time.monotonic()))
    stories = await _story(system, Topic.DISPATCH, referrals)
    closed: set[uuid.UUID] = set()
    for story in stories.values():
        reasons = {w.reason for w in _of(OfferWithdrawn, story)}
        assert reasons == {WithdrawReason.NOT_CONTACTED}  # no answer was assumed of anyone
        assert _of(CoachAssigned, story) == []
        assert _of(ReferralExpired, story) == []  # the ladder cycles; nothing is given up
        closed |= {w.offer_id for w in _of(OfferWithdrawn, story)}
    # No page reached anyone while notify was down.
    assert all(
        _of(PageSent, s) == [] for s in (await _story(system, Topic.PAGES, referrals)).values()
    )

    await system.restart("notify", 0, kill=False)

    async def paged_open_offer() -> dict[str, OfferMade] | None:
        """For each referral, an offer paged before it ended: its ack clock runs."""
        dispatch = await _story(system, Topic.DISPATCH, referrals)
        pages = await _story(system, Topic.PAGES, referrals)
        found = {}
        for referral in referrals:
            ended = {w.offer_id for w in _of(OfferWithdrawn, dispatch[referral])}
            paged = {p.offer_id for p in _of(PageSent, pages[referral])}
            live = [
                o for o in _of(OfferMade, dispatch[referral])
                if o.offer_id in paged and o.offer_id not in ended
            ]  # fmt: skip
            if live:
                found[referral] = live[-1]
        return found if len(found) == len(referrals) else None

    live = await eventually(paged_open_offer, within=60, what="each referral paged on return")
    # Nothing was paged for an offer that had closed while notify was away.
    pages = await _story(system, Topic.PAGES, referrals)
    assert closed.isdisjoint(p.offer_id for story in pages.values() for p in _of(PageSent, story))
    assert [o for o in closed if await _page_of(system, o) is not None] == []
    for offer in live.values():
        await _accept(await _page_body(system, offer.offer_id))

    async def accepted() -> bool:
        stories = await _story(system, Topic.DISPATCH, referrals)
        return all(_of(CoachAssigned, s) for s in stories.values())

    await eventually(accepted, within=20, what="both referrals accepted after the outage")


async def _until_settled(system: System, referrals: list[str]) -> dict[str, list[Any]]:
    """Each referral's dispatch story once every one is assigned or has an offer withdrawn."""

    async def settled() -> dict[str, list[Any]] | None:
        stories = await _story(system, Topic.DISPATCH, referrals)
        done = all(_of(CoachAssigned, s) or _of(OfferWithdrawn, s) for s in stories.values())
        return stories if done else None

    return await eventually(settled, within=20, what="every acceptance decided")


async def _link_page(body: str) -> str:
    async with httpx.AsyncClient() as client:
        page = await client.get(link_in(body))
    assert page.status_code == 200
    return page.text


async def test_two_coaches_accepting_one_broadcast_at_once_one_wins_and_the_other_is_told(
    system: System,
) -> None:
    settings = DispatchSettings(mode=DispatchMode.BROADCAST, broadcast_size=2)
    site = await _site(system, "ME", pool=0, settings=settings, site_coaches=2)
    referral = await _post(system, site)

    async def broadcast() -> list[Any] | None:
        offers = _of(OfferMade, (await _story(system, Topic.DISPATCH, [referral]))[referral])
        return offers if len(offers) == 2 else None

    offers = await eventually(broadcast, within=20, what="the broadcast to both site coaches")
    bodies = {o.coach_id: await _page_body(system, o.offer_id) for o in offers}
    await asyncio.gather(*(_accept(body) for body in bodies.values()))  # both tap at once

    story = (await _until_settled(system, [referral]))[referral]
    [assigned] = _of(CoachAssigned, story)
    [filled] = _of(OfferWithdrawn, story)
    assert filled.reason == WithdrawReason.FILLED
    assert filled.coach_id != assigned.coach_id
    # The one who lost the race is told in plain words, by text and on the link she used.
    told = (
        f"Handoff: the request {reply_code_in(bodies[filled.coach_id])} at Mercy ED was "
        "filled by another coach. No action needed."
    )
    loser = site.phone_of(filled.coach_id)

    async def notice() -> list[str] | None:
        inbox = await system.inbox(loser)
        return inbox if told in inbox else None

    await eventually(notice, within=10, what="the filled notice to the other coach")
    assert "filled by another coach" in await _link_page(bodies[filled.coach_id])
    assert "filled by another coach" not in await _link_page(bodies[assigned.coach_id])

    # The hospital reads one offered step for the broadcast, and who accepted by when.
    async def accepted() -> list[Any] | None:
        found = await system.referral_status(site.site_id, referral)
        steps = found["timeline"]
        return steps if [s["status"] for s in steps][-1:] == ["accepted"] else None

    steps = await eventually(accepted, within=20, what="the accepted step on the timeline")
    assert [s["status"] for s in steps] == ["received", "offered", "accepted"]
    assert steps[1]["coaches"] == 2
    assert steps[2]["coach_id"] == str(assigned.coach_id)
    assert datetime.fromisoformat(steps[2]["arrive_by"]) == assigned.arrival_deadline


async def test_a_coach_accepting_two_offers_at_once_for_her_last_slot_gets_one_and_is_told(
    system: System,
) -> None:
    site = await _site(system, "NH", pool=1, settings=DispatchSettings())
    referrals = [await _post(system, site), await _post(system, site)]

    async def both_hers() -> list[Any] | None:
        stories = await _story(system, Topic.DISPATCH, referrals)
        offers = [o for s in stories.values() for o in _of(OfferMade, s)]
        return offers if len(offers) == 2 else None

    offers = await eventually(both_hers, within=20, what="both referrals offered to her")
    assert {o.coach_id for o in offers} == {site.coach_ids[site.site_coach]}
    bodies = [await _page_body(system, o.offer_id) for o in offers]
    # Her coordinator lowers her capacity to one: two open offers, one slot.
    await site.import_roster(system, {site.site_coach: 1})
    await asyncio.gather(*(_accept(body) for body in bodies))  # both tapped at once

    stories = await _until_settled(system, referrals)
    [assigned] = [a for s in stories.values() for a in _of(CoachAssigned, s)]
    [refused] = [w for s in stories.values() for w in _of(OfferWithdrawn, s)]
    assert refused.reason == WithdrawReason.AT_CAPACITY
    assert assigned.coach_id == refused.coach_id == site.coach_ids[site.site_coach]
    refused_body = bodies[[o.offer_id for o in offers].index(refused.offer_id)]
    told = (
        "Handoff: you are at your limit of open requests, so the request "
        f"{reply_code_in(refused_body)} at Mercy ED was passed on to another coach. "
        "No action needed."
    )

    async def notice() -> list[str] | None:
        inbox = await system.inbox(site.site_coach)
        return inbox if told in inbox else None

    await eventually(notice, within=10, what="the at-capacity notice to her")
    assert "You are at your limit of open requests" in await _link_page(refused_body)

    # The refused referral moved on at once, to the pool coach.
    async def moved_on() -> Any:
        moving = str(refused.referral_id)
        story = (await _story(system, Topic.DISPATCH, [moving]))[moving]
        return [o for o in _of(OfferMade, story) if o.offer_id != refused.offer_id]

    [next_offer] = await eventually(moved_on, within=10, what="the refused referral moved on")
    assert next_offer.coach_id == site.coach_ids[site.pool_coaches[0]]
