"""Notify against a Twilio-compatible server and a real SMTP server, on real Kafka and
PostgreSQL. Each test asserts the exact messages sent; the module fails on any other."""

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from handoff_devenv import KafkaCluster
from handoff_notify.adapters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferWithdrawn,
    PageDelivered,
    PageFailed,
    PageSent,
)
from handoff_schemas.vocabulary import (
    Channel,
    CoachResponse,
    PageFailure,
    ResponseVia,
    WithdrawReason,
)
from tests.integration.conftest import handoff_command
from tests.support.fake_twilio import signed_post
from tests.support.kafka import send
from tests.support.notify import (
    ADMIN_TOKEN,
    QUICK_FALLBACK_SITE,
    WEBHOOK_SECRET,
    NotifyHarness,
    email,
    link_in,
    notify_harness,
    sms,
    voice,
    webhook,
)
from tests.support.patients import ARTIFACTS
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def notify(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[NotifyHarness]:
    async with notify_harness(database_url, own_kafka) as harness:
        yield harness


async def test_an_offer_pages_the_coach_once_by_sms_with_a_working_link(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone))

    [body] = await notify.sms(phone)
    assert body.startswith("Handoff: urgent request at Mercy ED. Reply 1B to accept")
    async with httpx.AsyncClient() as client:
        page = await client.get(link_in(body))
    assert page.status_code == 200
    assert "Mercy ED" in page.text
    assert "ED bay 4" in page.text
    assert ">Accept</button>" in page.text
    assert ">Decline</button>" in page.text
    [sent] = await notify.page_events(offer.offer_id)
    assert isinstance(sent, PageSent)
    assert sent.channel is Channel.SMS
    assert len(notify.twilio.to(phone)) == 1


async def test_replying_1_accepts_the_senders_open_offer(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone))
    await notify.sms(phone)
    await notify.page_events(offer.offer_id)  # the page is recorded as sent

    reply = await notify.twilio.send_sms(notify.url, phone, " yes ")
    again = await notify.twilio.send_sms(notify.url, phone, "1")

    assert reply.status_code == 200
    assert "we are confirming you for the request B at Mercy ED" in reply.text
    assert "you accepted the request B at Mercy ED; we are confirming it" in again.text
    events = await notify.page_events(offer.offer_id, at_least=2)
    answers = [e for e in events if isinstance(e, CoachResponded)]
    assert [(a.response, a.via) for a in answers] == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]


async def test_a_provider_that_fails_twice_then_succeeds_sends_one_sms(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    notify.twilio.fail_next(phone, 500, 503)
    offer = await notify.offer(sms(phone))

    [body] = await notify.sms(phone)
    assert notify.twilio.attempts[phone] == 3
    [message] = notify.twilio.to(phone)
    callback = await notify.twilio.report_status(message, "delivered")
    assert callback.status_code == 204
    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [e.event_type for e in events] == [PageSent.event_type, PageDelivered.event_type]
    assert body.startswith("Handoff:")


async def test_an_invalid_number_falls_back_to_email(notify: NotifyHarness) -> None:
    phone, address = notify.phone(), notify.email()
    notify.twilio.invalid_numbers.add(phone)
    offer = await notify.offer(sms(phone), email(address))

    events = await notify.page_events(offer.offer_id, at_least=2)
    failed, sent = events[0], events[1]
    assert isinstance(failed, PageFailed)
    assert failed.failure is PageFailure.INVALID_DESTINATION
    assert not failed.all_channels_failed
    assert isinstance(sent, PageSent)
    assert sent.channel is Channel.EMAIL
    [mail] = notify.mailbox.to(address)
    assert mail.subject == "Handoff: urgent request at Mercy ED."
    assert "/p/" in mail.body
    assert notify.twilio.to(phone) == []


async def test_a_webhook_page_is_one_signed_https_post_with_a_working_link(
    notify: NotifyHarness,
) -> None:
    url = notify.webhook_url()
    notify.webhooks.fail_next(url, 503)  # a receiver's bad moment: tried again, sent once
    offer = await notify.offer(webhook(url))

    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [(e.event_type, e.channel) for e in events] == [
        (PageSent.event_type, Channel.WEBHOOK),
        (PageDelivered.event_type, Channel.WEBHOOK),
    ]
    [call] = notify.webhooks.to(url)
    timestamp = call.headers[TIMESTAMP_HEADER]
    assert call.headers[SIGNATURE_HEADER] == signature(WEBHOOK_SECRET, timestamp, call.body)
    assert abs(time.time() - int(timestamp)) < 60
    page = json.loads(call.body)
    assert page["title"] == "Handoff: urgent request at Mercy ED."
    async with httpx.AsyncClient() as client:
        assert (await client.get(link_in(page["text"]))).status_code == 200
    assert [c.answered for c in notify.webhooks.calls if c.path == call.path] == [503, 200]


async def test_a_webhook_that_refuses_the_page_falls_back_to_the_next_method(
    notify: NotifyHarness,
) -> None:
    url, address = notify.webhook_url(), notify.email()
    notify.webhooks.fail_next(url, 410)
    offer = await notify.offer(webhook(url), email(address))

    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [(e.event_type, e.channel) for e in events[:2]] == [
        (PageFailed.event_type, Channel.WEBHOOK),
        (PageSent.event_type, Channel.EMAIL),
    ]
    assert notify.webhooks.to(url) == []
    [mail] = notify.mailbox.to(address)
    assert "/p/" in mail.body


async def test_when_every_channel_fails_matching_is_told(notify: NotifyHarness) -> None:
    phone, address = notify.phone(), notify.email()
    notify.twilio.unsubscribed.add(phone)
    notify.mailbox.refused.add(address)
    offer = await notify.offer(sms(phone), email(address))

    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [(type(e), e.failure, e.all_channels_failed) for e in events] == [
        (PageFailed, PageFailure.UNSUBSCRIBED, False),
        (PageFailed, PageFailure.INVALID_DESTINATION, True),
    ]
    assert notify.twilio.to(phone) == []
    assert notify.mailbox.to(address) == []


async def test_a_redelivered_offer_sends_no_second_sms(notify: NotifyHarness) -> None:
    phone, later = notify.phone(), notify.phone()
    event_id, referral_id = uuid4(), uuid4()
    first = await notify.offer(sms(phone), referral_id=referral_id, event_id=event_id)
    await notify.sms(phone)

    await send(notify.broker, first, event_id=event_id, source="/handoff/matching")
    # The same referral's next event comes after the duplicate on its partition, so
    # once it is paged the duplicate has been consumed.
    await notify.offer(sms(later), referral_id=referral_id)
    await notify.sms(later)
    assert len(notify.twilio.to(phone)) == 1


async def test_a_filled_offer_tells_the_coach_and_its_link_says_so(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone))
    [body] = await notify.sms(phone)
    withdrawn = OfferWithdrawn(
        referral_id=offer.referral_id,
        offer_id=offer.offer_id,
        coach_id=offer.coach_id,
        reason=WithdrawReason.FILLED,
        withdrawn_at=offer.expires_at,
    )
    await send(notify.broker, withdrawn, source="/handoff/matching")

    bodies = await notify.sms(phone, count=2)
    assert (
        bodies[1]
        == "Handoff: the request B at Mercy ED was filled by another coach. No action needed."
    )
    async with httpx.AsyncClient() as client:
        page = await client.get(link_in(body))
        answer = await client.post(link_in(body), data={"answer": "accepted"})
    assert page.status_code == 200
    assert "filled by another coach" in page.text
    assert 'name="answer"' not in page.text  # no answer left to give; "Your calls" stays
    assert answer.status_code == 303
    events = await notify.page_events(offer.offer_id)
    assert not [e for e in events if isinstance(e, CoachResponded)]


async def test_forged_and_unknown_webhooks_get_nothing(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone))
    await notify.sms(phone)
    await notify.page_events(offer.offer_id)
    form = {"From": phone, "To": "+15005550006", "Body": "1", "MessageSid": "SMforged"}
    async with httpx.AsyncClient() as client:
        unsigned = await client.post(f"{notify.url}/v1/twilio/sms", data=form)
        forged = await signed_post(f"{notify.url}/v1/twilio/sms", form, auth_token="guessed")
    stranger = await notify.twilio.send_sms(notify.url, notify.phone(), "1")

    assert unsigned.status_code == 403
    assert unsigned.content == b""
    assert forged.status_code == 403
    assert forged.content == b""
    assert stranger.status_code == 200
    assert "this number is not registered with" in stranger.text  # and nothing changed
    # The coach's own reply still works: the forgeries did not consume the offer.
    reply = await notify.twilio.send_sms(notify.url, phone, "2")
    assert "your decline of the request B at Mercy ED is recorded" in reply.text
    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [e.response for e in events if isinstance(e, CoachResponded)] == [CoachResponse.DECLINED]


async def test_a_tampered_link_is_not_found(notify: NotifyHarness) -> None:
    phone = notify.phone()
    await notify.offer(sms(phone))
    [body] = await notify.sms(phone)
    link = link_in(body)
    async with httpx.AsyncClient() as client:
        tampered = await client.get(link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"))
    assert tampered.status_code == 404
    assert "This link is not valid" in tampered.text


async def test_opening_the_page_is_one_audit_entry_of_the_coach_and_the_cli_exports_it(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    referral_id = uuid4()
    offer = await notify.offer(sms(phone), referral_id=referral_id)
    [body] = await notify.sms(phone)
    link = link_in(body)
    async with httpx.AsyncClient() as client:
        assert (await client.get(link)).status_code == 200
        tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        assert (await client.get(tampered)).status_code == 404

    database = notify.env["DATABASE_URL"]
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch(
            "SELECT * FROM notify.audit_log WHERE record_id = $1", str(referral_id)
        )
    finally:
        await connection.close()
    [entry] = rows
    assert (entry["actor_kind"], entry["actor_id"]) == ("coach", str(offer.coach_id))
    assert (entry["record_kind"], entry["purpose"]) == ("referral", "treatment")
    assert {"location", "callback_phone", "consent"} <= set(entry["fields"])
    assert entry["client_address"] == "127.0.0.1"
    stored = str(dict(entry))
    assert phone not in stored
    assert "ED bay 4" not in stored

    day = timedelta(days=1)
    now = datetime.now(UTC)
    exported = handoff_command(
        *("notify", "audit", "export", "--format", "json"),
        *("--from", (now - day).isoformat(), "--to", (now + day).isoformat()),
        database_url=database,
    )
    [listed] = [e for e in json.loads(exported) if e["record_id"] == str(referral_id)]
    assert listed["entry_id"] == entry["entry_id"]
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{notify.url}/v1/admin/audit",
            params={"from": (now - day).isoformat(), "to": (now + day).isoformat()},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    [served] = [e for e in answer.json()["entries"] if e["record_id"] == str(referral_id)]
    assert served == listed


async def test_a_send_interrupted_by_a_crash_is_reconciled_not_resent(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    notify.twilio.hold(phone)
    offer = await notify.offer(sms(phone))

    async def provider_has_it() -> bool:
        return notify.twilio.held_requests[phone] == 1

    await eventually(provider_has_it, within=20, what="the send to reach the provider")
    await notify.restart(kill=True)  # dies before recording what Twilio answered
    notify.twilio.release(phone)

    [sent] = await notify.page_events(offer.offer_id)
    assert isinstance(sent, PageSent)
    assert notify.twilio.attempts[phone] == 1
    assert len(notify.twilio.to(phone)) == 1


async def test_a_coach_accepts_from_the_link_in_a_real_browser(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone))
    [body] = await notify.sms(phone)

    confirmation = await asyncio.to_thread(
        tap_in_browser, link_in(body), "Accept", ARTIFACTS / "coach-page-accepted.png"
    )

    assert "You accepted" in confirmation
    assert (ARTIFACTS / "coach-page-accepted.png").stat().st_size > 0
    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [(e.response, e.via) for e in events if isinstance(e, CoachResponded)] == [
        (CoachResponse.ACCEPTED, ResponseVia.LINK)
    ]


async def test_after_assignment_the_coach_reports_arrival_and_completion(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone))
    [body] = await notify.sms(phone)
    link = link_in(body)
    async with httpx.AsyncClient(follow_redirects=True) as client:
        await client.post(link, data={"answer": "accepted"})
        assigned = CoachAssigned(
            referral_id=offer.referral_id,
            offer_id=offer.offer_id,
            coach_id=offer.coach_id,
            assigned_at=datetime.now(UTC),
            arrival_deadline=datetime.now(UTC) + timedelta(minutes=45),
        )
        await send(notify.broker, assigned, source="/handoff/matching")
        confirmation = (await notify.sms(phone, count=2))[1]
        arrived = await client.post(link, data={"answer": "arrived"})
        completed = await client.post(link, data={"answer": "completed"})
        late_decline = await client.post(link, data={"answer": "declined"})

    assert confirmation.startswith("Handoff: confirmed, the request B at Mercy ED is yours.")
    assert "(45 min)" in confirmation
    assert "Tap Completed" in arrived.text
    assert "Completed. Thank you." in completed.text
    assert late_decline.status_code == 200
    events = await notify.page_events(offer.offer_id, at_least=4)
    assert [e.response for e in events if isinstance(e, CoachResponded)] == [
        CoachResponse.ACCEPTED,
        CoachResponse.ARRIVED,
        CoachResponse.COMPLETED,
    ]


def tap_in_browser(url: str, button: str, screenshot: Path) -> str:
    """Open `url` in headless Chromium, tap `button`, screenshot the page that follows."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=390,844")  # a phone's viewport
    driver = webdriver.Chrome(options=options, service=ChromeService("/usr/bin/chromedriver"))
    try:
        driver.get(url)
        driver.find_element(By.XPATH, f"//button[normalize-space()='{button}']").click()
        # The click navigates: a body found just before the new page replaced it is stale,
        # so look again rather than fail (ci17).
        WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: "You accepted" in d.find_element(By.TAG_NAME, "body").text
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        return str(driver.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.quit()


async def test_an_unanswered_page_moves_to_the_next_method_after_the_sites_delay(
    notify: NotifyHarness,
) -> None:
    phone, address = notify.phone(), notify.email()
    offer = await notify.offer(sms(phone), email(address), site_id=QUICK_FALLBACK_SITE)

    await notify.sms(phone)
    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [(type(e), e.channel) for e in events] == [
        (PageSent, Channel.SMS),
        (PageSent, Channel.EMAIL),
    ]
    [mail] = notify.mailbox.to(address)
    # Nothing reads an email reply: the page asks for the link, not for "1".
    assert "Open this link to accept or decline: http" in mail.body
    assert "Reply" not in mail.body
    assert len(notify.twilio.to(phone)) == 1


async def test_after_a_restart_no_fallback_page_goes_out_for_an_offer_whose_window_passed(
    notify: NotifyHarness,
) -> None:
    """Issue #12: notify was killed after an SMS page; the offer's answer window (the site's
    ack timeout from the page) passed while it was down; at the restart the overdue
    fallback emailed the coach a page for an offer matching had already ended. The offer's
    own deadline, from its first page, is checked before the fallback sends."""
    phone, address = notify.phone(), notify.email()
    other_phone, other_address = notify.phone(), notify.email()
    page_deadline = datetime.now(UTC) + timedelta(seconds=60)
    # Ack timeout 0.2 s (expires_at - page_deadline): over before the 1 s fallback is due.
    ended = await notify.offer(
        sms(phone),
        email(address),
        site_id=QUICK_FALLBACK_SITE,
        page_deadline=page_deadline,
        expires_in=(page_deadline - datetime.now(UTC)).total_seconds() + 0.2,
    )
    still_open = await notify.offer(
        sms(other_phone), email(other_address), site_id=QUICK_FALLBACK_SITE, expires_in=300
    )
    await notify.page_events(ended.offer_id)
    await notify.page_events(still_open.offer_id)

    await notify.restart(kill=True)

    # The still-open offer's fallback goes out after the restart: the timers have run.
    await eventually(
        lambda: _mails(notify, other_address), within=30, what="the open offer's fallback"
    )
    assert notify.mailbox.to(address) == []
    assert len(notify.twilio.to(phone)) == 1


async def _mails(notify: NotifyHarness, address: str) -> list[Any] | None:
    return notify.mailbox.to(address) or None


async def test_a_voice_page_takes_a_keypad_answer(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer = await notify.offer(voice(phone))

    [call] = await notify.sent_to(phone)
    assert call.kind == "call"
    assert "<Gather" in call.body
    assert "Press 1 to accept" in call.body
    answer_url = re.search(r'action="([^"]+)"', call.body)
    assert answer_url
    answered = await signed_post(answer_url.group(1), {"Digits": "1", "CallSid": call.sid})

    assert "Your answer, accepted, is recorded" in answered.text
    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [(e.response, e.via) for e in events if isinstance(e, CoachResponded)] == [
        (CoachResponse.ACCEPTED, ResponseVia.VOICE_KEYPAD)
    ]


async def test_metrics_count_pages_by_channel_and_outcome_and_answers_by_kind(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    notify.twilio.fail_next(phone, 500)
    offer = await notify.offer(sms(phone))
    await notify.sms(phone)
    await notify.page_events(offer.offer_id)
    await notify.twilio.send_sms(notify.url, phone, "2")
    await notify.page_events(offer.offer_id, at_least=2)

    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{notify.url}/metrics")).text
    assert re.search(
        r'handoff_pages_total\{channel="sms",kind="offer",outcome="sent"\} [1-9]', metrics
    )
    assert re.search(
        r'handoff_coach_answers_total\{response="declined",via="sms_reply"\} [1-9]', metrics
    )
    assert 'handoff_page_provider_errors_total{channel="sms",code="http_500:20500"}' in metrics
    assert "handoff_offer_to_answer_seconds_bucket" in metrics
