"""Replaying a consumer group's dead-letter topic, once the cause is fixed.

Each message goes back to the topic it came from (header `x-original-topic`), with
its key and its own headers, so the consumer sees the same event id: anything
already handled is skipped as a duplicate. Progress is the committed offsets of the
consumer group `<group>.dlq-replay`, so a second replay sends only what was
dead-lettered since the first.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faststream.security import BaseSecurity

from handoff_platform.kafka import client_options
from handoff_platform.settings import parse_bootstrap_servers
from handoff_schemas import dead_letter_topic

DEAD_LETTER_HEADERS = ("x-dead-letter-", "x-original-", "x-consumer-group")


@dataclass
class ReplaySummary:
    dead_letter_topic: str
    replayed: dict[str, int] = field(default_factory=dict)  # by original topic
    unroutable: int = 0  # no original topic in the headers: left where they are


async def replay_dead_letters(
    bootstrap_servers: str | Iterable[str],
    group_id: str,
    *,
    dry_run: bool = False,
    security: BaseSecurity | None = None,
) -> ReplaySummary:
    """Send `group_id`'s dead letters back to their topics (counted only, if `dry_run`);
    ValueError for a malformed `bootstrap_servers` list, KafkaError if Kafka is away.
    `security`: TLS and SASL (`KafkaSettings.kafka_security`), None for plaintext."""
    servers = list(parse_bootstrap_servers(bootstrap_servers))
    connection = client_options(security)
    topic = dead_letter_topic(group_id)
    summary = ReplaySummary(topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **connection)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    if not partitions:
        return summary
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=f"{group_id}.dlq-replay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **connection,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, acks="all", enable_idempotence=True, **connection
    )
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        while [p for p in partitions if await consumer.position(p) < end[p]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    if record.offset >= end[TopicPartition(record.topic, record.partition)]:
                        continue  # dead-lettered after the replay began: next time
                    headers = dict(record.headers or ())
                    original = headers.get("x-original-topic", b"").decode()
                    if not original:
                        summary.unroutable += 1
                        continue
                    summary.replayed[original] = summary.replayed.get(original, 0) + 1
                    if dry_run:
                        continue
                    kept = [
                        (k, v)
                        for k, v in record.headers or ()
                        if not k.startswith(DEAD_LETTER_HEADERS)
                    ]
                    kept.append(
                        ("x-replayed-from", f"{topic}:{record.partition}:{record.offset}".encode())
                    )
                    await producer.send(original, record.value, key=record.key, headers=kept)
        await producer.flush()
        if not dry_run:
            await consumer.commit({p: end[p] for p in partitions})
    finally:
        await producer.stop()
        await consumer.stop()
    return summary
