"""Sends whose own answer notify never stored (issue 13): the provider's report names the
page, and a lookup reads the provider's whole list, so a page that reached a phone is
recorded against its page, never failed as "not found" and moved on from."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_notify.adapters.providers import Outgoing
from handoff_notify.adapters.twilio import LOOKUP_PAGE_SIZE, TwilioProvider
from handoff_notify.domain import content
from handoff_notify.domain.delivery import Found, NotFound
from handoff_schemas.events import PageDelivered, PageSent
from handoff_schemas.vocabulary import Channel, Urgency
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, new_phone
from tests.support.notify import NotifyHarness, notify_harness, sms


@pytest.fixture(scope="module")
async def notify(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[NotifyHarness]:
    async with notify_harness(database_url, own_kafka, "notify-lost-outcomes.log") as harness:
        yield harness


def _page(phone: str, number: int) -> Outgoing:
    link = f"https://notify.example/p/offer-{number}-{uuid4().hex}"
    return Outgoing(
        message_id=uuid4(),
        channel=Channel.SMS,
        destination=phone,
        content=content.offer("Mercy ED", Urgency.URGENT, link),
        answer_url="https://notify.example/v1/twilio/voice/x",
        correlation_id=str(uuid4()),
    )


async def test_a_lost_send_is_found_past_the_first_page_of_the_providers_list() -> None:
    async with FakeTwilio() as twilio:
        provider = TwilioProvider(
            base_url=twilio.base_url,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            from_number=FROM_NUMBER,
            status_callback_url="https://notify.example/v1/twilio/status",
            timeout=5.0,
        )
        try:
            phone = new_phone()
            since = datetime.now(UTC)
            lost = _page(phone, 0)
            await provider.send(lost)
            # A busy coach: more pages after it than two pages of the provider's list hold.
            for number in range(1, 2 * LOOKUP_PAGE_SIZE + 5):
                await provider.send(_page(phone, number))
            never_sent = _page(phone, -1)

            found = await provider.lookup(lost, since)
            requests_for_found = twilio.list_requests
            missing = await provider.lookup(never_sent, since)
        finally:
            await provider.close()
    [recorded] = [m for m in twilio.to(phone) if m.body == lost.content.text]
    assert found == Found(recorded.sid, delivered=False)
    assert requests_for_found == 3  # it read the third page, where the oldest one is
    assert missing == NotFound()
    assert recorded.status_callback is not None
    assert recorded.status_callback.endswith(f"?page={lost.message_id}")


async def _reconciled(notify: NotifyHarness) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{notify.url}/metrics")).text
    prefix = 'handoff_page_sends_reconciled_total{channel="sms",finding="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def test_a_report_naming_its_page_stores_the_sid_the_send_never_answered(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    notify.twilio.lose_answer(phone, "sent")
    before = await _reconciled(notify)
    offer = await notify.offer(sms(phone))

    [sent] = await notify.page_events(offer.offer_id, at_least=1)
    [message] = notify.twilio.to(phone)
    assert isinstance(sent, PageSent)
    assert notify.twilio.early_callbacks[message.sid] == 204
    assert (await notify.twilio.report_status(message, "delivered")).status_code == 204
    events = await notify.page_events(offer.offer_id, at_least=2)

    assert [e.event_type for e in events] == [PageSent.event_type, PageDelivered.event_type]
    connection = await asyncpg.connect(notify.env["DATABASE_URL"])
    try:
        rows = await connection.fetch(
            "SELECT state, provider_ref FROM notify.messages WHERE offer_id = $1", offer.offer_id
        )
    finally:
        await connection.close()
    assert [(r["state"], r["provider_ref"]) for r in rows] == [("delivered", message.sid)]
    after = await _reconciled(notify)
    assert after["reported"] - before.get("reported", 0) == 1
    assert after.get("not_found", 0) == before.get("not_found", 0)
    assert notify.twilio.attempts[phone] == 1  # sent once: never retried, never moved on
