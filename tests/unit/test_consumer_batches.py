"""How the consumer takes one fetch's batch apart (decision 0031): each partition's records
in order, partitions side by side, offsets recorded only for records handled, and a record
that could be neither handled nor dead-lettered fetched again rather than skipped.

`handle` (decode, transaction, dead letter) is replaced by a recorder here; the integration
tests run it against Kafka and PostgreSQL.
"""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from handoff_platform.consumer import HELD_LIMIT_SECONDS, IdempotentConsumer


class Consumer:
    """The two things the batch handling asks of aiokafka's consumer."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.assigned = {TopicPartition("handoff.dispatch", p) for p in range(6)}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    def assignment(self) -> set[TopicPartition]:
        return self.assigned


def record(partition: int, offset: int) -> Any:
    return SimpleNamespace(
        topic="handoff.dispatch",
        partition=partition,
        offset=offset,
        key=b"k",
        value=b"{}",
        headers=[("ce_type", None), ("x-from", b"\xff")],
    )


class DeadLetters:
    """The broker, as far as dead-lettering goes: takes records, or cannot be reached."""

    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable
        self.published: list[tuple[str, dict[str, str]]] = []

    async def publish(self, _value: bytes, topic: str, **options: Any) -> None:
        if not self.reachable:
            raise KafkaConnectionError("no broker")
        self.published.append((topic, options["headers"]))


def consumer_recording(
    handled: list[tuple[int, int]],
    *,
    in_flight: list[int] | None = None,
    failing: tuple[int, int] | None = None,
    dead_letters: DeadLetters | None = None,
) -> IdempotentConsumer:
    consumer = IdempotentConsumer(
        group_id="handoff-batch-test",
        schema="unused",
        pool=cast(Any, None),
        broker=cast(Any, dead_letters or DeadLetters(reachable=False)),
        handlers={},
        workers=4,
    )

    running = 0

    async def handle(item: Any) -> None:
        nonlocal running
        if (item.partition, item.offset) == failing:
            raise KeyError("a bug met by this record alone")
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


async def test_a_record_handling_fails_on_outside_any_handler_is_dead_lettered_and_passed() -> None:
    handled: list[tuple[int, int]] = []
    kafka = Consumer()
    dead_letters = DeadLetters(reachable=True)
    consumer = consumer_recording(handled, failing=(1, 21), dead_letters=dead_letters)
    batch = (record(1, 20), record(1, 21), record(1, 22))

    await consumer.handle_batch(kafka, batch)

    assert handled == [(1, 20), (1, 22)]
    assert kafka.seeks == []
    [(topic, headers)] = dead_letters.published
    assert topic == "handoff-batch-test.dlq"
    assert headers["x-dead-letter-reason"] == "unhandled"
    assert headers["x-dead-letter-detail"] == "KeyError"
    assert headers["x-original-offset"] == "21"
    assert headers["ce_type"] == ""  # a header without a value, kept as empty
    assert consumer._handled[kafka] == {TopicPartition("handoff.dispatch", 1): 23}


async def test_a_partition_held_at_one_record_backs_off_and_fails_liveness_only_after_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Helper's finding (issue 17): after a broker restart every dead letter failed
    (OutOfOrderSequenceNumber) and the partition was fetched again in a spin, 160,000 times
    in 3.5 minutes, while /healthz said all was well."""
    handled: list[tuple[int, int]] = []
    kafka = Consumer()
    consumer = consumer_recording(handled, failing=(1, 21))
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", pause)
    for _ in range(8):
        await consumer.handle_batch(kafka, (record(1, 21),))

    assert len(kafka.seeks) == 8
    assert pauses[0] <= 0.1  # the first try again is soon ...
    assert pauses[-1] >= 0.5 * consumer.max_backoff  # ... the eighth waits up to the cap
    assert max(pauses) <= consumer.max_backoff
    assert consumer.moving()  # held, but not for long yet

    held = TopicPartition("handoff.dispatch", 1)
    since, tries, holder = consumer._held[held]
    consumer._held[held] = (since - HELD_LIMIT_SECONDS, tries, holder)  # as if held that long
    assert not consumer.moving()

    kafka.assigned.discard(held)  # a rebalance gave it to another replica: not ours to move
    assert consumer.moving()
    kafka.assigned.add(held)
    assert not consumer.moving()

    consumer._done(kafka, record(1, 21))  # the record went through at last
    assert consumer.moving()
