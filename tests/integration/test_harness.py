"""The harness itself: a real broker carries a schema'd event, a real database answers."""

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
from faststream.kafka import KafkaBroker

from handoff_platform.kafka import make_broker
from handoff_schemas import Envelope
from handoff_schemas.events import ReferralCreated, SiteFacts
from handoff_schemas.vocabulary import Consent, Substance, Urgency


def _referral_created() -> Envelope[ReferralCreated]:
    payload = ReferralCreated(
        referral_id=uuid.uuid4(),
        site=SiteFacts(
            site_id="md-mercy", short_name="Mercy ED", state="MD", time_zone="America/New_York"
        ),
        urgency=Urgency.URGENT,
        location="ED bay 4",
        callback_phone="+14105550100",
        preferred_language="es",
        interpreter_needed=True,
        substances=frozenset({Substance.OPIOIDS}),
        consent=Consent.OBTAINED,
        received_at=datetime.now(UTC),
    )
    return Envelope.wrap(payload, source="/handoff/referral", correlation_id="harness-1")


async def test_event_published_by_faststream_arrives_decoded_in_another_group(
    kafka_bootstrap_servers: str,
) -> None:
    topic = f"harness.{uuid.uuid4().hex}"
    sent = _referral_created()
    received: asyncio.Future[Envelope[ReferralCreated]] = asyncio.get_running_loop().create_future()

    consumer = KafkaBroker(kafka_bootstrap_servers, logger=None)

    @consumer.subscriber(
        topic, group_id=f"harness-reader-{uuid.uuid4().hex}", auto_offset_reset="earliest"
    )
    async def on_event(event: Envelope[ReferralCreated]) -> None:
        if not received.done():
            received.set_result(event)

    producer = make_broker(kafka_bootstrap_servers, client_id="harness-writer")
    async with producer, consumer:
        await consumer.start()
        await producer.publish(
            sent.model_dump(mode="json"),
            topic,
            key=str(sent.subject).encode(),
            correlation_id=sent.correlationid,
        )
        got = await asyncio.wait_for(received, timeout=30)

    assert isinstance(got.data, ReferralCreated)
    assert got == sent
    assert got.data.substances == {Substance.OPIOIDS}


async def test_postgres_round_trip(db: asyncpg.Connection) -> None:
    version = await db.fetchval("SHOW server_version_num")
    assert int(version) // 10000 == 15
    table = f"harness_{uuid.uuid4().hex}"
    await db.execute(f"CREATE TEMP TABLE {table} (id uuid PRIMARY KEY, at timestamptz NOT NULL)")
    row_id, at = uuid.uuid4(), datetime.now(UTC)
    await db.execute(f"INSERT INTO {table} VALUES ($1, $2)", row_id, at)
    row = await db.fetchrow(f"SELECT id, at FROM {table}")
    assert row is not None
    assert (row["id"], row["at"]) == (row_id, at)
