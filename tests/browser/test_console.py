"""A coordinator's day in the console, in headless Chromium: sign in, create a rotation,
add an override and watch the coverage timeline change, follow an open referral on the
board; a read-only account changes nothing; another state's sites do not exist for them."""

from datetime import date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from playwright.async_api import Page

from tests.browser.conftest import OTHER_STATE_SITE, Browse, Stack, on_pool_page, screenshot
from tests.e2e.conftest import LADDER_SITE, MAIN_SITE
from tests.support.patients import INITIALS, NOTES
from tests.support.waiting import eventually

ZONE = ZoneInfo("America/New_York")  # the test sites' time zone


async def lanes(page: Page) -> list[str]:
    """The coaches the page's first timeline shows, top to bottom."""
    names = await page.eval_on_selector_all(
        "svg.timeline >> nth=0 >> g.lane", "gs => gs.map(g => g.dataset.coach)"
    )
    return [str(name) for name in names]


async def gap_count(page: Page) -> int:
    return await page.locator("svg.timeline").first.locator("rect.gap").count()


async def csrf_token(page: Page) -> str:
    """The session's CSRF token, as every form of the page carries it (sign-out has one)."""
    token = await page.get_attribute("form[action='/sign-out'] input[name=csrf_token]", "value")
    assert token
    return token


async def test_a_coordinator_signs_in_and_sees_the_sites_of_their_state(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page = await signed_in("md-coordinator")
    await screenshot(page, request, "sites")
    assert await page.locator(f"a[href='/sites/{MAIN_SITE}']").count() == 1
    assert await page.locator(f"a[href='/sites/{LADDER_SITE}']").count() == 1
    assert await page.locator(f"a[href='/sites/{OTHER_STATE_SITE}']").count() == 0
    assert "md-coordinator (coordinator)" in await page.inner_text("header")

    await page.click(f"a[href='/sites/{MAIN_SITE}']")
    # count() does not wait: on a busy machine it once counted the list page, still showing.
    await page.wait_for_url(f"{stack.url}/sites/{MAIN_SITE}")
    assert await page.locator("svg.timeline").count() == 2  # the site pool and the state pool
    assert await page.locator("svg.timeline line.now").count() == 2
    await screenshot(page, request, "site")


async def test_a_wrong_password_is_refused_with_a_message(stack: Stack, signed_in: Browse) -> None:
    page = await signed_in("md-reader")
    await page.click("form[action='/sign-out'] button")
    await page.wait_for_url(f"{stack.url}/sign-in")
    await page.fill("input[name=username]", "md-reader")
    await page.fill("input[name=password]", "not the password at all")
    await page.click("button[type=submit]")
    assert "Wrong username, password or code." in await page.inner_text("[role=alert]")
    response = await page.goto(f"{stack.url}/")
    assert response is not None
    assert page.url.endswith("/sign-in"), "signed out: the session is gone"


async def test_a_rotation_and_an_override_change_the_coverage_timeline(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, _ = await on_pool_page(signed_in, stack, f"site:{LADDER_SITE}")
    assert sorted(await lanes(page)) == ["ladder-1", "ladder-2"]  # their weekly shifts, always
    assert await gap_count(page) == 0
    await screenshot(page, request, "before")

    # A rotation naming a coach nobody has: the error stands next to the field, nothing stored.
    await page.fill("#rotation-form input[name=name]", "Console nights")
    await page.fill("#rotation-form textarea[name=participants]", "Nobody Here")
    await page.click("#rotation-form button[type=submit]")
    error = await page.inner_text("#error-rotation-participants")
    assert "no coach named 'Nobody Here'" in error
    await screenshot(page, request, "rotation-refused")

    # A daily rotation above the weekly shifts, started yesterday: it alone decides now on.
    yesterday = (datetime.now(ZONE).date() - timedelta(days=1)).isoformat()
    await page.fill("#rotation-form input[name=name]", "Console nights")
    await page.fill("#rotation-form input[name=priority]", "5")
    await page.fill("#rotation-form input[name=start_date]", yesterday)
    await page.fill("#rotation-form textarea[name=participants]", "supervisor")
    await page.click("#rotation-form button[type=submit]")
    await page.wait_for_url(f"{stack.url}/pools/site:{LADDER_SITE}")
    assert await lanes(page) == ["supervisor"]
    assert "Console nights" in await page.inner_text("#layers")
    await screenshot(page, request, "rotation")

    # Take that coach off for two hours, starting in two: a red gap appears there.
    start = (datetime.now(ZONE) + timedelta(hours=2)).replace(second=0, microsecond=0)
    end = start + timedelta(hours=2)
    await page.select_option("#override-form select[name=kind]", "remove")
    await page.select_option("#override-form select[name=coach_id]", label="supervisor")
    await page.fill("#override-form input[name=starts_at]", start.strftime("%Y-%m-%dT%H:%M"))
    await page.fill("#override-form input[name=ends_at]", end.strftime("%Y-%m-%dT%H:%M"))
    await page.click("#override-form button[type=submit]")
    await page.wait_for_url(f"{stack.url}/pools/site:{LADDER_SITE}")
    assert await gap_count(page) == 1
    gap = await page.locator("svg.timeline").first.locator("rect.gap title").text_content()
    assert f"nobody on call: {start:%a %d %b %H:%M} to {end:%a %d %b %H:%M}" == gap
    assert "supervisor off" in await page.inner_text("#overrides")
    await screenshot(page, request, "override")

    # An override ending before it starts: refused next to the field, never a 500.
    await page.fill("#override-form input[name=starts_at]", end.strftime("%Y-%m-%dT%H:%M"))
    await page.fill("#override-form input[name=ends_at]", start.strftime("%Y-%m-%dT%H:%M"))
    await page.click("#override-form button[type=submit]")
    assert "must be after the start" in await page.inner_text("#error-override-ends_at")

    await page.goto(f"{stack.url}/changes")
    log = await page.inner_text("#changes")
    assert "rotation created" in log
    assert "override added" in log
    assert log.count("md-coordinator") >= 2
    await screenshot(page, request, "change-log")


async def test_an_open_referral_appears_on_the_board_without_patient_data(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    created = await stack.system.post_referral(MAIN_SITE, location="ED bay 17")
    referral_id = created["id"]
    page = await signed_in("md-reader")
    row = page.locator(f"#board tr[data-referral='{referral_id}']")

    async def offered() -> list[str] | None:
        await page.goto(f"{stack.url}/sites/{MAIN_SITE}/board")
        if await row.count() != 1:
            return None
        cells = await row.locator("td").all_inner_texts()
        return cells if cells[4] == "offered" and cells[5] != "nobody" else None

    cells = await eventually(offered, within=30, what="the referral on the board, offered")
    assert cells[2:5] == ["urgent", "ED bay 17", "offered"]
    assert cells[5] in ("main-1", "main-2"), "the coach holding the offer, by name"
    text = await page.content()
    for private in (NOTES, "Quentin", f">{INITIALS}<", "+14105550100"):
        assert private not in text
    assert await page.get_attribute("meta[http-equiv=refresh]", "content") == "15"
    await screenshot(page, request, "board")

    connection = await asyncpg.connect(stack.system.database_url)
    try:
        viewers = await connection.fetchval(
            """SELECT array_agg(DISTINCT username) FROM console.referral_views
               WHERE $1 = ANY(referral_ids)""",
            UUID(referral_id),
        )
    finally:
        await connection.close()
    assert viewers == ["md-reader"], "every view of a referral is audited with who"


async def test_a_read_only_account_cannot_change_anything(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, _ = await on_pool_page(signed_in, stack, f"site:{MAIN_SITE}", "md-reader")
    assert await page.locator("form[action*='/rotations'], form[action*='/overrides']").count() == 0
    assert await page.locator("button", has_text="Remove").count() == 0
    await screenshot(page, request, "schedule")
    await page.goto(f"{stack.url}/sites/{MAIN_SITE}")
    assert await page.locator("form[action$='/dispatch']").count() == 0
    await screenshot(page, request, "site")

    token = await csrf_token(page)
    today = date.today().isoformat()
    attempts = {
        f"/pools/site:{MAIN_SITE}/rotations": {
            "name": "sneaky", "start_date": today, "handoff": "08:00", "shift_length": "1",
            "shift_unit": "days", "participants": "main-1",
        },
        f"/pools/site:{MAIN_SITE}/overrides": {
            "kind": "remove", "starts_at": f"{today}T10:00", "ends_at": f"{today}T11:00",
        },
        f"/sites/{MAIN_SITE}/dispatch": {"mode": "broadcast"},
    }  # fmt: skip
    for path, fields in attempts.items():
        form: dict[str, str | float | bool] = {**fields, "csrf_token": token}
        response = await page.request.post(f"{stack.url}{path}", form=form, max_redirects=0)
        assert response.status == 403, path
    await page.goto(f"{stack.url}/pools/site:{MAIN_SITE}")
    assert "sneaky" not in await page.inner_text("#layers")


async def test_a_form_without_the_sessions_csrf_token_is_refused(
    stack: Stack, signed_in: Browse
) -> None:
    page = await signed_in("md-coordinator")
    form: dict[str, str | float | bool] = {
        "kind": "remove",
        "starts_at": "2030-01-01T10:00",
        "ends_at": "2030-01-01T11:00",
    }
    for token in (None, "forged-token"):
        response = await page.request.post(
            f"{stack.url}/pools/site:{MAIN_SITE}/overrides",
            form=form | ({"csrf_token": token} if token else {}),
            max_redirects=0,
        )
        assert response.status == 403


async def test_a_coordinator_of_one_state_cannot_reach_another_states_sites(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page = await signed_in("vt-coordinator")
    assert await page.locator(f"a[href='/sites/{OTHER_STATE_SITE}']").count() == 1
    assert await page.locator(f"a[href='/sites/{MAIN_SITE}']").count() == 0
    await screenshot(page, request, "sites")
    for path in (
        f"/sites/{MAIN_SITE}",
        f"/sites/{MAIN_SITE}/board",
        f"/sites/{MAIN_SITE}/coverage",
        f"/sites/{MAIN_SITE}/coverage.csv",
        f"/pools/site:{MAIN_SITE}",
        "/pools/state:MD",
    ):
        response = await page.goto(f"{stack.url}{path}")
        assert response is not None
        assert response.status == 404, path
    await screenshot(page, request, "not-found")
    await page.goto(f"{stack.url}/")
    token = await csrf_token(page)
    refused = await page.request.post(
        f"{stack.url}/pools/site:{MAIN_SITE}/overrides", form={"csrf_token": token}
    )
    assert refused.status == 404


async def test_a_supervisor_changes_dispatch_settings_and_bad_values_are_named(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page = await signed_in("md-supervisor")
    await page.goto(f"{stack.url}/sites/{MAIN_SITE}")
    await page.fill("input[name=ack_timeout_seconds]", "5")
    await page.click("form[action$='/dispatch'] button[type=submit]")
    assert "greater than or equal to 15" in await page.inner_text("#error-ack_timeout_seconds")
    await screenshot(page, request, "refused")
    await page.fill("input[name=ack_timeout_seconds]", "240")
    await page.click("form[action$='/dispatch'] button[type=submit]")
    await page.wait_for_url(f"{stack.url}/sites/{MAIN_SITE}")
    assert await page.input_value("input[name=ack_timeout_seconds]") == "240"
    await page.goto(f"{stack.url}/changes")
    assert "dispatch settings changed" in await page.inner_text("#changes")

    coordinator = await signed_in("md-coordinator")
    await coordinator.goto(f"{stack.url}/sites/{MAIN_SITE}")
    assert await coordinator.locator("form[action$='/dispatch']").count() == 0
    assert "240 s" in await coordinator.inner_text("main")


async def test_the_coverage_gap_report_as_a_page_and_as_csv(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page = await signed_in("md-coordinator")
    await page.goto(f"{stack.url}/sites/{MAIN_SITE}/coverage")
    assert "No gaps." in await page.inner_text("main")  # main-1 and main-2 always on call
    await screenshot(page, request, "coverage")
    response = await page.request.get(f"{stack.url}/sites/{MAIN_SITE}/coverage.csv")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert (await response.text()).splitlines() == [
        "site_id,start_utc,end_utc,start_local,end_local,minutes"
    ]


async def test_a_temporary_schedule_with_nobody_leaves_a_gap_in_the_state_pool(
    stack: Stack, signed_in: Browse, request: pytest.FixtureRequest
) -> None:
    page, _ = await on_pool_page(signed_in, stack, "state:MD")
    assert await lanes(page) == ["state"]  # on the state pool's weekly shifts, always
    assert await gap_count(page) == 0
    start = (datetime.now(ZONE) + timedelta(hours=3)).replace(second=0, microsecond=0)
    end = start + timedelta(hours=1)
    await page.fill("#temporary-form input[name=start]", start.strftime("%Y-%m-%dT%H:%M"))
    await page.fill("#temporary-form input[name=end]", end.strftime("%Y-%m-%dT%H:%M"))
    await page.click("#temporary-form button[type=submit]")  # nobody chosen: a strike
    await page.wait_for_url(f"{stack.url}/pools/state:MD")
    gap = await page.locator("svg.timeline").first.locator("rect.gap title").text_content()
    assert gap == f"nobody on call: {start:%a %d %b %H:%M} to {end:%a %d %b %H:%M}"
    await screenshot(page, request, "temporary")
    assert "nobody" in await page.inner_text("#temporaries")

    await page.click("#temporaries button")  # removed: the state pool is covered again
    await page.wait_for_url(f"{stack.url}/pools/state:MD")
    assert await gap_count(page) == 0
    assert "None in force or ahead." in await page.inner_text("#temporaries")

    await page.fill("#temporary-form input[name=start]", "")
    await page.click("#temporary-form button[type=submit]")
    assert await page.inner_text("#error-temporary-start") == "required"
