"""The start-up gate (issue 13): a service listens before its database answers, says so
honestly on its probes, retries only an outage, and then serves its own app."""

import asyncio
import itertools
import logging

import httpx
import pytest
from asyncpg import exceptions
from fastapi import FastAPI

from handoff_platform.startup import StartingApp, start_when_database_answers


async def _get(app: StartingApp, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_while_starting_healthz_is_200_readyz_503_and_the_rest_503_with_retry_after() -> None:
    gate = StartingApp()
    assert (await _get(gate, "/healthz")).status_code == 200
    ready = await _get(gate, "/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "starting"
    assert (await _get(gate, "/metrics")).status_code == 200
    other = await _get(gate, "/v1/referrals")
    assert other.status_code == 503
    assert other.headers["Retry-After"]
    assert other.json()["error"]["code"] == "service_unavailable"


async def test_once_open_every_request_goes_to_the_service() -> None:
    service = FastAPI()

    @service.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    gate = StartingApp()
    gate.open(service)
    response = await _get(gate, "/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_start_is_retried_through_an_outage_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[Exception] = [
        ConnectionRefusedError(111, "refused"),
        exceptions.CannotConnectNowError("the database system is starting up"),
        exceptions.ConnectionDoesNotExistError("connection was closed"),
    ]
    calls: list[float] = []

    async def start() -> str:
        calls.append(asyncio.get_running_loop().time())
        if failures:
            raise failures.pop(0)
        return "runtime"

    with caplog.at_level(logging.WARNING, logger="handoff_platform.startup"):
        assert await start_when_database_answers(start, 0.01, 0.04) == "runtime"
    assert len(calls) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert gaps[1] >= 0.02  # doubled
    warned = [r.__dict__["error"] for r in caplog.records]
    assert warned == [
        "ConnectionRefusedError",
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
    ]


@pytest.mark.parametrize(
    "error",
    [exceptions.InvalidCatalogNameError("no such database"), KeyError("a bug")],
    ids=["no-such-database", "bug"],
)
async def test_anything_but_an_outage_ends_the_start(error: Exception) -> None:
    calls = 0

    async def start() -> str:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        await start_when_database_answers(start, 0.01, 0.04)
    assert calls == 1
