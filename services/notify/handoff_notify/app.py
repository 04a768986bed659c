"""Composition root: the notify service's consumers, delivery worker, relay, timers and HTTP."""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from handoff_notify import CHANNEL_FALLBACK, SCHEMA, THROTTLE_ENDS, metrics
from handoff_notify.adapters.email import SmtpProvider
from handoff_notify.adapters.pages_store import apply_migrations
from handoff_notify.adapters.providers import Outgoing, Provider
from handoff_notify.adapters.reply_spool import ReplySpool, SpooledReply
from handoff_notify.adapters.report_spool import ReportSpool, SpooledReport
from handoff_notify.adapters.sandbox import SandboxProvider
from handoff_notify.adapters.twilio import TwilioProvider
from handoff_notify.adapters.webhook import WebhookProvider
from handoff_notify.delivery import DeliveryWorker
from handoff_notify.domain.content import Content
from handoff_notify.domain.delivery import Accepted
from handoff_notify.entrypoints.admin import build_admin_router
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
from handoff_platform.audit import build_audit_router
from handoff_platform.http import service_app
from handoff_platform.runtime import EventPipeline
from handoff_platform.supervision import BackgroundTasks, beat
from handoff_platform.timers import TimerLoop, Timers
from handoff_schemas import Topic
from handoff_schemas.vocabulary import Channel

log = logging.getLogger(__name__)


@dataclass
class NotifyRuntime:
    pipeline: EventPipeline
    app: FastAPI
    tasks: BackgroundTasks
    worker: DeliveryWorker

    @classmethod
    async def start(cls, settings: NotifySettings) -> "NotifyRuntime":
        for warning in settings.start_up_warnings():
            log.warning(warning)
        await apply_migrations(settings.database_url)
        pipeline = await EventPipeline.open(
            settings, SCHEMA, settings.consumer_group, settings.database_pool_size
        )
        pool, outbox, timers = pipeline.pool, pipeline.outbox, Timers(SCHEMA)
        service = NotifyService(pool, outbox, timers, settings)
        worker = DeliveryWorker(service, _providers(settings, pool))

        def committed() -> None:
            outbox.committed()
            worker.wake()

        # handoff.referrals for ReferralCancelled (held supervisor notices, issue #12) and
        # FollowUpAttempted / FollowUpConsentRevoked (held reminders, issue #16) only.
        consumed = [Topic.DISPATCH, Topic.REFERRALS]
        pipeline.consumer(dispatch_handlers(service), after_commit=committed).subscribe(consumed)
        timer_loop = TimerLoop(
            settings.database_url,
            pool,
            timers,
            {CHANNEL_FALLBACK: service.channel_fallback, THROTTLE_ENDS: service.throttle_ended},
            after_commit=committed,
        )
        tasks = pipeline.tasks
        pipeline.start(consumed)
        tasks.start("timers", timer_loop.run, expected_interval=3 * timer_loop.max_sleep)
        # Cycles every `max_sleep` (1 s); a long batch of claims beats once per batch.
        tasks.start("delivery", worker.run, expected_interval=10.0)
        spool = ReportSpool(settings.notify_report_spool)
        # Idle while nothing is spooled; a replay after an outage beats per report applied.
        tasks.start("report-spool", lambda: _apply_spooled_reports(service, spool), 15.0)
        replies = ReplySpool(reply_spool_path(settings))
        sms = worker.providers.get(Channel.SMS)
        tasks.start("reply-spool", lambda: _apply_spooled_replies(service, replies, sms), 15.0)
        tasks.start(
            "blocked-methods-gauge",
            lambda: _watch_blocked_methods(service, settings.blocked_methods_gauge_seconds),
            expected_interval=3 * settings.blocked_methods_gauge_seconds,
        )

        app = service_app(
            "Handoff notify",
            pipeline.readiness_checks(),
            liveness_checks=pipeline.liveness_checks(),
            docs_url=None,
            redoc_url=None,
        )
        app.include_router(build_coach_router(service))
        app.include_router(
            build_admin_router(pool, settings.notify_admin_token, service.clear_method)
        )
        app.include_router(build_audit_router(pool, SCHEMA, settings.notify_admin_token))
        if settings.notify_delivery is Delivery.SANDBOX:
            app.include_router(build_sandbox_router(service))
        if settings.twilio_auth_token is not None:
            token = settings.twilio_auth_token.get_secret_value()
            app.include_router(build_twilio_router(service, token, spool, replies))
        app.add_exception_handler(LinkNotFound, link_not_found_page)
        app.add_exception_handler(UnsignedWebhookError, unsigned_webhook_response)
        return cls(pipeline, app, tasks, worker)

    async def stop(self) -> None:
        await self.tasks.stop()  # the delivery loop first, before its providers close
        await self.worker.stop()
        await self.pipeline.close()


async def _apply_spooled_reports(service: NotifyService, spool: ReportSpool) -> None:
    """Apply the delivery reports spooled during a database outage, once it answers again;
    a database error ends it, for its supervisor to restart it (the rest stay spooled)."""

    async def apply(report: SpooledReport) -> None:
        await service.delivery_reported(
            report.provider_ref, report.delivered, report.error_code, report.message_uuid
        )
        beat()

    while True:
        if spool.waiting():
            applied = await spool.replay(apply)
            if applied:
                log.info("spooled delivery reports applied", extra={"reports": applied})
        beat()
        await asyncio.sleep(1.0)


def reply_spool_path(settings: NotifySettings) -> Path:
    """Where SMS replies taken during a database outage wait: beside the report spool."""
    return settings.notify_report_spool.with_name("sms-replies.jsonl")


async def _apply_spooled_replies(
    service: NotifyService, spool: ReplySpool, sms: Provider | None
) -> None:
    """Apply the SMS replies spooled during a database outage once it answers again, and
    text each coach the answer they would have had at once (one attempt: their answer is
    recorded whether or not that text goes). A database error ends it, for its supervisor
    to restart it; the replies not yet applied stay spooled."""

    async def apply(reply: SpooledReply) -> None:
        text = await service.sms_reading(reply.phone, reply.reading)
        metrics.SPOOLED_REPLIES.labels("applied").inc()
        if text is not None and sms is not None:
            outgoing = Outgoing(
                uuid.uuid4(),
                Channel.SMS,
                reply.phone,
                Content(subject="Handoff", text=text, spoken=text),
                answer_url="",
                correlation_id=str(uuid.uuid4()),
            )
            outcome = await sms.send(outgoing)
            if not isinstance(outcome, Accepted):
                metrics.SPOOLED_REPLIES.labels("answer_failed").inc()
                log.warning(
                    "the answer to a spooled SMS reply was not sent",
                    extra={"outcome": type(outcome).__name__},
                )
        beat()

    while True:
        if spool.waiting():
            applied = await spool.replay(apply)
            if applied:
                log.info("spooled SMS replies applied", extra={"replies": applied})
        beat()
        await asyncio.sleep(1.0)


async def _watch_blocked_methods(service: NotifyService, every: float) -> None:
    """Keep the blocked-methods gauge current: every replica reads the same table."""
    while True:
        await service.refresh_blocked_gauge()  # a database error restarts it, supervised
        beat()
        await asyncio.sleep(every)


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
