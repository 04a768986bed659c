"""Transactional outbox: events commit with the state change, then a relay puts them on Kafka.

Writing: `Outbox.put(connection, envelope)` inside the service's own transaction, or,
where a hot path writes its state in one statement, `Outbox.queue_for_each` as one
more data-modifying CTE of that statement: PostgreSQL runs a single statement
atomically, so the state and its event still commit together, in one round trip.

Relaying: one replica at a time holds a PostgreSQL advisory lock and publishes
rows in commit position order with the idempotent producer (acks=all), then
deletes each row whose record Kafka acknowledged; only a row whose record failed
is published again (decision 0005). A single publisher is what keeps each
referral's events in order: two replicas claiming rows side by side could put a
later event on Kafka before an earlier one. Rows of one referral are written after
that referral's row lock is taken, so their positions follow their commit order.
If the leader dies, its session ends, the lock is released and another replica
takes over; anything it had published but not yet deleted is published again
under the same event id, which consumers recognise as a duplicate.

Waking the relay: when the leading relay runs in the same process, a commit
wakes it directly. Otherwise a NOTIFY is sent after the commit, in a small
transaction of its own with asynchronous commit, one per burst of commits
(a commit during a send sets the flag again, so none is lost). Not inside the
writing transaction: a transaction that notifies holds PostgreSQL's notification
lock through its commit's fsync, which serialises every writer in the database.
The relay also polls, in case a wake-up is lost (a crash right after a commit).
Only a commit whose transaction queued events wakes it: a consumer or timer commits
many transactions that queue none, and each needless wake-up cost the relay a query
(issue 17). Which transaction queued what is known per asyncio task, so a transaction
and its `committed()` call run in one task, as they do throughout.
"""

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

import asyncpg
from faststream.kafka import KafkaBroker

from handoff_platform import metrics
from handoff_platform.database import Connection, connect, notify
from handoff_platform.supervision import beat, jittered, wait_until_set
from handoff_platform.tracing import TRACEPARENT, current_traceparent
from handoff_platform.transient import is_transient_database_error
from handoff_schemas import Envelope, partition_key

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "handoff_outbox"
_ROW_COLUMNS = "event_id, topic, partition_key, event_type, correlation_id, body, trace_context"
_ROW_TYPES = ("uuid", "text", "bytea", "text", "text", "text", "text")
CONTENT_TYPE = "application/cloudevents+json"
EVENT_TYPE_HEADER = "ce_type"  # CloudEvents' Kafka binding: the type, readable undecoded
BACKLOG_SAMPLE_SECONDS = 1.0
"""How often, at most, the leading relay counts the outbox for its gauges (seconds)."""

_QUEUED: ContextVar[bool] = ContextVar("outbox_events_queued", default=False)
"""Whether this task queued events since its last `committed()`."""


class Outbox:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.wake_local_relay: Callable[[], None] | None = None
        self._announcement_due = asyncio.Event()

    @contextlib.asynccontextmanager
    async def transaction(self, pool: asyncpg.Pool) -> AsyncIterator[Connection]:
        """A transaction for a state change and its events; the relay is woken once it commits."""
        async with pool.acquire() as connection, connection.transaction():
            yield connection
        self.committed()

    def committed(self) -> None:
        """A transaction committed: if this task queued events in it (`put`,
        `queue_for_each`), wake the relay here, or have the others told by NOTIFY."""
        if not _QUEUED.get():
            return
        _QUEUED.set(False)
        if self.wake_local_relay is not None:
            self.wake_local_relay()
        else:
            self._announcement_due.set()

    async def announce_forever(self, pool: asyncpg.Pool, idle_beat: float = 5.0) -> None:
        """Send the NOTIFYs that `committed` asked for, one per burst of commits.

        A cycle ends at least every `idle_beat` seconds, announcement or not. A failed
        NOTIFY raises (the supervisor restarts the loop); the relay polls meanwhile,
        and the announcement stays due.
        """
        while True:
            await wait_until_set(self._announcement_due, idle_beat)
            if self._announcement_due.is_set():
                self._announcement_due.clear()  # a commit during the NOTIFY sets it again
                try:
                    async with pool.acquire() as connection:
                        await notify(connection, NOTIFY_CHANNEL, self.schema)
                except BaseException:
                    self._announcement_due.set()
                    raise
            beat()

    async def put(self, connection: Connection, *envelopes: Envelope[Any]) -> None:
        """Add events to the caller's open transaction; they are published after it commits
        and the caller, in the same task, calls `committed()`."""
        _QUEUED.set(True)
        if len(envelopes) == 1:  # the common case; executemany costs more round trips
            await connection.execute(self._insert, *self.row(envelopes[0]))
            return
        await connection.executemany(self._insert, [self.row(e) for e in envelopes])

    def queue_for_each(self, source: str, first_parameter: int) -> str:
        """An INSERT, for a CTE of the caller's statement, that queues one event per row of
        the CTE `source` (none if it returned none), taking `row(envelope)` as parameters
        `$first_parameter` onwards. The caller calls `committed()` after the statement,
        in the same task."""
        _QUEUED.set(True)
        parameters = ", ".join(
            f"${number}::{column_type}"
            for number, column_type in enumerate(_ROW_TYPES, start=first_parameter)
        )
        return f"""INSERT INTO "{self.schema}".outbox ({_ROW_COLUMNS})
                   SELECT {parameters} FROM {source}"""

    @property
    def _insert(self) -> str:
        parameters = ", ".join(f"${number}" for number in range(1, len(_ROW_TYPES) + 1))
        return f'INSERT INTO "{self.schema}".outbox ({_ROW_COLUMNS}) VALUES ({parameters})'

    @staticmethod
    def row(envelope: Envelope[Any]) -> tuple[Any, ...]:
        """The outbox row's values for an event, in `_ROW_COLUMNS` order."""
        return (
            envelope.id,
            envelope.topic.value,
            partition_key(envelope.subject),
            envelope.type,
            envelope.correlationid,
            envelope.model_dump_json(),
            current_traceparent(),
        )


def _headers(row: asyncpg.Record) -> dict[str, str]:
    headers = {"content-type": CONTENT_TYPE, EVENT_TYPE_HEADER: row["event_type"]}
    if row["trace_context"]:
        headers[TRACEPARENT] = row["trace_context"]
    return headers


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        outbox: Outbox,
        broker: KafkaBroker,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_backoff: float = 5.0,
        ack_timeout: float = 5.0,
    ) -> None:
        self.database_url = database_url
        self.outbox = outbox
        self.schema = outbox.schema
        self.broker = broker
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.ack_timeout = ack_timeout
        self.lock_key = zlib.crc32(f"handoff-outbox-relay:{self.schema}".encode())
        self.oldest_pending_age = 0.0
        self._next_backlog_sample = 0.0
        self.is_leader = False
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Stand for election, then publish while leading; Kafka outages are waited out here.

        Returns only by raising: on losing the database (and with it the leadership) the
        supervisor (`handoff_platform.supervision`) starts it again after a backoff.
        """
        # A connection of its own, not the pool's: the advisory lock lives as long as it does.
        connection: asyncpg.Connection = await connect(self.database_url)
        try:
            while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
                metrics.OUTBOX_IS_LEADER.set(0)
                await self._update_backlog_metrics(connection)
                beat()
                await asyncio.sleep(self.poll_interval)
            self.is_leader = True
            self.outbox.wake_local_relay = self._wake.set
            metrics.OUTBOX_IS_LEADER.set(1)
            log.info("outbox relay leading", extra={"schema": self.schema})
            await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                await self._relay_forever(connection)
            finally:
                await connection.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        finally:
            self.is_leader = False
            self.outbox.wake_local_relay = None
            metrics.OUTBOX_IS_LEADER.set(0)
            connection.terminate()

    def _on_notify(self, _conn: Connection, _pid: int, _channel: str, schema: object) -> None:
        if schema == self.schema:
            self._wake.set()

    async def _relay_forever(self, connection: Connection) -> None:
        backoff = self.poll_interval
        while True:
            self._wake.clear()
            beat()
            try:
                while await self._publish_batch(connection) == self.batch_size:
                    beat()
                backoff = self.poll_interval
            except Exception as error:
                if is_transient_database_error(error):
                    raise  # lost the session, and with it the lock: re-elect
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                await self._update_backlog_metrics(connection)
                log.warning(
                    "outbox publish failed; will retry",
                    extra={"error": type(error).__name__, "retry_in_s": backoff},
                )
                await asyncio.sleep(jittered(backoff))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if time.monotonic() >= self._next_backlog_sample:
                # Once a second at most, not after every wake-up: under load the relay
                # wakes after nearly every commit, and the gauges are scraped every 15 s.
                await self._update_backlog_metrics(connection)
            await wait_until_set(self._wake, self.poll_interval)  # or poll: the fallback

    async def _publish_batch(self, connection: Connection) -> int:
        rows = await connection.fetch(
            f"""SELECT position, topic, partition_key, event_type, correlation_id, body,
                       trace_context
                FROM "{self.schema}".outbox ORDER BY position LIMIT $1""",
            self.batch_size,
        )
        if not rows:
            return 0
        metrics.OUTBOX_BATCHES.inc()
        acknowledgements = [
            await self.broker.publish(
                row["body"].encode(),
                row["topic"],
                key=row["partition_key"],
                headers=_headers(row),
                correlation_id=row["correlation_id"],
                no_confirm=True,
            )
            for row in rows
        ]
        try:
            await self._acknowledged(connection, acknowledgements)
        except BaseException:
            # Forget what Kafka did acknowledge, so only the rest is published again. Not
            # possible if the database is what failed: then those rows go out once more.
            with contextlib.suppress(Exception):
                await self._forget_acknowledged(connection, rows, acknowledgements)
            raise
        return await self._forget_acknowledged(connection, rows, acknowledgements)

    async def _forget_acknowledged(
        self,
        connection: Connection,
        rows: list[asyncpg.Record],
        acknowledgements: list[asyncio.Future[Any]],
    ) -> int:
        """Delete the rows whose record Kafka acknowledged; how many."""
        published = [
            row
            for row, acknowledgement in zip(rows, acknowledgements, strict=True)
            if acknowledgement.done()
            and not acknowledgement.cancelled()
            and acknowledgement.exception() is None
        ]
        if not published:
            return 0
        await connection.execute(
            f'DELETE FROM "{self.schema}".outbox WHERE position = ANY($1::bigint[])',
            [row["position"] for row in published],
        )
        for row in published:
            metrics.OUTBOX_PUBLISHED.labels(row["topic"]).inc()
        return len(published)

    async def _acknowledged(
        self, connection: Connection, acknowledgements: list[asyncio.Future[Any]]
    ) -> None:
        """Wait until Kafka has answered for every record of the batch, however long it is away.

        While the broker is unreachable the producer holds the batch and delivers it
        when the broker returns; sending the rows again meanwhile would put them on
        the topic twice. So a slow batch is only reported, not resent. Once every record
        is answered, raises the first record's error if any failed outright (the caller
        publishes those rows again, and only those).
        """
        pending: set[asyncio.Future[Any]] = set(acknowledgements)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=self.ack_timeout)
            if pending:
                beat()  # waiting out a Kafka outage is this loop's work, not a hang
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                await self._update_backlog_metrics(connection)
                log.warning(
                    "Kafka has not acknowledged an outbox batch yet; still waiting",
                    extra={"unacknowledged": len(pending)},
                )
        for acknowledgement in acknowledgements:
            acknowledgement.result()

    async def _update_backlog_metrics(self, connection: Connection) -> None:
        pending, oldest_age = await connection.fetchrow(  # type: ignore[misc]
            f"""SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
                FROM "{self.schema}".outbox"""
        )
        self.oldest_pending_age = float(oldest_age)
        self._next_backlog_sample = time.monotonic() + BACKLOG_SAMPLE_SECONDS
        metrics.OUTBOX_PENDING.set(pending)
        metrics.OUTBOX_OLDEST_AGE.set(self.oldest_pending_age)
