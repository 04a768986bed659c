"""Composition root: the console's web app over its database and the services' admin APIs."""

import httpx
from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse

from handoff_console.adapters import accounts
from handoff_console.adapters.services import Endpoint, Services
from handoff_console.entrypoints.web import (
    Console,
    build_console,
    install_console_errors,
    templates,
)
from handoff_console.settings import ConsoleSettings
from handoff_platform.database import create_pool
from handoff_platform.http import service_app
from handoff_platform.startup import serve_when_started

MAX_BODY_BYTES = 256 * 1024  # far above any form the console has; an .ics is not one


def _too_large_page(max_bytes: int) -> Response:
    """The 413 a person sees (not the services' JSON): what was too large, and what to do."""
    return HTMLResponse(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Too large</title></head><body><h1>Too large</h1>"
        f"<p>What you sent is over {max_bytes // 1024} KiB, more than any console form "
        "needs. Nothing was saved. Go back and shorten it.</p>"
        '<p><a href="/">Back to the sites</a></p></body></html>\n',
        status_code=413,
        headers={"Cache-Control": "no-store"},
    )


def console_app(console: Console) -> FastAPI:
    """The console's pages plus /healthz, /readyz (its database answers) and /metrics."""

    async def database_answers() -> bool:
        async with console.pool.acquire() as connection:
            return bool(await connection.fetchval("SELECT true"))

    app = service_app(
        "Handoff coordinator console",
        {"database": database_answers},
        max_body_bytes=MAX_BODY_BYTES,
        too_large_by_prefix={"/": _too_large_page},
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(build_console(console))
    install_console_errors(app, console)
    return app


async def serve(settings: ConsoleSettings, host: str, port: int) -> None:
    """Listen at once; once the database answers, apply the console's migrations and serve
    its pages until stopped."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        services = Services.over(
            client,
            Endpoint("referral", settings.console_referral_url, settings.referral_admin_token),
            Endpoint("matching", settings.console_matching_url, settings.matching_admin_token),
            Endpoint("notify", settings.console_notify_url, settings.notify_admin_token),
            Endpoint("reports", settings.console_reports_url, settings.reports_admin_token),
        )

        async def start() -> Console:
            await accounts.apply_migrations(settings.database_url)
            pool = await create_pool(settings.database_url, max_size=5)
            return Console(pool, services, settings, templates())

        async def stop(console: Console) -> None:
            await console.pool.close()

        await serve_when_started(start, console_app, stop, host, port)
