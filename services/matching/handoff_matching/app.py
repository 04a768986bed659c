"""Composition root: the matching service's consumers, outbox relay, timers and HTTP surface."""

import asyncio
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from pydantic import SecretStr

from handoff_matching import CONSUMER_GROUP, SCHEMA
from handoff_matching.adapters.roster_store import apply_migrations
from handoff_matching.domain.dispatch import TimerKind
from handoff_matching.entrypoints.admin import build_admin_router
from handoff_matching.entrypoints.consumers import dispatch_handlers
from handoff_matching.service import (
    MatchingService,
    report_coverage_forever,
    report_waiting_referrals_forever,
)
from handoff_platform.consumer import IdempotentConsumer
from handoff_platform.database import create_pool
from handoff_platform.http import RequestContext, install_error_handlers, operations_router
from handoff_platform.kafka import make_broker
from handoff_platform.outbox import Outbox, OutboxRelay
from handoff_platform.runtime import (
    BackgroundTasks,
    readiness_checks,
    start_event_pipeline,
    stop_broker,
)
from handoff_platform.settings import PlatformSettings
from handoff_platform.timers import TimerLoop, Timers
from handoff_schemas import Topic


class MatchingSettings(PlatformSettings):
    consumer_group: str = CONSUMER_GROUP
    database_pool_size: int = 10
    matching_admin_token: SecretStr | None = None
    coverage_interval_seconds: float = 60.0


@dataclass
class MatchingRuntime:
    pool: asyncpg.Pool
    broker: KafkaBroker
    app: FastAPI
    kafka_connected: asyncio.Event
    tasks: BackgroundTasks

    @classmethod
    async def start(cls, settings: MatchingSettings) -> "MatchingRuntime":
        await apply_migrations(settings.database_url)
        pool = await create_pool(settings.database_url, max_size=settings.database_pool_size)
        group = settings.consumer_group
        broker = make_broker(settings.kafka_bootstrap_servers, client_id=group)
        outbox, timers = Outbox(SCHEMA), Timers(SCHEMA)
        service = MatchingService(outbox, timers)
        consumer = IdempotentConsumer(
            group_id=group,
            schema=SCHEMA,
            pool=pool,
            broker=broker,
            handlers=dispatch_handlers(service),
            after_commit=outbox.committed,
        )
        consumed = [Topic.REFERRALS, Topic.PAGES]
        consumer.subscribe(consumed)
        kafka_connected = asyncio.Event()
        relay = OutboxRelay(settings.database_url, outbox, broker)
        timer_loop = TimerLoop(
            settings.database_url,
            pool,
            timers,
            {
                TimerKind.OFFER_EXPIRY: service.offer_expired,
                TimerKind.ARRIVAL_DEADLINE: service.arrival_deadline_passed,
            },
            after_commit=outbox.committed,
        )
        tasks = BackgroundTasks()
        start_event_pipeline(
            tasks,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            pool=pool,
            broker=broker,
            group=group,
            outbox=outbox,
            relay=relay,
            kafka_connected=kafka_connected,
            consumed_topics=consumed,
        )
        tasks.start("timers", timer_loop.run())
        tasks.start("coverage", report_coverage_forever(pool, settings.coverage_interval_seconds))
        tasks.start("waiting-referrals", report_waiting_referrals_forever(pool))
        app = _http_app(pool, relay, kafka_connected, broker)
        app.include_router(build_admin_router(pool, settings.matching_admin_token))
        return cls(pool, broker, app, kafka_connected, tasks)

    async def stop(self) -> None:
        await self.tasks.stop()
        await stop_broker(self.broker)
        await self.pool.close()


def _http_app(
    pool: asyncpg.Pool, relay: OutboxRelay, kafka_connected: asyncio.Event, broker: KafkaBroker
) -> FastAPI:
    app = FastAPI(title="Handoff matching", version="1")

    app.include_router(operations_router(readiness_checks(pool, broker, kafka_connected, relay)))
    install_error_handlers(app)
    app.add_middleware(RequestContext)
    return app
