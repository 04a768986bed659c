"""An event committed through the outbox reaches Kafka at once, woken, not at the relay's next
poll; the relay is woken only by commits that queued events (issue 17), so this proves the
commits that do queue still wake it, from the task that committed, on real PostgreSQL and
Kafka. The relay here polls once a minute: only a wake-up publishes within the deadline."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from handoff_platform.database import migrate
from handoff_platform.kafka import make_broker
from handoff_platform.outbox import Outbox, OutboxRelay
from handoff_schemas import Envelope, Topic
from handoff_schemas.events import ReferralCancelled
from handoff_schemas.vocabulary import CancelReason
from tests.integration.conftest import create_database
from tests.support.kafka import read_topic
from tests.support.waiting import eventually

SCHEMA = "wake_test"
POLL_SECONDS = 60.0


@pytest.fixture
async def relaying(
    database_url: str, kafka_topics: str
) -> AsyncIterator[tuple[asyncpg.Pool, Outbox]]:
    database = await create_database(database_url)
    connection = await asyncpg.connect(database)
    try:
        await migrate(connection, SCHEMA)
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    broker = make_broker(kafka_topics, "outbox-wake-test")
    await broker.start()
    outbox = Outbox(SCHEMA)
    relay = OutboxRelay(database, outbox, broker, poll_interval=POLL_SECONDS)
    running = asyncio.create_task(relay.run())
    try:
        yield pool, outbox
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await broker.stop()
        await pool.close()


def cancelled() -> Envelope[ReferralCancelled]:
    event = ReferralCancelled(
        referral_id=uuid.uuid4(), reason=CancelReason.PATIENT_LEFT, cancelled_at=datetime.now(UTC)
    )
    return Envelope.wrap(
        event, source="/handoff/wake-test", correlation_id=f"wake-{uuid.uuid4().hex[:8]}"
    )


async def on_kafka(bootstrap: str, envelope: Envelope[ReferralCancelled]) -> bool:
    records = await read_topic(bootstrap, Topic.REFERRALS)
    return any(str(envelope.id).encode() in (record.value or b"") for record in records)


async def test_each_commit_that_queued_an_event_wakes_the_relay(
    relaying: tuple[asyncpg.Pool, Outbox], kafka_topics: str
) -> None:
    pool, outbox = relaying
    # The first event may be published by the relay's first pass, as it takes the lead;
    # the ones after it only by a wake-up (the next poll is a minute away).
    for number in range(3):
        envelope = cancelled()
        async with outbox.transaction(pool) as connection:
            await outbox.put(connection, envelope)
        await eventually(
            lambda envelope=envelope: on_kafka(kafka_topics, envelope),  # type: ignore[misc]
            within=10,
            what=f"event {number} on Kafka",
        )


async def test_a_handler_task_that_queued_wakes_the_relay_after_its_commit(
    relaying: tuple[asyncpg.Pool, Outbox], kafka_topics: str
) -> None:
    """As consumers and timer loops do: the handler queues inside the transaction, and
    `committed()` is called after it, in the same task."""
    pool, outbox = relaying
    first = cancelled()
    async with outbox.transaction(pool) as connection:
        await outbox.put(connection, first)
    await eventually(lambda: on_kafka(kafka_topics, first), within=10, what="the first event")

    async def handle(envelope: Envelope[ReferralCancelled]) -> None:
        async with pool.acquire() as connection, connection.transaction():
            await outbox.put(connection, envelope)
        outbox.committed()

    async def handle_nothing() -> None:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT 1")
        outbox.committed()

    envelope = cancelled()
    await asyncio.gather(handle_nothing(), asyncio.create_task(handle(envelope)))
    await eventually(lambda: on_kafka(kafka_topics, envelope), within=10, what="the event")
