"""The lag reader through a Kafka outage (issue 13, fresh13 findings 1, 4 and 6).

`handoff ops lag-exporter` exited two seconds after two brokers of three were killed: closing
the clients after a failed sample, aiokafka's `stop()` raised the `CancelledError` of its own
fetcher task, which went through `contextlib.suppress(Exception)` and ended the process. The
aiokafka clients are faked here at the class the sampler builds, because what matters is
what they raise while the brokers go away (the traceback of the finding), which a real
cluster produces only by chance; the one test about a client that failed to start uses real
aiokafka against a port where nothing listens.
"""

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError
from prometheus_client import REGISTRY, generate_latest

from handoff_devenv.ports import free_ports
from handoff_platform import lag
from handoff_platform.lag import LagSampler, export_lag_forever, exporter_registry
from tests.support.waiting import eventually

TOPIC = "handoff.lag-outage"


class FakeCluster:
    """What the fake clients see: whether the brokers answer, the end offset of partition 0,
    and whether the next sample leaks a cancellation from inside aiokafka."""

    def __init__(self) -> None:
        self.up = True
        self.end = 3
        self.leak_in_sample = False
        self.consumers: list[FakeConsumer] = []
        self.failed_starts = 0

    def check(self) -> None:
        if not self.up:
            raise NodeNotReadyError("brokers away")


class FakeAdmin:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    async def start(self) -> None:
        if not self.cluster.up:
            self.cluster.failed_starts += 1
            raise KafkaConnectionError("Unable to bootstrap")

    async def close(self) -> None:
        pass

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.cluster.check()
        return [{"topic": t, "partitions": [{"partition": 0}]} for t in topics]

    async def list_consumer_group_offsets(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, Any]:
        self.cluster.check()
        return {}


class FakeConsumer:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.closed = False
        cluster.consumers.append(self)

    async def start(self) -> None:
        self.cluster.check()

    async def stop(self) -> None:
        self.closed = True
        if not self.cluster.up:
            # aiokafka 0.14: the fetcher task it cancels raises into the caller (the finding)
            raise asyncio.CancelledError

    def assign(self, partitions: list[TopicPartition]) -> None:
        pass

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.cluster.check()
        if self.cluster.leak_in_sample:
            self.cluster.leak_in_sample = False
            raise asyncio.CancelledError  # not a cancellation of the sampler's task
        return {tp: self.cluster.end for tp in partitions}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(lag, "AIOKafkaAdminClient", lambda **_: FakeAdmin(fake))
    monkeypatch.setattr(lag, "AIOKafkaConsumer", lambda **_: FakeConsumer(fake))
    return fake


def lag_of(group: str) -> float | None:
    labels = {"group": group, "topic": TOPIC, "partition": "0"}
    return REGISTRY.get_sample_value("handoff_consumer_lag_messages", labels)


def restarts(error: str) -> float:
    labels = {"loop": "consumer-lag", "error": error}
    return REGISTRY.get_sample_value("handoff_loop_restarts_total", labels) or 0.0


async def test_the_exporter_survives_losing_the_brokers_and_reports_when_they_return(
    cluster: FakeCluster,
) -> None:
    group = "handoff-lag-outage-1"
    exporter = asyncio.create_task(
        export_lag_forever(LagSampler("127.0.0.1:1", {group: [TOPIC]}), interval=0.05)
    )
    try:

        async def lag_is(value: int) -> bool:
            assert not exporter.done(), "the exporter ended"
            return lag_of(group) == value

        await eventually(lambda: lag_is(3), within=30, what="the lag before the outage")
        cluster.up = False

        async def retried_while_down() -> bool:
            assert not exporter.done(), "the exporter ended during the outage"
            return cluster.failed_starts >= 3

        await eventually(retried_while_down, within=30, what="samples retried during the outage")
        cluster.up, cluster.end = True, 7
        await eventually(lambda: lag_is(7), within=30, what="the lag after the brokers returned")
    finally:
        exporter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(exporter, 30)
    assert all(consumer.closed for consumer in cluster.consumers)  # every one, started or not


async def test_a_cancellation_leaked_by_aiokafka_restarts_the_loop_and_is_counted(
    cluster: FakeCluster,
) -> None:
    group = "handoff-lag-outage-2"
    before = restarts("CancelledError")
    exporter = asyncio.create_task(
        export_lag_forever(LagSampler("127.0.0.1:1", {group: [TOPIC]}), interval=0.05)
    )
    try:
        cluster.leak_in_sample = True

        async def restarted() -> bool:
            assert not exporter.done(), "the exporter ended"
            return restarts("CancelledError") > before

        await eventually(restarted, within=30, what="a counted restart")
        cluster.end = 11

        async def reports_again() -> bool:
            return lag_of(group) == 11

        await eventually(reports_again, within=30, what="the lag after the restart")
    finally:
        exporter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(exporter, 30)


async def test_a_sample_against_a_dead_cluster_leaves_no_unclosed_consumer() -> None:
    (port,) = free_ports(1)
    sampler = LagSampler(f"127.0.0.1:{port}", {"handoff-lag-outage-3": [TOPIC]})
    complaints: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: complaints.append(str(context["message"])))
    try:
        for _ in range(2):
            with pytest.raises(KafkaConnectionError):
                await sampler.sample()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not [c for c in complaints if "Unclosed" in c]


def test_the_exporter_serves_lag_and_loop_health_but_no_outbox_metrics() -> None:
    text = generate_latest(exporter_registry()).decode()
    assert "handoff_consumer_lag_messages" in text
    assert "handoff_loop_restarts_total" in text
    assert "process_" in text or "python_info" in text
    assert "handoff_outbox" not in text
