"""Kafka readiness asks every bootstrap broker, any one answering is enough (issue 13).

With one broker of three paused, a client's ping that happened to ask that one timed out, so
matching's /readyz flapped while the cluster served. Brokers are faked here at the socket:
one answers ApiVersions as Kafka does, one accepts the connection and never answers (a
paused process: the kernel still completes the handshake), one is not listening (dead).
"""

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from handoff_devenv.ports import free_ports
from handoff_platform.database import DatabaseProbe
from handoff_platform.http import service_app
from handoff_platform.kafka import any_broker_answers
from handoff_platform.runtime import readiness_checks

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    request = await reader.readexactly(size)
    _, _, correlation = struct.unpack(">hhi", request[:8])
    body = struct.pack(">ih", correlation, 0) + struct.pack(">i", 0)  # no error, no APIs
    writer.write(struct.pack(">i", len(body)) + body)
    await writer.drain()
    writer.close()


async def _paused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def broker(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


@pytest.mark.parametrize("position", [0, 1, 2])
async def test_ready_while_any_one_of_three_brokers_answers(position: int) -> None:
    async with broker(_answering) as up, broker(_paused) as paused:
        (dead,) = (f"127.0.0.1:{port}" for port in free_ports(1))
        others = [paused, dead]
        servers = [*others[:position], up, *others[position:]]
        started = time.monotonic()
        assert await any_broker_answers(servers, within=30)
        # Answered long before the deadline: the paused broker, which never answers, did
        # not hold the answer up (a generous margin, so a loaded machine cannot fail it).
        assert time.monotonic() - started < 15


async def test_not_ready_when_every_broker_is_paused_or_dead_and_says_so_in_time() -> None:
    async with broker(_paused) as first, broker(_paused) as second:
        (dead,) = (f"127.0.0.1:{port}" for port in free_ports(1))
        started = time.monotonic()
        assert not await any_broker_answers([first, second, dead], within=1)
        assert time.monotonic() - started < 15  # gave up at its deadline, not never


async def test_a_listener_that_is_not_kafka_is_not_an_answer() -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    async with broker(wrong) as server:
        assert not await any_broker_answers([server], within=1)


class AnsweringDatabase(DatabaseProbe):
    """PostgreSQL up: only Kafka is in question here."""

    def __init__(self) -> None:
        super().__init__("postgresql://unused")

    async def answers(self) -> bool:
        return True


async def readyz(servers: list[str]) -> tuple[int, object]:
    connected = asyncio.Event()
    connected.set()  # the service reached Kafka at start; the brokers went afterwards
    app = service_app("idle", readiness_checks(AnsweringDatabase(), servers, connected))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/readyz")
    return response.status_code, response.json()["checks"]


async def test_an_idle_service_is_not_ready_while_no_broker_answers() -> None:
    # fresh13 finding 2: notify, its outbox empty, stayed ready against a dead cluster
    # because an empty outbox counted as young; now every service asks Kafka itself.
    async with broker(_paused) as paused:
        (dead,) = (f"127.0.0.1:{port}" for port in free_ports(1))
        status, checks = await readyz([paused, dead])
    assert (status, checks) == (503, {"database": True, "kafka": False})


async def test_a_service_is_ready_while_one_broker_of_the_list_answers() -> None:
    async with broker(_answering) as up, broker(_paused) as paused:
        (dead,) = (f"127.0.0.1:{port}" for port in free_ports(1))
        status, checks = await readyz([dead, paused, up])
    assert (status, checks) == (200, {"database": True, "kafka": True})
