"""The outbox relay under stress: Kafka away, two replicas relaying at once, and a batch that
Kafka takes only in part.

These tests run their own broker, so they can stop it, and their own databases.
"""

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from handoff_devenv import KafkaCluster
from handoff_referral.app import ReferralRuntime
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import ReferralCancelled, ReferralCreated
from tests.integration.conftest import (
    create_database,
    outbox_empty,
    register_site,
    start_referral,
)
from tests.support.kafka import read_topic
from tests.support.patients import referral_body
from tests.support.waiting import eventually


async def _running(runtime: ReferralRuntime) -> bool:
    return runtime.kafka_connected.is_set()


@pytest.fixture
async def replicas(
    database_url: str, own_kafka: KafkaCluster
) -> AsyncIterator[list[ReferralRuntime]]:
    database = await create_database(database_url)
    runtimes = [await start_referral(database, own_kafka.bootstrap_servers) for _ in range(2)]
    for runtime in runtimes:
        await eventually(partial(_running, runtime), within=60, what="replica on Kafka")
    try:
        yield runtimes
    finally:
        for runtime in runtimes:
            await runtime.stop()


def _client(runtime: ReferralRuntime, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=runtime.app),
        base_url="http://referral",
        headers={"Authorization": f"Bearer {token}"},
    )


async def _post_referrals(client: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await client.post(
            "/v1/referrals", json=referral_body(f"ED-{uuid.uuid4().hex[:10]}")
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def _events_by_referral(bootstrap: str, ids: list[str]) -> dict[str, list[object]]:
    wanted = set(ids)
    events: dict[str, list[object]] = defaultdict(list)
    for record in await read_topic(bootstrap, Topic.REFERRALS):
        envelope = decode_event(record.value)
        if str(envelope.subject) in wanted:
            events[str(envelope.subject)].append(envelope)
    return events


async def test_two_replicas_relay_every_event_once_and_in_order_per_referral(
    replicas: list[ReferralRuntime], own_kafka: KafkaCluster
) -> None:
    first, second = replicas
    _, _, token = await register_site(first)
    async with _client(first, token) as via_first, _client(second, token) as via_second:
        batches = await asyncio.gather(
            _post_referrals(via_first, 40), _post_referrals(via_second, 40)
        )
        ids = batches[0] + batches[1]
        # Cancel half of them through the other replica: Created must still come first.
        cancelled = ids[::2]
        for index, referral_id in enumerate(cancelled):
            client = via_second if index % 2 else via_first
            response = await client.post(
                f"/v1/referrals/{referral_id}/cancel", json={"reason": "patient_left"}
            )
            assert response.status_code == 200

    await eventually(lambda: outbox_empty(first), within=60, what="the outbox to drain")
    events = await _events_by_referral(own_kafka.bootstrap_servers, ids)

    all_event_ids = [e.id for envelopes in events.values() for e in envelopes]  # type: ignore[attr-defined]
    assert len(all_event_ids) == len(set(all_event_ids)) == len(ids) + len(cancelled)
    for referral_id in ids:
        kinds = [type(e.data) for e in events[referral_id]]  # type: ignore[attr-defined]
        expected = (
            [ReferralCreated, ReferralCancelled] if referral_id in cancelled else [ReferralCreated]
        )
        assert kinds == expected, referral_id
    leaders = Counter(runtime.relay.is_leader for runtime in replicas)
    assert leaders == Counter({True: 1, False: 1})


async def readiness(client: httpx.AsyncClient) -> tuple[int, dict[str, bool]]:
    """/readyz's status, and its checks but `loops` (the relay's own lateness is not asked)."""
    response = await client.get("/readyz")
    checks = {k: v for k, v in response.json()["checks"].items() if k != "loops"}
    return response.status_code, checks


async def test_referrals_posted_while_kafka_is_down_are_accepted_and_arrive_once_after(
    database_url: str, own_kafka: KafkaCluster
) -> None:
    database = await create_database(database_url)
    runtime = await start_referral(database, own_kafka.bootstrap_servers)
    try:
        await eventually(lambda: _running(runtime), within=60, what="the service on Kafka")
        _, _, token = await register_site(runtime)
        async with _client(runtime, token) as client:
            before = await _post_referrals(client, 3)
            await eventually(lambda: outbox_empty(runtime), within=30, what="outbox drained")

            await asyncio.to_thread(own_kafka.stop)
            # Not ready with Kafka away, its outbox empty (an empty outbox used to count as
            # young, so an idle service stayed ready against a dead cluster: issue 13) ...
            assert await readiness(client) == (503, {"database": True, "kafka": False})
            during = await _post_referrals(client, 20)  # ... and still taking referrals in
            assert (await readiness(client))[0] == 503

            async def backlog_reported() -> bool:
                metrics = (await client.get("/metrics")).text
                return "handoff_outbox_pending_events 20.0" in metrics

            await eventually(backlog_reported, within=30, what="the backlog in /metrics")
            assert not await outbox_empty(runtime)
            metrics = (await client.get("/metrics")).text
            failures = next(
                line
                for line in metrics.splitlines()
                if line.startswith("handoff_outbox_publish_failures_total ")
            )
            assert float(failures.split()[1]) >= 1

            # A broker's start takes seconds, minutes on a loaded two-core machine.
            await asyncio.to_thread(own_kafka.start, 240.0, False)
            await eventually(
                lambda: outbox_empty(runtime),
                within=90,
                what="the outbox to drain after Kafka returned",
            )

            async def ready_again() -> bool:
                return (await readiness(client))[0] == 200

            await eventually(ready_again, within=60, what="/readyz 200 after Kafka returned")

        events = await _events_by_referral(own_kafka.bootstrap_servers, before + during)
        for referral_id in before + during:
            assert len(events[referral_id]) == 1, referral_id
    finally:
        await runtime.stop()


async def test_a_record_kafka_refuses_is_published_again_alone(
    database_url: str, own_kafka: KafkaCluster
) -> None:
    """One batch, three records: Kafka acknowledges two and refuses the third (too large for
    its topic). The two are deleted from the outbox and are on their topic once, however
    often the third is retried."""
    suffix = uuid.uuid4().hex[:8]
    accepting, strict = f"outbox-accepting-{suffix}", f"outbox-strict-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=own_kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(accepting, num_partitions=1, replication_factor=1),
                NewTopic(
                    strict,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"max.message.bytes": "2000"},
                ),
            ]
        )
    finally:
        await admin.close()
    database = await create_database(database_url)
    runtime = await start_referral(database, own_kafka.bootstrap_servers)
    try:
        await eventually(lambda: _leading(runtime), within=60, what="the relay leading")
        first, refused, last = (uuid.uuid4() for _ in range(3))
        rows = [
            (first, accepting, f'{{"id": "{first}"}}'),
            (refused, strict, f'{{"id": "{refused}", "padding": "{"x" * 10_000}"}}'),
            (last, accepting, f'{{"id": "{last}"}}'),
        ]
        failures_before = _publish_failures()
        async with runtime.pipeline.outbox.transaction(runtime.pool) as connection:
            await connection.executemany(
                """INSERT INTO referral.outbox
                       (event_id, topic, partition_key, event_type, correlation_id, body)
                   VALUES ($1, $2, $3, 'test.outbox', 'tests', $4)""",
                [(event_id, topic, event_id.bytes, body) for event_id, topic, body in rows],
            )

        async def retried_twice() -> bool:
            return _publish_failures() >= failures_before + 2

        await eventually(retried_twice, within=30, what="the refused record retried twice")
        async with runtime.pool.acquire() as connection:
            left = await connection.fetch("SELECT event_id FROM referral.outbox")
            await connection.execute("DELETE FROM referral.outbox")  # stop the retries
        assert [row["event_id"] for row in left] == [refused]
        on_topic = Counter(
            record.value for record in await read_topic(own_kafka.bootstrap_servers, accepting)
        )
        assert on_topic == Counter({rows[0][2].encode(): 1, rows[2][2].encode(): 1})
    finally:
        await runtime.stop()


async def test_events_committed_together_go_to_kafka_in_one_batch(
    database_url: str, own_kafka: KafkaCluster
) -> None:
    """What `handoff_outbox_batches_total` counts: five events committed at once are read,
    published and deleted as one batch (an SRE divides published events by it)."""
    topic = f"outbox-batch-{uuid.uuid4().hex[:8]}"
    database = await create_database(database_url)
    runtime = await start_referral(database, own_kafka.bootstrap_servers)
    try:
        await eventually(lambda: _leading(runtime), within=60, what="the relay leading")
        await eventually(lambda: outbox_empty(runtime), within=30, what="the outbox empty")
        batches, published = _sample("handoff_outbox_batches_total"), _published(topic)
        event_ids = [uuid.uuid4() for _ in range(5)]
        async with runtime.pipeline.outbox.transaction(runtime.pool) as connection:
            await connection.executemany(
                """INSERT INTO referral.outbox
                       (event_id, topic, partition_key, event_type, correlation_id, body)
                   VALUES ($1, $2, $3, 'test.outbox', 'tests', '{}')""",
                [(event_id, topic, event_id.bytes) for event_id in event_ids],
            )
        await eventually(lambda: outbox_empty(runtime), within=30, what="the five published")
        assert _published(topic) - published == 5
        assert _sample("handoff_outbox_batches_total") - batches == 1
    finally:
        await runtime.stop()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _published(topic: str) -> float:
    return _sample("handoff_outbox_published_events_total", topic=topic)


async def _leading(runtime: ReferralRuntime) -> bool:
    return runtime.kafka_connected.is_set() and runtime.relay.is_leader


def _publish_failures() -> float:
    return _sample("handoff_outbox_publish_failures_total")
