"""A referral's journeys through the three services, as the hospital and the coaches see them."""

import re
import time
from typing import Any

import httpx

from tests.e2e.conftest import COACHES, LADDER_SITE, MAIN_SITE, System
from tests.support.waiting import eventually

LINK = re.compile(r"https?://\S+/p/[A-Za-z0-9._-]+")
MAIN_PHONES = {COACHES["main-1"].phone, COACHES["main-2"].phone}


async def _status_becomes(
    system: System, site: str, referral_id: str, status: str
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        found = await system.referral_status(site, referral_id)
        return found if found["status"] == status else None

    return await eventually(reached, within=20, what=f"referral {status}", interval=0.2)


async def _first_page(system: System, phones: set[str], before: dict[str, int]) -> tuple[str, str]:
    """The first new page to any of `phones`: (phone, body)."""

    async def paged() -> tuple[str, str] | None:
        for phone in phones:
            bodies = await system.inbox(phone)
            if len(bodies) > before[phone]:
                return phone, bodies[before[phone]]
        return None

    return await eventually(paged, within=10, what="a page", interval=0.05)


async def _counts(system: System, phones: set[str]) -> dict[str, int]:
    return {phone: len(await system.inbox(phone)) for phone in phones}


def _link(body: str) -> str:
    found = LINK.search(body)
    assert found, body
    return found.group(0)


async def test_a_referral_is_paged_within_2_s_and_accepted_from_the_link(system: System) -> None:
    before = await _counts(system, MAIN_PHONES)
    referral = await system.post_referral(MAIN_SITE)
    answered = time.monotonic()

    _, body = await _first_page(system, MAIN_PHONES, before)
    paged_after = time.monotonic() - answered
    assert paged_after < 2.0, f"the first page took {paged_after:.2f} s"
    assert body.startswith("Handoff: urgent ED request at Mercy ED. Reply 1 to accept")
    async with httpx.AsyncClient(follow_redirects=True) as client:
        accepted = await client.post(_link(body), data={"answer": "accepted"})
    assert "You accepted" in accepted.text or "Confirmed" in accepted.text

    status = await _status_becomes(system, MAIN_SITE, referral["id"], "accepted")
    assert [step["status"] for step in status["timeline"]] == ["received", "offered", "accepted"]


async def test_a_decline_pages_the_next_coach(system: System) -> None:
    before = await _counts(system, MAIN_PHONES)
    referral = await system.post_referral(MAIN_SITE)
    first_phone, body = await _first_page(system, MAIN_PHONES, before)
    async with httpx.AsyncClient(follow_redirects=True) as client:
        declined = await client.post(_link(body), data={"answer": "declined"})
    assert "You declined" in declined.text

    second_phone, _ = await _first_page(system, MAIN_PHONES - {first_phone}, before)
    assert second_phone != first_phone
    status = await system.referral_status(MAIN_SITE, referral["id"])
    assert status["status"] == "offered"


async def test_a_cancelled_referral_tells_the_paged_coach_and_the_link_says_so(
    system: System,
) -> None:
    before = await _counts(system, MAIN_PHONES)
    referral = await system.post_referral(MAIN_SITE)
    phone, body = await _first_page(system, MAIN_PHONES, before)
    async with httpx.AsyncClient() as client:
        cancelled = await client.post(
            f"{system.referral.url}/v1/referrals/{referral['id']}/cancel",
            json={"reason": "patient_left"},
            headers={"Authorization": f"Bearer {system.keys[MAIN_SITE]}"},
        )
        assert cancelled.status_code == 200, cancelled.text

        notice = (await system.page(phone, before[phone] + 2))[-1]
        page = await client.get(_link(body))
    assert notice == "Handoff: the request at Mercy ED was cancelled. No action needed."
    assert "The ED cancelled this request" in page.text


async def test_nobody_answering_climbs_the_ladder_to_unassigned(system: System) -> None:
    referral = await system.post_referral(LADDER_SITE)

    status = await _status_becomes(system, LADDER_SITE, referral["id"], "unassigned")
    paged = {name: await system.inbox(c.phone) for name, c in COACHES.items()}
    for rung in ("ladder-1", "ladder-2", "state", "supervisor"):
        assert len(paged[rung]) >= 1, f"{rung} was never paged"
    assert status["timeline"][-1]["status"] == "unassigned"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{system.matching.url}/metrics")).text
    assert re.search(
        rf'handoff_referrals_unassigned_total\{{[^}}]*site="{LADDER_SITE}"[^}}]*\}} 1\.0', metrics
    )
