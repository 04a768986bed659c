"""What the runbooks ask an SRE to run, against a real broker: the consumer-lag exporter and
the dead-letter replay."""

import uuid
from collections.abc import Iterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from handoff_devenv.ports import free_ports
from handoff_platform.kafka import ensure_topics
from handoff_schemas import dead_letter_topic
from tests.integration.conftest import HANDOFF, handoff_command
from tests.support.kafka import read_topic
from tests.support.processes import running
from tests.support.waiting import eventually


@pytest.fixture
def topic_and_group(kafka_topics: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"ops-test-{suffix}", f"ops-group-{suffix}"


@pytest.fixture
def lag_exporter(kafka_topics: str, topic_and_group: tuple[str, str]) -> Iterator[str]:
    topic, group = topic_and_group
    port = free_ports(1)[0]
    with running(
        [*HANDOFF, "ops", "lag-exporter", "--group", f"{group}={topic}",
         "--port", str(port), "--interval", "0.5"],
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_topics},
    ):  # fmt: skip
        yield f"http://127.0.0.1:{port}/metrics"


async def test_lag_rises_while_the_consumer_is_stopped_and_drains_when_it_resumes(
    kafka_topics: str, topic_and_group: tuple[str, str], lag_exporter: str
) -> None:
    topic, group = topic_and_group
    await ensure_topics(kafka_topics, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_topics, acks="all")
    await producer.start()

    async def lag_is(expected: int) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                text = (await client.get(lag_exporter)).text
        except httpx.HTTPError:
            return False
        lags = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("handoff_consumer_lag_messages{")
            and f'group="{group}"' in line
            and f'topic="{topic}"' in line
        ]
        return bool(lags) and sum(lags) == expected

    try:
        for number in range(5):
            await producer.send_and_wait(topic, str(number).encode(), key=b"k")
        await eventually(lambda: lag_is(5), within=30, what="lag 5 with no consumer running")
        for number in range(5, 12):
            await producer.send_and_wait(topic, str(number).encode(), key=b"k")
        await eventually(lambda: lag_is(12), within=30, what="lag rising to 12")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_topics,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumed = 0
        while consumed < 12:
            batches = await consumer.getmany(timeout_ms=1000)
            consumed += sum(len(records) for records in batches.values())
        await consumer.commit()
        await eventually(lambda: lag_is(0), within=30, what="lag back to 0")
    finally:
        await consumer.stop()


async def test_dead_letters_go_back_to_their_topic_once(
    kafka_topics: str, topic_and_group: tuple[str, str]
) -> None:
    original, group = topic_and_group
    dead_letters = dead_letter_topic(group)
    await ensure_topics(kafka_topics, [original, dead_letters])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_topics, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            dead_letters,
            b'{"an": "event"}',
            key=b"referral-1",
            headers=[
                ("x-correlation-id", b"c-1"),
                ("x-dead-letter-reason", b"handler_error"),
                ("x-original-topic", original.encode()),
                ("x-original-offset", b"7"),
                ("x-consumer-group", group.encode()),
            ],
        )
    finally:
        await producer.stop()

    dry = handoff_command(
        "ops", "replay-dead-letters", "--group", group, "--dry-run", bootstrap_servers=kafka_topics
    )
    assert f"would replay 1 from {dead_letters} to {original}" in dry
    assert await read_topic(kafka_topics, original) == []

    replayed = handoff_command(
        "ops", "replay-dead-letters", "--group", group, bootstrap_servers=kafka_topics
    )
    again = handoff_command(
        "ops", "replay-dead-letters", "--group", group, bootstrap_servers=kafka_topics
    )

    assert f"replayed 1 from {dead_letters} to {original}" in replayed
    assert f"nothing to replay in {dead_letters}" in again
    [record] = await read_topic(kafka_topics, original)
    assert (record.key, record.value) == (b"referral-1", b'{"an": "event"}')
    headers = dict(record.headers)
    assert headers["x-correlation-id"] == b"c-1"
    assert headers["x-replayed-from"].startswith(dead_letters.encode())
    assert not [k for k in headers if k.startswith(("x-dead-letter", "x-original"))]
