"""Composition root: the console's web app over its database and the services' admin APIs."""

import httpx
from fastapi import FastAPI

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


def console_app(console: Console) -> FastAPI:
    """The console's pages plus /healthz, /readyz (its database answers) and /metrics."""

    async def database_answers() -> bool:
        async with console.pool.acquire() as connection:
            return bool(await connection.fetchval("SELECT true"))

    app = service_app(
        "Handoff coordinator console",
        {"database": database_answers},
        max_body_bytes=256 * 1024,
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
        )

        async def start() -> Console:
            await accounts.apply_migrations(settings.database_url)
            pool = await create_pool(settings.database_url, max_size=5)
            return Console(pool, services, settings, templates())

        async def stop(console: Console) -> None:
            await console.pool.close()

        await serve_when_started(start, console_app, stop, host, port)
