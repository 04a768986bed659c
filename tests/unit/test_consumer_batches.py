"""How the consumer takes one fetch's batch apart (decision 0031): each partition's records
in order, partitions side by side, offsets recorded only for records handled, and a record
that could be neither handled nor dead-lettered fetched again rather than skipped.

`handle` (decode, transaction, dead letter) is replaced by a recorder here; the integration
tests run it against Kafka and PostgreSQL.
"""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import TopicPartition

from handoff_platform.consumer import IdempotentConsumer


class Consumer:
    """The two things the batch handling asks of aiokafka's consumer."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))


def record(partition: int, offset: int) -> Any:
    return SimpleNamespace(topic="handoff.dispatch", partition=partition, offset=offset)


def consumer_recording(
    handled: list[tuple[int, int]],
    *,
    in_flight: list[int] | None = None,
    failing: tuple[int, int] | None = None,
) -> IdempotentConsumer:
    consumer = IdempotentConsumer(
        group_id="handoff-batch-test",
        schema="unused",
        pool=cast(Any, None),
        broker=cast(Any, None),
        handlers={},
        workers=4,
    )

    running = 0

    async def handle(item: Any) -> None:
        nonlocal running
        if (item.partition, item.offset) == failing:
            raise ConnectionError("dead-letter topic unreachable")
        running += 1
        if in_flight is not None:
            in_flight.append(running)
        await asyncio.sleep(0.01)
        running -= 1
        handled.append((item.partition, item.offset))

    consumer.handle = handle  # type: ignore[method-assign,assignment]
    return consumer


async def test_each_partition_is_handled_in_order_and_partitions_side_by_side() -> None:
    handled: list[tuple[int, int]] = []
    kafka = Consumer()
    in_flight: list[int] = []
    consumer = consumer_recording(handled, in_flight=in_flight)
    batch = tuple(record(p, o) for o in range(10, 14) for p in range(6))

    await consumer.handle_batch(kafka, batch)

    for partition in range(6):
        assert [o for p, o in handled if p == partition] == [10, 11, 12, 13]
    # Side by side, but never more than `workers` (4) at once.
    assert max(in_flight) == 4
    assert consumer._handled[kafka] == {TopicPartition("handoff.dispatch", p): 14 for p in range(6)}
    assert kafka.seeks == []


async def test_a_record_neither_handled_nor_dead_lettered_is_fetched_again_not_skipped() -> None:
    handled: list[tuple[int, int]] = []
    kafka = Consumer()
    consumer = consumer_recording(handled, failing=(1, 21))
    batch = (record(0, 5), record(1, 20), record(1, 21), record(1, 22), record(0, 6))

    await consumer.handle_batch(kafka, batch)

    assert (1, 22) not in handled  # nothing after the failed record in its partition
    assert sorted(handled) == [(0, 5), (0, 6), (1, 20)]
    assert kafka.seeks == [(TopicPartition("handoff.dispatch", 1), 21)]
    # The failed record's offset is never committed past: partition 1 stops at 21.
    assert consumer._handled[kafka] == {
        TopicPartition("handoff.dispatch", 0): 7,
        TopicPartition("handoff.dispatch", 1): 21,
    }
