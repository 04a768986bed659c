"""The coordinator console in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; never `playwright install`), over the whole system as processes: referral,
matching, notify and reports on their own Kafka broker and a fresh database, and the
console.

Screenshots of each step land in test-artifacts/browser/ (ignored by git); the run's
summary prints the folder.
"""

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, Playwright, async_playwright

from handoff_devenv import KafkaCluster
from handoff_devenv.service_process import ServiceProcess, start_service
from tests.e2e.conftest import System, start_system, stop_system
from tests.integration.conftest import handoff_command
from tests.support.patients import ARTIFACTS, SERVICE_LOGS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ARTIFACTS / "browser"
OTHER_STATE_SITE = "vt-e2e-other"
PASSWORD = "correct horse battery staple"
ACCOUNTS = {
    # username: (role, scope options)
    "md-coordinator": ("coordinator", ["--state", "MD"]),
    "md-reader": ("read_only", ["--state", "MD"]),
    "md-supervisor": ("supervisor", ["--state", "MD"]),
    "vt-coordinator": ("coordinator", ["--state", "VT"]),
}
TOKENS = {
    "REFERRAL_ADMIN_TOKEN": "browser-referral-admin",
    "MATCHING_ADMIN_TOKEN": "browser-matching-admin",
    "NOTIFY_ADMIN_TOKEN": "browser-notify-admin",
    "REPORTS_ADMIN_TOKEN": "browser-reports-admin",
}


@dataclass
class Stack:
    system: System
    console: ServiceProcess
    reports: ServiceProcess

    @property
    def url(self) -> str:
        return self.console.url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SCREENSHOTS.exists():
        terminalreporter.write_line(f"console screenshots: {SCREENSHOTS}")


def _handoff(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    return handoff_command(*args, env=env, stdin=stdin)


@pytest.fixture(scope="module")
async def stack(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[Stack]:
    system = await start_system(database_url, own_kafka, 1, 10, **TOKENS)
    reports: ServiceProcess | None = None
    try:
        reports = await asyncio.to_thread(
            start_service, "reports", system.env, SERVICE_LOGS / "browser-reports.log", 60
        )
        env = {
            **system.env,
            "CONSOLE_REFERRAL_URL": system.referral.url,
            "CONSOLE_MATCHING_URL": system.matching.url,
            "CONSOLE_NOTIFY_URL": system.notify.url,
            "CONSOLE_REPORTS_URL": reports.url,
            "CONSOLE_SECURE_COOKIES": "false",  # plain HTTP on 127.0.0.1
        }
        _handoff(
            "referral", "site", "add", "--id", OTHER_STATE_SITE, "--name", "Vermont test hospital",
            "--short-name", "Green ED", "--state", "VT", "--time-zone", "America/New_York",
            env=env,
        )  # fmt: skip
        for username, (role, scope) in ACCOUNTS.items():
            _handoff(
                "console", "users", "add", "--username", username, "--role", role, *scope,
                "--password-stdin", env=env, stdin=PASSWORD + "\n",
            )  # fmt: skip
        console = await asyncio.to_thread(
            start_service, "console", env, SERVICE_LOGS / "browser-console.log", 60
        )
        try:
            yield Stack(system, console, reports)
        finally:
            console.stop()
    finally:
        if reports is not None:
            reports.stop()
        await stop_system(system)


@pytest.fixture(scope="module")
async def playwright() -> AsyncIterator[Playwright]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as driver:
        yield driver


Browse = Callable[[str], Awaitable[Page]]


@pytest.fixture
async def signed_in(
    playwright: Playwright, stack: Stack, request: pytest.FixtureRequest
) -> AsyncIterator[Browse]:
    """`await signed_in("md-coordinator")`: a fresh Chromium profile, signed in as that
    account through the sign-in form; the page is on the site list."""
    contexts: list[BrowserContext] = []
    profiles: list[Path] = []

    async def browse(username: str) -> Page:
        profile = Path(tempfile.mkdtemp(prefix="handoff-chromium-"))
        profiles.append(profile)
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
        )
        contexts.append(context)
        context.set_default_timeout(15_000)
        page = context.pages[0] if context.pages else await context.new_page()
        await page.goto(f"{stack.url}/")
        assert page.url.endswith("/sign-in"), "a visitor without a session is sent to sign in"
        await page.fill("input[name=username]", username)
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{stack.url}/")
        return page

    try:
        yield browse
    finally:
        for context in contexts:
            await context.close()
        for profile in profiles:
            shutil.rmtree(profile, ignore_errors=True)


async def on_pool_page(
    signed_in: Browse, stack: Stack, pool: str, username: str = "md-coordinator"
) -> tuple[Page, str]:
    """Signed in as `username` (a fresh profile) and on the schedule page of `pool`
    (`site:<site id>` or `state:<state>`); returns (the page, that page's URL)."""
    page = await signed_in(username)
    url = f"{stack.url}/pools/{pool}"
    await page.goto(url)
    return page, url


async def screenshot(page: Page, request: pytest.FixtureRequest, step: str) -> Path:
    """Save the whole page as test-artifacts/browser/<test>-<step>.png."""
    path = SCREENSHOTS / f"{request.node.name}-{step}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
