"""Composition root: the matching service's consumers, outbox relay, timers and HTTP surface."""

import asyncio
from dataclasses import dataclass

from fastapi import FastAPI
from pydantic import SecretStr

from handoff_matching import CONSUMER_GROUP, SCHEMA
from handoff_matching.adapters.roster_store import announce_phones, apply_migrations
from handoff_matching.domain.dispatch import TimerKind
from handoff_matching.domain.follow_ups import FOLLOW_UP_RETRY
from handoff_matching.entrypoints.admin import build_admin_router
from handoff_matching.entrypoints.consumers import dispatch_handlers
from handoff_matching.entrypoints.schedules_api import build_calendar_router
from handoff_matching.service import (
    MatchingService,
    WaitingLine,
    report_coverage_forever,
    report_waiting_referrals_forever,
    wake_line_if_freed,
)
from handoff_platform.http import service_app
from handoff_platform.runtime import EventPipeline
from handoff_platform.settings import PlatformSettings
from handoff_platform.supervision import BackgroundTasks
from handoff_platform.timers import TimerLoop, Timers
from handoff_schemas import Topic


class MatchingSettings(PlatformSettings):
    consumer_group: str = CONSUMER_GROUP
    database_pool_size: int = 10
    matching_admin_token: SecretStr | None = None
    coverage_interval_seconds: float = 60.0
    line_sweep_seconds: float = 2.0  # how soon a shift start or a CLI import is found


@dataclass
class MatchingRuntime:
    pipeline: EventPipeline
    app: FastAPI
    tasks: BackgroundTasks

    @property
    def kafka_connected(self) -> asyncio.Event:
        return self.pipeline.kafka_connected

    @classmethod
    async def start(cls, settings: MatchingSettings) -> "MatchingRuntime":
        await apply_migrations(settings.database_url)
        pipeline = await EventPipeline.open(
            settings, SCHEMA, settings.consumer_group, settings.database_pool_size
        )
        pool, outbox, timers = pipeline.pool, pipeline.outbox, Timers(SCHEMA)
        async with pool.acquire() as connection, connection.transaction():
            # Notify learns whose numbers are a coach's from these (a roster imported
            # before they existed too); each replica's start says it again, harmlessly.
            await announce_phones(connection)
        service = MatchingService(outbox, timers)
        consumed = [Topic.SITES, Topic.REFERRALS, Topic.PAGES]
        line = WaitingLine(service, pool, settings.database_url, settings.line_sweep_seconds)

        def committed() -> None:
            outbox.committed()
            wake_line_if_freed(line)

        consumer = pipeline.consumer(dispatch_handlers(service), after_commit=committed)
        consumer.subscribe(consumed)
        timer_loop = TimerLoop(
            settings.database_url,
            pool,
            timers,
            {
                TimerKind.OFFER_EXPIRY: service.offer_expired,
                TimerKind.ARRIVAL_DEADLINE: service.arrival_deadline_passed,
                TimerKind.GIVE_UP: service.give_up,
                TimerKind.VISIT_LIMIT: service.visit_limit_passed,
                FOLLOW_UP_RETRY: service.follow_up_retry,
            },
            after_commit=committed,
        )
        tasks = pipeline.tasks
        pipeline.start(consumed)
        tasks.start("timers", timer_loop.run, expected_interval=3 * timer_loop.max_sleep)
        tasks.start("waiting-line", line.run, expected_interval=3 * line.sweep_every + 15.0)
        coverage_every = settings.coverage_interval_seconds
        tasks.start(
            "coverage",
            lambda: report_coverage_forever(pool, coverage_every),
            expected_interval=2 * coverage_every + 30.0,
        )
        tasks.start("waiting-referrals", lambda: report_waiting_referrals_forever(pool, 5.0), 15.0)
        app = service_app(
            "Handoff matching",
            pipeline.readiness_checks(),
            liveness_checks=pipeline.liveness_checks(),
        )
        app.include_router(build_admin_router(pool, settings.matching_admin_token, service.on_call))
        app.include_router(build_calendar_router(pool))
        return cls(pipeline, app, tasks)

    async def stop(self) -> None:
        await self.pipeline.close()
