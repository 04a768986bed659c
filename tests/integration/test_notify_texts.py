"""What the phone actually receives (decision 0020), against notify as a process, a
Twilio-compatible server, real Kafka and PostgreSQL, and an SMTP relay that cannot be
reached: offers kept open when a later email fails, notices that name the request by its
code and go at once, the site's wall-clock time, and a night of unassigned referrals
reaching a supervisor as a handful of texts. Each test pages its own phone."""

import html
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_devenv.ports import free_ports
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferMade,
    PageFailed,
    ReferralUnassigned,
    ReferralUpdated,
)
from handoff_schemas.vocabulary import (
    Channel,
    CoachResponse,
    PageFailure,
    ResponseVia,
    UnassignedReason,
    Urgency,
    WithdrawReason,
)
from tests.support.kafka import send
from tests.support.notify import (
    QUICK_FALLBACK_SITE,
    SUPERVISOR_PHONE,
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

NEW_YORK = "America/New_York"
VERMONT_SUPERVISOR = "+18025550142"


@pytest.fixture(scope="module")
async def notify(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[NotifyHarness]:
    # Nothing listens on this port: every email fails to connect, as with a relay down.
    unreachable_smtp = {"SMTP_PORT": str(free_ports(1)[0])}
    vermont_line = {"SITE_SUPERVISOR_PHONES": json.dumps({"vt-uvm": VERMONT_SUPERVISOR})}
    async with notify_harness(
        database_url, own_kafka, "notify-texts.log", unreachable_smtp | vermont_line
    ) as harness:
        yield harness


async def reply(notify: NotifyHarness, phone: str, body: str) -> str | None:
    """Text `body` from `phone`; the text notify answered with, or None for no answer."""
    response = await notify.twilio.send_sms(notify.url, phone, body)
    assert response.status_code == 200
    found = re.search(r"<Message>(.*)</Message>", response.text, re.DOTALL)
    return None if found is None else html.unescape(found.group(1))


async def paged(notify: NotifyHarness, phone: str, **options: Any) -> tuple[OfferMade, str]:
    """An offer paged by SMS to `phone`, once its page is recorded as sent."""
    count = len(notify.twilio.to(phone)) + 1
    offer = await notify.offer(sms(phone), **options)
    body = (await notify.sms(phone, count=count))[-1]
    await notify.page_events(offer.offer_id)
    return offer, body


@pytest.mark.parametrize("sms_outcome", ["queued", "delivered"])
async def test_an_email_failing_after_the_sms_went_out_keeps_the_offer_open(
    notify: NotifyHarness, sms_outcome: str
) -> None:
    """Fresh-eyes finding 1: SMS accepted, SMTP unreachable; after the site's channel
    fallback the email fails, and the coach's later "1" must still accept the offer."""
    phone, address = notify.phone(), notify.email()
    offer = await notify.offer(sms(phone), email(address), site_id=QUICK_FALLBACK_SITE)
    [message] = await notify.sent_to(phone)
    if sms_outcome == "delivered":
        assert (await notify.twilio.report_status(message, "delivered")).status_code == 204

    events = await notify.page_events(
        offer.offer_id, at_least=3 if sms_outcome == "delivered" else 2
    )
    failed = [e for e in events if isinstance(e, PageFailed)]
    assert [(f.channel, f.failure, f.all_channels_failed) for f in failed] == [
        (Channel.EMAIL, PageFailure.PROVIDER_ERROR, False)
    ]
    assert notify.mailbox.to(address) == []

    answer = await reply(notify, phone, "1")

    assert answer is not None
    assert answer.startswith("Handoff: thank you, we are confirming you for the request B at")
    answered = await notify.page_events(offer.offer_id, at_least=len(events) + 1)
    assert [(e.response, e.via) for e in answered if isinstance(e, CoachResponded)] == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]


async def test_notices_about_offers_name_their_code_and_go_at_once(notify: NotifyHarness) -> None:
    """Fresh-eyes finding 3: two requests at one site; the coach must be able to tell which
    was passed on and which cancelled, and hear of it now, not after a minute's spacing."""
    phone = notify.phone()
    first, first_body = await paged(notify, phone)
    second, second_body = await paged(notify, phone)
    assert "Reply 1B to accept, 2B to decline" in first_body
    assert "Reply 1C to accept, 2C to decline" in second_body

    taken = await reply(notify, phone, "1C")
    assert taken is not None
    assert taken.startswith("Handoff: thank you, we are confirming you for the request C at")
    started = time.monotonic()
    await withdraw(notify, second, WithdrawReason.AT_CAPACITY)
    await withdraw(notify, first, WithdrawReason.CANCELLED)

    notices = (await notify.sms(phone, count=4))[2:]
    took = time.monotonic() - started

    # Two referrals: the two notices may leave in either order.
    assert sorted(notices) == [
        "Handoff: the request B at Mercy ED was cancelled. No action needed.",
        "Handoff: you are at your limit of open requests, so the request C at Mercy ED "
        "was passed on to another coach. No action needed.",
    ]
    # Notices used to wait a minute after the previous text to the phone; now neither
    # waits for the other. The margin is for a loaded machine, far below that minute.
    assert took < 20, took


async def test_a_confirmation_and_its_link_give_the_sites_local_time(
    notify: NotifyHarness,
) -> None:
    """Fresh-eyes finding 4: "Arrive by 01:03 UTC" for a New York site."""
    phone = notify.phone()
    offer, body = await paged(notify, phone, site_time_zone=NEW_YORK)
    assert await reply(notify, phone, "yes") is not None
    deadline = (datetime.now(UTC) + timedelta(minutes=45)).replace(second=0, microsecond=0)
    assigned = CoachAssigned(
        referral_id=offer.referral_id,
        offer_id=offer.offer_id,
        coach_id=offer.coach_id,
        assigned_at=datetime.now(UTC),
        arrival_deadline=deadline,
    )
    await send(notify.broker, assigned, source="/handoff/matching")

    [_, confirmation] = await notify.sms(phone, count=2)

    local = deadline.astimezone(ZoneInfo(NEW_YORK)).strftime("%H:%M %Z")
    assert local.endswith((" EST", " EDT"))
    assert f"Arrive by {local} (" in confirmation
    assert confirmation.startswith("Handoff: confirmed, the request B at Mercy ED is yours.")
    assert "UTC" not in confirmation
    async with httpx.AsyncClient() as client:
        page = await client.get(link_in(body))
    assert local in page.text
    assert "UTC" not in page.text


CANCELLED_TEXT = "Handoff: the request B at Mercy ED was cancelled. No action needed."
CANCELLED_PAGE = "The ED cancelled this request. No action is needed."


async def _page_of(body: str) -> str:
    async with httpx.AsyncClient() as client:
        page = await client.get(link_in(body))
    assert page.status_code == 200
    return page.text


@pytest.mark.parametrize("at_the_bedside", [False, True])
async def test_a_coach_who_holds_a_referral_the_ed_cancels_is_told_and_their_page_says_so(
    notify: NotifyHarness, at_the_bedside: bool
) -> None:
    """fresh33, fresh33b: a coach confirmed (or already at the bedside) for a referral the
    ED then cancelled heard nothing; the page still said "the ED expects you"."""
    phone = notify.phone()
    offer, body = await paged(notify, phone)
    assert await reply(notify, phone, "1B") is not None
    await send(notify.broker, assigned(offer), source="/handoff/matching")
    [_, confirmation] = await notify.sms(phone, count=2)
    assert confirmation.startswith("Handoff: confirmed, the request B at Mercy ED is yours.")
    if at_the_bedside:
        async with httpx.AsyncClient() as client:
            answered = await client.post(link_in(body), data={"answer": "arrived"})
        assert answered.status_code in (200, 303)
        assert "You have arrived" in await _page_of(body)

    await send(notify.broker, cancelled(offer), source="/handoff/referral")

    [*_, told] = await notify.sms(phone, count=3)
    assert told == CANCELLED_TEXT
    page = await _page_of(body)
    assert CANCELLED_PAGE in page
    assert 'name="answer"' not in page  # no Arrived or Completed to tap any more
    await send(notify.broker, cancelled(offer), source="/handoff/referral")  # a redelivery
    assert len(await notify.sms(phone, count=3)) == 3


async def test_an_assignment_read_after_the_cancel_tells_the_coach_it_was_cancelled(
    notify: NotifyHarness,
) -> None:
    """fresh33: the ED's cancel and the coach's "1B" at the same moment; matching read the
    yes first and assigned her, notify read the cancel first. She was texted "confirmed,
    ... is yours" for a patient who had left."""
    phone = notify.phone()
    offer, body = await paged(notify, phone)
    assert await reply(notify, phone, "1B") is not None
    await send(notify.broker, cancelled(offer), source="/handoff/referral")

    async def remembered() -> bool:
        connection = await asyncpg.connect(notify.env["DATABASE_URL"])
        try:
            found: bool = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM notify.cancelled_referrals WHERE referral_id = $1)",
                offer.referral_id,
            )
            return found
        finally:
            await connection.close()

    await eventually(remembered, within=20, what="notify to hear of the cancel")
    await send(notify.broker, assigned(offer), source="/handoff/matching")

    [_, told] = await notify.sms(phone, count=2)
    assert told == CANCELLED_TEXT
    assert CANCELLED_PAGE in await _page_of(body)
    assert not [b for b in await notify.sms(phone, count=2) if "is yours" in b]


async def test_a_move_the_ed_sends_shows_on_the_coachs_page(notify: NotifyHarness) -> None:
    """fresh33b: after an ADT^A08 moved the patient from ED 8 A to ICU 4 D, the coach's page
    still said ED 8 A, before and after accepting."""
    phone = notify.phone()
    offer, body = await paged(notify, phone)
    assert offer.briefing.location in await _page_of(body)
    assert await reply(notify, phone, "1B") is not None
    await send(notify.broker, assigned(offer), source="/handoff/matching")
    await notify.sms(phone, count=2)
    moved = ReferralUpdated(
        referral_id=offer.referral_id,
        location="ICU 4 D",
        urgency=Urgency.EMERGENT,
        updated_at=datetime.now(UTC),
    )
    await send(notify.broker, moved, source="/handoff/referral")

    async def shown() -> str | None:
        page = await _page_of(body)
        return page if "ICU 4 D" in page else None

    page = await eventually(shown, within=20, what="the move on the coach's page")
    assert offer.briefing.location not in page
    assert "Confirmed: the ED expects you." in page  # still hers, still to tap Arrived


async def test_a_move_the_ed_sent_before_the_offer_shows_on_its_page(
    notify: NotifyHarness,
) -> None:
    """fresh33c: an ADT^A08 move notify heard before the offer (matching made the offer from
    the facts before the move) never reached the page: the coach was sent to the old bed.
    A later change carrying only the urgency keeps the move."""
    phone, referral_id = notify.phone(), uuid4()
    for change in (
        ReferralUpdated(referral_id=referral_id, location="ICU 4 D", updated_at=datetime.now(UTC)),
        ReferralUpdated(
            referral_id=referral_id, urgency=Urgency.EMERGENT, updated_at=datetime.now(UTC)
        ),
    ):
        await send(notify.broker, change, source="/handoff/referral")

    async def both_heard() -> bool:
        connection = await asyncpg.connect(notify.env["DATABASE_URL"])
        try:
            changes = await connection.fetchval(
                "SELECT changes FROM notify.referral_updates WHERE referral_id = $1", referral_id
            )
            return changes is not None and "urgency" in json.loads(changes)
        finally:
            await connection.close()

    await eventually(both_heard, within=20, what="notify to hear of both changes")

    offer, body = await paged(notify, phone, referral_id=referral_id)

    page = await _page_of(body)
    assert "ICU 4 D" in page
    assert offer.briefing.location not in page


async def test_one_yes_for_two_requests_is_answered_one_a_text_and_changes_nothing(
    notify: NotifyHarness,
) -> None:
    """fresh33: "1B 1C" from a coach paged twice got the help text."""
    phone = notify.phone()
    first, _ = await paged(notify, phone)
    second, _ = await paged(notify, phone)
    answer = await reply(notify, phone, "1B 1C")
    assert answer == "Handoff: one request a text, please. Nothing was changed. Reply 1B, then 1C."
    mixed = await reply(notify, phone, "1B2C")  # fresh33c: a yes and a no, no space
    assert mixed == "Handoff: one request a text, please. Nothing was changed. Reply 1B, then 2C."
    unknown = await reply(notify, phone, "1B then 1Z")  # fresh34a: "Reply 1B, then 1Z"
    assert unknown == (
        "Handoff: you have no request with code Z; nothing was changed. Reply HELP for help."
    )
    events = await notify.page_events(first.offer_id) + await notify.page_events(second.offer_id)
    assert not [e for e in events if isinstance(e, CoachResponded)]
    taken = await reply(notify, phone, "1B")
    assert taken is not None
    assert taken.startswith("Handoff: thank you, we are confirming you for the request B at")
    again = await reply(notify, phone, "1B 1C")  # fresh34a: it said "Reply 1B, then 1C"
    assert again == "Handoff: one request a text, please. Nothing was changed. Reply 1C."


async def test_help_gives_the_supervisor_line_of_the_site_the_coach_was_paged_for(
    notify: NotifyHarness,
) -> None:
    """fresh33: HELP from a Vermont coach gave the Maryland supervisor's number."""
    vermont, maryland = notify.phone(), notify.phone()
    await paged(notify, vermont, site_id="vt-uvm", site_short_name="UVM ED")
    await paged(notify, maryland)
    vermont_help = await reply(notify, vermont, "HELP")
    assert vermont_help is not None
    assert f"Supervisor: {VERMONT_SUPERVISOR}." in vermont_help
    maryland_help = await reply(notify, maryland, "HELP")
    assert maryland_help is not None
    assert f"Supervisor: {SUPERVISOR_PHONE}." in maryland_help  # NOTIFY_SUPERVISOR_PHONE


async def _notices_to(notify: NotifyHarness, phone: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(notify.env["DATABASE_URL"])
    try:
        return list(
            await connection.fetch(
                """SELECT referral_id, state, digest_of, due_at > now() + interval '10 minutes'
                          AS held FROM notify.notices WHERE destination = $1""",
                phone,
            )
        )
    finally:
        await connection.close()


def _reference(referral_id: UUID) -> str:
    return str(referral_id).replace("-", "")[:6].upper()


async def test_a_night_of_unassigned_referrals_reaches_a_supervisor_as_a_handful_of_texts(
    notify: NotifyHarness,
) -> None:
    """Fresh-eyes finding 2: 14 identical texts for 10 referrals in 11 minutes. Now at most
    `notices_per_15_minutes` (5) texts per quarter hour, each naming its requests, the
    last carrying all then due; every referral is told once or held, never dropped."""
    supervisor = notify.phone()
    referrals = [uuid4() for _ in range(10)]
    at = datetime(2026, 12, 1, 5, 6, tzinfo=UTC)  # 00:06 EST
    for n, referral_id in enumerate(referrals):
        unassigned = ReferralUnassigned(
            referral_id=referral_id,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=at + timedelta(minutes=n),
            site_id="md-mercy",
            site_short_name="Mercy ED",
            site_time_zone=NEW_YORK,
            urgency=Urgency.URGENT,
            supervisor_contacts=(sms(supervisor),),
        )
        await send(notify.broker, unassigned, source="/handoff/matching")

    async def settled() -> list[asyncpg.Record] | None:
        rows = await _notices_to(notify, supervisor)
        done = all(r["state"] == "sent" or (r["state"] == "pending" and r["held"]) for r in rows)
        return rows if len(rows) == len(referrals) and done else None

    rows = await eventually(settled, within=30, what="every notice sent or held")
    texts = [m.body for m in notify.twilio.to(supervisor)]

    assert len(texts) == 5, texts
    # Sends leave concurrently, and how many notices are due at each claim depends on
    # timing: the window's last slot carries every notice then due, one or several.
    digest_start = re.compile(r"Handoff: \d+ more requests? at Mercy ED ha(s|ve) no coach \(latest")
    digests = [t for t in texts if digest_start.match(t)]
    singles = [t for t in texts if t not in digests]
    assert len(digests) <= 1, digests
    assert all("has no coach: nobody on call accepted it (00:" in t for t in singles), singles
    assert all(" EST). Please arrange cover." in t for t in singles), singles
    assert len(set(singles)) == len(singles)
    told = [r for r in rows if r["state"] == "sent"]
    held = [r for r in rows if r["state"] == "pending"]
    named = [ref for text in texts for ref in re.findall(r"\b[0-9A-F]{6}\b", text)]
    assert sorted(named) == sorted(_reference(r["referral_id"]) for r in told)  # each once
    assert len(told) + len(held) == len(referrals)  # the rest wait for the next digest
    if digests:
        assert f"Handoff: {len(told) - len(singles)} more request" in digests[0]


async def test_a_page_form_with_two_answers_is_refused_and_changes_nothing(
    notify: NotifyHarness,
) -> None:
    """fresh34d: "answer=declined&answer=accepted" accepted the offer (the last value)."""
    phone = notify.phone()
    offer, body = await paged(notify, phone)
    async with httpx.AsyncClient() as client:
        both = await client.post(
            link_in(body),
            content=b"answer=declined&answer=accepted",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert both.status_code == 422
    assert "one answer" in both.text
    rows = await notify.rows(
        "SELECT response FROM notify.responses WHERE offer_id = $1", offer.offer_id
    )
    assert rows == []
