"""The console's Reports page in process over its real database, with the referral and
reports services played by a stand-in: the month asked is the month shown, a month that
is not one is a 422 naming it, only sites in the account's scope appear, a withheld count
reads <11 and a withheld time n<11 (no bar), and the reports service away or not
configured is the console's 503 page naming it."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from handoff_console.adapters import accounts
from handoff_console.adapters.services import Endpoint, Services
from handoff_console.app import console_app
from handoff_console.domain.access import Role
from handoff_console.entrypoints.web import Console, templates
from handoff_console.settings import ConsoleSettings
from handoff_platform.database import create_pool
from tests.integration.conftest import create_database

PASSWORD = "a long enough passphrase"
SITES = [
    {
        "site_id": site_id,
        "name": f"{short} Hospital",
        "short_name": short,
        "state": state,
        "time_zone": "America/New_York",
    }
    for site_id, short, state in (("md-rpt", "Harbor ED", "MD"), ("vt-rpt", "Green ED", "VT"))
]


def _site_figures(site_id: str, state: str, received: int | None) -> dict[str, Any]:
    return {
        "site_id": site_id,
        "state": state,
        "figures": {
            "referrals_received": {"value": received, "suppressed": received is None},
            "visits_completed": {"value": 0, "suppressed": False},
            "minutes_to_bedside_p50": {"value": 42.5, "suppressed": False},
            "minutes_to_first_page_p50": {"value": 0.0, "suppressed": False},
            "minutes_to_acceptance_p50": {"value": None, "suppressed": True},
            "follow_ups_due_other": {"value": 12, "suppressed": False},
        },
    }


@dataclass
class Upstream:
    """The referral service's site directory and the reports API; records what was asked."""

    reports_status: int = 200
    asked: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/admin/sites":
            return httpx.Response(200, json=SITES)
        if request.url.path == "/v1/reports/monthly":
            month = request.url.params["month"]
            self.asked.append(month)
            if self.reports_status != 200:
                return httpx.Response(self.reports_status, json={"error": {"code": "x"}})
            return httpx.Response(
                200,
                json={
                    "month": month,
                    "columns": [
                        "referrals_received",
                        "visits_completed",
                        "minutes_to_bedside_p50",
                        "minutes_to_first_page_p50",
                        "minutes_to_acceptance_p50",
                        "follow_ups_due_other",
                    ],
                    "sites": [
                        _site_figures("md-rpt", "MD", 27),
                        _site_figures("vt-rpt", "VT", None),
                    ],
                },
            )
        return httpx.Response(404, json={"error": {"code": "not_found"}})


@dataclass
class Consoles:
    database: str
    upstream: Upstream

    @asynccontextmanager
    async def signed_in(
        self, username: str, with_reports: bool = True
    ) -> AsyncIterator[httpx.AsyncClient]:
        """A client of a fresh console app (the reports service configured or not),
        signed in as `username`."""
        pool = await create_pool(self.database, max_size=2)
        settings = ConsoleSettings(database_url=self.database, console_secure_cookies=False)
        names = ("referral", "matching", "notify", *(("reports",) if with_reports else ()))
        try:
            async with httpx.AsyncClient(
                transport=httpx.MockTransport(self.upstream)
            ) as services_client:
                services = Services.over(
                    services_client, *(Endpoint(s, "http://services", None) for s in names)
                )
                app = console_app(Console(pool, services, settings, templates()))
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://c"
                ) as client:
                    page = await client.get("/sign-in")
                    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                    assert found
                    answer = await client.post(
                        "/sign-in",
                        data={
                            "username": username,
                            "password": PASSWORD,
                            "csrf_token": found.group(1),
                        },
                    )
                    assert answer.status_code == 303, answer.text
                    yield client
        finally:
            await pool.close()


@pytest.fixture(scope="module")
async def consoles(database_url: str) -> Consoles:
    url = await create_database(database_url)
    await accounts.apply_migrations(url)
    pool = await create_pool(url, max_size=1)
    async with pool.acquire() as connection:
        await accounts.add_account(connection, "mdc", "Md C", PASSWORD, Role.COORDINATOR, ["MD"])
        await accounts.add_account(connection, "vtr", "Vt R", PASSWORD, Role.READ_ONLY, ["VT"])
    await pool.close()
    return Consoles(url, Upstream())


async def test_the_month_asked_is_shown_for_the_sites_in_scope(consoles: Consoles) -> None:
    async with consoles.signed_in("mdc") as client:
        page = await client.get("/reports", params={"month": "2026-11"})
    assert page.status_code == 200, page.text
    assert consoles.upstream.asked[-1] == "2026-11"
    assert "Program reports: 2026-11" in page.text
    assert 'id="site-md-rpt"' in page.text
    assert "Harbor ED" in page.text
    assert 'id="site-vt-rpt"' not in page.text  # Vermont is not a Maryland coordinator's
    assert "42.5 min" in page.text
    assert page.text.count("<svg") == 3


async def test_withheld_figures_and_no_month_shows_this_one(consoles: Consoles) -> None:
    before = datetime.now(UTC).strftime("%Y-%m")
    async with consoles.signed_in("vtr") as client:
        blank = await client.get("/reports", params={"month": ""})  # the form sent empty
        page = await client.get("/reports")
    assert blank.status_code == 200, blank.text
    assert page.status_code == 200, page.text
    assert consoles.upstream.asked[-1] in {before, datetime.now(UTC).strftime("%Y-%m")}
    assert 'id="site-vt-rpt"' in page.text
    assert 'id="site-md-rpt"' not in page.text
    assert "&lt;11" in page.text
    # One withheld count (received), outlined; the withheld time is no bar, only a note.
    assert page.text.count('class="suppressed"') == 1
    assert "fewer than 11, withheld" in page.text
    assert "<td>n&lt;11</td>" in page.text  # the table, as the CSV writes it
    assert "0.0 min" in page.text  # one decimal, as the CSV
    assert ">0 min<" not in page.text
    assert "other due" in page.text  # the follow-ups chart has the `other` window


@pytest.mark.parametrize("month", ["2026-13", "abc", "1999-12", "\uff12026-12", "2026-1"])
async def test_a_month_that_is_not_one_is_a_422_naming_it_with_the_form(
    consoles: Consoles, month: str
) -> None:
    asked = len(consoles.upstream.asked)
    async with consoles.signed_in("mdc") as client:
        page = await client.get("/reports", params={"month": month})
    assert page.status_code == 422, page.text
    assert "YYYY-MM" in page.text
    assert f"month &#39;{month}&#39;" in page.text
    assert 'name="month"' in page.text  # the form stays
    assert len(consoles.upstream.asked) == asked  # no other month's figures were fetched
    assert "site-md-rpt" not in page.text
    assert "Program reports:" not in page.text


async def test_the_reports_service_away_or_not_configured_is_a_503_page_naming_it(
    consoles: Consoles,
) -> None:
    consoles.upstream.reports_status = 503
    try:
        async with consoles.signed_in("mdc") as client:
            away = await client.get("/reports", params={"month": "2026-11"})
    finally:
        consoles.upstream.reports_status = 200
    assert away.status_code == 503
    assert "reports" in away.text
    async with consoles.signed_in("mdc", with_reports=False) as client:
        missing = await client.get("/reports")
    assert missing.status_code == 503
    assert "reports" in missing.text
