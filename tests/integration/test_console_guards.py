"""The console's guards, in process over its real database, with the services it calls
played by a recording stand-in: a form sent twice saves once, a time the clocks skip is
named, calendar links are listed, created and revoked, supervisors offered are certified,
an oversized body is a 413 page and repeated failed sign-ins a 429 page."""

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from handoff_console.adapters import accounts
from handoff_console.adapters.services import Endpoint, Services
from handoff_console.app import MAX_BODY_BYTES, console_app
from handoff_console.domain.access import Role
from handoff_console.entrypoints.web import SIGN_IN_ATTEMPTS, Console, templates
from handoff_console.settings import ConsoleSettings
from handoff_platform.database import create_pool
from tests.integration.conftest import create_database

PASSWORD = "a long enough passphrase"
SITE = {
    "site_id": "md-guards",
    "name": "Guards Hospital",
    "short_name": "Guards ED",
    "state": "MD",
    "time_zone": "America/New_York",
}
MARYLAND_COACH, VERMONT_COACH = str(uuid.uuid4()), str(uuid.uuid4())
BOARD_REFERRAL = {
    "referral_id": str(uuid.uuid4()),
    "status": "offered",
    "urgency": "urgent",
    "location": "ED bay 4",
    "received_at": "2026-12-01T11:00:00Z",
    "updated_at": "2026-12-01T11:01:00Z",
}


def _coach(coach_id: str, name: str, state: str) -> dict[str, Any]:
    return {
        "coach_id": coach_id,
        "display_name": name,
        "home_sites": [],
        "contact_methods": [],
        "certifications": [{"state": state, "credential": "CPRS", "expires_on": "2099-01-01"}],
    }


@dataclass
class Upstream:
    """The three services' admin APIs as far as these pages need them; records writes."""

    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    feeds: list[dict[str, Any]] = field(default_factory=list)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)  # both schedule shapes
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        body: Any = json.loads(request.content) if request.content else {}
        if method != "GET":
            self.writes.append((method, path, body))
        now = datetime.now(UTC)
        if path == "/v1/admin/sites":
            return httpx.Response(200, json=[SITE])
        if path == "/v1/admin/coaches":
            return httpx.Response(
                200,
                json=[
                    _coach(MARYLAND_COACH, "Mara Maryland", "MD"),
                    _coach(VERMONT_COACH, "Vern Vermont", "VT"),
                ],
            )
        if path in ("/v1/admin/layers", "/v1/admin/rotations", "/v1/admin/temporary-schedules"):
            return httpx.Response(200, json=[])
        if path == "/v1/admin/overrides" and method == "POST":
            self.overrides.append({**body, "source": "admin"})
            return httpx.Response(201, json=body)
        if path == "/v1/admin/overrides":
            return httpx.Response(200, json=self.overrides)
        if path.endswith("/schedule"):
            end = now + timedelta(days=14)
            return httpx.Response(
                200,
                json={
                    "start": now.isoformat(),
                    "end": end.isoformat(),
                    "segments": self.segments,
                    "gaps": self.gaps,
                    "site_id": SITE["site_id"],
                },
            )
        if path.endswith("/dispatch"):
            return httpx.Response(
                200,
                json={
                    "mode": "sequential",
                    "ack_timeout_seconds": 120,
                    "arrival_target_minutes": 60,
                    "broadcast_size": 3,
                    "interpreter_available": False,
                    "supervisors": [],
                    "page_deadline_seconds": 60,
                    "reoffer_every_seconds": 300,
                    "give_up_after_minutes": 240,
                },
            )
        if path.endswith("/open-referrals"):
            return httpx.Response(200, json=[BOARD_REFERRAL])
        if path.endswith("/open-dispatches"):
            return httpx.Response(200, json=[])
        if path == "/v1/admin/calendar-tokens" and method == "GET":
            return httpx.Response(200, json=self.feeds)
        if path == "/v1/admin/calendar-tokens" and method == "POST":
            token_id = str(uuid.uuid4())
            self.feeds.append(
                {
                    "token_id": token_id,
                    "coach_id": body.get("coach_id"),
                    "site_id": body.get("site_id"),
                    "created_at": now.isoformat(),
                }
            )
            return httpx.Response(
                201, json={"token_id": token_id, "path": "/v1/calendars/s3cret-feed.ics"}
            )
        if path.startswith("/v1/admin/calendar-tokens/") and method == "DELETE":
            self.feeds = [f for f in self.feeds if not path.endswith(f["token_id"])]
            return httpx.Response(204)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


@dataclass
class Guarded:
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    upstream: Upstream

    async def sign_in(self, username: str, password: str = PASSWORD) -> httpx.Response:
        page = await self.client.get("/sign-in")
        token = _hidden(page.text, "csrf_token")
        return await self.client.post(
            "/sign-in", data={"username": username, "password": password, "csrf_token": token}
        )


@pytest.fixture
async def guarded(database_url: str) -> AsyncIterator[Guarded]:
    url = await create_database(database_url)
    await accounts.apply_migrations(url)
    pool = await create_pool(url, max_size=2)
    async with pool.acquire() as connection:
        await accounts.add_account(connection, "cora", "Cora", PASSWORD, Role.COORDINATOR, ["MD"])
        await accounts.add_account(connection, "sam", "Sam", PASSWORD, Role.SUPERVISOR, ["MD"])
    settings = ConsoleSettings(
        database_url=url,
        console_secure_cookies=False,
        console_calendar_base_url="https://calendars.example",
    )
    upstream = Upstream()
    async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as services_client:
        services = Services.over(
            services_client,
            *(Endpoint(s, "http://services", None) for s in ("referral", "matching", "notify")),
        )
        app = console_app(Console(pool, services, settings, templates()))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield Guarded(client, pool, upstream)
    await pool.close()


def _hidden(html: str, name: str, form_id: str | None = None) -> str:
    if form_id is not None:
        start = html.index(f'id="{form_id}"')
        html = html[start:]
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found, name
    return found.group(1)


def _tokens(html: str, form_id: str | None = None) -> dict[str, str]:
    """The CSRF and one-time form tokens of the form `form_id` (else the page's first)."""
    return {name: _hidden(html, name, form_id) for name in ("csrf_token", "form_token")}


POOL = f"/pools/site:{SITE['site_id']}"


async def test_an_override_form_sent_twice_is_saved_once(guarded: Guarded) -> None:
    assert (await guarded.sign_in("cora")).status_code == 303
    page = await guarded.client.get(POOL)
    assert page.status_code == 200
    form = {
        **_tokens(page.text, "override-form"),
        "kind": "add",
        "coach_id": MARYLAND_COACH,
        "starts_at": "2030-01-01T10:00",
        "ends_at": "2030-01-01T11:00",
    }
    first = await guarded.client.post(f"{POOL}/overrides", data=form)
    assert first.status_code == 303, first.text
    again = await guarded.client.post(f"{POOL}/overrides", data=form)
    assert again.status_code == 409
    assert "Already saved" in again.text
    posted = [w for w in guarded.upstream.writes if w[1] == "/v1/admin/overrides"]
    assert len(posted) == 1, "the second send reached no service"
    async with guarded.pool.acquire() as connection:
        logged = await connection.fetchval(
            "SELECT count(*) FROM console.changes WHERE action = 'override added'"
        )
    assert logged == 1

    without = {k: v for k, v in form.items() if k != "form_token"}
    assert (await guarded.client.post(f"{POOL}/overrides", data=without)).status_code == 403
    forged = form | {"form_token": "made-up.0000"}
    assert (await guarded.client.post(f"{POOL}/overrides", data=forged)).status_code == 403

    # A form refused for its values may be corrected and sent again with the same token.
    page = await guarded.client.get(POOL)
    retry = form | {
        **_tokens(page.text, "override-form"),
        "ends_at": "2030-01-01T09:00",
    }
    refused = await guarded.client.post(f"{POOL}/overrides", data=retry)
    assert refused.status_code == 422
    fixed = await guarded.client.post(
        f"{POOL}/overrides", data=retry | {"ends_at": "2030-01-01T12:00"}
    )
    assert fixed.status_code == 303, fixed.text


async def test_a_time_the_clocks_skip_is_named_with_its_field(guarded: Guarded) -> None:
    assert (await guarded.sign_in("cora")).status_code == 303
    page = await guarded.client.get(POOL)
    form = {
        **_tokens(page.text, "override-form"),
        "kind": "add",
        "coach_id": MARYLAND_COACH,
        "starts_at": "2027-03-14T02:30",
        "ends_at": "2027-03-14T06:00",
    }
    refused = await guarded.client.post(f"{POOL}/overrides", data=form)
    assert refused.status_code == 422
    assert 'id="error-override-starts_at"' in refused.text
    assert "02:30 does not exist on 2027-03-14 in America/New_York" in refused.text
    far = form | {"starts_at": "9999-12-31T10:00", "ends_at": "9999-12-31T11:00"}
    far_refused = await guarded.client.post(f"{POOL}/overrides", data=far)
    assert far_refused.status_code == 422
    assert "must be in the years 2000 to 2100" in far_refused.text
    assert not [w for w in guarded.upstream.writes if w[1] == "/v1/admin/overrides"]


async def test_calendar_links_are_created_shown_once_listed_and_revoked(guarded: Guarded) -> None:
    assert (await guarded.sign_in("cora")).status_code == 303
    page = await guarded.client.get(POOL)
    assert "No calendar feeds." in page.text
    assert "Vern Vermont" not in page.text, "only coaches certified in MD are offered"
    created = await guarded.client.post(
        f"{POOL}/calendar-feeds",
        data={
            **_tokens(page.text, "feed-form"),
            "whose": MARYLAND_COACH,
        },
    )
    assert created.status_code == 200, created.text
    assert "https://calendars.example/v1/calendars/s3cret-feed.ics" in created.text
    listed = await guarded.client.get(POOL)
    assert "s3cret-feed" not in listed.text, "the link is shown once"
    [feed] = guarded.upstream.feeds
    assert f"calendar-feeds/{feed['token_id']}/revoke" in listed.text
    outsider = await guarded.client.post(
        f"{POOL}/calendar-feeds",
        data={
            **_tokens(listed.text, "feed-form"),
            "whose": VERMONT_COACH,
        },
    )
    assert outsider.status_code == 422
    assert "choose the site or a coach of this pool" in outsider.text
    revoked = await guarded.client.post(
        f"{POOL}/calendar-feeds/{feed['token_id']}/revoke",
        data={
            **_tokens(listed.text),
        },
    )
    assert revoked.status_code == 303, revoked.text
    assert guarded.upstream.feeds == []
    assert ("DELETE", f"/v1/admin/calendar-tokens/{feed['token_id']}", {}) in (
        guarded.upstream.writes
    )


async def test_the_supervisor_choice_offers_only_coaches_certified_in_the_sites_state(
    guarded: Guarded,
) -> None:
    assert (await guarded.sign_in("sam")).status_code == 303
    page = await guarded.client.get(f"/sites/{SITE['site_id']}")
    assert page.status_code == 200
    choices = page.text[page.text.index('name="supervisors"') :]
    choices = choices[: choices.index("</select>")]
    assert "Mara Maryland" in choices
    assert "Vern Vermont" not in choices


async def test_a_board_view_is_one_audit_entry_per_referral_shown(guarded: Guarded) -> None:
    assert (await guarded.sign_in("cora")).status_code == 303
    board = await guarded.client.get(f"/sites/{SITE['site_id']}/board")
    assert board.status_code == 200, board.text
    assert "ED bay 4" in board.text
    async with guarded.pool.acquire() as connection:
        cora = await connection.fetchval(
            "SELECT account_id FROM console.accounts WHERE username = 'cora'"
        )
        rows = await connection.fetch("SELECT * FROM console.audit_log")
    [entry] = rows
    assert (entry["actor_kind"], entry["actor_id"]) == ("console_user", str(cora))
    assert (entry["record_kind"], entry["record_id"]) == ("referral", BOARD_REFERRAL["referral_id"])
    assert entry["purpose"] == "operations"
    assert {"status", "urgency", "location"} <= set(entry["fields"])
    assert "ED bay 4" not in str(dict(entry))


async def test_an_oversized_body_is_a_413_page(guarded: Guarded) -> None:
    assert (await guarded.sign_in("cora")).status_code == 303
    big = await guarded.client.post(
        f"{POOL}/overrides", data={"kind": "add", "note": "x" * (MAX_BODY_BYTES + 1)}
    )
    assert big.status_code == 413
    assert big.headers["content-type"].startswith("text/html")
    assert "Too large" in big.text


async def test_repeated_failed_sign_ins_are_throttled_with_a_429_page(guarded: Guarded) -> None:
    for _ in range(SIGN_IN_ATTEMPTS):
        assert (await guarded.sign_in("cora", "wrong guess")).status_code == 401
    throttled = await guarded.sign_in("CORA", PASSWORD)
    assert throttled.status_code == 429, "even the right password waits"
    assert "Too many failed sign-ins" in throttled.text
    assert int(throttled.headers["retry-after"]) > 0
    assert (await guarded.sign_in("sam")).status_code == 303, "another account is not held up"


async def test_the_site_page_draws_a_coach_who_is_not_cover_and_counts_matchings_gaps(
    guarded: Guarded,
) -> None:
    """Issue #15: matching says Mara's turn does not count (certification expired) and the
    report has that gap: the bar is hatched red with the reason, and the summary counts it."""
    assert (await guarded.sign_in("cora")).status_code == 303
    now = datetime.now(UTC)
    start, end = now + timedelta(days=3), now + timedelta(days=4)
    guarded.upstream.segments = [
        {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "site": [MARYLAND_COACH],
            "state_pool": [],
            "coaches": [MARYLAND_COACH],
            "not_covering": {MARYLAND_COACH: "certification expired"},
        }
    ]
    guarded.upstream.gaps = [
        {"start": now.isoformat(), "end": start.isoformat(), "minutes": 4320},
        {"start": start.isoformat(), "end": end.isoformat(), "minutes": 1440},
    ]
    page = await guarded.client.get(f"/sites/{SITE['site_id']}")
    assert page.status_code == 200, page.text
    assert 'class="not-covering"' in page.text
    assert "Mara Maryland on call" in page.text
    assert "(not covering: certification expired)" in page.text
    assert "for 2 stretch(es)" in page.text
    assert "for the whole of the next 14 days" not in page.text
    pool_page = await guarded.client.get(POOL)
    assert 'class="not-covering"' in pool_page.text


async def test_the_rotation_form_names_a_first_handoff_the_clocks_skip_or_repeat(
    guarded: Guarded,
) -> None:
    assert (await guarded.sign_in("cora")).status_code == 303
    for day, wall, said in [
        ("2027-03-14", "02:30", "02:30 does not exist on 2027-03-14 in America/New_York"),
        ("2026-11-01", "01:30", "01:30 happens twice on 2026-11-01 in America/New_York"),
    ]:
        page = await guarded.client.get(POOL)
        refused = await guarded.client.post(
            f"{POOL}/rotations",
            data={
                "csrf_token": _hidden(page.text, "csrf_token", "rotation-form"),
                "form_token": _hidden(page.text, "form_token", "rotation-form"),
                "name": "nights",
                "priority": "0",
                "time_zone": "America/New_York",
                "start_date": day,
                "handoff": wall,
                "shift_length": "1",
                "shift_unit": "days",
                "participants": "Mara Maryland",
            },
        )
        assert refused.status_code == 422, refused.text
        assert said in refused.text
    assert not [w for w in guarded.upstream.writes if w[1] == "/v1/admin/rotations"]


async def test_a_coach_covering_herself_is_named_and_an_override_shows_who_made_it(
    guarded: Guarded,
) -> None:
    assert (await guarded.sign_in("cora")).status_code == 303
    page = await guarded.client.get(POOL)
    form = {
        "csrf_token": _hidden(page.text, "csrf_token", "override-form"),
        "form_token": _hidden(page.text, "form_token", "override-form"),
        "kind": "replace",
        "coach_id": MARYLAND_COACH,
        "replaces": MARYLAND_COACH,
        "starts_at": "2030-01-01T10:00",
        "ends_at": "2030-01-01T11:00",
    }
    herself = await guarded.client.post(f"{POOL}/overrides", data=form)
    assert herself.status_code == 422
    assert "a coach cannot cover herself" in herself.text
    assert not [w for w in guarded.upstream.writes if w[1] == "/v1/admin/overrides"]

    added = await guarded.client.post(f"{POOL}/overrides", data=form | {"kind": "add"})
    assert added.status_code == 303, added.text
    listed = await guarded.client.get(POOL)
    rows = listed.text[listed.text.index('id="overrides"') :]
    rows = rows[: rows.index("</table>")]
    assert "Mara Maryland added" in rows
    assert "<td>Cora</td>" in rows
    assert "a coordinator" not in rows
