"""`handoff dev up --brokers 3` gives a replicated cluster for the fault tests."""

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from handoff_devenv.ports import free_port_block
from tests.integration.conftest import HANDOFF
from tests.support.waiting import eventually


@pytest.fixture
def three_broker_cluster(database_url: str) -> Iterator[str]:
    state_dir = Path(tempfile.mkdtemp(prefix="handoff-dev-3-"))
    first_port = free_port_block(3)
    env = {**os.environ, "HANDOFF_DEV_DIR": str(state_dir), "DATABASE_URL": database_url}
    up = subprocess.run(
        [*HANDOFF, "dev", "up", "--brokers", "3", "--kafka-port", str(first_port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield ",".join(f"127.0.0.1:{first_port + i}" for i in range(3))
    finally:
        down = subprocess.run(
            [*HANDOFF, "dev", "down"], env=env, capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stdout + down.stderr


async def test_topic_with_replication_factor_3_has_three_in_sync_replicas(
    three_broker_cluster: str,
) -> None:
    topic = f"replicated.{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=three_broker_cluster)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        assert len(cluster["brokers"]) == 3
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])

        async def all_partitions_known() -> list[dict[str, Any]] | None:
            [description] = await admin.describe_topics([topic])
            partitions: list[dict[str, Any]] = description["partitions"]
            return partitions if len(partitions) == 3 else None

        # A new topic's metadata reaches every broker a moment after creation.
        partitions = await eventually(
            all_partitions_known, within=30, what="the new topic's three partitions"
        )
        for partition in partitions:
            assert sorted(partition["replicas"]) == [1, 2, 3]
            assert sorted(partition["isr"]) == [1, 2, 3]
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
        min_isr = _config_value(configs, "min.insync.replicas")
        assert min_isr == "2"
    finally:
        await admin.close()


def _config_value(responses: list[object], name: str) -> str:
    for response in responses:
        for resource in response.resources:  # type: ignore[attr-defined]
            for entry in resource[4]:
                if entry[0] == name:
                    return str(entry[1])
    raise AssertionError(f"{name} not in the broker's configuration")
