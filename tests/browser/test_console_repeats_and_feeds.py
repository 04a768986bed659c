"""Faults a fresh coordinator found, in headless Chromium over the whole system: a form
sent twice saves once, the same override from a fresh form is refused by matching, a time
the clocks skip is named, calendar links are created, shown once and revoked, a huge body
is a 413 page and a guesser is held up by a 429 page."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page

from tests.browser.conftest import PASSWORD, Browse, Stack, on_pool_page, screenshot
from tests.e2e.conftest import MAIN_SITE

ZONE = ZoneInfo("America/New_York")


async def override_form(page: Page) -> dict[str, str]:
    """The override form's hidden tokens, as the page rendered them."""
    fields: dict[str, str] = {}
    for name in ("csrf_token", "form_token"):
        value = await page.get_attribute(f"#override-form input[name={name}]", "value")
        assert value
        fields[name] = value
    return fields


async def override_rows(page: Page, text: str) -> int:
    return await page.locator("#overrides tr", has_text=text).count()


async def test_an_override_sent_twice_is_saved_once_and_a_fresh_copy_is_refused(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, pool = await on_pool_page(signed_in, stack, f"site:{MAIN_SITE}")
    start = (datetime.now(ZONE) + timedelta(days=3)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    form = await override_form(page) | {
        "kind": "add",
        "coach_id": await page.eval_on_selector(
            "#override-form select[name=coach_id] option >> text=main-1", "o => o.value"
        ),
        "replaces": "",
        "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
        "ends_at": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
    }
    # The same form twice, as a double click sends it.
    first = await page.request.post(f"{pool}/overrides", form=form, max_redirects=0)
    assert first.status == 303
    second = await page.request.post(f"{pool}/overrides", form=form, max_redirects=0)
    assert second.status == 409
    assert "Already saved" in await second.text()
    await page.goto(pool)
    label = f"{start:%a %d %b %H:%M}"
    assert await override_rows(page, label) == 1
    await screenshot(page, request, "saved-once")

    # A fresh form with the very same override: matching refuses it, said on the form.
    await page.select_option("#override-form select[name=kind]", "add")
    await page.select_option("#override-form select[name=coach_id]", label="main-1")
    await page.fill("#override-form input[name=starts_at]", form["starts_at"])
    await page.fill("#override-form input[name=ends_at]", form["ends_at"])
    await page.click("#override-form button[type=submit]")
    assert "already makes exactly this change" in await page.inner_text("#error-override-kind")
    await page.goto(pool)
    assert await override_rows(page, label) == 1
    await screenshot(page, request, "copy-refused")


async def test_a_time_the_clocks_skip_is_named_next_to_the_field(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, _ = await on_pool_page(signed_in, stack, f"site:{MAIN_SITE}")
    await page.select_option("#override-form select[name=kind]", "add")
    await page.fill("#override-form input[name=starts_at]", "2027-03-14T02:30")
    await page.fill("#override-form input[name=ends_at]", "2027-03-14T06:00")
    await page.click("#override-form button[type=submit]")
    error = await page.inner_text("#error-override-starts_at")
    assert "02:30 does not exist on 2027-03-14 in America/New_York" in error
    await screenshot(page, request, "dst-gap")


async def test_a_calendar_link_is_created_shown_once_and_revoked(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, pool = await on_pool_page(signed_in, stack, f"site:{MAIN_SITE}")
    before = await page.locator("#feeds form").count()
    await page.select_option("#feed-form select[name=whose]", "site")
    await page.click("#feed-form button[type=submit]")
    link = (await page.inner_text("#new-feed code")).strip()
    assert link.startswith(stack.system.matching.url)
    assert link.endswith(".ics")
    await screenshot(page, request, "created")
    feed = await page.request.get(link)
    assert feed.status == 200
    assert "BEGIN:VCALENDAR" in await feed.text()

    await page.goto(pool)
    assert link not in await page.content(), "shown once"
    assert await page.locator("#feeds form").count() == before + 1
    await page.locator("#feeds tr", has_text="the whole site").last.locator("button").click()
    await page.wait_for_url(pool)
    assert await page.locator("#feeds form").count() == before
    gone = await page.request.get(link)
    assert gone.status == 404
    await screenshot(page, request, "revoked")
    await page.goto(f"{stack.url}/changes")
    log = await page.inner_text("#changes")
    assert "calendar feed created" in log
    assert "calendar feed revoked" in log


async def test_a_huge_body_is_a_413_page_and_a_guesser_gets_a_429_page(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page = await signed_in("md-coordinator")
    huge = await page.request.post(
        f"{stack.url}/pools/site:{MAIN_SITE}/overrides",
        form={"kind": "add", "note": "x" * 300_000},
        max_redirects=0,
    )
    assert huge.status == 413
    assert "Too large" in await huge.text()

    await page.click("form[action='/sign-out'] button")
    await page.wait_for_url(f"{stack.url}/sign-in")
    statuses = []
    for _ in range(6):
        await page.fill("input[name=username]", "vt-coordinator")
        await page.fill("input[name=password]", "a wrong guess")
        async with page.expect_navigation() as navigation:
            await page.click("button[type=submit]")
        response = await navigation.value
        assert response is not None
        statuses.append(response.status)
        if response.status == 429:
            break
    assert statuses == [401] * 5 + [429]
    assert "Too many failed sign-ins" in await page.inner_text("main")
    await screenshot(page, request, "throttled")
    await page.goto(f"{stack.url}/sign-in")
    await page.fill("input[name=username]", "vt-coordinator")
    await page.fill("input[name=password]", PASSWORD)
    async with page.expect_navigation() as navigation:
        await page.click("button[type=submit]")
    held = await navigation.value
    assert held is not None
    assert held.status == 429, "the right password waits too"
