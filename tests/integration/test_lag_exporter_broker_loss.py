"""`handoff ops lag-exporter` rides out its Kafka being killed (issue 13, fresh13 finding 1).

The exporter exited two seconds after its brokers were `kill -9`'d: aiokafka raised a
`CancelledError` of its own while the sampler closed its clients, and nothing restarted it.
Here its own broker is SIGKILLed under it and started again on the same storage; the exporter
must keep serving `/metrics`, report the lag again afterwards, and never leave an aiokafka
consumer unclosed (`Unclosed AIOKafkaConsumer` every 5 s at ERROR, finding 4).
"""

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from handoff_devenv import KafkaCluster
from handoff_devenv.ports import free_ports
from handoff_devenv.processes import is_running
from handoff_platform.kafka import ensure_topics
from tests.integration.conftest import HANDOFF
from tests.support.waiting import eventually


async def _produce(bootstrap_servers: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for number in range(count):
            await producer.send_and_wait(topic, str(number).encode(), key=b"k")
    finally:
        await producer.stop()


def _start_exporter(
    servers: str, group_spec: str, port: int, stderr_path: Path
) -> "subprocess.Popen[bytes]":
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            [*HANDOFF, "ops", "lag-exporter", "--group", group_spec,
             "--port", str(port), "--interval", "0.5"],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip


async def test_the_lag_exporter_survives_its_broker_killed_and_reports_after_it_returns(
    own_kafka: KafkaCluster, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"lag-loss-{suffix}", f"lag-loss-group-{suffix}"
    servers = own_kafka.bootstrap_servers
    await ensure_topics(servers, [topic], partitions=1)
    await _produce(servers, topic, 2)

    port = free_ports(1)[0]
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    stderr_path = tmp_path / "exporter.stderr"
    exporter = _start_exporter(servers, f"{group}={topic}", port, stderr_path)

    async def metrics() -> str | None:
        assert exporter.poll() is None, f"the exporter exited: {stderr_path.read_text()[-2000:]}"
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(metrics_url)).text
        except httpx.HTTPError:
            return None

    async def lag_is(expected: int) -> bool:
        text = await metrics() or ""
        labels = f'group="{group}",partition="0",topic="{topic}"'
        return f"handoff_consumer_lag_messages{{{labels}}} {expected}.0" in text

    try:
        await eventually(lambda: lag_is(2), within=60, what="lag 2 before the broker is killed")

        pids = own_kafka.pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

        async def gone() -> bool:
            return not any(is_running(pid) for pid in pids)

        await eventually(gone, within=30, what="the broker gone")

        async def failing_to_reconnect() -> bool:
            # aiokafka logs each refused connection; three: the sampler went round again
            refused = stderr_path.read_text().count("Unable connect to")
            return refused >= 3 and bool(await metrics())

        await eventually(failing_to_reconnect, within=60, what="samples failing, /metrics served")

        await asyncio.to_thread(own_kafka.stop)  # clears the killed broker's pid files
        await asyncio.to_thread(own_kafka.start, 240.0, False)
        await _produce(servers, topic, 3)
        await eventually(lambda: lag_is(5), within=90, what="lag 5 after the broker returned")
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
    assert "Unclosed AIOKafkaConsumer" not in stderr_path.read_text()
