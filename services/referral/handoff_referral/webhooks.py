"""Sends the status webhooks the timeline queued (adapters/webhook_store), signed, in order
per referral, at least once (decision 0022).

One supervised loop per process claims due deliveries (each the oldest pending of its
referral) under a lease, POSTs each from its own task, and settles it: delivered on 2xx,
else tried again with backoff until the step's retry window (from its first attempt) ends,
then failed. Replicas share the
work through the leases; a process killed mid-send leaves a lease that runs out, and the
delivery goes again with the same `webhook-id`.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import httpx

from handoff_platform import audit as audit_log
from handoff_platform.audit import Accessor, ActorKind, AuditEntry, Purpose, address_of
from handoff_platform.logs import correlation
from handoff_platform.supervision import beat
from handoff_referral import SCHEMA
from handoff_referral.adapters import webhook_store as store
from handoff_referral.adapters.webhook_store import ClaimedDelivery
from handoff_referral.domain.webhooks import (
    DISCLOSED_FIELDS,
    RetryPolicy,
    StatusStep,
    signed_headers,
)
from handoff_referral.metrics import (
    WEBHOOK_DELIVERIES,
    WEBHOOK_OLDEST_PENDING_SECONDS,
    WEBHOOK_OUTCOMES,
    WEBHOOK_PENDING,
    WEBHOOK_SECONDS,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
BACKLOG_REPORT_SECONDS = 5.0
LEASE_MARGIN_SECONDS = 5.0
"""A claim outlives the request's timeout by this much, so a live sender settles first."""


def disclosed_to(delivery: ClaimedDelivery) -> AuditEntry:
    """The audit entry of one delivery attempt: the site's callback (by site id, and the
    host the body went to, never the URL's path or query) was sent these fields of the
    referral."""
    host = address_of(urlsplit(delivery.url).hostname or None)
    to = Accessor(ActorKind.SITE_CALLBACK, delivery.site_id, Purpose.DISCLOSURE, host)
    return to.saw("referral", delivery.referral_id, DISCLOSED_FIELDS)


def utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookSender:
    """Delivers queued status webhooks from `pool`'s referral schema.

    `timeout` (seconds) bounds one POST; `poll_interval` (seconds) is the longest a new
    step waits to be picked up once it has waited `settle` seconds (store.claim_due); at
    most `max_in_flight` POSTs are open at once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: RetryPolicy,
        timeout: float,
        poll_interval: float,
        max_in_flight: int = 32,
        clock: Clock = utc_now,
        settle: float = 0.0,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.poll_interval = poll_interval
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.settle = settle
        self.lease = timedelta(seconds=timeout + LEASE_MARGIN_SECONDS)
        self.client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"user-agent": "Handoff-Webhooks/1"}
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self._reported_sites: set[str] = set()
        self._exported_sites: set[str] = set()

    async def run_forever(self) -> None:
        """Claim, send, settle, report the backlog; beats once per pass. Raises what the
        database raises (the supervisor restarts it); sends in flight are cancelled then,
        and go again when their lease ends."""
        # Before anything is sent: every site's outcome series exist at 0 from the start, so
        # the first failure is an increase an alert sees, not a series that appears at 1.
        await self.report_backlog()
        reported = time.monotonic()
        try:
            while True:
                room = self.max_in_flight - len(self._in_flight)
                claimed = await self._claim(room) if room > 0 else []
                for delivery in claimed:
                    task = asyncio.create_task(self._send(delivery))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                if time.monotonic() - reported >= BACKLOG_REPORT_SECONDS:
                    await self.report_backlog()
                    reported = time.monotonic()
                beat()
                if len(claimed) < room or room == 0:
                    await asyncio.sleep(self.poll_interval)
        finally:
            for task in self._in_flight:
                task.cancel()

    async def close(self) -> None:
        await self.client.aclose()

    async def _claim(self, room: int) -> list[ClaimedDelivery]:
        now = self.clock()
        async with self.pool.acquire() as connection:
            return await store.claim_due(connection, now, now + self.lease, room, self.settle)

    async def _send(self, delivery: ClaimedDelivery) -> None:
        with correlation(delivery.correlation_id):
            try:
                await self.deliver(delivery)
            except Exception as error:  # the lease runs out and the delivery goes again
                log.warning(
                    "webhook delivery not settled",
                    extra={"delivery_id": str(delivery.delivery_id), "error": type(error).__name__},
                )

    async def deliver(self, delivery: ClaimedDelivery) -> str:
        """POSTs one claimed delivery and records the outcome; returns it (`delivered`,
        `retry` or `failed`). Raises only database errors."""
        step = StatusStep(
            delivery.delivery_id,
            delivery.referral_id,
            delivery.external_id,
            delivery.step,
            delivery.status,
            delivery.at,
        )
        body = step.body()
        headers = signed_headers(delivery.delivery_id, body, self.clock(), delivery.signing_secrets)
        error = await self._post(delivery.url, body, headers)
        now = self.clock()
        disclosure = disclosed_to(delivery)
        async with self.pool.acquire() as connection, connection.transaction():
            # The body left Handoff on every attempt (a site may have read it and still
            # answered 500): each attempt is one disclosure, recorded with its outcome.
            await audit_log.record(connection, SCHEMA, disclosure)
            if error is None:
                outcome = "delivered"
                await store.delivered(connection, delivery.delivery_id, now)
            elif (
                next_at := self.policy.next_attempt(
                    delivery.attempts + 1, now, delivery.due_since, random.random()
                )
            ) is not None:
                outcome = "retry"
                await store.retry_at(connection, delivery.delivery_id, now, next_at, error)
            else:
                outcome = "failed"
                await store.failed(connection, delivery.delivery_id, now, error)
        self._export_outcomes(delivery.site_id)
        WEBHOOK_DELIVERIES.labels(delivery.site_id, outcome).inc()
        log.log(
            logging.WARNING if outcome == "failed" else logging.INFO,
            f"webhook {outcome}",
            extra={
                "referral_id": str(delivery.referral_id),
                "site_id": delivery.site_id,
                "delivery_id": str(delivery.delivery_id),
                "step": delivery.step,
                "attempts": delivery.attempts + 1,
                "error": error,
            },
        )
        return outcome

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """None when the site acknowledged (2xx), else what went wrong, in a few words (never
        the answer's body)."""
        started = time.monotonic()
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError as error:
            return f"no answer: {type(error).__name__}"
        except (httpx.InvalidURL, UnicodeError):  # stored before URLs were checked as now
            return "the callback URL cannot be used: set it again"
        finally:
            WEBHOOK_SECONDS.observe(time.monotonic() - started)
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def report_backlog(self) -> None:
        """Sets the pending and oldest-pending gauges of every site with a callback, exports
        each outcome of its deliveries counter (at 0 until something happens), and counts
        the deliveries abandoned since the last report (a callback removed, perhaps by the
        CLI in another process) under `abandoned`."""
        async with self.pool.acquire() as connection:
            backlog = await store.backlog(connection)
            abandoned = await store.count_abandoned(connection)
        for site_id, count in abandoned.items():
            self._export_outcomes(site_id)
            WEBHOOK_DELIVERIES.labels(site_id, "abandoned").inc(count)
            log.warning(
                "webhooks abandoned: the site's callback was removed",
                extra={"site_id": site_id, "count": count},
            )
        now = self.clock()
        for site_id, (pending, oldest) in backlog.items():
            self._export_outcomes(site_id)
            WEBHOOK_PENDING.labels(site_id).set(pending)
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            WEBHOOK_OLDEST_PENDING_SECONDS.labels(site_id).set(max(age, 0.0))
        for site_id in self._reported_sites - backlog.keys():  # its callback was removed
            WEBHOOK_PENDING.remove(site_id)
            WEBHOOK_OLDEST_PENDING_SECONDS.remove(site_id)
        self._reported_sites = set(backlog)

    def _export_outcomes(self, site_id: str) -> None:
        if site_id not in self._exported_sites:
            for outcome in WEBHOOK_OUTCOMES:
                WEBHOOK_DELIVERIES.labels(site_id, outcome)
            self._exported_sites.add(site_id)
