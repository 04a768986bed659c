"""Referrals waiting in line when every phone that could take them is spent go unassigned,
all of them, not only the first (found by a fresh user, fresh29b; decision 0032: "a
referral that nobody can be paged for goes `unassigned` at once (and the site's
supervisors are told)"). The line used to pass over a site whose only free coaches could
not be paged, as if they were full.

Every coach of the Main site may hold one offer at a time and be texted 3 offer pages a
quarter hour. Seen in a demo: two referrals waited while the only coach with room held an
offer; when it ended, her phone was spent as well. The first of the line went unassigned,
the second sat `waiting` -- nobody texted, nobody told -- until a phone's slot freed.
"""

from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from handoff_devenv import KafkaCluster
from tests.e2e.conftest import COACHES, MAIN_SITE, System, start_system, stop_system
from tests.support.waiting import eventually

CEILING = 3
SITE_PHONES = (COACHES["main-1"].phone, COACHES["main-2"].phone)
POOL_PHONE = COACHES["state"].phone


@pytest.fixture(scope="module")
async def system(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[System]:
    running = await start_system(
        database_url, own_kafka, max_concurrent=1, OFFERS_PER_15_MINUTES=str(CEILING)
    )
    try:
        yield running
    finally:
        await stop_system(running)


async def _offer_pages(system: System, referral_id: str | None = None) -> dict[str, int]:
    """Offer pages handed to the sandbox, by phone (of one referral, if given)."""
    rows = await system.rows(
        """SELECT m.destination, count(*) AS pages FROM notify.sandbox_messages s
           JOIN notify.messages m USING (message_id)
           JOIN notify.offers o USING (offer_id)
           WHERE m.kind = 'offer' AND ($1::uuid IS NULL OR o.referral_id = $1)
           GROUP BY 1""",
        UUID(referral_id) if referral_id else None,
    )
    return {row["destination"]: row["pages"] for row in rows}


async def _status(system: System, referral_id: str) -> str:
    found = await system.referral_status(MAIN_SITE, referral_id)
    return str(found["status"])


async def test_every_referral_waiting_for_spent_phones_goes_unassigned(system: System) -> None:
    # The start-up referral holds a coach's only slot: end it.
    open_ids = await system.rows(
        "SELECT referral_id FROM referral.referrals WHERE status = 'offered'"
    )
    for row in open_ids:
        await system.cancel(MAIN_SITE, str(row["referral_id"]), "entered_in_error")

    # Spend the site's two phones and bring the pool coach's to one page short of it.
    for number in range(12):
        pages = await _offer_pages(system)
        if all(pages.get(p, 0) >= CEILING for p in SITE_PHONES) and pages.get(POOL_PHONE) == 2:
            break
        assert pages.get(POOL_PHONE, 0) < CEILING, f"the pool coach was spent first: {pages}"
        referral = await system.post_referral(MAIN_SITE)

        async def settled(referral_id: str = referral["id"]) -> bool:
            return bool(await _offer_pages(system, referral_id)) or await _status(
                system, referral_id
            ) in ("unassigned", "waiting")

        await eventually(settled, within=30, what=f"referral {number + 1} paged or set aside")
        await system.cancel(MAIN_SITE, referral["id"], "entered_in_error")
    else:
        pytest.fail(f"never reached the starting point: {await _offer_pages(system)}")

    # The pool coach takes one more (her third page) and holds her only slot.
    holding = await system.post_referral(MAIN_SITE)

    async def held() -> bool:
        return bool(await _offer_pages(system, holding["id"]))

    await eventually(held, within=30, what="the pool coach paged a third time")

    # Two more: nobody has room, so they wait in line for her slot.
    line = [await system.post_referral(MAIN_SITE), await system.post_referral(MAIN_SITE)]

    async def both_set_aside() -> bool:
        statuses = [await _status(system, r["id"]) for r in line]
        return all(status in ("waiting", "unassigned") for status in statuses)

    await eventually(both_set_aside, within=30, what="the two referrals set aside")

    # Her slot frees, but her phone is spent now too: nobody at all can be paged.
    await system.cancel(MAIN_SITE, holding["id"], "entered_in_error")

    async def both_unassigned() -> bool:
        return [await _status(system, r["id"]) for r in line] == ["unassigned", "unassigned"]

    try:
        await eventually(both_unassigned, within=30, what="both referrals unassigned")
    except AssertionError:
        timelines = []
        for r in line:
            found = await system.referral_status(MAIN_SITE, r["id"])
            timelines.append([step["status"] for step in found["timeline"]])
        pages = await _offer_pages(system)
        raise AssertionError(f"15 s after the slot freed: {timelines}; pages {pages}") from None
