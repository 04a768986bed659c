"""A provider outage and notify's own offer throttle are not the coach being unreachable
(issue #12, F1 and F2): pages are retried until the offer's page deadline, a throttled
page moves on at once (decision 0032), and matching is never told the coach could not be
reached. Notify as a process against the
fake Twilio, on real Kafka and PostgreSQL."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    ContactMethodReachabilityChanged,
    PageFailed,
    PageSent,
    ReferralUnassigned,
)
from handoff_schemas.vocabulary import (
    Channel,
    PageFailure,
    UnassignedReason,
    Urgency,
    WithdrawReason,
)
from tests.support.kafka import read_topic, send
from tests.support.notify import (
    NotifyHarness,
    assigned,
    cancelled,
    email,
    link_in,
    notify_harness,
    sms,
    withdraw,
)
from tests.support.waiting import eventually

# Two attempts used to be all a page got; the outage below outlasts them.
SEND_ATTEMPTS = 2
OFFERS_PER_WINDOW = 2


@pytest.fixture(scope="module")
async def notify(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[NotifyHarness]:
    overrides = {
        "SEND_ATTEMPTS": str(SEND_ATTEMPTS),
        "OFFERS_PER_15_MINUTES": str(OFFERS_PER_WINDOW),
    }
    async with notify_harness(
        database_url, own_kafka, "notify-outage.log", overrides=overrides
    ) as harness:
        yield harness


async def _rows(notify: NotifyHarness, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(notify.env["DATABASE_URL"])
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def _message_states(notify: NotifyHarness, offer_id: UUID) -> list[str]:
    rows = await _rows(
        notify,
        "SELECT state FROM notify.messages WHERE offer_id = $1 ORDER BY created_at",
        offer_id,
    )
    return [row["state"] for row in rows]


async def _page_events(notify: NotifyHarness, offer_id: UUID) -> list[Any]:
    """What notify has published about the offer so far (possibly nothing)."""
    records = await read_topic(notify.bootstrap_servers, Topic.PAGES)
    events = {e.id: e for e in (decode_event(r.value) for r in records)}.values()
    return [e.data for e in events if getattr(e.data, "offer_id", None) == offer_id]


async def test_a_provider_outage_longer_than_the_send_attempts_still_pages_the_coach_once(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    notify.twilio.fail_next(phone, *[503] * (SEND_ATTEMPTS + 2))
    offer = await notify.offer(sms(phone), page_deadline=datetime.now(UTC) + timedelta(seconds=60))

    [body] = await notify.sms(phone)
    assert "Reply 1" in body
    events = await notify.page_events(offer.offer_id)
    assert [type(e) for e in events] == [PageSent]


async def test_a_provider_outage_moves_the_page_to_the_coachs_next_method_after_its_tries(
    notify: NotifyHarness,
) -> None:
    """The deadline-long retries are for the coach's last method: with an email behind the
    SMS, an SMS outage reaches the coach by email after SEND_ATTEMPTS tries."""
    phone, address = notify.phone(), notify.email()
    notify.twilio.fail_next(phone, *[503] * 50)
    offer = await notify.offer(
        sms(phone), email(address), page_deadline=datetime.now(UTC) + timedelta(seconds=60)
    )

    await _moved_from_sms_to_email(notify, offer.offer_id, PageFailure.PROVIDER_ERROR)
    [mail] = notify.mailbox.to(address)
    assert "/p/" in mail.body
    assert notify.twilio.to(phone) == []


async def test_a_provider_down_past_the_page_deadline_never_calls_the_coach_unreachable(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    notify.twilio.fail_next(phone, *[503] * 50)
    offer = await notify.offer(sms(phone), page_deadline=datetime.now(UTC) + timedelta(seconds=4))

    async def given_up() -> list[str] | None:
        states = await _message_states(notify, offer.offer_id)
        return states if states and states[-1] in ("failed", "cancelled") else None

    # Failed by the last retry that fitted the deadline, or dropped by the next claim
    # past it: either way the coach's number stays in good standing, and matching ends
    # the offer not_contacted at its page deadline.
    [state] = await eventually(given_up, within=30, what="the page given up")
    if state == "failed":
        [failed] = await notify.page_events(offer.offer_id)
        assert isinstance(failed, PageFailed)
        assert (failed.failure, failed.all_channels_failed) == (PageFailure.PROVIDER_ERROR, False)
    assert notify.twilio.to(phone) == []
    assert (
        await _rows(
            notify, "SELECT state FROM notify.contact_methods WHERE destination = $1", phone
        )
        == []
    )


async def test_a_supervisors_notice_outlasts_a_provider_outage_and_is_sent_once(
    notify: NotifyHarness,
) -> None:
    """Found by a new user (#12 F3): a 30 s outage failed every "no coach" notice in six
    seconds, and none was sent again."""
    supervisor = notify.phone()
    notify.twilio.fail_next(supervisor, *[503] * (SEND_ATTEMPTS + 2))
    referral_id = uuid4()
    unassigned = ReferralUnassigned(
        referral_id=referral_id,
        reason=UnassignedReason.LADDER_EXHAUSTED,
        unassigned_at=datetime.now(UTC),
        site_id="md-mercy",
        site_short_name="Mercy ED",
        urgency=Urgency.EMERGENT,
        supervisor_contacts=(sms(supervisor),),
    )
    await send(notify.broker, unassigned, source="/handoff/matching")

    [text] = await notify.sms(supervisor)
    assert str(referral_id).replace("-", "")[:6].upper() in text
    assert "has no coach" in text


async def test_a_page_over_the_offer_throttle_moves_on_at_once_and_never_blames_the_coach(
    notify: NotifyHarness,
) -> None:
    """Fresh28 (break 2): a page over OFFERS_PER_15_MINUTES used to wait for a slot until
    its page deadline, 60 s in which the referral read "offered" and nobody was texted,
    coach after coach. Now the offer fails `throttled` at once (matching ends it
    not_contacted and asks the next coach), matching hears once that the phone is out of
    good standing, and hears it back when the window's oldest page leaves it."""
    phone = notify.phone()
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    first = [await notify.offer(sms(phone), page_deadline=deadline) for _ in range(2)]
    await notify.sms(phone, OFFERS_PER_WINDOW)
    over = [await notify.offer(sms(phone), page_deadline=deadline) for _ in range(2)]

    for offer in over:
        [failed] = await notify.page_events(offer.offer_id)
        assert isinstance(failed, PageFailed)
        assert (failed.failure, failed.all_channels_failed) == (PageFailure.THROTTLED, True)
        assert await _message_states(notify, offer.offer_id) == ["throttled"]
    for offer in first:
        assert [type(e) for e in await notify.page_events(offer.offer_id)] == [PageSent]
    assert len(notify.twilio.to(phone)) == OFFERS_PER_WINDOW
    # Told once, not per page refused; and the method is not blocked (no STOP, no bounce).
    assert [(c.reachable, c.reason) for c in await _reachability(notify, phone)] == [
        (False, "throttled")
    ]
    assert (
        await _rows(
            notify, "SELECT state FROM notify.contact_methods WHERE destination = $1", phone
        )
        == []
    )

    # The window's slot frees a quarter hour after the first page: brought forward here.
    [until] = await _rows(
        notify, "SELECT until FROM notify.throttled_methods WHERE destination = $1", phone
    )
    sent_first = min(m.created_at for m in notify.twilio.to(phone))
    assert abs((until["until"] - timedelta(minutes=15) - sent_first).total_seconds()) < 5
    await _rows(
        notify,
        "UPDATE notify.timers SET due_at = now() WHERE kind = 'throttle_ends'"
        " AND payload->>'destination' = $1",
        phone,
    )

    async def back() -> list[Any] | None:
        changes = await _reachability(notify, phone)
        return changes if len(changes) == 2 else None

    changes = await eventually(back, within=20, what="the phone back in good standing")
    assert [(c.reachable, c.reason) for c in changes] == [
        (False, "throttled"),
        (True, "throttle_freed"),
    ]


async def test_a_throttled_sms_moves_the_page_to_the_coachs_email_at_once(
    notify: NotifyHarness,
) -> None:
    phone, address = notify.phone(), notify.email()
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    for _ in range(OFFERS_PER_WINDOW):
        await notify.offer(sms(phone), page_deadline=deadline)
    await notify.sms(phone, OFFERS_PER_WINDOW)

    offer = await notify.offer(sms(phone), email(address), page_deadline=deadline)

    await _moved_from_sms_to_email(notify, offer.offer_id, PageFailure.THROTTLED)
    assert len(notify.mailbox.to(address)) == 1
    assert len(notify.twilio.to(phone)) == OFFERS_PER_WINDOW


async def test_start_on_a_spent_phone_says_it_is_back_then_spent_until_a_slot_frees(
    notify: NotifyHarness,
) -> None:
    """START puts an opted-out phone back; if its quarter hour is still spent, matching must
    hear that instead, or it asks the coach again and every page is refused, over and over
    (fresh29; decision 0032)."""
    phone = notify.phone()
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    for _ in range(OFFERS_PER_WINDOW + 1):
        await notify.offer(sms(phone), page_deadline=deadline)

    async def told(count: int) -> list[Any] | None:
        changes = await _reachability(notify, phone)
        return changes if len(changes) >= count else None

    await eventually(lambda: told(1), within=20, what="the phone spent")
    for body in ("STOP", "START"):
        response = await notify.twilio.send_sms(notify.url, phone, body)
        assert response.status_code == 200

    changes = await eventually(lambda: told(3), within=20, what="STOP and START heard")
    assert [(c.reachable, c.reason) for c in changes] == [
        (False, "throttled"),
        (False, "stop_keyword"),
        (False, "throttled"),  # START: no longer opted out, still spent
    ]


async def _moved_from_sms_to_email(
    notify: NotifyHarness, offer_id: UUID, failure: PageFailure
) -> None:
    """The offer's SMS failed with `failure`, not as every channel failing, and its email
    went out."""
    events = await notify.page_events(offer_id, at_least=2)
    assert [type(e) for e in events] == [PageFailed, PageSent]
    failed, sent = events
    assert (failed.channel, failed.failure, failed.all_channels_failed) == (
        Channel.SMS,
        failure,
        False,
    )
    assert sent.channel is Channel.EMAIL


async def _reachability(notify: NotifyHarness, destination: str) -> list[Any]:
    """ContactMethodReachabilityChanged for `destination`, in the order published."""
    records = await read_topic(notify.bootstrap_servers, Topic.PAGES)
    events = {e.id: e for e in (decode_event(r.value) for r in records)}.values()
    return [
        e.data
        for e in events
        if isinstance(e.data, ContactMethodReachabilityChanged)
        and e.data.destination == destination
    ]


async def test_the_cancel_of_a_referral_the_coach_holds_reaches_a_phone_with_a_busy_quarter_hour(
    notify: NotifyHarness,
) -> None:
    """fresh33c: notices about offers have a flood ceiling per phone; once a quarter hour had
    spent it, the ED's cancel of the referral the coach was confirmed for was refused for
    good, and the coach went to the bedside for a patient who had left."""
    phone = notify.phone()
    passed_on = await notify.offer(sms(phone))
    await notify.sms(phone)
    held = await notify.offer(sms(phone))
    [_, held_page] = await notify.sms(phone, count=2)
    await withdraw(notify, passed_on, WithdrawReason.AT_CAPACITY)
    await notify.sms(phone, count=3)  # the passed-on notice: the quarter hour's first
    async with httpx.AsyncClient() as client:
        tapped = await client.post(link_in(held_page), data={"answer": "accepted"})
    assert tapped.status_code in (200, 303)
    await send(notify.broker, assigned(held), source="/handoff/matching")
    [*_, confirmation] = await notify.sms(phone, count=4)  # the second: the ceiling
    assert "is yours" in confirmation

    await send(notify.broker, cancelled(held), source="/handoff/referral")

    [*_, told] = await notify.sms(phone, count=5)
    assert "was cancelled. No action needed." in told
