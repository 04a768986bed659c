"""Composition root: builds the referral service from its settings and runs its parts."""

import asyncio
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI
from pydantic import SecretStr

from handoff_platform.audit import build_audit_router
from handoff_platform.database import migrate_database
from handoff_platform.http import service_app
from handoff_platform.outbox import OutboxRelay
from handoff_platform.runtime import EventPipeline
from handoff_platform.startup import serve_when_started
from handoff_platform.supervision import BackgroundTasks
from handoff_platform.timers import TimerLoop, Timers
from handoff_referral import SCHEMA
from handoff_referral.adapters.contact_vault import ContactVault
from handoff_referral.adapters.key_cache import KeyCache
from handoff_referral.domain.webhooks import RetryPolicy
from handoff_referral.entrypoints.admin import build_admin_router
from handoff_referral.entrypoints.board_admin import build_board_router
from handoff_referral.entrypoints.consumers import timeline_handlers
from handoff_referral.entrypoints.fhir_http import (
    PREFIX,
    fhir_duplicate_key,
    fhir_too_large,
    mount_fhir,
)
from handoff_referral.entrypoints.follow_up_admin import build_schedule_router
from handoff_referral.entrypoints.follow_up_pages import build_follow_up_pages
from handoff_referral.entrypoints.http import build_router
from handoff_referral.fhir_service import FhirReferrals, SmartAuthority
from handoff_referral.follow_ups import FOLLOW_UP_DUE, FollowUpService
from handoff_referral.service import ReferralService
from handoff_referral.settings import ReferralSettings
from handoff_referral.webhooks import WebhookSender
from handoff_schemas import Topic

MIGRATIONS = "handoff_referral.adapters.migrations"


async def apply_migrations(database_url: str) -> list[str]:
    return await migrate_database(database_url, SCHEMA, MIGRATIONS)


@dataclass
class ReferralRuntime:
    settings: ReferralSettings
    pipeline: EventPipeline
    service: ReferralService
    app: FastAPI
    tasks: BackgroundTasks
    webhooks: WebhookSender
    follow_ups: FollowUpService

    @property
    def pool(self) -> asyncpg.Pool:
        return self.pipeline.pool

    @property
    def relay(self) -> OutboxRelay:
        return self.pipeline.relay

    @property
    def kafka_connected(self) -> asyncio.Event:
        return self.pipeline.kafka_connected

    @classmethod
    async def start(cls, settings: ReferralSettings) -> "ReferralRuntime":
        await apply_migrations(settings.database_url)
        pipeline = await EventPipeline.open(
            settings, SCHEMA, settings.consumer_group, settings.database_pool_size
        )
        keys = KeyCache(settings.database_url)
        service = ReferralService(pipeline.pool, pipeline.outbox, keys)
        timers = Timers(SCHEMA)
        follow_ups = FollowUpService(
            pipeline.pool, pipeline.outbox, timers, ContactVault(_secret(settings.follow_up_keys))
        )
        consumed = [Topic.DISPATCH, Topic.PAGES]
        pipeline.consumer(timeline_handlers(service, follow_ups)).subscribe(consumed)
        app = _http_app(settings, service, pipeline, follow_ups)
        timer_loop = TimerLoop(
            settings.database_url,
            pipeline.pool,
            timers,
            {FOLLOW_UP_DUE: follow_ups.attempt_due},
            after_commit=pipeline.outbox.committed,
        )
        tasks = pipeline.tasks
        pipeline.start(consumed)
        tasks.start("timers", timer_loop.run, expected_interval=3 * timer_loop.max_sleep)
        tasks.start("api-key-cache", keys.listen_forever, expected_interval=15.0)
        webhooks = webhook_sender(settings, pipeline.pool)
        tasks.start(
            "webhooks", webhooks.run_forever, expected_interval=15.0 + settings.webhook_poll_seconds
        )
        return cls(settings, pipeline, service, app, tasks, webhooks, follow_ups)

    async def stop(self) -> None:
        await self.pipeline.close()
        await self.webhooks.close()


def webhook_sender(settings: ReferralSettings, pool: asyncpg.Pool) -> WebhookSender:
    policy = RetryPolicy(
        initial=settings.webhook_retry_initial_seconds,
        maximum=settings.webhook_retry_max_seconds,
        window=settings.webhook_retry_window_seconds,
    )
    return WebhookSender(
        pool,
        policy,
        settings.webhook_timeout_seconds,
        settings.webhook_poll_seconds,
        settle=settings.webhook_settle_seconds,
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _http_app(
    settings: ReferralSettings,
    service: ReferralService,
    pipeline: EventPipeline,
    follow_ups: FollowUpService,
) -> FastAPI:
    app = service_app(
        "Handoff referral API",
        pipeline.readiness_checks(),
        liveness_checks=pipeline.liveness_checks(),
        max_body_bytes=settings.max_body_bytes,
        too_large_by_prefix={PREFIX: fhir_too_large},
        duplicate_key_by_prefix={PREFIX: fhir_duplicate_key},
        description="Emergency departments ask for a peer recovery coach and follow the request.",
    )
    app.include_router(build_router(service, follow_ups))
    if link_secret := _secret(settings.follow_up_link_secret):
        app.include_router(build_follow_up_pages(follow_ups, link_secret))
    app.include_router(build_board_router(pipeline.pool, settings.referral_admin_token))
    app.include_router(build_schedule_router(pipeline.pool, settings.referral_admin_token))
    app.include_router(build_audit_router(pipeline.pool, SCHEMA, settings.referral_admin_token))
    mount_fhir(app, FhirReferrals(service), SmartAuthority(pipeline.pool))
    app.include_router(
        build_admin_router(
            pipeline.pool, settings.referral_admin_token, not settings.webhook_allow_http
        )
    )
    return app


async def serve(settings: ReferralSettings, host: str, port: int) -> None:
    """Listen at once, start once the database answers, serve until SIGTERM, stop in order."""
    await serve_when_started(
        lambda: ReferralRuntime.start(settings),
        lambda runtime: runtime.app,
        ReferralRuntime.stop,
        host,
        port,
    )
