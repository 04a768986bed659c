"""Composition root: the notify service's consumers, delivery worker, relay, timers and HTTP."""

import asyncio
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from handoff_notify import CHANNEL_FALLBACK, SCHEMA
from handoff_notify.adapters.email import SmtpProvider
from handoff_notify.adapters.pages_store import apply_migrations
from handoff_notify.adapters.providers import Provider
from handoff_notify.adapters.sandbox import SandboxProvider
from handoff_notify.adapters.twilio import TwilioProvider
from handoff_notify.adapters.webhook import WebhookProvider
from handoff_notify.delivery import DeliveryWorker
from handoff_notify.entrypoints.consumers import dispatch_handlers
from handoff_notify.entrypoints.http import (
    LinkNotFound,
    UnsignedWebhookError,
    build_coach_router,
    build_sandbox_router,
    build_twilio_router,
    link_not_found_page,
    unsigned_webhook_response,
)
from handoff_notify.service import NotifyService
from handoff_notify.settings import Delivery, NotifySettings
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
from handoff_platform.timers import TimerLoop, Timers
from handoff_schemas import Topic
from handoff_schemas.vocabulary import Channel


@dataclass
class NotifyRuntime:
    pool: asyncpg.Pool
    broker: KafkaBroker
    app: FastAPI
    kafka_connected: asyncio.Event
    tasks: BackgroundTasks
    worker: DeliveryWorker

    @classmethod
    async def start(cls, settings: NotifySettings) -> "NotifyRuntime":
        await apply_migrations(settings.database_url)
        pool = await create_pool(settings.database_url, max_size=settings.database_pool_size)
        group = settings.consumer_group
        broker = make_broker(settings.kafka_bootstrap_servers, client_id=group)
        outbox, timers = Outbox(SCHEMA), Timers(SCHEMA)
        service = NotifyService(pool, outbox, timers, settings)
        worker = DeliveryWorker(service, _providers(settings, pool))

        def committed() -> None:
            outbox.committed()
            worker.wake()

        consumer = IdempotentConsumer(
            group_id=group,
            schema=SCHEMA,
            pool=pool,
            broker=broker,
            handlers=dispatch_handlers(service),
            after_commit=committed,
        )
        consumed = [Topic.DISPATCH]
        consumer.subscribe(consumed)
        kafka_connected = asyncio.Event()
        relay = OutboxRelay(settings.database_url, outbox, broker)
        timer_loop = TimerLoop(
            settings.database_url,
            pool,
            timers,
            {CHANNEL_FALLBACK: service.channel_fallback},
            after_commit=committed,
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
        tasks.start("delivery", worker.run())

        app = FastAPI(title="Handoff notify", version="1", docs_url=None, redoc_url=None)
        app.include_router(
            operations_router(readiness_checks(pool, broker, kafka_connected, relay))
        )
        app.include_router(build_coach_router(service))
        if settings.notify_delivery is Delivery.SANDBOX:
            app.include_router(build_sandbox_router(service))
        if settings.twilio_auth_token is not None:
            token = settings.twilio_auth_token.get_secret_value()
            app.include_router(build_twilio_router(service, token))
        install_error_handlers(app)
        app.add_exception_handler(LinkNotFound, link_not_found_page)
        app.add_exception_handler(UnsignedWebhookError, unsigned_webhook_response)
        app.add_middleware(RequestContext)
        return cls(pool, broker, app, kafka_connected, tasks, worker)

    async def stop(self) -> None:
        await self.tasks.stop()
        await self.worker.stop()
        await stop_broker(self.broker)
        await self.pool.close()


def _providers(settings: NotifySettings, pool: asyncpg.Pool) -> dict[Channel, Provider]:
    if settings.notify_delivery is Delivery.SANDBOX:
        sandbox = SandboxProvider(pool)
        return dict.fromkeys(Channel, sandbox)
    # Live settings are validated complete (NotifySettings); the asserts tell mypy so.
    assert settings.twilio_account_sid is not None
    assert settings.twilio_auth_token is not None
    assert settings.twilio_from_number is not None
    assert settings.smtp_host is not None
    assert settings.webhook_secret is not None
    public = settings.notify_public_url.rstrip("/")
    twilio = TwilioProvider(
        base_url=settings.twilio_base_url,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        from_number=settings.twilio_from_number,
        status_callback_url=f"{public}/v1/twilio/status",
        timeout=settings.provider_timeout_seconds,
    )
    email = SmtpProvider(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        start_tls=settings.smtp_start_tls,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.provider_timeout_seconds,
    )
    webhook = WebhookProvider(
        secret=settings.webhook_secret.get_secret_value(),
        slack_format=settings.webhook_slack_format,
        timeout=settings.provider_timeout_seconds,
    )
    return {
        Channel.SMS: twilio,
        Channel.VOICE: twilio,
        Channel.EMAIL: email,
        Channel.WEBHOOK: webhook,
    }
