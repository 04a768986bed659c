"""Composition root: the reports service's consumer (the read model) and its HTTP surface."""

import asyncio
from dataclasses import dataclass

from fastapi import FastAPI

from handoff_platform.http import service_app
from handoff_platform.runtime import EventPipeline
from handoff_platform.supervision import BackgroundTasks
from handoff_reports import SCHEMA
from handoff_reports.adapters.read_model import apply_migrations
from handoff_reports.entrypoints.consumers import read_model_handlers
from handoff_reports.entrypoints.http import build_reports_router
from handoff_reports.settings import ReportsSettings
from handoff_schemas import Topic

CONSUMED_TOPICS = (Topic.REFERRALS, Topic.DISPATCH, Topic.PAGES)


@dataclass
class ReportsRuntime:
    """The running service: its pipeline (pool, broker, consumer), app and loops."""

    pipeline: EventPipeline
    app: FastAPI
    tasks: BackgroundTasks

    @property
    def kafka_connected(self) -> asyncio.Event:
        return self.pipeline.kafka_connected

    @classmethod
    async def start(cls, settings: ReportsSettings) -> "ReportsRuntime":
        """Migrate, then consume the three topics into the read model and serve the API.
        The service publishes nothing; the pipeline's outbox stays empty."""
        await apply_migrations(settings.database_url)
        pipeline = await EventPipeline.open(
            settings, SCHEMA, settings.consumer_group, settings.database_pool_size
        )
        consumer = pipeline.consumer(read_model_handlers())
        consumer.subscribe(CONSUMED_TOPICS)
        pipeline.start(CONSUMED_TOPICS)
        app = service_app(
            "Handoff reports",
            pipeline.readiness_checks(),
            liveness_checks=pipeline.liveness_checks(),
        )
        app.include_router(build_reports_router(pipeline.pool, settings.reports_admin_token))
        return cls(pipeline, app, pipeline.tasks)

    async def stop(self) -> None:
        await self.pipeline.close()
