"""Editing schedules in the console, in headless Chromium over the whole system: a rotation
is edited in place in a pre-filled form, a layer's priority is changed from the pool page,
an .ics calendar is imported as a layer, and a service that does not answer is a 503 page
naming it while pages that do not need it keep working."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import FilePayload, Page

from handoff_devenv.service_process import start_service
from tests.browser.conftest import Browse, Stack, on_pool_page, screenshot
from tests.e2e.conftest import LADDER_SITE, MAIN_SITE
from tests.support.patients import SERVICE_LOGS

ZONE = ZoneInfo("America/New_York")


async def lanes(page: Page) -> list[str]:
    """The coaches the page's first timeline shows, top to bottom."""
    names = await page.eval_on_selector_all(
        "svg.timeline >> nth=0 >> g.lane", "gs => gs.map(g => g.dataset.coach)"
    )
    return [str(name) for name in names]


async def create_rotation(page: Page, name: str, priority: int, participants: str) -> str:
    """Create a daily rotation (started yesterday) with the pool page's form; its layer id."""
    yesterday = (datetime.now(ZONE).date() - timedelta(days=1)).isoformat()
    await page.fill("#rotation-form input[name=name]", name)
    await page.fill("#rotation-form input[name=priority]", str(priority))
    await page.fill("#rotation-form input[name=start_date]", yesterday)
    await page.fill("#rotation-form textarea[name=participants]", participants)
    await page.click("#rotation-form button[type=submit]")
    await page.wait_for_load_state()
    row = page.locator("#layers tr", has_text=name)
    assert await row.count() == 1, await page.inner_text("main")
    form = row.locator("form.priority-form")
    layer_id = await form.get_attribute("data-layer")
    assert layer_id
    return layer_id


async def test_a_rotation_is_edited_in_place_in_a_pre_filled_form(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, pool = await on_pool_page(signed_in, stack, f"site:{MAIN_SITE}")
    layer_id = await create_rotation(page, "Main days", 5, "main-1")
    assert await lanes(page) == ["main-1"]

    await page.click(f"#layers a[href='/pools/site:{MAIN_SITE}/rotations/{layer_id}']")
    form = "#edit-rotation-form"
    assert await page.input_value(f"{form} input[name=name]") == "Main days"
    assert await page.input_value(f"{form} input[name=priority]") == "5"
    assert await page.input_value(f"{form} input[name=handoff]") == "08:00"
    assert await page.input_value(f"{form} input[name=shift_length]") == "1"
    assert await page.input_value(f"{form} select[name=shift_unit]") == "days"
    assert await page.input_value(f"{form} textarea[name=participants]") == "main-1"
    await screenshot(page, request, "pre-filled")

    # Bad edits: each error next to its field, the form keeps what was typed, nothing saved.
    await page.fill(f"{form} input[name=shift_length]", "0")
    await page.fill(f"{form} textarea[name=participants]", "main-2")
    await page.click(f"{form} button[type=submit]")
    assert "greater than or equal to 1" in await page.inner_text("#error-rotation-shift_length")
    assert await page.input_value(f"{form} textarea[name=participants]") == "main-2"
    await page.fill(f"{form} input[name=shift_length]", "1")
    await page.fill(f"{form} textarea[name=participants]", "main-2\nNobody Here")
    await page.click(f"{form} button[type=submit]")
    assert "no coach named 'Nobody Here'" in await page.inner_text("#error-rotation-participants")
    await screenshot(page, request, "refused")
    await page.goto(pool)
    assert await lanes(page) == ["main-1"], "a refused edit changes nothing"

    # A good edit: saved in place (same layer id), the timeline follows.
    await page.goto(f"{pool}/rotations/{layer_id}")
    await page.fill(f"{form} input[name=name]", "Main days, edited")
    await page.fill(f"{form} textarea[name=participants]", "main-2\nmain-2")
    sent: dict[str, str | float | bool] = {
        name: await page.input_value(f"{form} [name={name}]")
        for name in (
            "csrf_token", "form_token", "name", "priority", "time_zone", "start_date",
            "handoff", "shift_length", "shift_unit", "participants",
        )
    }  # fmt: skip
    await page.click(f"{form} button[type=submit]")
    await page.wait_for_url(pool)
    assert await lanes(page) == ["main-2"]
    row = page.locator("#layers tr", has_text="Main days, edited")
    assert await row.locator("form.priority-form").get_attribute("data-layer") == layer_id
    assert "main-2 → main-2" in await row.inner_text()
    await screenshot(page, request, "saved")

    # The same edit form sent again (its one-time token, as a double click) saves nothing.
    again = await page.request.post(f"{pool}/rotations/{layer_id}", form=sent, max_redirects=0)
    assert again.status == 409
    assert "Already saved" in await again.text()

    await page.goto(f"{stack.url}/changes")
    log = await page.inner_text("#changes")
    assert log.count("rotation changed") == 1
    assert "Main days, edited" in log

    missing = await page.goto(f"{pool}/rotations/00000000-0000-4000-8000-000000000000")
    assert missing is not None
    assert missing.status == 404
    reader = await signed_in("md-reader")
    refused = await reader.goto(f"{pool}/rotations/{layer_id}")
    assert refused is not None
    assert refused.status == 403, "read-only accounts get no edit form"


async def test_a_layers_priority_is_changed_from_the_pool_page(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, pool = await on_pool_page(signed_in, stack, f"site:{LADDER_SITE}")
    layer_id = await create_rotation(page, "Ladder backup", 0, "supervisor")
    assert sorted(await lanes(page)) == ["ladder-1", "ladder-2", "supervisor"], "equal layers add"

    priority = f"#layers form[data-layer='{layer_id}']"
    await page.fill(f"{priority} input[name=priority]", "500")
    await page.click(f"{priority} button[type=submit]")
    assert "0 to 100" in await page.inner_text(f"#error-priority-{layer_id}")
    assert await page.input_value(f"{priority} input[name=priority]") == "500"
    await screenshot(page, request, "refused")

    await page.fill(f"{priority} input[name=priority]", "10")
    await page.click(f"{priority} button[type=submit]")
    await page.wait_for_url(pool)
    assert await lanes(page) == ["supervisor"], "the higher layer alone decides"
    assert await page.input_value(f"{priority} input[name=priority]") == "10"
    await screenshot(page, request, "raised")
    await page.goto(f"{stack.url}/changes")
    assert "layer priority changed" in await page.inner_text("#changes")


def _ics(summary: str, start: datetime, end: datetime) -> FilePayload:
    """An upload of one event from `start` to `end` whose SUMMARY names the coach."""
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Console tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:console-import-{summary}@tests\r\nDTSTAMP:{start:%Y%m%dT%H%M%SZ}\r\n"
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\nDTEND:{end:%Y%m%dT%H%M%SZ}\r\n"
        f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    return {"name": "cover.ics", "mimeType": "text/calendar", "buffer": text.encode()}


async def test_an_ics_calendar_is_imported_as_a_layer_from_the_pool_page(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, pool = await on_pool_page(signed_in, stack, "state:MD")
    assert await lanes(page) == ["state"]
    form = "#calendar-form"
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    await page.fill(f"{form} input[name=name]", "Holiday cover")
    await page.click(f"{form} button[type=submit]")
    assert await page.inner_text("#error-calendar-calendar") == "choose an .ics file"

    # A calendar naming nobody on the roster: the import's own message, by event.
    await page.fill(f"{form} input[name=name]", "Holiday cover")
    await page.fill(f"{form} input[name=priority]", "5")
    await page.set_input_files(
        f"{form} input[name=calendar]",
        files=_ics("Nobody Here", now, now + timedelta(hours=2)),
    )
    await page.click(f"{form} button[type=submit]")
    error = await page.inner_text("#error-calendar-calendar")
    assert "event console-import-Nobody Here@tests: no coach" in error
    await screenshot(page, request, "refused")

    await page.fill(f"{form} input[name=name]", "Holiday cover")
    await page.fill(f"{form} input[name=priority]", "5")
    await page.set_input_files(
        f"{form} input[name=calendar]",
        files=_ics("main-1", now - timedelta(hours=1), now + timedelta(hours=2)),
    )
    await page.click(f"{form} button[type=submit]")
    await page.wait_for_url(pool)
    row = page.locator("#layers tr", has_text="Holiday cover")
    assert await row.count() == 1
    assert "calendar" in await row.inner_text()
    assert (
        await page.input_value("#layers tr:has-text('Holiday cover') input[name=priority]") == "5"
    )
    assert sorted(await lanes(page)) == ["main-1", "state"], "main-1 now, the weekly shifts after"
    await screenshot(page, request, "imported")
    await page.goto(f"{stack.url}/changes")
    log = await page.inner_text("#changes")
    assert "calendar imported" in log
    assert "Holiday cover" in log


class Proxy:
    """A TCP relay to `target` that can be cut: the referral service as the console sees it,
    answering until `cut()` (then its address refuses connections)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


def _closed_port_url() -> str:
    """An address where nothing listens (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def console_without_matching(stack: Stack) -> AsyncIterator[tuple[str, Proxy]]:
    """A second console on the same database whose matching and notify do not answer and
    whose referral answers through a relay the test cuts; sessions are shared (one
    database, cookies by host)."""
    proxy = Proxy(stack.system.referral.url)
    referral = await proxy.start()
    env = {
        **stack.system.env,
        "CONSOLE_REFERRAL_URL": referral,
        "CONSOLE_MATCHING_URL": _closed_port_url(),
        "CONSOLE_NOTIFY_URL": _closed_port_url(),
        "CONSOLE_SECURE_COOKIES": "false",
    }
    console = await asyncio.to_thread(
        start_service, "console", env, SERVICE_LOGS / "browser-console-away.log", 60
    )
    try:
        yield console.url, proxy
    finally:
        console.stop()
        with contextlib.suppress(AssertionError):
            await proxy.cut()


async def test_a_service_that_does_not_answer_is_a_503_page_and_other_pages_still_work(
    stack: Stack,
    signed_in: Browse,
    console_without_matching: tuple[str, Proxy],
    request: pytest.FixtureRequest,
) -> None:
    url, referral = console_without_matching
    page = await signed_in("md-coordinator")

    async def status_of(path: str) -> tuple[int, str]:
        response = await page.goto(f"{url}{path}")
        assert response is not None
        if response.status == 503:
            assert response.headers["retry-after"] == "5", path
        return response.status, await page.inner_text("main")

    async def the_site_list_and_change_log_still_shown() -> None:
        status, text = await status_of("/")
        assert status == 200
        assert "Mercy ED" in text
        assert (await status_of("/changes"))[0] == 200

    for path in (f"/pools/site:{MAIN_SITE}", f"/sites/{MAIN_SITE}", "/coaches"):
        status, text = await status_of(path)
        assert status == 503, path
        assert "The matching service is not answering, try again in a moment." in text
    await screenshot(page, request, "matching-away")
    await the_site_list_and_change_log_still_shown()

    # A form sent while matching is away: the same 503 page, never a 500, nothing recorded.
    await page.goto(f"{stack.url}/pools/site:{MAIN_SITE}")
    tokens = {
        name: await page.get_attribute(f"#rotation-form input[name={name}]", "value") or ""
        for name in ("csrf_token", "form_token")
    }
    sent = await page.request.post(
        f"{url}/pools/site:{MAIN_SITE}/rotations",
        form={**tokens, "name": "while away", "participants": "main-1"},
        max_redirects=0,
    )
    assert sent.status == 503
    assert "matching service is not answering" in await sent.text()

    # Referral away too: the board needs it (503 naming it); the site list is still shown
    # from the directory as referral last gave it.
    await referral.cut()
    status, text = await status_of(f"/sites/{MAIN_SITE}/board")
    assert status == 503
    assert "The referral service is not answering, try again in a moment." in text
    await screenshot(page, request, "referral-away")
    await the_site_list_and_change_log_still_shown()
