"""At-least-once, idempotent event consumption with dead-lettering and backoff.

A handler receives the decoded envelope and an open database transaction. The
event id is recorded in `processed_events` in that same transaction, so an event
redelivered after a crash is recognised and skipped; the Kafka offset is
committed only after the transaction commits (FastStream's default, ACK_FIRST,
would commit before handling and lose the event on a crash).

A message that can never be handled — it does not decode, or the handler raises
something other than a transient error — goes to the group's dead-letter topic
with the reason in headers, and the consumer moves on. A transient failure (the
database unreachable) is retried in place with capped, jittered backoff: not
FastStream's nack, which seeks back at once and would spin.

A service has one Kafka consumer for all the topics it reads, fetching batches; a
batch's partitions are handled side by side and each partition's events in order
(decision 0031).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from handoff_platform import metrics
from handoff_platform.database import Connection
from handoff_platform.logs import correlation
from handoff_platform.outbox import EVENT_TYPE_HEADER
from handoff_platform.supervision import beat, jittered, wait_until_set, waiting_on_dependency
from handoff_platform.tracing import span
from handoff_platform.transient import is_transient_database_error
from handoff_schemas import Envelope, dead_letter_topic
from handoff_schemas.catalog import EVENT_TYPES, UnknownEventType, decode_event

log = logging.getLogger(__name__)

Handler = Callable[[Connection, Envelope[Any]], Awaitable[None]]

MAX_BATCH_RECORDS = 200
"""The most records one fetch hands the consumer: a bound on a batch, not a wait for one."""

IDLE_POLL_SECONDS = 0.02
"""How long an empty fetch waits, and then pauses, before the next (FastStream's batch
subscriber does both): an event arriving in that pause waits at most this long."""

FIRST_RETRY_SECONDS = 0.1
"""The wait before a failed event, or a held partition, is tried again the first time."""

HELD_LIMIT_SECONDS = 300.0
"""How long a partition may be held at a record that can be neither handled nor
dead-lettered before /healthz fails (seconds): the helper's report of issue 17 saw the
producer answer OutOfOrderSequenceNumber for every dead letter after a broker restart, a
state only a new producer leaves."""

FINAL_COMMIT_SECONDS = 5.0
"""The longest the commit loop's last commit, on stop, may wait for Kafka (seconds)."""

RETRIED_CONFLICTS: tuple[type[Exception], ...] = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)
"""Besides the database being unreachable (`handoff_platform.transient`): a retry succeeds."""


def _worth_retrying(error: Exception) -> bool:
    return is_transient_database_error(error) or isinstance(error, RETRIED_CONFLICTS)


class IdempotentConsumer:
    """A consumer group's handling of its topics: each event once, in its partition's
    order, in a database transaction with its `processed_events` row."""

    def __init__(
        self,
        *,
        group_id: str,
        schema: str,
        pool: asyncpg.Pool,
        broker: KafkaBroker,
        handlers: dict[str, Handler],
        max_backoff: float = 10.0,
        after_commit: Callable[[], None] | None = None,
        workers: int = 4,
    ) -> None:
        """`handlers` maps event types to handlers; other types are acknowledged and skipped.
        `workers`: how many events, of different partitions, are handled at once."""
        self.group_id = group_id
        self.schema = schema
        self.pool = pool
        self.broker = broker
        self.handlers = handlers
        self.max_backoff = max_backoff
        self.after_commit = after_commit  # e.g. wake the outbox relay for events just written
        self.dead_letter_topic = dead_letter_topic(group_id)
        self._slots = asyncio.Semaphore(workers)
        self._handled: dict[Any, dict[TopicPartition, int]] = {}
        self._commit_due = asyncio.Event()
        # Partitions held at a record neither handled nor dead-lettered: since when
        # (time.monotonic()), how many tries, and the Kafka consumer holding them.
        self._held: dict[TopicPartition, tuple[float, int, Any]] = {}

    def subscribe(self, topics: Collection[str]) -> None:
        """Consume `topics` with one Kafka consumer of the group, a batch at a time.

        A batch's partitions are handled side by side, `workers` events at once, and each
        partition's events one after another, so each referral's stay in order. One
        consumer per service, not several per topic: every member polls and heartbeats,
        and on two cores the polling cost more than the parallel members gained
        (decision 0031).
        """
        subscriber = self.broker.subscriber(
            *topics,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            batch=True,
            max_records=MAX_BATCH_RECORDS,
            batch_timeout_ms=int(IDLE_POLL_SECONDS * 1000),
            # Members learn of a rebalance at their next heartbeat: a short interval lets
            # a group of several replicas settle in about a second, not ten.
            heartbeat_interval_ms=1000,
            parser=_records_as_they_came,
            decoder=_the_message_itself,
        )

        async def handle(message: StreamMessage[tuple[ConsumerRecord[bytes, bytes], ...]]) -> None:
            await self.handle_batch(subscriber.consumer, message.raw_message)

        subscriber(handle)

    async def handle_batch(
        self, consumer: Any, records: tuple[ConsumerRecord[bytes, bytes], ...]
    ) -> None:
        """Handle one fetch's `records` (any topics and partitions), each partition in order."""
        partitions: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for record in records:
            partitions.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        if len(partitions) == 1:
            await self._handle_partition(consumer, records)
            return
        await asyncio.gather(
            *(self._handle_partition(consumer, batch) for batch in partitions.values())
        )

    async def _handle_partition(
        self, consumer: Any, records: Collection[ConsumerRecord[bytes, bytes]]
    ) -> None:
        for record in records:
            try:
                async with self._slots:
                    await self.handle(record)
            except Exception as error:
                log.exception(
                    "record not handled",
                    extra={"topic": record.topic, "partition": record.partition},
                )
                if not await self._dead_letter_if_possible(record, error):
                    # Neither handled nor dead-lettered (the dead-letter topic cannot be
                    # written): the partition is fetched again from this record, so neither
                    # it nor the records after it are skipped by a later offset's commit.
                    await self._hold(consumer, record)
                    return
            self._done(consumer, record)

    async def _hold(self, consumer: Any, record: ConsumerRecord[bytes, bytes]) -> None:
        """Fetch `record`'s partition again from it, after a backoff that doubles with each
        try (0.1 s to `max_backoff`): a failing dead-letter topic is not retried in a spin."""
        partition = TopicPartition(record.topic, record.partition)
        since, tries, _ = self._held.get(partition, (time.monotonic(), 0, consumer))
        self._held[partition] = (since, tries + 1, consumer)
        metrics.CONSUMER_RETRIES.labels(self.group_id).inc()
        await asyncio.sleep(jittered(self._retry_delay(tries)))
        consumer.seek(partition, record.offset)

    def _retry_delay(self, tries: int) -> float:
        """The wait before try `tries` + 1, before jitter (seconds): 0.1 doubling per try,
        at most `max_backoff`."""
        return min(FIRST_RETRY_SECONDS * 2.0**tries, self.max_backoff)

    def moving(self) -> bool:
        """False once a partition has been held at one record for `HELD_LIMIT_SECONDS`:
        the records behind it wait, and a restart (a new producer) is what is left to try.
        For /healthz."""
        now = time.monotonic()
        return all(
            now - since < HELD_LIMIT_SECONDS or partition not in consumer.assignment()
            for partition, (since, _, consumer) in self._held.items()
        )  # a partition a rebalance gave to another replica is that replica's to move

    async def _dead_letter_if_possible(
        self, record: ConsumerRecord[bytes, bytes], error: Exception
    ) -> bool:
        """Dead-letter a record `handle` failed on outside any handler; False if Kafka
        would not take it either."""
        try:
            await self._dead_letter(record, "unhandled", _describe(error))
        except Exception:
            log.exception("dead-lettering failed", extra={"topic": record.topic})
            return False
        return True

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one record: skip, dead-letter or handle it, retrying transient failures."""
        headers = _readable_headers(record)
        declared_type = headers.get(EVENT_TYPE_HEADER, "")
        if declared_type in EVENT_TYPES and declared_type not in self.handlers:
            # Another group's event on a shared topic (matching reads handoff.pages for
            # answers, and two in three events there are delivery reports): skipped by
            # its header, without decoding it or dead-lettering it if it is malformed.
            metrics.EVENTS_CONSUMED.labels(self.group_id, declared_type, "ignored").inc()
            return
        try:
            envelope = decode_event(record.value or b"")
        except (ValidationError, UnknownEventType, ValueError) as error:
            await self._dead_letter(record, "undecodable", _describe(error))
            metrics.EVENTS_CONSUMED.labels(self.group_id, "undecodable", "dead_lettered").inc()
            return
        handler = self.handlers.get(envelope.type)
        if handler is None:
            metrics.EVENTS_CONSUMED.labels(self.group_id, envelope.type, "ignored").inc()
            return
        with (
            correlation(envelope.correlationid),
            span(
                f"consume {envelope.type}",
                SpanKind.CONSUMER,
                parent=headers,
                **{
                    "messaging.destination.name": record.topic,
                    "handoff.event_id": str(envelope.id),
                },
            ),
        ):
            outcome = await self._handle_with_retries(record, envelope, handler)
            metrics.EVENTS_CONSUMED.labels(self.group_id, envelope.type, outcome).inc()

    def _done(self, consumer: Any, record: ConsumerRecord[bytes, bytes]) -> None:
        """The record is handled: its offset is committed with the next batch.

        Committing each record would cost a broker round trip per event; committing
        handled offsets every few milliseconds keeps at-least-once (an offset is only
        ever one whose event committed) at a fraction of that. Offsets not yet
        committed when the process dies are delivered again and skipped as duplicates.
        """
        partition = TopicPartition(record.topic, record.partition)
        self._handled.setdefault(consumer, {})[partition] = record.offset + 1
        self._held.pop(partition, None)
        self._commit_due.set()

    async def commit_forever(self, every: float = 0.05, idle_beat: float = 5.0) -> None:
        """Commit the offsets of handled messages, per consumer, a batch at a time.

        A cycle ends at least every `idle_beat` seconds, with or without offsets to commit,
        except while a commit waits for Kafka (`waiting_on_dependency`): late, not stuck.
        """
        try:
            while True:
                await wait_until_set(self._commit_due, idle_beat)
                if self._commit_due.is_set():
                    await asyncio.sleep(every)  # let a burst accumulate into one commit
                    self._commit_due.clear()
                    await self._commit_handled()
                beat()
        finally:
            # On stop, a last commit; bounded, since with Kafka away it would wait for a
            # coordinator forever and hold up shutdown. Offsets left uncommitted are
            # delivered again and skipped as duplicates.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINAL_COMMIT_SECONDS):
                    await self._commit_handled()

    async def _commit_handled(self) -> None:
        handled, self._handled = self._handled, {}
        for consumer, offsets in handled.items():
            try:
                # aiokafka waits for a group coordinator as long as Kafka has none (2 brokers
                # of 3 dead): an outage, for readiness, not a hang that a restart would cure.
                with waiting_on_dependency():
                    await consumer.commit(offsets)
            except KafkaError as error:  # e.g. partitions revoked by a rebalance
                log.info("offsets not committed", extra={"error": type(error).__name__})

    async def _handle_with_retries(
        self, record: ConsumerRecord[bytes, bytes], envelope: Envelope[Any], handler: Handler
    ) -> str:
        tries = 0
        while True:
            started = time.perf_counter()
            try:
                processed = await self._handle_once(envelope, handler)
            except Exception as error:
                if not _worth_retrying(error):
                    log.exception(
                        "event handler failed; dead-lettering",
                        extra={"event_id": str(envelope.id), "event_type": envelope.type},
                    )
                    await self._dead_letter(record, "handler_error", _describe(error))
                    return "dead_lettered"
                metrics.CONSUMER_RETRIES.labels(self.group_id).inc()
                backoff = self._retry_delay(tries)
                log.warning(
                    "transient failure; retrying",
                    extra={
                        "event_id": str(envelope.id),
                        "error": type(error).__name__,
                        "retry_in_s": round(backoff, 2),
                    },
                )
                await asyncio.sleep(jittered(backoff))
                tries += 1
                continue
            metrics.EVENT_HANDLING_SECONDS.labels(self.group_id).observe(
                time.perf_counter() - started
            )
            if processed and self.after_commit is not None:
                self.after_commit()
            return "processed" if processed else "duplicate"

    async def _handle_once(self, envelope: Envelope[Any], handler: Handler) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            first_time = await connection.fetchval(
                f"""INSERT INTO "{self.schema}".processed_events (consumer_group, event_id)
                    VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true""",
                self.group_id,
                envelope.id,
            )
            if not first_time:
                return False
            await handler(connection, envelope)
            return True

    async def _dead_letter(
        self, raw: ConsumerRecord[bytes, bytes], reason: str, detail: str
    ) -> None:
        headers = {
            **_readable_headers(raw),
            "x-dead-letter-reason": reason,
            "x-dead-letter-detail": detail,
            "x-original-topic": raw.topic,
            "x-original-partition": str(raw.partition),
            "x-original-offset": str(raw.offset),
            "x-consumer-group": self.group_id,
        }
        await self.broker.publish(raw.value, self.dead_letter_topic, key=raw.key, headers=headers)
        metrics.DEAD_LETTERS.labels(self.group_id, reason).inc()
        log.error(
            "message dead-lettered",
            extra={
                "reason": reason,
                "topic": raw.topic,
                "partition": raw.partition,
                "offset": raw.offset,
                "dead_letter_topic": self.dead_letter_topic,
            },
        )


async def _records_as_they_came(
    records: tuple[ConsumerRecord[bytes, bytes], ...],
) -> StreamMessage[tuple[ConsumerRecord[bytes, bytes], ...]]:
    """A fetch's records, untouched. FastStream's own batch parser decodes every
    record's headers as UTF-8 and, on one that is not, drops the whole batch unhandled;
    `handle` decodes headers leniently, record by record."""
    return StreamMessage(raw_message=records, body=b"")


async def _the_message_itself(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """What the handler is called with: the message, whose records `handle` decodes
    itself (their offsets, partitions and headers are needed as much as their bodies)."""
    return message


def _readable_headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    """A record's headers as text, whatever a producer put there: bytes that are not UTF-8
    are replaced, and a header without a value (Kafka allows null) is empty."""
    return {key: (value or b"").decode(errors="replace") for key, value in record.headers or ()}


def _describe(error: Exception) -> str:
    """What went wrong, without the offending values: they may be patient data."""
    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in item['loc'])}: {item['type']}"
            for item in error.errors(include_input=False, include_url=False)
        ]
        return "; ".join(problems)[:500]
    return type(error).__name__
