"""Durable timers on a real PostgreSQL: once, across replicas and restarts, never lost."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from handoff_platform.database import Connection, create_pool, migrate
from handoff_platform.timers import Timer, TimerLoop, Timers
from tests.integration.conftest import create_database
from tests.support.waiting import eventually

SCHEMA = "timer_tests"


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    url = await create_database(database_url)
    connection = await asyncpg.connect(url)
    await migrate(connection, SCHEMA)  # the platform's tables only
    await connection.close()
    pool = await create_pool(url)
    yield url, pool
    await pool.close()


class Recorder:
    def __init__(self, failures: int = 0) -> None:
        self.fired: list[Timer] = []
        self.failures_left = failures

    async def handle(self, connection: Connection, timer: Timer) -> None:
        assert await connection.fetchval("SELECT 1") == 1  # runs inside the claiming transaction
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("a bug, the first time")
        self.fired.append(timer)


@contextlib.asynccontextmanager
async def running(*loops: TimerLoop) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def loop_for(url: str, pool: asyncpg.Pool, recorder: Recorder, max_sleep: float = 0.5) -> TimerLoop:
    return TimerLoop(
        url, pool, Timers(SCHEMA), {"offer_expiry": recorder.handle}, max_sleep=max_sleep
    )


async def set_timer(pool: asyncpg.Pool, due_in: timedelta, **payload: Any) -> uuid.UUID:
    timer_id = uuid.uuid4()
    async with pool.acquire() as connection:
        now = await connection.fetchval("SELECT now()")
        await Timers(SCHEMA).set(connection, timer_id, "offer_expiry", now + due_in, payload)
        await Timers(SCHEMA).changed(connection)
    return timer_id


async def pending(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.timers")
    return count


def fired_count(recorder: Recorder, expected: int) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def probe() -> bool:
        return len(recorder.fired) >= expected

    return probe


async def test_a_timer_fires_once_when_due_and_not_before(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    recorder = Recorder()
    soon = await set_timer(pool, timedelta(milliseconds=300), offer="a")
    later = await set_timer(pool, timedelta(hours=1), offer="b")
    async with running(loop_for(url, pool, recorder)):
        await eventually(fired_count(recorder, 1), within=10, what="the due timer to fire")
    assert [(t.timer_id, t.payload) for t in recorder.fired] == [(soon, {"offer": "a"})]
    remaining = await pool.fetchval(f"SELECT timer_id FROM {SCHEMA}.timers")
    assert remaining == later


async def test_two_replicas_fire_each_timer_exactly_once(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    recorder = Recorder()
    ids = {await set_timer(pool, timedelta(0), n=n) for n in range(60)}
    async with running(loop_for(url, pool, recorder), loop_for(url, pool, recorder)):
        await eventually(fired_count(recorder, 60), within=20, what="60 timers to fire")
        await eventually(lambda: _zero(pool), within=5, what="no timer left")
    assert sorted(t.timer_id for t in recorder.fired) == sorted(ids)


async def _zero(pool: asyncpg.Pool) -> bool:
    return await pending(pool) == 0


async def test_a_timer_that_fell_due_while_no_replica_ran_fires_once_on_start(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    timer_id = await set_timer(pool, timedelta(milliseconds=200))

    async def overdue() -> bool:
        return bool(await pool.fetchval(f"SELECT bool_and(due_at < now()) FROM {SCHEMA}.timers"))

    await eventually(overdue, within=5, what="the timer to fall due with no loop running")
    recorder = Recorder()
    async with running(loop_for(url, pool, recorder)):
        await eventually(fired_count(recorder, 1), within=10, what="the overdue timer")
        await eventually(lambda: _zero(pool), within=5, what="the timer row gone")
    assert [t.timer_id for t in recorder.fired] == [timer_id]


async def test_a_nearer_timer_wakes_a_sleeping_loop(database: tuple[str, asyncpg.Pool]) -> None:
    url, pool = database
    recorder = Recorder()
    async with running(loop_for(url, pool, recorder, max_sleep=60)):
        await asyncio.sleep(0)  # let the loop start its long sleep
        await set_timer(pool, timedelta(milliseconds=100))
        await eventually(
            fired_count(recorder, 1), within=5, what="the timer to fire long before the 60 s poll"
        )


async def test_a_failing_handler_is_retried_not_lost(database: tuple[str, asyncpg.Pool]) -> None:
    url, pool = database
    recorder = Recorder(failures=1)
    timer_id = await set_timer(pool, timedelta(0))
    async with running(loop_for(url, pool, recorder)):
        await eventually(fired_count(recorder, 1), within=10, what="the retried timer")
    assert recorder.fired[0].timer_id == timer_id
    assert recorder.fired[0].attempts == 1


class RowHandler(Recorder):
    """A handler that acts on a row of `things`, taken with NOWAIT as the module asks."""

    async def handle(self, connection: Connection, timer: Timer) -> None:
        await connection.execute(
            f"SELECT FROM {SCHEMA}.things WHERE id = $1 FOR UPDATE NOWAIT",
            uuid.UUID(timer.payload["thing"]),
        )
        self.fired.append(timer)


async def test_a_handler_finding_its_row_held_fires_later_and_never_deadlocks(
    database: tuple[str, asyncpg.Pool],
) -> None:
    """The shape of the chaos suite's deadlock in matching: a transaction holds the row a
    timer is about and then moves that timer, while the loop fires it. The loop lets go at
    once and fires the timer once the transaction is done, as it left the timer; nothing
    counts as a failure."""
    url, pool = database
    thing = uuid.uuid4()
    await pool.execute(f"CREATE TABLE {SCHEMA}.things (id uuid PRIMARY KEY)")
    await pool.execute(f"INSERT INTO {SCHEMA}.things VALUES ($1)", thing)
    handler = RowHandler()
    loop = TimerLoop(url, pool, Timers(SCHEMA), {"offer_expiry": handler.handle}, max_sleep=0.5)
    failures_before = _sample("handoff_timer_failures_total")
    deferrals_before = _sample("handoff_timers_deferred_total")
    timer_id = await set_timer(pool, timedelta(0), thing=str(thing))

    async with pool.acquire() as answering, running(loop):
        async with answering.transaction():
            await answering.execute(f"SELECT FROM {SCHEMA}.things WHERE id = $1 FOR UPDATE", thing)
            await eventually(
                lambda: _true(_sample("handoff_timers_deferred_total") > deferrals_before),
                within=10,
                what="the loop to find the row held and put the timer off",
            )
            # Moving the timer while the loop may be firing it: before, a deadlock here.
            now = await answering.fetchval("SELECT now()")
            await Timers(SCHEMA).set(
                answering,
                timer_id,
                "offer_expiry",
                now + timedelta(milliseconds=200),
                {"thing": str(thing)},
            )
        await eventually(fired_count(handler, 1), within=10, what="the timer once the row is free")
        await eventually(lambda: _zero(pool), within=5, what="the timer row gone")

    assert [(t.timer_id, t.attempts) for t in handler.fired] == [(timer_id, 0)]
    assert _sample("handoff_timer_failures_total") == failures_before


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def _true(value: bool) -> bool:
    return value
