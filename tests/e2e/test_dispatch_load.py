"""Load-aware dispatch through the three services as processes: a burst at a site with
one site coach and two pool coaches, and a paging outage that must not burn the ladder.

Each test has a site (and a state pool) of its own, added to the running system as an
operator would: the site and key from the `handoff` command, the coaches by roster import.
"""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import CoachAssigned, OfferMade, OfferWithdrawn, PageSent
from handoff_schemas.vocabulary import WithdrawReason
from tests.e2e.conftest import System, start_system, stop_system
from tests.integration.conftest import handoff_command
from tests.support.kafka import read_topic
from tests.support.matching import always_on_call
from tests.support.notify import link_in
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
    site_coach: str  # phone numbers: what the test sees of each coach
    pool_coaches: list[str]


async def _site(system: System, state: str, pool: int, settings: DispatchSettings) -> Site:
    """A site in `state` with one coach on its own rota and `pool` in the state pool, each
    max_concurrent 2, added to the running system."""
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
    prefix = {"DE": "+1302555", "VT": "+1802555"}[state]
    phones = [f"{prefix}{n:04d}" for n in range(pool + 1)]
    ids = [uuid.uuid4() for _ in phones]
    roster = RosterFile.model_validate(
        {
            "coaches": [
                {
                    "coach_id": str(coach_id),
                    "display_name": "Coach",
                    "contact_methods": [{"channel": "sms", "destination": phone}],
                    "languages": ["en", "es"],
                    "max_concurrent": 2,
                    "certifications": [
                        {"state": state, "credential": "CPRS", "expires_on": "2030-01-01"}
                    ],
                }
                for coach_id, phone in zip(ids, phones, strict=True)
            ],
            "shifts": [
                *always_on_call(ids[0], f"site:{site_id}"),
                *(s for coach_id in ids[1:] for s in always_on_call(coach_id, f"state:{state}")),
            ],
        }
    )
    connection = await asyncpg.connect(system.database_url)
    try:
        await import_roster(connection, roster)
        await dispatch_store.put_site_settings(connection, site_id, settings, True, ())
    finally:
        await connection.close()
    system.keys[site_id] = key
    return Site(site_id, key, phones[0], phones[1:])


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
    site = await _site(system, "VT", pool=1, settings=settings)
    system.notify.stop()
    referrals = [await _post(system, site), await _post(system, site)]

    async def burnt_through(needed: int) -> Any:
        async def probe() -> dict[str, list[Any]] | None:
            stories = await _story(system, Topic.DISPATCH, referrals)
            ended = [len(_of(OfferWithdrawn, s)) for s in stories.values()]
            return stories if min(ended) >= needed else None

        return probe

    # Both coaches of the ladder, and the first again: ~30 s with notify down.
    stories = await eventually(await burnt_through(3), within=60, what="three offers each ended")
    for story in stories.values():
        reasons = {w.reason for w in _of(OfferWithdrawn, story)}
        assert reasons == {WithdrawReason.NOT_CONTACTED}  # no answer was assumed of anyone
        assert _of(CoachAssigned, story) == []
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
    for offer in live.values():
        await _accept(await _page_body(system, offer.offer_id))

    async def accepted() -> bool:
        stories = await _story(system, Topic.DISPATCH, referrals)
        return all(_of(CoachAssigned, s) for s in stories.values())

    await eventually(accepted, within=20, what="both referrals accepted after the outage")
