"""`handoff dev up --brokers 3` gives a replicated cluster for the fault tests, and a service
pointed at it by `handoff dev env` (all three brokers in KAFKA_BOOTSTRAP_SERVERS) works."""

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from handoff_devenv.ports import free_port_block, free_ports
from handoff_devenv.service_process import running_service
from handoff_platform.kafka import ensure_topics
from handoff_schemas import Topic, dead_letter_topic
from handoff_schemas.catalog import decode_event
from tests.integration.conftest import HANDOFF, create_database, handoff_command
from tests.support.follow_ups import FOLLOW_UP_ENV
from tests.support.kafka import read_topic
from tests.support.patients import SERVICE_LOGS, referral_body
from tests.support.processes import running
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
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
    exported = subprocess.run(
        [*HANDOFF, "dev", "env"], env=env, capture_output=True, text=True, timeout=60
    ).stdout
    try:
        [bootstrap] = [
            line.removeprefix("export KAFKA_BOOTSTRAP_SERVERS=")
            for line in exported.splitlines()
            if line.startswith("export KAFKA_BOOTSTRAP_SERVERS=")
        ]
        assert bootstrap == ",".join(f"127.0.0.1:{first_port + i}" for i in range(3))
        yield bootstrap
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


async def test_a_service_given_all_three_brokers_becomes_ready_and_publishes(
    three_broker_cluster: str, database_url: str
) -> None:
    database = await create_database(database_url)
    site = f"md-three-{uuid.uuid4().hex[:6]}"
    handoff_command(
        "referral", "site", "add", "--id", site, "--name", "Three Brokers Hospital",
        "--short-name", "Three ED", "--state", "MD", "--time-zone", "America/New_York",
        database_url=database,
    )  # fmt: skip
    key = handoff_command(
        "referral", "key", "create", "--site", site, "--label", "brokers", database_url=database
    ).strip()
    env = {
        **os.environ,
        **FOLLOW_UP_ENV,  # referral serves only with its follow-up keys
        "DATABASE_URL": database,
        "KAFKA_BOOTSTRAP_SERVERS": three_broker_cluster,
    }
    log = SERVICE_LOGS / f"referral-three-brokers-{uuid.uuid4().hex[:6]}.log"
    with running_service("referral", env, log) as url:  # returns once /readyz is 200
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            created = await client.post(
                "/v1/referrals",
                json=referral_body(f"three-{uuid.uuid4().hex[:8]}"),
                headers={"Authorization": f"Bearer {key}"},
            )
            assert created.status_code == 201, created.text
            referral_id = created.json()["id"]

            async def connected() -> bool:  # then the topics exist
                return "connected to Kafka" in log.read_text()

            await eventually(connected, within=30, what="the service connected to Kafka")

            async def published() -> bool:
                records = await read_topic(three_broker_cluster, Topic.REFERRALS)
                return any(str(decode_event(r.value).subject) == referral_id for r in records)

            await eventually(published, within=30, what="the referral's event on the topic")

            async def ready() -> bool:  # probed until a deadline, as an orchestrator does
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, within=30, what="/readyz 200", interval=0.5)


async def test_the_ops_commands_take_the_whole_list_spaces_and_all(
    three_broker_cluster: str,
) -> None:
    group = f"ops-three-{uuid.uuid4().hex[:6]}"
    spaced = ", ".join(three_broker_cluster.split(","))
    await ensure_topics(spaced, [dead_letter_topic(group)])
    producer = AIOKafkaProducer(bootstrap_servers=three_broker_cluster, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            dead_letter_topic(group),
            b"{}",
            key=b"referral-1",
            headers=[("x-original-topic", b"handoff.referrals")],
        )
    finally:
        await producer.stop()

    dry_run = handoff_command(
        "ops", "replay-dead-letters", "--group", group, "--dry-run", bootstrap_servers=spaced
    )
    assert f"would replay 1 from {dead_letter_topic(group)} to handoff.referrals" in dry_run

    port = free_ports(1)[0]
    exporter = [*HANDOFF, "ops", "lag-exporter", "--group", f"{group}={dead_letter_topic(group)}"]
    with running(
        [*exporter, "--port", str(port), "--interval", "0.5"],
        env={"KAFKA_BOOTSTRAP_SERVERS": spaced},
    ):

        async def lag_reported() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.HTTPError:
                return False
            return any(
                line.startswith("handoff_consumer_lag_messages{")
                and f'group="{group}"' in line
                and line.endswith(" 1.0")
                for line in text.splitlines()
            )

        await eventually(lag_reported, within=30, what="the dead letter counted as lag")
