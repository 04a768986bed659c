"""Durable timers: rows in the service's schema, fired once across replicas.

Setting a timer is a row written in the caller's transaction, beside the state
change it belongs to, so a timer exists exactly when its reason does. A loop in
every replica claims due rows with `FOR UPDATE SKIP LOCKED`, deletes each and
runs its handler in one transaction: the handler's effects and the timer's end
commit together, and a crash in between leaves the timer to fire again. The loop
sleeps until the next due time, or until told of a nearer timer (in-process, or
by NOTIFY from another replica), and never longer than `max_sleep`.

Time is the database's: replicas with drifting clocks still agree on what is due.
A handler that fails is retried with backoff; it is never dropped. Losing the
database ends `TimerLoop.run` with the error; its supervisor starts it again.

Lock order: while a handler runs, the loop holds its timer's row. A transaction that
sets or cancels a timer usually holds the row of what the timer is about (an offer's
dispatch, a follow-up) and then waits for the timer's row; a handler that waited for
that same row would close the cycle, and PostgreSQL would break it only after
`deadlock_timeout` (1 s), with an error on one side. So a handler takes the row it acts
on with `NOWAIT`: if another transaction holds it, PostgreSQL raises
`LockNotAvailableError` at once, the firing is rolled back to a savepoint, and the loop
makes the timer due again `BUSY_RETRY_SECONDS` later, doubling in a row up to
`MAX_BUSY_RETRY_SECONDS`, in the same transaction, still holding the timer's row (not
counted as a failure: that transaction may be about to set or cancel this very timer,
and does so once the loop commits). `Timers.cancel_unless_firing` is the other
way out, for callers whose handler may not find its row busy.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from handoff_platform import metrics
from handoff_platform.database import Connection, connect, notify
from handoff_platform.supervision import beat, wait_until_set
from handoff_platform.transient import is_transient_database_error

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "handoff_timers"
MAX_RETRY_DELAY_SECONDS = 60
BUSY_RETRY_SECONDS = 0.05
"""How soon a timer whose handler found its row held (`LockNotAvailableError`) fires
again the first time (seconds): about as long as the holding transaction takes."""
MAX_BUSY_RETRY_SECONDS = 1.0
"""The longest a held timer waits between tries (seconds): each deferral in a row doubles
the wait up to this."""


@dataclass(frozen=True)
class Timer:
    timer_id: UUID
    kind: str
    due_at: datetime
    payload: dict[str, Any]
    attempts: int


TimerHandler = Callable[[Connection, Timer], Awaitable[None]]


class Timers:
    """Setting and cancelling timers inside the caller's transaction."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.wake_local_loop: Callable[[], None] | None = None

    async def set(
        self,
        connection: Connection,
        timer_id: UUID,
        kind: str,
        due_at: datetime,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """Set (or move) a timer; call `changed()` once the transaction commits."""
        await connection.execute(
            f"""INSERT INTO "{self.schema}".timers (timer_id, kind, due_at, payload)
                VALUES ($1, $2, $3, $4::jsonb)
                ON CONFLICT (timer_id) DO UPDATE
                SET kind = excluded.kind, due_at = excluded.due_at, payload = excluded.payload,
                    attempts = 0, deferrals = 0""",
            timer_id,
            kind,
            due_at,
            json.dumps(dict(payload or {})),
        )

    async def cancel(self, connection: Connection, timer_id: UUID) -> None:
        await connection.execute(
            f'DELETE FROM "{self.schema}".timers WHERE timer_id = $1', timer_id
        )

    async def cancel_unless_firing(self, connection: Connection, timer_id: UUID) -> None:
        """Cancel a timer unless another transaction holds it (a loop is firing it, or
        another cancels it): never waits for its lock. For a caller that holds other locks
        the timer's handler takes after the timer (an offer's row, say), which would
        deadlock waiting for it; the handler must then find, under those locks, that it
        has nothing left to do."""
        await connection.execute(
            f"""DELETE FROM "{self.schema}".timers WHERE timer_id IN (
                    SELECT timer_id FROM "{self.schema}".timers WHERE timer_id = $1
                    FOR UPDATE SKIP LOCKED)""",
            timer_id,
        )

    async def bring_forward(self, connection: Connection, kind: str) -> int:
        """Make every timer of `kind` due later than now due now; how many. For a change
        that may let what the timers wait for happen at once. Call `changed()` once the
        transaction commits."""
        status = await connection.execute(
            f'UPDATE "{self.schema}".timers SET due_at = now() WHERE kind = $1 AND due_at > now()',
            kind,
        )
        return int(status.split()[-1])

    async def changed(self, connection: Connection) -> None:
        """Tell the loops a timer may now be nearer than they planned to sleep."""
        if self.wake_local_loop is not None:
            self.wake_local_loop()
        await notify(connection, NOTIFY_CHANNEL, self.schema)


class TimerLoop:
    def __init__(
        self,
        database_url: str,
        pool: asyncpg.Pool,
        timers: Timers,
        handlers: Mapping[str, TimerHandler],
        max_sleep: float = 5.0,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        """`after_commit` runs after each fired timer commits (e.g. to wake the outbox relay)."""
        self.database_url = database_url
        self.pool = pool
        self.timers = timers
        self.schema = timers.schema
        self.handlers = handlers
        self.max_sleep = max_sleep
        self.after_commit = after_commit
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Fire due timers until cancelled; a cycle ends at least every `max_sleep` seconds.

        Raises the database's error when it cannot be reached (see
        `handoff_platform.transient`), for the supervisor to restart the loop.
        """
        listener: asyncpg.Connection | None = None
        self.timers.wake_local_loop = self._wake.set
        try:
            while True:
                if listener is None or listener.is_closed():
                    listener = await connect(self.database_url)
                    await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
                while await self._fire_next():
                    beat()
                await self._sleep_until_next_due()
                beat()
        finally:
            self.timers.wake_local_loop = None
            if listener is not None:
                listener.terminate()

    def _on_notify(self, _conn: Connection, _pid: int, _channel: str, schema: object) -> None:
        if schema == self.schema:
            self._wake.set()

    async def _fire_next(self) -> bool:
        """Fire one due timer, if any; True if one was claimed and fired (or failed), False
        if none was due or the one claimed was put off (its handler found its row held)."""
        row: asyncpg.Record | None = None
        async with self.pool.acquire() as connection:
            try:
                async with connection.transaction():
                    row = await connection.fetchrow(
                        f"""SELECT timer_id, kind, due_at, payload, attempts, deferrals,
                                   extract(epoch FROM now() - due_at) AS late_by
                            FROM "{self.schema}".timers WHERE due_at <= now()
                            ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED"""
                    )
                    if row is None:
                        return False
                    timer = Timer(
                        row["timer_id"],
                        row["kind"],
                        row["due_at"],
                        json.loads(row["payload"]),
                        row["attempts"],
                    )
                    try:
                        # A savepoint: a handler that finds its row held undoes only the
                        # firing, and the timer's row stays locked by this transaction
                        # while it is put off, so no other transaction waits on it.
                        async with connection.transaction():
                            await connection.execute(
                                f'DELETE FROM "{self.schema}".timers WHERE timer_id = $1',
                                timer.timer_id,
                            )
                            await self._handle(connection, timer)
                    except asyncpg.LockNotAvailableError:
                        await self._put_off(connection, timer.timer_id, row["deferrals"])
                        return False  # the loop sleeps until the next due, not spins on it
            except Exception as error:
                if row is None or is_transient_database_error(error):
                    raise
                await self._retry_later(connection, row["timer_id"], row["attempts"], error)
                return True
        metrics.TIMERS_FIRED.labels(timer.kind).inc()
        metrics.TIMER_LATENESS_SECONDS.observe(max(0.0, float(row["late_by"])))
        if self.after_commit is not None:
            self.after_commit()
        return True

    async def _handle(self, connection: Connection, timer: Timer) -> None:
        handler = self.handlers.get(timer.kind)
        if handler is None:
            raise LookupError(f"no handler for timers of kind {timer.kind!r}")
        await handler(connection, timer)

    async def _put_off(self, connection: Connection, timer_id: UUID, deferrals: int) -> None:
        """The handler found its row held by another transaction: due again after
        `BUSY_RETRY_SECONDS`, twice as long after each deferral in a row, at most
        `MAX_BUSY_RETRY_SECONDS`; its attempts unchanged (nothing failed). In the claiming
        transaction: a transaction that moves or cancels the timer meanwhile waits for it,
        and its change comes after."""
        # The exponent is capped: a row held for hours would count thousands of deferrals.
        delay = min(BUSY_RETRY_SECONDS * 2 ** min(deferrals, 16), MAX_BUSY_RETRY_SECONDS)
        await connection.execute(
            f"""UPDATE "{self.schema}".timers
                SET due_at = now() + make_interval(secs => $2), deferrals = deferrals + 1
                WHERE timer_id = $1""",
            timer_id,
            delay,
        )
        metrics.TIMERS_DEFERRED.inc()

    async def _retry_later(
        self, connection: Connection, timer_id: UUID, attempts: int, error: Exception
    ) -> None:
        delay = min(2**attempts, MAX_RETRY_DELAY_SECONDS)
        await connection.execute(
            f"""UPDATE "{self.schema}".timers
                SET attempts = attempts + 1, due_at = now() + make_interval(secs => $2)
                WHERE timer_id = $1""",
            timer_id,
            float(delay),
        )
        metrics.TIMER_FAILURES.inc()
        log.error(
            "timer handler failed; retrying",
            extra={"timer_id": str(timer_id), "error": type(error).__name__, "retry_in_s": delay},
        )

    async def _sleep_until_next_due(self) -> None:
        self._wake.clear()
        seconds = await self.pool.fetchval(
            f"""SELECT extract(epoch FROM min(due_at) - now())::float8
                FROM "{self.schema}".timers"""
        )
        overdue = -seconds if seconds is not None and seconds < 0 else 0.0
        metrics.TIMERS_OVERDUE_SECONDS.set(overdue)
        timeout = self.max_sleep if seconds is None else max(0.0, min(seconds, self.max_sleep))
        await wait_until_set(self._wake, timeout)
