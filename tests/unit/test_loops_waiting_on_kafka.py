"""A loop waiting on Kafka through an outage is late for /readyz, never stuck for /healthz.

fresh13 finding 5 (issue 13): with 2 brokers of 3 dead, matching's `offset-commits` loop sat in
aiokafka's commit, which waits for a group coordinator as long as the cluster has none; after
the stuck limit `/healthz` went 503 and an orchestrator would have restarted matching for an
outage a restart cannot cure. The consumer is faked at aiokafka's `commit`, which is all the
commit loop calls: it blocks until "Kafka" is back, as aiokafka's does.
"""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import httpx
from aiokafka import TopicPartition
from fastapi import FastAPI
from prometheus_client import REGISTRY

from handoff_platform.consumer import IdempotentConsumer
from handoff_platform.http import service_app
from handoff_platform.supervision import BackgroundTasks, beat, waiting_on_dependency
from tests.support.waiting import eventually

STUCK_SECONDS = 0.4


def supervisor() -> BackgroundTasks:
    return BackgroundTasks(
        initial_backoff=0.02, max_backoff=0.05, stuck_factor=2.0, min_stuck_seconds=STUCK_SECONDS
    )


def health_app(tasks: BackgroundTasks) -> FastAPI:
    return service_app("waiting", {"loops": tasks.cycling}, liveness_checks={"loops": tasks.alive})


async def status_of(app: FastAPI, path: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return (await client.get(path)).status_code


async def silent_past_the_stuck_limit(loop: str) -> bool:
    age = REGISTRY.get_sample_value("handoff_loop_last_cycle_age_seconds", {"loop": loop})
    return age is not None and age > 2 * STUCK_SECONDS


async def test_a_loop_waiting_on_a_dependency_is_late_but_never_stuck() -> None:
    tasks = supervisor()
    kafka_back = asyncio.Event()

    async def waits_for_kafka() -> None:
        while True:
            with waiting_on_dependency():
                await kafka_back.wait()
            beat()
            await asyncio.sleep(0.01)

    tasks.start("waits-for-kafka", waits_for_kafka, expected_interval=0.1)
    app = health_app(tasks)
    try:
        await eventually(
            lambda: silent_past_the_stuck_limit("waits-for-kafka"),
            within=30,
            what="the loop silent past its stuck limit",
        )
        assert await status_of(app, "/readyz") == 503
        assert await status_of(app, "/healthz") == 200
        kafka_back.set()

        async def ready() -> bool:
            return await status_of(app, "/readyz") == 200

        await eventually(ready, within=30, what="/readyz 200 once Kafka is back")
    finally:
        await tasks.stop()


async def test_a_loop_that_hangs_outside_such_a_wait_is_still_stuck() -> None:
    tasks = supervisor()

    async def hangs() -> None:
        with waiting_on_dependency():
            pass  # waited, and came back
        await asyncio.Event().wait()  # then hangs on something else: a bug

    tasks.start("hangs-after-waiting", hangs, expected_interval=0.1)
    app = health_app(tasks)
    try:

        async def unhealthy() -> bool:
            return await status_of(app, "/healthz") == 503

        await eventually(unhealthy, within=30, what="/healthz 503 for a hanging loop")
    finally:
        await tasks.stop()


class CoordinatorlessConsumer:
    """aiokafka's consumer as its commit behaves while the cluster has no group coordinator:
    it waits until there is one, then commits."""

    def __init__(self) -> None:
        self.kafka_back = asyncio.Event()
        self.committed: dict[TopicPartition, int] = {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.kafka_back.wait()
        self.committed.update(offsets)


def handled_record(offset: int) -> Any:
    return SimpleNamespace(topic="handoff.referrals", partition=2, offset=offset)


async def test_offset_commits_waiting_for_a_coordinator_keep_healthz_200() -> None:
    kafka = CoordinatorlessConsumer()
    commits = IdempotentConsumer(
        group_id="handoff-waiting-test",
        schema="unused",
        pool=cast(Any, None),  # no message is handled here: only the commit loop runs
        broker=cast(Any, None),
        handlers={},
    )
    tasks = supervisor()
    tasks.start("offset-commits", lambda: commits.commit_forever(every=0.01, idle_beat=0.02), 0.1)
    app = health_app(tasks)
    try:
        commits._done(kafka, handled_record(41))
        await eventually(
            lambda: silent_past_the_stuck_limit("offset-commits"),
            within=30,
            what="the commit loop silent past its stuck limit",
        )
        assert await status_of(app, "/readyz") == 503  # it cannot commit: late
        assert await status_of(app, "/healthz") == 200  # but an outage, not a hang
        kafka.kafka_back.set()

        async def committed_and_ready() -> bool:
            done = kafka.committed == {TopicPartition("handoff.referrals", 2): 42}
            return done and await status_of(app, "/readyz") == 200

        await eventually(committed_and_ready, within=30, what="the commit once Kafka is back")
    finally:
        await tasks.stop()
