"""Start-up that waits out a database that is down or starting: one gate for every service.

A service used to connect to PostgreSQL, migrate, and only then listen: with the database
away (a restart, a failover, a node that came up first) the process crashed, and its
orchestrator restarted it in a loop with nothing to probe. Now `serve_when_started`

1. listens at once: `/healthz` 200 (the process is up: restarting it would not help),
   `/readyz` 503 (send it no traffic yet), `/metrics`, and every other path 503 with
   `Retry-After`;
2. calls the service's `start` (migrations, pool, loops), retrying a transient database
   error (`handoff_platform.transient`) with capped, doubling backoff; any other error
   (a database or role that does not exist, a bug) ends the process as before;
3. then hands every request to the service's own app, and on SIGTERM or SIGINT stops the
   server and runs the service's `stop`.
"""

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from handoff_platform.http import RETRY_AFTER_SECONDS, error_body, serve_http
from handoff_platform.transient import is_transient_database_error

log = logging.getLogger(__name__)

R = TypeVar("R")

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
"""Start-up retries the database every 0.5 s doubling to this, so a replica is serving
within about 10 s of the database's return, and hundreds of replicas waiting do not press
on a database that is starting."""


class StartingApp:
    """An ASGI app in front of the service's: until `open(app)` it answers for a service
    still starting (see the module); afterwards it passes everything to `app`."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    def open(self, app: ASGIApp) -> None:
        """From now on, every request goes to `app`."""
        self._app = app

    @property
    def is_open(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is not None:
            await self._app(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)  # the services' apps have no lifespan handlers
            return
        if scope["type"] != "http":
            return
        await _answer_while_starting(scope["path"])(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _answer_while_starting(path: str) -> Response:
    if path == "/healthz":
        return JSONResponse({"status": "starting", "checks": {}})
    if path == "/readyz":
        return JSONResponse({"status": "starting", "checks": {"started": False}}, status_code=503)
    if path == "/metrics":
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    return JSONResponse(
        error_body("service_unavailable", "the service is starting; retry shortly"),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
    )


async def start_when_database_answers(
    start: Callable[[], Awaitable[R]],
    initial_backoff: float = INITIAL_BACKOFF_SECONDS,
    max_backoff: float = MAX_BACKOFF_SECONDS,
) -> R:
    """`await start()`, again after each transient database error, waiting `initial_backoff`
    seconds doubling to `max_backoff` in between; any other error is raised. Each retry is
    one warning line with the error's class (never its text: it may hold the URL)."""
    backoff = initial_backoff
    attempts = 0
    while True:
        try:
            return await start()
        except Exception as error:
            if not is_transient_database_error(error):
                raise
            attempts += 1
            log.warning(
                "database not reachable at start; retrying",
                extra={"error": type(error).__name__, "attempts": attempts, "retry_in_s": backoff},
            )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


async def serve_when_started(
    start: Callable[[], Awaitable[R]],
    app_of: Callable[[R], ASGIApp],
    stop: Callable[[R], Awaitable[None]],
    host: str,
    port: int,
) -> None:
    """Listen on `host`:`port` at once, start the service with `start()` once the database
    answers, serve `app_of(runtime)` until SIGTERM or SIGINT, then `await stop(runtime)`.

    Raises what `start` raises other than a transient database error (the process ends, as
    a bad setting does), and what the server raises (e.g. the port is taken).
    """
    gate = StartingApp()
    server = asyncio.create_task(serve_http(gate, host, port), name="http")
    starting = asyncio.create_task(start_when_database_answers(start), name="start")
    runtime: R | None = None
    try:
        await asyncio.wait({server, starting}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            runtime = starting.result()
            gate.open(app_of(runtime))
            log.info("started")
            # What start-up built lives as long as the process (see serve_http).
            gc.collect()
            gc.freeze()
        await server
    finally:
        for task in (starting, server):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if runtime is not None:
            await stop(runtime)
