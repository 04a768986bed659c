"""The notify service as a process against a fake Twilio, a real SMTP server and a local
HTTPS webhook endpoint, on its own Kafka: the harness GoAlert's smoke tests are built on.
Any message a test did not expect, or a message sent twice, fails the module."""

import asyncio
import os
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from faststream.kafka import KafkaBroker

from handoff_cli.demo import LINK
from handoff_devenv import KafkaCluster
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import ServiceProcess, start_service
from handoff_platform.kafka import ensure_topics, make_broker
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    CoachAssigned,
    ContactPoint,
    OfferMade,
    OfferWithdrawn,
    ReferralCancelled,
)
from handoff_schemas.vocabulary import CancelReason, Channel, Tier, Urgency, WithdrawReason
from tests.integration.conftest import create_database
from tests.support.events import BRIEFING
from tests.support.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    Recorded,
    new_phone,
)
from tests.support.kafka import read_topic, send
from tests.support.mailbox import Mailbox
from tests.support.patients import SERVICE_LOGS, own_report_spool
from tests.support.waiting import eventually
from tests.support.webhook_receiver import WebhookReceiver

WEBHOOK_SECRET = "test-webhook-secret"
QUICK_FALLBACK_SITE = "md-quick"  # a site whose pages move to the next method after 1 s
ADMIN_TOKEN = "test-notify-admin-token"
PROGRAM_NAME = "Handoff Test Program"
SUPERVISOR_PHONE = "+14105550100"


@dataclass
class NotifyHarness:
    url: str
    env: dict[str, str]
    process: ServiceProcess
    broker: KafkaBroker
    bootstrap_servers: str
    twilio: FakeTwilio
    mailbox: Mailbox
    webhooks: WebhookReceiver
    log_file: Path = SERVICE_LOGS / "notify-harness.log"
    destinations: set[str] = field(default_factory=set)

    @staticmethod
    def environment(
        database_url: str,
        bootstrap_servers: str,
        port: int,
        twilio: FakeTwilio,
        mailbox: Mailbox,
        webhooks: WebhookReceiver,
    ) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "HANDOFF_ENVIRONMENT": "test",
            "NOTIFY_DELIVERY": "live",
            "NOTIFY_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "NOTIFY_LINK_SECRET": "test-link-secret",
            "TWILIO_BASE_URL": twilio.base_url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(mailbox.port),
            "SMTP_START_TLS": "false",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SSL_CERT_FILE": str(webhooks.ca_file),  # trusts the local endpoint's test CA
            "PROVIDER_TIMEOUT_SECONDS": "2",
            "SENDING_DEADLINE_SECONDS": "3",
            "SITE_CHANNEL_FALLBACK_SECONDS": f'{{"{QUICK_FALLBACK_SITE}": 1}}',
            "NOTIFY_ADMIN_TOKEN": ADMIN_TOKEN,
            "NOTIFY_PROGRAM_NAME": PROGRAM_NAME,
            "NOTIFY_SUPERVISOR_PHONE": SUPERVISOR_PHONE,
            "BLOCKED_METHODS_GAUGE_SECONDS": "0.5",
            "NOTIFY_REPORT_SPOOL": own_report_spool(f"notify-{port}"),
        }

    async def restart(self, kill: bool = False) -> None:
        (self.process.kill if kill else self.process.stop)()
        port = int(self.url.rsplit(":", 1)[1])
        self.process = await asyncio.to_thread(
            start_service, "notify", self.env, self.log_file, 60, port
        )

    def phone(self) -> str:
        number = new_phone()
        self.destinations.add(number)
        return number

    def webhook_url(self) -> str:
        url = self.webhooks.url()
        self.destinations.add(url)
        return url

    def email(self) -> str:
        address = f"coach-{uuid.uuid4().hex[:8]}@example.org"
        self.destinations.add(address)
        return address

    async def offer(
        self,
        *contacts: ContactPoint,
        referral_id: UUID | None = None,
        event_id: UUID | None = None,
        site_id: str = "md-mercy",
        site_short_name: str = "Mercy ED",
        expires_in: float = 300,
        page_deadline: datetime | None = None,
        site_time_zone: str | None = None,
    ) -> OfferMade:
        offer = offer_made(
            *contacts,
            referral_id=referral_id,
            site_id=site_id,
            site_short_name=site_short_name,
            expires_in=expires_in,
            page_deadline=page_deadline,
            site_time_zone=site_time_zone,
        )
        await send(self.broker, offer, event_id=event_id, source="/handoff/matching")
        return offer

    async def sms(self, phone: str, count: int = 1) -> list[str]:
        """The bodies sent to `phone`, once there are `count` of them."""
        return [message.body for message in await self.sent_to(phone, count)]

    async def sent_to(self, phone: str, count: int = 1) -> list[Recorded]:
        """The SMS and calls the fake Twilio took for `phone`, once there are `count`."""

        async def arrived() -> list[Recorded] | None:
            messages = self.twilio.to(phone)
            return messages if len(messages) >= count else None

        return await eventually(arrived, within=20, what=f"{count} messages or calls to {phone}")

    async def page_events(
        self, offer_id: UUID, *, at_least: int = 1, within: float = 20
    ) -> list[Any]:
        """The events notify published about an offer, each once, in order; fails the test if
        fewer than `at_least` are there after `within` seconds."""

        async def published() -> list[Any] | None:
            records = await read_topic(self.bootstrap_servers, Topic.PAGES)
            events = [decode_event(r.value) for r in records]
            mine = [e.data for e in {e.id: e for e in events}.values()]
            mine = [e for e in mine if getattr(e, "offer_id", None) == offer_id]
            return mine if len(mine) >= at_least else None

        what = f"{at_least} page events"
        return await eventually(published, within=within, what=what, interval=0.3)

    async def rows(self, query: str, *args: object) -> list[asyncpg.Record]:
        """What `query` finds in notify's database now."""
        connection = await asyncpg.connect(self.env["DATABASE_URL"])
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    def unexpected_messages(self) -> list[str]:
        """Messages to nobody a test paged, and messages sent twice."""
        sent = [(m.to, m.body) for m in self.twilio.accepted]
        sent += [(e.to, e.body) for e in self.mailbox.received]
        sent += [
            (self.webhooks.base_url + c.path, c.body.decode())
            for c in self.webhooks.calls
            if c.answered < 300
        ]
        strangers = [f"to {to}: {body[:60]}" for to, body in sent if to not in self.destinations]
        twice = [f"twice to {to}: {body[:60]}" for (to, body), n in Counter(sent).items() if n > 1]
        return strangers + twice


@asynccontextmanager
async def notify_harness(
    database_url: str,
    kafka: KafkaCluster,
    log_name: str = "notify-harness.log",
    overrides: dict[str, str] | None = None,
) -> AsyncIterator[NotifyHarness]:
    """Notify as a process on a database of its own, with its fake providers and any
    environment `overrides`; on leaving, fails if any message went to a destination no
    test made, or went twice."""

    twilio, mailbox, webhooks = FakeTwilio(), Mailbox(), WebhookReceiver()
    await twilio.start()
    mailbox.start()
    await webhooks.start()
    database = await create_database(database_url)
    bootstrap = kafka.bootstrap_servers
    await ensure_topics(bootstrap)
    port = free_ports(1)[0]
    env = NotifyHarness.environment(database, bootstrap, port, twilio, mailbox, webhooks)
    env.update(overrides or {})
    log_file = SERVICE_LOGS / log_name
    process = await asyncio.to_thread(start_service, "notify", env, log_file, 60, port)
    broker = make_broker(bootstrap, client_id="notify-tests")
    await broker.start()
    harness = NotifyHarness(
        process.url, env, process, broker, bootstrap, twilio, mailbox, webhooks, log_file
    )
    try:
        yield harness
        assert not harness.unexpected_messages(), harness.unexpected_messages()
    finally:
        harness.process.stop()
        await broker.stop()
        await twilio.stop()
        mailbox.stop()
        await webhooks.stop()


def sms(phone: str) -> ContactPoint:
    return ContactPoint(channel=Channel.SMS, destination=phone)


def voice(phone: str) -> ContactPoint:
    return ContactPoint(channel=Channel.VOICE, destination=phone)


def email(address: str) -> ContactPoint:
    return ContactPoint(channel=Channel.EMAIL, destination=address)


def webhook(url: str) -> ContactPoint:
    return ContactPoint(channel=Channel.WEBHOOK, destination=url)


def offer_made(
    *contacts: ContactPoint,
    referral_id: UUID | None = None,
    expires_in: float = 300,
    site_id: str = "md-mercy",
    site_short_name: str = "Mercy ED",
    page_deadline: datetime | None = None,
    site_time_zone: str | None = None,
) -> OfferMade:
    return OfferMade(
        referral_id=referral_id or uuid.uuid4(),
        offer_id=uuid.uuid4(),
        coach_id=uuid.uuid4(),
        site_id=site_id,
        site_short_name=site_short_name,
        urgency=Urgency.URGENT,
        tier=Tier.SITE,
        site_time_zone=site_time_zone,
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        page_deadline=page_deadline,
        briefing=BRIEFING,
        contacts=contacts,
    )


def assigned(offer: OfferMade) -> CoachAssigned:
    """Matching's assignment of `offer`'s coach, now, due at the bedside in 45 minutes."""
    now = datetime.now(UTC)
    return CoachAssigned(
        referral_id=offer.referral_id,
        offer_id=offer.offer_id,
        coach_id=offer.coach_id,
        assigned_at=now,
        arrival_deadline=now + timedelta(minutes=45),
    )


def cancelled(offer: OfferMade) -> ReferralCancelled:
    """The ED's cancel of `offer`'s referral, now."""
    return ReferralCancelled(
        referral_id=offer.referral_id,
        reason=CancelReason.PATIENT_LEFT,
        cancelled_at=datetime.now(UTC),
    )


async def withdraw(notify: NotifyHarness, offer: OfferMade, reason: WithdrawReason) -> None:
    """Matching's withdrawal of `offer`, now, for `reason`."""
    withdrawn = OfferWithdrawn(
        referral_id=offer.referral_id,
        offer_id=offer.offer_id,
        coach_id=offer.coach_id,
        reason=reason,
        withdrawn_at=datetime.now(UTC),
    )
    await send(notify.broker, withdrawn, source="/handoff/matching")


def link_in(body: str) -> str:
    found = LINK.search(body)
    assert found, f"no link in {body!r}"
    return found.group(0)


def reply_code_in(body: str) -> str:
    """The reply code an offer SMS states ("Reply 1B to accept"), which every text about
    that offer then names it by."""
    found = re.search(r"Reply 1([A-Z]{1,2}) to accept", body)
    assert found, f"no reply code in {body!r}"
    return found.group(1)
