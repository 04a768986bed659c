"""After a burst, a referral is paged within seconds by a coach whose phone has room, and
when no phone has any it goes unassigned at once instead of reading "offered" while
nothing is texted (fresh28, break 2; decision 0032).

Notify's flood ceiling per phone (OFFERS_PER_15_MINUTES) is lowered to 3 so that a handful
of referrals stands for a burst. The Main site has three coaches who may take its
referrals (two of the site, one of the state pool): nine pages fit in their quarter hours.
Before the change, the fourth referral sat "offered" to its spent coach for the whole page
deadline (60 s), and so on, coach after coach.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from tests.e2e.conftest import (
    COACHES,
    MAIN_SITE,
    System,
    pages_handed_over,
    start_system,
    stop_system,
)
from tests.support.fake_twilio import AUTH_TOKEN, signed_post
from tests.support.waiting import eventually

ADMIN_TOKEN = "burst-coordinator-secret"
CEILING = 3
COACHES_FOR_MAIN = 3


@pytest.fixture(scope="module")
async def system(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[System]:
    running = await start_system(
        database_url,
        own_kafka,
        OFFERS_PER_15_MINUTES=str(CEILING),
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        MATCHING_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    try:
        yield running
    finally:
        await stop_system(running)


async def _pages_of(system: System, referral_id: str) -> int:
    """How many offer pages of this referral reached the sandbox provider."""
    connection = await asyncpg.connect(system.database_url)
    try:
        count: int = await connection.fetchval(
            """SELECT count(*) FROM notify.sandbox_messages s
               JOIN notify.messages m USING (message_id)
               JOIN notify.offers o USING (offer_id)
               WHERE o.referral_id = $1 AND m.kind = 'offer'""",
            UUID(referral_id),
        )
    finally:
        await connection.close()
    return count


async def _unassigned(system: System, referral_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await system.referral_status(MAIN_SITE, referral_id)
        return found if found["status"] == "unassigned" else None

    return await eventually(probe, within=20, what=f"referral {referral_id} unassigned")


async def test_a_burst_is_paged_at_once_until_every_phone_is_spent_then_unassigned_at_once(
    system: System,
) -> None:
    # start_system's first referral was paged too, and is still open.
    room = CEILING * COACHES_FOR_MAIN - await pages_handed_over(system)
    assert room > CEILING  # at least one coach's phone fills up on the way
    for number in range(room):
        referral = await system.post_referral(MAIN_SITE)

        async def paged(referral_id: str = referral["id"]) -> bool:
            return await _pages_of(system, referral_id) == 1

        await eventually(paged, within=20, what=f"referral {number + 1} paged")
        await system.cancel(MAIN_SITE, referral["id"], "entered_in_error")

    spent = await system.post_referral(MAIN_SITE)
    found = await _unassigned(system, spent["id"])
    steps = [step["status"] for step in found["timeline"]]
    # Offered to coaches whose phones notify then found spent: never blamed as unreachable,
    # never an answer they did not give.
    assert "coach_unreachable" not in steps
    assert "coach_did_not_answer" not in steps
    assert steps.count("offered") == steps.count("coach_not_contacted")
    assert await _pages_of(system, spent["id"]) == 0

    # Matching has heard every phone is spent: the next is asked of nobody, not cycled.
    await _nobody_asked(system)
    # The coordinator reads why nobody covers the site, truthfully (fresh29: "no reachable
    # contact", while notify's list of unreachable numbers was empty).
    async with httpx.AsyncClient() as client:
        on_call = await client.get(
            f"{system.matching.url}/v1/admin/sites/{MAIN_SITE}/on-call",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert on_call.status_code == 200, on_call.text
        reasons = {entry["reason"] for entry in on_call.json()["not_covering"]}
        assert reasons == {"offer pages at their limit this quarter hour"}
        # A quarter hour's spell is no hole in the rota (fresh29b: a day's gap report, and
        # the console's 14 days, showed the spell as gaps to the end of the window).
        coverage = await client.get(
            f"{system.matching.url}/v1/admin/sites/{MAIN_SITE}/coverage",
            params={"days": 1},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert coverage.status_code == 200, coverage.text
    assert coverage.json()["gaps"] == []

    # The helper's finding (fresh29): STOP then START on a spent phone brought its coach
    # back, and every new referral was offered to them and refused, every 2 s for good.
    phone = COACHES["main-1"].phone
    texted_start = datetime.now(UTC)
    for keyword in ("STOP", "START"):
        params = {"MessageSid": "SM" + uuid.uuid4().hex, "From": phone, "To": "+15550000000"}
        url = f"{system.notify.url}/v1/twilio/sms"
        answer = await signed_post(url, {**params, "Body": keyword})
        assert answer.status_code == 200

    async def heard_start() -> str | None:
        reason, changed_at = await _kept_word(system, phone)
        return reason if changed_at > texted_start and reason != "stop_keyword" else None

    # START is heard as "spent", not as "back": before the fix it was start_keyword.
    assert await eventually(heard_start, within=20, what="matching to hear START") == "throttled"
    await _nobody_asked(system)


async def _nobody_asked(system: System) -> None:
    """A new referral goes unassigned at once, offered to nobody, nothing sent."""
    referral = await system.post_referral(MAIN_SITE)
    found = await _unassigned(system, referral["id"])
    assert [step["status"] for step in found["timeline"]] == ["received", "unassigned"]
    assert await _pages_of(system, referral["id"]) == 0


async def _kept_word(system: System, phone: str) -> tuple[str, datetime]:
    """The last word on the phone's standing that matching kept: its reason, and when."""
    connection = await asyncpg.connect(system.database_url)
    try:
        kept = await connection.fetchrow(
            """SELECT reason, changed_at FROM matching.contact_reachability
               WHERE destination = $1""",
            phone,
        )
    finally:
        await connection.close()
    assert kept is not None  # told when the phone was spent, above
    return kept["reason"], kept["changed_at"]
