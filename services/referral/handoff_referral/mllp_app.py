"""Composition root of `handoff referral mllp serve`: the MLLP listener, its intake, and the
outbox relay that publishes what it commits; /healthz, /readyz and /metrics on HTTP."""

import asyncio
import contextlib
from dataclasses import dataclass

from fastapi import FastAPI

from handoff_platform.http import serve_http, service_app
from handoff_platform.runtime import EventPipeline
from handoff_referral import SCHEMA
from handoff_referral.adapters.key_cache import KeyCache
from handoff_referral.app import apply_migrations
from handoff_referral.entrypoints.mllp import MllpServer
from handoff_referral.hl7_intake import Hl7Intake
from handoff_referral.service import ReferralService
from handoff_referral.settings import ReferralSettings


@dataclass
class MllpRuntime:
    pipeline: EventPipeline
    intake: Hl7Intake
    server: MllpServer
    app: FastAPI
    port: int

    @classmethod
    async def start(cls, settings: ReferralSettings, host: str, port: int) -> "MllpRuntime":
        """Migrate, open the pool and the relay, and listen on `host`:`port` (0: a free one)."""
        await apply_migrations(settings.database_url)
        pipeline = await EventPipeline.open(
            settings, SCHEMA, settings.consumer_group, settings.database_pool_size
        )
        # No API keys here: the key cache only completes the service's constructor.
        service = ReferralService(pipeline.pool, pipeline.outbox, KeyCache(settings.database_url))
        intake = Hl7Intake(service)
        pipeline.start([])
        server = MllpServer(
            intake.receive,
            idle_seconds=settings.mllp_idle_seconds,
            frame_seconds=settings.mllp_frame_seconds,
        )
        bound = await server.start(host, port)
        app = service_app(
            "Handoff referral MLLP listener",
            pipeline.readiness_checks(),
            liveness_checks=pipeline.liveness_checks(),
        )
        return cls(pipeline, intake, server, app, bound)

    async def stop(self) -> None:
        await self.server.close()
        await self.pipeline.close()


async def serve(settings: ReferralSettings, host: str, port: int, http_port: int) -> None:
    """Serve MLLP on `port` and operations HTTP on `http_port` until SIGINT or SIGTERM."""
    runtime = await MllpRuntime.start(settings, host, port)
    try:
        await serve_http(runtime.app, host, http_port)
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.stop()
