"""Delivery reports during a database outage (issue 13): Twilio does not reliably retry a
status callback, so notify no longer answers one 503 while PostgreSQL is down. It keeps the
report in its spool file, answers 204, and applies it once the database is back: the page
ends delivered or undelivered as the provider said. A coach's SMS reply is spooled the same
way, as what it was read as (never its text), applied once the database is back, and the
coach is texted the answer then."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import UUID

import pytest

from handoff_devenv import KafkaCluster, PostgresCluster
from handoff_devenv.ports import free_ports
from handoff_schemas.events import CoachResponded, PageDelivered, PageFailed, PageSent
from handoff_schemas.vocabulary import CoachResponse, ResponseVia
from tests.support.notify import NotifyHarness, notify_harness, reply_code_in, sms
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def postgres(infrastructure_dir: Path) -> Iterator[PostgresCluster]:
    """A server of this module's own: stopping the session's would fail other tests."""
    cluster = PostgresCluster(
        infrastructure_dir / f"pg-spool-{uuid.uuid4().hex[:6]}", free_ports(1)[0]
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
async def notify(
    postgres: PostgresCluster, own_kafka: KafkaCluster
) -> AsyncIterator[NotifyHarness]:
    async with notify_harness(postgres.url, own_kafka, "notify-report-spool.log") as harness:
        yield harness


async def _state(notify: NotifyHarness, offer_id: UUID) -> list[str]:
    rows = await notify.rows("SELECT state FROM notify.messages WHERE offer_id = $1", offer_id)
    return [row["state"] for row in rows]


async def test_status_callbacks_posted_while_the_database_is_down_are_applied_after(
    notify: NotifyHarness, postgres: PostgresCluster
) -> None:
    reached, missed = notify.phone(), notify.phone()
    reached_offer = await notify.offer(sms(reached))
    missed_offer = await notify.offer(sms(missed))
    for offer in (reached_offer, missed_offer):
        [sent] = await notify.page_events(offer.offer_id)
        assert isinstance(sent, PageSent)
    [reached_page] = notify.twilio.to(reached)
    [missed_page] = notify.twilio.to(missed)

    await asyncio.to_thread(postgres.stop)
    try:
        answers = [
            await notify.twilio.report_status(reached_page, "delivered"),
            await notify.twilio.report_status(missed_page, "undelivered", "30003"),
        ]
    finally:
        await asyncio.to_thread(postgres.start)

    assert [answer.status_code for answer in answers] == [204, 204]
    reached_events = await notify.page_events(reached_offer.offer_id, at_least=2)
    missed_events = await notify.page_events(missed_offer.offer_id, at_least=2)
    assert [e.event_type for e in reached_events] == [PageSent.event_type, PageDelivered.event_type]
    assert [e.event_type for e in missed_events] == [PageSent.event_type, PageFailed.event_type]
    assert await _state(notify, reached_offer.offer_id) == ["delivered"]
    assert await _state(notify, missed_offer.offer_id) == ["failed"]


async def test_an_sms_reply_during_an_outage_is_spooled_without_its_text_and_answered_after(
    notify: NotifyHarness, postgres: PostgresCluster
) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone))
    [sent] = await notify.page_events(offer.offer_id)
    assert isinstance(sent, PageSent)
    [page] = await notify.sms(phone)
    code = reply_code_in(page)
    spool = Path(notify.env["NOTIFY_REPORT_SPOOL"]).with_name("sms-replies.jsonl")

    await asyncio.to_thread(postgres.stop)
    try:
        answered = await notify.twilio.send_sms(notify.url, phone, f"Yeah {code}")
        kept = spool.read_text()
    finally:
        await asyncio.to_thread(postgres.start)

    assert answered.status_code == 200  # not a 503, which Twilio would not retry
    assert "<Message>" not in answered.text  # the answer comes once it is applied
    assert "yeah" not in kept.lower()  # what the reply was read as, never its text
    assert '"answer"' in kept
    assert f'"code": "{code}"' in kept

    # The loops that lost the database come back after their backoff: on a busy machine
    # (make test runs three test processes) that took longer than the default 20 s.
    events = await notify.page_events(offer.offer_id, at_least=2, within=60)
    assert [(e.response, e.via) for e in events if isinstance(e, CoachResponded)] == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]
    [_, answer] = await notify.sms(phone, count=2)
    assert answer.startswith("Handoff: thank you, we are confirming you")

    async def spool_emptied() -> bool:
        return not spool.exists() and not spool.with_name(spool.name + ".applying").exists()

    await eventually(spool_emptied, within=10, what="the reply spool applied and emptied")
