"""Providers' delivery reports, against notify as a process and a Twilio-compatible server:
none is lost when it beats the send's answer, and none moves a message out of a final state."""

import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_schemas.events import PageDelivered, PageFailed, PageSent
from handoff_schemas.vocabulary import Channel, PageFailure
from tests.support.fake_twilio import Recorded, new_phone
from tests.support.notify import NotifyHarness, email, notify_harness, sms
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def notify(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[NotifyHarness]:
    async with notify_harness(database_url, own_kafka, "notify-delivery-reports.log") as harness:
        yield harness


async def _messages(notify: NotifyHarness, offer_id: UUID) -> list[tuple[str, str]]:
    """(channel, state) of every message notify holds for the offer, by contact order."""
    connection = await asyncpg.connect(notify.env["DATABASE_URL"])
    try:
        rows = await connection.fetch(
            """SELECT channel, state FROM notify.messages
               WHERE offer_id = $1 AND kind = 'offer' ORDER BY contact_index""",
            offer_id,
        )
    finally:
        await connection.close()
    return [(r["channel"], r["state"]) for r in rows]


async def _reports(notify: NotifyHarness) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{notify.url}/metrics")).text
    prefix = 'handoff_page_delivery_reports_total{outcome="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def test_a_delivered_report_that_beats_the_sends_answer_is_kept_and_applied(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    notify.twilio.report_before_answering(phone, "delivered")
    before = await _reports(notify)
    offer = await notify.offer(sms(phone))

    events = await notify.page_events(offer.offer_id, at_least=2)

    [message] = notify.twilio.to(phone)
    assert notify.twilio.early_callbacks[message.sid] == 204  # answered before the send was
    assert [e.event_type for e in events] == [PageSent.event_type, PageDelivered.event_type]
    assert await _messages(notify, offer.offer_id) == [("sms", "delivered")]
    after = await _reports(notify)
    # The callback URL names the page, so the report stores the SID and applies at once.
    assert after["applied"] - before.get("applied", 0) >= 1


async def test_an_undelivered_report_that_beats_the_sends_answer_moves_the_page_on(
    notify: NotifyHarness,
) -> None:
    phone, address = notify.phone(), notify.email()
    notify.twilio.report_before_answering(phone, "undelivered")
    offer = await notify.offer(sms(phone), email(address))

    async def emailed() -> list[Any] | None:
        events = await notify.page_events(offer.offer_id)
        return events if len([e for e in events if isinstance(e, PageSent)]) == 2 else None

    events = await eventually(emailed, within=20, what="the page to move on to email")

    [message] = notify.twilio.to(phone)
    assert notify.twilio.early_callbacks[message.sid] == 204
    assert [e.channel for e in events if isinstance(e, PageSent)] == [Channel.SMS, Channel.EMAIL]
    assert not [e for e in events if isinstance(e, PageDelivered) and e.channel is Channel.SMS]
    assert [
        (e.channel, e.failure, e.all_channels_failed) for e in events if isinstance(e, PageFailed)
    ] == [(Channel.SMS, PageFailure.NOT_DELIVERED, False)], "the email was still there"
    assert (await _messages(notify, offer.offer_id))[0] == ("sms", "failed")


async def test_reports_out_of_order_or_twice_leave_a_delivered_message_delivered(
    notify: NotifyHarness,
) -> None:
    phone, address = notify.phone(), notify.email()
    offer = await notify.offer(sms(phone), email(address))
    await notify.sms(phone)
    await notify.page_events(offer.offer_id)
    [message] = notify.twilio.to(phone)
    before = await _reports(notify)

    answers = [
        (await notify.twilio.report_status(message, status, code)).status_code
        for status, code in (
            ("delivered", None),
            ("sent", None),
            ("failed", "30003"),
            ("undelivered", "30005"),
            ("delivered", None),
        )
    ]

    assert answers == [204] * 5
    # Each report is committed before its 204: the states are final now.
    assert await _messages(notify, offer.offer_id) == [("sms", "delivered")], (
        "no later report moved it, and the email was never needed"
    )
    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [e.event_type for e in events] == [PageSent.event_type, PageDelivered.event_type]
    after = await _reports(notify)
    assert after["applied"] - before.get("applied", 0) == 1
    assert after["ignored"] - before.get("ignored", 0) == 3  # "sent" is not a final report


async def test_a_failed_report_then_a_late_delivered_one_leaves_it_failed(
    notify: NotifyHarness,
) -> None:
    phone, address = notify.phone(), notify.email()
    offer = await notify.offer(sms(phone), email(address))
    await notify.sms(phone)
    [message] = notify.twilio.to(phone)
    await notify.page_events(offer.offer_id)

    assert (await notify.twilio.report_status(message, "failed", "30003")).status_code == 204
    assert (await notify.twilio.report_status(message, "delivered")).status_code == 204

    # Each report is committed before its 204: the states are final now.
    assert (await _messages(notify, offer.offer_id))[0] == ("sms", "failed")
    events = await notify.page_events(offer.offer_id, at_least=2)
    assert not [e for e in events if isinstance(e, PageDelivered) and e.channel is Channel.SMS]


def _unknown(notify: NotifyHarness) -> Recorded:
    """A message notify never sent (another application's, or a sid lost for good)."""
    return Recorded(
        sid="SM" + uuid.uuid4().hex, kind="sms", to=new_phone(), body="",
        status_callback=f"{notify.url}/v1/twilio/status",
    )  # fmt: skip


async def test_reports_for_ids_that_never_turn_up_expire(notify: NotifyHarness) -> None:
    database = notify.env["DATABASE_URL"]
    old = _unknown(notify)
    assert (await notify.twilio.report_status(old, "delivered")).status_code == 204
    connection = await asyncpg.connect(database)
    try:
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM notify.early_delivery_reports WHERE provider_ref = $1",
                old.sid,
            )
            == 1
        )
        await connection.execute(
            """UPDATE notify.early_delivery_reports SET received_at = now() - interval '2 hours'
               WHERE provider_ref = $1""",
            old.sid,
        )
        before = await _reports(notify)
        new = _unknown(notify)
        assert (await notify.twilio.report_status(new, "delivered")).status_code == 204
        kept = await connection.fetch(
            "SELECT provider_ref FROM notify.early_delivery_reports WHERE provider_ref = ANY($1)",
            [old.sid, new.sid],
        )
    finally:
        await connection.close()
    assert [r["provider_ref"] for r in kept] == [new.sid]
    after = await _reports(notify)
    assert after["expired"] - before.get("expired", 0) == 1
