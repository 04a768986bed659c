"""Durable timers on a real PostgreSQL: once, across replicas and restarts, never lost."""

import asyncio
import contextlib
import time
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
    """Acts on a row of `things` taken with NOWAIT, like matching's handlers, after
    `dawdle` seconds inside the firing (to widen the moment the loop holds the timer's
    row); records the timers fired and the database time each fired at."""

    def __init__(self, dawdle: float = 0.0) -> None:
        super().__init__()
        self.fired_at: dict[uuid.UUID, float] = {}
        self.inside = asyncio.Event()
        self.dawdle = dawdle

    async def handle(self, connection: Connection, timer: Timer) -> None:
        self.inside.set()
        await asyncio.sleep(self.dawdle)
        await connection.execute(
            f"SELECT FROM {SCHEMA}.things WHERE id = $1 FOR UPDATE NOWAIT",
            uuid.UUID(timer.payload["thing"]),
        )
        self.fired.append(timer)
        self.fired_at[timer.timer_id] = float(
            await connection.fetchval("SELECT extract(epoch FROM clock_timestamp())")
        )

    def loop(self, url: str, pool: asyncpg.Pool) -> TimerLoop:
        return TimerLoop(url, pool, Timers(SCHEMA), {"offer_expiry": self.handle}, max_sleep=0.5)


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
    loop = handler.loop(url, pool)
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


async def _things(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    await pool.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.things (id uuid PRIMARY KEY)")
    ids = [uuid.uuid4() for _ in range(count)]
    await pool.executemany(f"INSERT INTO {SCHEMA}.things VALUES ($1)", [(i,) for i in ids])
    return ids


async def test_a_timer_moved_while_firing_does_not_stall_the_other_timers(
    database: tuple[str, asyncpg.Pool],
) -> None:
    """fresh31b's first finding: the holder moved the timer while the loop was firing it,
    and the loop, putting the timer off after letting go of it, waited for the holder's
    whole transaction; every other due timer of the replica waited with it."""
    url, pool = database
    held, *others = await _things(pool, 6)
    handler = RowHandler(dawdle=0.2)
    timer_id = await set_timer(pool, timedelta(0), thing=str(held))
    async with (
        pool.acquire() as holder,
        running(handler.loop(url, pool)),
        holder.transaction(),
    ):
        await holder.execute(f"SELECT FROM {SCHEMA}.things WHERE id = $1 FOR UPDATE", held)
        await asyncio.wait_for(handler.inside.wait(), 10)  # the loop holds the timer now
        now = await holder.fetchval("SELECT now()")
        await Timers(SCHEMA).set(
            holder, timer_id, "offer_expiry", now + timedelta(seconds=30), {"thing": str(held)}
        )
        for thing in others:
            await set_timer(pool, timedelta(0), thing=str(thing))
        # The holder stays open throughout: the others fire meanwhile.
        await eventually(
            lambda: _true(len(handler.fired) == len(others)),
            within=5,
            what="the other due timers while the holder stays open",
        )
    assert timer_id not in handler.fired_at


async def test_a_held_timer_moved_later_fires_at_its_new_time_and_one_cancelled_never(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    held, sentinel = await _things(pool, 2)
    for dawdle in (0.0, 0.2):  # after a deferral; and while the loop is inside the handler
        handler = RowHandler(dawdle)
        moved = await set_timer(pool, timedelta(0), thing=str(held))
        cancelled = await set_timer(pool, timedelta(0), thing=str(held))
        deferrals = _sample("handoff_timers_deferred_total")
        async with pool.acquire() as holder, running(handler.loop(url, pool)):
            async with holder.transaction():
                await holder.execute(f"SELECT FROM {SCHEMA}.things WHERE id = $1 FOR UPDATE", held)
                await eventually(
                    lambda d=deferrals: _true(_sample("handoff_timers_deferred_total") > d),  # type: ignore[misc]
                    within=10,
                    what="a deferral",
                )
                if dawdle:
                    handler.inside.clear()
                    await asyncio.wait_for(handler.inside.wait(), 10)
                new_due = await holder.fetchval("SELECT now() + interval '1 second'")
                await Timers(SCHEMA).set(
                    holder, moved, "offer_expiry", new_due, {"thing": str(held)}
                )
                await Timers(SCHEMA).cancel(holder, cancelled)
            last = await set_timer(pool, timedelta(seconds=1.5), thing=str(sentinel))
            await eventually(
                lambda last=last, fired=handler.fired_at: _true(last in fired),  # type: ignore[misc]
                within=10,
                what="the last",
            )
        assert handler.fired_at[moved] >= new_due.timestamp()
        assert cancelled not in handler.fired_at
    assert await pending(pool) == 0


async def test_timers_whose_row_stays_held_back_off_and_starve_no_other(
    database: tuple[str, asyncpg.Pool],
) -> None:
    """fresh31b's second finding: 100 held timers were tried 20 times a second each."""
    url, pool = database
    things = await _things(pool, 120)
    held, free = things[:100], things[100:]
    handler = RowHandler()
    async with pool.acquire() as holder:
        async with holder.transaction():
            await holder.execute(f"SELECT FROM {SCHEMA}.things WHERE id = ANY($1) FOR UPDATE", held)
            for thing in held:
                await set_timer(pool, timedelta(0), thing=str(thing))
            async with running(handler.loop(url, pool), handler.loop(url, pool)):
                for thing in free:
                    await set_timer(pool, timedelta(0), thing=str(thing))
                await eventually(
                    lambda: _true(len(handler.fired) == len(free)), within=5, what="the free ones"
                )
                # Counted over 3 s from here, however long the free ones took to fire.
                started, deferrals = time.monotonic(), _sample("handoff_timers_deferred_total")
                await eventually(
                    lambda: _true(time.monotonic() - started >= 3), within=5, what="3 s held"
                )
                tried = _sample("handoff_timers_deferred_total") - deferrals
        async with running(handler.loop(url, pool)):
            await eventually(
                lambda: _true(len(handler.fired) == len(things)), within=20, what="all of them"
            )
    # Doubling from 50 ms to 1 s: at most about 7 tries each in 3 s, not 20 a second.
    assert tried < 10 * len(held), tried


async def test_a_timer_held_for_hours_is_still_tried_every_second(
    database: tuple[str, asyncpg.Pool],
) -> None:
    """The doubling stops at 1 s however many deferrals a row held for long has counted
    (2**1100 is no float: before the cap, the loop would have failed on it)."""
    url, pool = database
    (held,) = await _things(pool, 1)
    handler = RowHandler()
    timer_id = await set_timer(pool, timedelta(0), thing=str(held))
    await pool.execute(f"UPDATE {SCHEMA}.timers SET deferrals = 5000 WHERE timer_id = $1", timer_id)
    deferrals = _sample("handoff_timers_deferred_total")
    failures = _sample("handoff_timer_failures_total")
    async with (
        pool.acquire() as holder,
        running(handler.loop(url, pool)),
        holder.transaction(),
    ):
        await holder.execute(f"SELECT FROM {SCHEMA}.things WHERE id = $1 FOR UPDATE", held)
        await eventually(
            lambda: _true(_sample("handoff_timers_deferred_total") > deferrals),
            within=10,
            what="a deferral",
        )
        wait = await pool.fetchval(
            f"SELECT extract(epoch FROM due_at - now()) FROM {SCHEMA}.timers WHERE timer_id = $1",
            timer_id,
        )
    assert 0 < wait <= 1.0
    assert _sample("handoff_timer_failures_total") == failures
