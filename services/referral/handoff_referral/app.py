"""Composition root: builds the referral service from its settings and runs its parts."""

import asyncio
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from handoff_platform.consumer import IdempotentConsumer
from handoff_platform.database import create_pool, migrate_database
from handoff_platform.http import (
    BodySizeLimit,
    RequestContext,
    install_error_handlers,
    operations_router,
    serve_http,
)
from handoff_platform.kafka import make_broker
from handoff_platform.outbox import Outbox, OutboxRelay
from handoff_platform.runtime import (
    BackgroundTasks,
    readiness_checks,
    start_event_pipeline,
    stop_broker,
)
from handoff_referral import SCHEMA
from handoff_referral.adapters.key_cache import KeyCache
from handoff_referral.entrypoints.consumers import timeline_handlers
from handoff_referral.entrypoints.http import build_router
from handoff_referral.service import ReferralService
from handoff_referral.settings import ReferralSettings
from handoff_schemas import Topic

MIGRATIONS = "handoff_referral.adapters.migrations"


async def apply_migrations(database_url: str) -> list[str]:
    return await migrate_database(database_url, SCHEMA, MIGRATIONS)


@dataclass
class ReferralRuntime:
    settings: ReferralSettings
    pool: asyncpg.Pool
    broker: KafkaBroker
    service: ReferralService
    app: FastAPI
    kafka_connected: asyncio.Event
    relay: OutboxRelay
    tasks: BackgroundTasks

    @classmethod
    async def start(cls, settings: ReferralSettings) -> "ReferralRuntime":
        await apply_migrations(settings.database_url)
        pool = await create_pool(settings.database_url, max_size=settings.database_pool_size)
        group = settings.consumer_group
        broker = make_broker(settings.kafka_bootstrap_servers, client_id=group)
        outbox = Outbox(SCHEMA)
        keys = KeyCache(settings.database_url)
        service = ReferralService(pool, outbox, keys)
        consumer = IdempotentConsumer(
            group_id=group,
            schema=SCHEMA,
            pool=pool,
            broker=broker,
            handlers=timeline_handlers(service),
        )
        consumed = [Topic.DISPATCH, Topic.PAGES]
        consumer.subscribe(consumed)
        kafka_connected = asyncio.Event()
        relay = OutboxRelay(settings.database_url, outbox, broker)
        app = _http_app(settings, service, pool, broker, kafka_connected, relay)
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
        tasks.start("api-key-cache", keys.listen_forever())
        return cls(settings, pool, broker, service, app, kafka_connected, relay, tasks)

    async def stop(self) -> None:
        await self.tasks.stop()
        await stop_broker(self.broker)
        await self.pool.close()


def _http_app(
    settings: ReferralSettings,
    service: ReferralService,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    kafka_connected: asyncio.Event,
    relay: OutboxRelay,
) -> FastAPI:
    app = FastAPI(
        title="Handoff referral API",
        version="1",
        description="Emergency departments ask for a peer recovery coach and follow the request.",
    )

    app.include_router(operations_router(readiness_checks(pool, broker, kafka_connected, relay)))
    app.include_router(build_router(service))
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    return app


async def serve(settings: ReferralSettings, host: str, port: int) -> None:
    runtime = await ReferralRuntime.start(settings)
    try:
        await serve_http(runtime.app, host, port)
    finally:
        await runtime.stop()
