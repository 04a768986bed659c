"""Reading what is really on a topic, and publishing events as another service would."""

import time
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker

from handoff_platform.settings import parse_bootstrap_servers
from handoff_schemas import Envelope, partition_key
from handoff_schemas.envelope import Payload


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    within: float = 30.0,
    connection: Mapping[str, Any] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on the topic now, from the beginning up to the end offsets;
    `connection`: aiokafka's security arguments (a SASL login), if the listener needs them."""
    servers = list(parse_bootstrap_servers(bootstrap_servers))
    connection = connection or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **connection)
    await admin.start()
    try:
        [description] = await admin.describe_topics([str(topic)])
    finally:
        await admin.close()
    partitions = [TopicPartition(str(topic), p["partition"]) for p in description["partitions"]]
    assert partitions, f"no partitions for {topic}: {description}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **connection,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + within
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {within} s")
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def send(
    broker: KafkaBroker,
    payload: Payload,
    event_id: UUID | None = None,
    source: str = "/handoff/tests",
) -> Envelope[Any]:
    """Publish an event as the service that owns it would; a given event id makes a duplicate."""
    envelope = Envelope.wrap(payload, source=source, correlation_id="tests", event_id=event_id)
    await broker.publish(
        envelope.model_dump_json().encode(),
        envelope.topic.value,
        key=partition_key(envelope.subject),
    )
    return envelope
