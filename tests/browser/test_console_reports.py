"""The console's Reports page in headless Chromium (issue #16): a month of events on the
system's broker, the reports service's read model, and the page's figures and charts per
site, scoped by the account's state; a screenshot of the page is saved."""

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from handoff_platform.kafka import make_broker
from handoff_schemas.events import SiteFacts
from tests.browser.conftest import TOKENS, Browse, Stack, screenshot
from tests.support.kafka import send
from tests.support.reports import referral_created, seeded_month
from tests.support.waiting import eventually

MONTH = "2026-10"
BASE = datetime(2026, 10, 5, 8, tzinfo=UTC)
ZONE = "America/New_York"
# Sites no roster covers: the report is about the seeded events alone.
BIG = SiteFacts(site_id="md-rep-big", short_name="Big ED", state="MD", time_zone=ZONE)
SMALL = SiteFacts(site_id="md-rep-small", short_name="Small ED", state="MD", time_zone=ZONE)
VERMONT = SiteFacts(site_id="vt-rep-far", short_name="Far ED", state="VT", time_zone=ZONE)


async def _report(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{stack.reports.url}/v1/reports/monthly",
            params={"month": MONTH},
            headers={"Authorization": f"Bearer {TOKENS['REPORTS_ADMIN_TOKEN']}"},
        )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
async def seeded(stack: Stack) -> dict[str, Any]:
    """The month on the system's broker, and the report once it counts all of it."""
    broker = make_broker(stack.system.bootstrap_servers, client_id="stand-in")
    async with broker:
        for payload in seeded_month(BIG, SMALL, VERMONT, BASE):
            await send(broker, payload)
        await send(broker, referral_created(uuid.uuid4(), VERMONT, BASE))

    async def complete() -> dict[str, Any] | None:
        document = await _report(stack)
        sites = {s["site_id"]: s["figures"] for s in document["sites"]}
        big = sites.get(BIG.site_id, {})
        done = (
            big.get("referrals_received", {}).get("value") == 13
            and big.get("follow_up_outcome_recovery_support", {}).get("value") == 11
            and big.get("visits_completed", {}).get("value") == 12
            and {SMALL.site_id, VERMONT.site_id} <= set(sites)
        )
        return document if done else None

    return await eventually(complete, within=90, what="the seeded month in the report")


async def test_the_reports_page_shows_the_months_figures_and_charts_per_site(
    stack: Stack, signed_in: Browse, seeded: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    page = await signed_in("md-coordinator")
    await page.click("header a >> text=Reports")
    await page.goto(f"{stack.url}/reports?month={MONTH}")
    assert await page.locator("h1").inner_text() == f"Program reports: {MONTH}"
    big = page.locator(f"#site-{BIG.site_id}")
    assert await big.locator("svg.chart").count() == 3
    # 13 received, 12 completed: bars with their figures; 9, 2 and 1 accepted per tier
    # are suppressed, drawn as dashed outlines labelled <11.
    activity = big.locator("svg.chart").first
    assert "13" in (await activity.text_content() or "")
    assert await activity.locator("rect.bar").count() == 2  # received, visits completed
    assert await activity.locator("rect.suppressed").count() == 5  # 3 tiers, unassigned, expired
    times = big.locator("svg.chart").nth(2)
    assert "60.0 min" in (await times.text_content() or "")  # to the bedside, p50 (one decimal)
    small = page.locator(f"#site-{SMALL.site_id}")
    assert await small.count() == 1
    assert "<11" in (await small.locator("svg.chart").first.text_content() or "")
    # Vermont is outside a Maryland coordinator's scope.
    assert await page.locator(f"#site-{VERMONT.site_id}").count() == 0
    await screenshot(page, request, "month")

    page = await signed_in("vt-coordinator")
    await page.goto(f"{stack.url}/reports?month={MONTH}")
    assert await page.locator(f"#site-{VERMONT.site_id}").count() == 1
    assert await page.locator(f"#site-{BIG.site_id}").count() == 0
    await screenshot(page, request, "vermont")
