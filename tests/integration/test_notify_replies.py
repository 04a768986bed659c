"""Coaches' real SMS replies, against notify as a process, a Twilio-compatible server, real
Kafka and PostgreSQL: reply codes, typed answers, STOP / START / HELP, numbers the provider
says are never deliverable, and an answer to every answer. Each test pages its own phone
and names its own offers; the module fails on any message no test expected."""

import asyncio
import html
import re
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    CoachAssigned,
    CoachAvailabilityChanged,
    CoachPhonesChanged,
    CoachResponded,
    OfferMade,
    PageFailed,
    PageSent,
    ReferralCancelled,
    ReferralUnassigned,
)
from handoff_schemas.vocabulary import (
    CancelReason,
    Channel,
    CoachResponse,
    PageFailure,
    ResponseVia,
    UnassignedReason,
    Urgency,
    WithdrawReason,
)
from tests.support.fake_twilio import signed_post
from tests.support.kafka import read_topic, send
from tests.support.notify import (
    ADMIN_TOKEN,
    PROGRAM_NAME,
    SUPERVISOR_PHONE,
    NotifyHarness,
    email,
    link_in,
    notify_harness,
    sms,
    voice,
    withdraw,
)
from tests.support.waiting import eventually

PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"
HELP_START = f"{PROGRAM_NAME}: reply 1 or YES to accept, 2 or NO to decline"


@pytest.fixture(scope="module")
async def notify(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[NotifyHarness]:
    async with notify_harness(database_url, own_kafka, "notify-replies.log") as harness:
        yield harness


async def reply(notify: NotifyHarness, phone: str, body: str) -> str | None:
    """Text `body` from `phone`; the text notify answered with, or None for no answer."""
    response = await notify.twilio.send_sms(notify.url, phone, body)
    assert response.status_code == 200
    found = re.search(r"<Message>(.*)</Message>", response.text, re.DOTALL)
    return None if found is None else html.unescape(found.group(1))


async def paged(notify: NotifyHarness, *contacts: Any, **options: Any) -> tuple[OfferMade, str]:
    """An offer paged by SMS to the first contact, once its page is recorded as sent."""
    phone = contacts[0].destination
    # Counted before the offer goes out: notify can page faster than this line runs.
    count = len(notify.twilio.to(phone)) + 1
    offer = await notify.offer(*contacts, **options)
    body = (await notify.sms(phone, count=count))[-1]
    await notify.page_events(offer.offer_id)
    return offer, body


async def answers(notify: NotifyHarness, offer_id: UUID) -> list[tuple[CoachResponse, Any]]:
    """What notify recorded as the coach's answers to this offer, from its database."""
    rows = await notify.rows(
        "SELECT response, via FROM notify.responses WHERE offer_id = $1", offer_id
    )
    return [(CoachResponse(r["response"]), ResponseVia(r["via"])) for r in rows]


async def responded(notify: NotifyHarness, offer_id: UUID, at_least: int = 2) -> list[Any]:
    events = await notify.page_events(offer_id, at_least=at_least)
    return [(e.response, e.via) for e in events if isinstance(e, CoachResponded)]


async def admin(notify: NotifyHarness, state: str | None, token: str = ADMIN_TOKEN) -> Any:
    params = {"state": state} if state else {}
    async with httpx.AsyncClient() as client:
        return await client.get(
            f"{notify.url}/v1/admin/contact-methods",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_a_bare_answer_with_two_open_offers_asks_which_and_a_code_takes_that_one(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    first, first_body = await paged(notify, sms(phone), site_short_name="Mercy ED")
    second, second_body = await paged(notify, sms(phone), site_short_name="Kent ED")

    assert "Reply 1B to accept, 2B to decline" in first_body  # every page states its code
    assert "Reply 1C to accept, 2C to decline" in second_body
    question = await reply(notify, phone, "1")
    assert question is not None
    assert question.startswith(
        "Handoff: which request? B = urgent, Mercy ED, just now; C = urgent, Kent ED, just now."
    ), question
    assert "0 min" not in question
    assert await answers(notify, first.offer_id) == []
    assert await answers(notify, second.offer_id) == []

    taken = await reply(notify, phone, "1C")

    assert taken is not None
    assert "we are confirming you for the request C at Kent ED" in taken
    assert await responded(notify, second.offer_id) == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]
    assert await answers(notify, first.offer_id) == []
    # With one offer left open, a bare answer is about it.
    assert await reply(notify, phone, "no") == (
        "Handoff: thank you, your decline of the request B at Mercy ED is recorded."
    )
    assert await responded(notify, first.offer_id) == [
        (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
    ]


async def test_two_requests_at_one_site_are_told_apart_by_code_in_one_segment(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    first, _ = await paged(notify, sms(phone))
    second, _ = await paged(notify, sms(phone))

    question = await reply(notify, phone, "yes")

    assert question == (
        "Handoff: which request? B = urgent, Mercy ED, just now; C = urgent, Mercy ED, just "
        "now. Reply 1B to accept or 2B to decline; use the code you mean."
    )
    assert len(question) <= 160
    assert await answers(notify, first.offer_id) == []
    assert await answers(notify, second.offer_id) == []


async def test_past_seventeen_offers_a_phone_gets_two_letter_codes_never_a_reused_one(
    notify: NotifyHarness,
) -> None:
    """Issue #12: the 18th offer on one phone within the day wrapped to "B", so a late
    "2B" answered it. It gets "BB", still in one segment, and a late "2B" is about B."""
    phone = notify.phone()
    offers = [await paged(notify, sms(phone)) for _ in range(18)]
    codes = [re.search(r"Reply 1([A-Z]+) to accept", body) for _, body in offers]

    assert [found[1] if found else None for found in codes] == [*"BCDEFGHJMPQRSTVWZ", "BB"]
    newest, newest_body = offers[-1]
    assert f"Reply 1BB to accept, 2BB to decline, or open {notify.url}" in newest_body
    assert len(newest_body) <= 160
    assert await reply(notify, phone, "2B") == (
        "Handoff: thank you, your decline of the request B at Mercy ED is recorded."
    )
    assert await responded(notify, offers[0][0].offer_id) == [
        (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
    ]
    taken = await reply(notify, phone, "BB 1")
    assert taken is not None
    assert "we are confirming you for the request BB at Mercy ED" in taken
    assert await responded(notify, newest.offer_id) == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]
    assert await answers(notify, offers[1][0].offer_id) == []


@pytest.mark.parametrize("typed", ["yes no C", "C yes no", "not declining C"])
async def test_a_contradictory_reply_naming_a_code_asks_again_about_that_code(
    notify: NotifyHarness, typed: str
) -> None:
    phone = notify.phone()
    first, _ = await paged(notify, sms(phone))
    second, _ = await paged(notify, sms(phone))

    answer = await reply(notify, phone, typed)

    assert answer == (
        "Handoff: was that a yes or a no? Nothing was changed. Reply 1C to accept or 2C to decline."
    )
    assert await answers(notify, first.offer_id) == []
    assert await answers(notify, second.offer_id) == []


@pytest.mark.parametrize(
    "typed",
    [
        "Accept",
        "OK",
        "yes on my way",
        # What a fresh-eyes tester typed and was refused (decision 0020)
        "I'll be there",
        "i am on my way",
        "k",
        "yea",
        "Yes sir",
        "sure thing",
        "\u2705",
        "\U0001f197",
        "\U0001f44c",
        "okey",
    ],
)
async def test_replies_people_type_accept(notify: NotifyHarness, typed: str) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone))

    answer = await reply(notify, phone, typed)

    assert answer is not None
    assert answer.startswith("Handoff: thank you, we are confirming you for the request B at")
    assert await responded(notify, offer.offer_id) == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]


@pytest.mark.parametrize("typed", ["no", "Can\u2019t", "not on my way", "not ok", "no way"])
async def test_negatives_decline_and_never_accept(notify: NotifyHarness, typed: str) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone))

    answer = await reply(notify, phone, typed)

    assert answer == "Handoff: thank you, your decline of the request B at Mercy ED is recorded."
    assert await responded(notify, offer.offer_id) == [
        (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
    ]


@pytest.mark.parametrize("typed", ["not declining", "don't decline", "no ok", "no yes"])
async def test_mixed_signals_are_asked_about_and_change_nothing(
    notify: NotifyHarness, typed: str
) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone))

    answer = await reply(notify, phone, typed)

    assert answer == (
        "Handoff: was that a yes or a no? Nothing was changed. Reply 1B to accept or 2B to decline."
    )
    assert await answers(notify, offer.offer_id) == []
    assert await reply(notify, phone, "1B") is not None  # the offer is still open
    assert await responded(notify, offer.offer_id) == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]


async def test_text_not_understood_gets_help_and_changes_nothing_nor_is_kept(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone))
    nonce = uuid4().hex[:10]  # a word found nowhere else, to find the reply wherever it leaks
    typed = f"Quentin Zebulon MRN 99887766 ({nonce}) asked for me, ok?"

    answer = await reply(notify, phone, typed)

    assert answer is not None
    assert answer.startswith(HELP_START)
    assert await answers(notify, offer.offer_id) == []
    # The offer is still open: an answer after the help text is taken.
    assert (await reply(notify, phone, "1")) is not None
    assert await responded(notify, offer.offer_id) == [
        (CoachResponse.ACCEPTED, ResponseVia.SMS_REPLY)
    ]
    dump = await asyncio.to_thread(
        subprocess.run,
        [PG_DUMP, "--data-only", notify.env["DATABASE_URL"]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(offer.offer_id) in dump.stdout  # the dump is of the database notify wrote
    for fragment in ("Quentin", "Zebulon", "99887766", nonce, "asked for me"):
        assert fragment not in dump.stdout
        assert fragment not in notify.log_file.read_text()


async def availability_changes(notify: NotifyHarness, phone: str, count: int) -> list[Any]:
    """The CoachAvailabilityChanged events notify published for this phone, in order."""

    async def published() -> list[Any] | None:
        records = await read_topic(notify.bootstrap_servers, Topic.PAGES)
        events = [decode_event(r.value).data for r in records]
        mine = [e for e in events if isinstance(e, CoachAvailabilityChanged) and e.phone == phone]
        return mine if len(mine) >= count else None

    return await eventually(published, within=20, what=f"{count} availability changes")


async def test_off_and_on_are_answered_with_what_changed_and_told_to_matching(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone), site_time_zone="America/New_York")
    before = datetime.now(UTC)

    off = await reply(notify, phone, "OFF")

    [change] = await availability_changes(notify, phone, 1)
    assert change.available is False
    assert before <= change.changed_at <= datetime.now(UTC)
    assert change.until == change.changed_at + timedelta(hours=24)
    # The answer names the end on the site's clock (issue #15), in one segment.
    ends = change.until.astimezone(ZoneInfo("America/New_York")).strftime("%a %H:%M %Z")
    assert off == (
        f"{PROGRAM_NAME}: you are off call until {ends}; no requests meanwhile. Text ON to "
        "come back. 1 open request(s) passed on."
    )
    assert len(off) <= 160

    on = await reply(notify, phone, "on")

    assert on == f"{PROGRAM_NAME}: you are back on call; requests come on your shifts."
    [_, back] = await availability_changes(notify, phone, 2)
    assert (back.available, back.until) == (True, None)
    # OFF passed the open request on (a decline, decision 0019); ON answered nothing.
    assert await answers(notify, offer.offer_id) == [
        (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
    ]
    # ON again, with nothing off: the truth, not "available again" (issue #15).
    again = await reply(notify, phone, "ON")
    assert again == (
        f"{PROGRAM_NAME}: you were not marked off, so nothing changed; you are on call as "
        "scheduled."
    )


@pytest.mark.parametrize("typed", ["off today", "sick", "OFF please", "I'm sick today"])
async def test_a_coachs_own_words_for_off_take_them_off_and_say_until_when(
    notify: NotifyHarness, typed: str
) -> None:
    phone = notify.phone()
    await phones_of(notify, uuid4(), phone)

    off = await reply(notify, phone, typed)

    [change] = await availability_changes(notify, phone, 1)
    assert change.available is False
    assert change.until is not None
    ends = change.until.astimezone(UTC).strftime("%a %H:%M UTC")  # no site paged it yet
    assert off == (
        f"{PROGRAM_NAME}: you are off call until {ends}; no requests meanwhile. Text ON to "
        "come back."
    )


async def test_off_until_a_time_ends_at_the_next_such_time_on_the_sites_clock(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    await paged(notify, sms(phone), site_time_zone="America/New_York")

    off = await reply(notify, phone, "off until 6pm")

    [change] = await availability_changes(notify, phone, 1)
    zone = ZoneInfo("America/New_York")
    local = change.until.astimezone(zone)
    assert (local.hour, local.minute) == (18, 0)
    assert change.changed_at < change.until <= change.changed_at + timedelta(hours=24)
    assert off is not None
    assert f"you are off call until {off_until_text(change.until, change.changed_at)};" in off
    assert off.endswith("1 open request(s) passed on.")


def off_until_text(until: datetime, now: datetime) -> str:
    """How an OFF answer names its end in New York: "18:00 EST", or "Wed 18:00 EST"."""
    zone = ZoneInfo("America/New_York")
    same_day = until.astimezone(zone).date() == now.astimezone(zone).date()
    return until.astimezone(zone).strftime("%H:%M %Z" if same_day else "%a %H:%M %Z")


async def test_a_registered_coach_with_nothing_open_is_answered_never_silent(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    await phones_of(notify, uuid4(), phone)

    hello = await reply(notify, phone, "hello")
    one = await reply(notify, phone, "1")
    unclear = await reply(notify, phone, "yes no")

    assert hello is not None
    assert hello.startswith(HELP_START)
    assert one == (
        f"{PROGRAM_NAME}: you have no open request, so nothing was changed. Text OFF to go "
        "off call, ON to come back, HELP for help."
    )
    assert unclear == one
    records = await read_topic(notify.bootstrap_servers, Topic.PAGES)
    events = [decode_event(r.value).data for r in records]
    assert not [e for e in events if isinstance(e, CoachAvailabilityChanged) and e.phone == phone]


async def test_a_coach_goes_off_call_from_their_page_until_a_chosen_hour_and_back_on(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    offer, body = await paged(notify, sms(phone), site_time_zone="America/New_York")
    link = link_in(body)
    async with httpx.AsyncClient() as client:
        page = (await client.get(link)).text
        # No JavaScript: a plain form posting to the signed link, with the hours to choose.
        assert f'action="{urlsplit(link).path}/availability"' in page
        assert "I can't take calls now" in page
        choices = re.findall(r'<option value="([^"]+)"', page)
        assert len(choices) >= 23
        chosen = choices[3]

        off = await client.post(
            f"{link}/availability", data={"availability": "off", "until": chosen}
        )

        assert off.status_code == 200
        assert "you are off call until" in off.text
        assert "1 open request(s) passed on." in off.text
        assert "You are off call until" in off.text
        assert "I'm back on call" in off.text
        reloaded = await client.get(f"{link}/availability", follow_redirects=True)
        assert reloaded.url == link  # a bookmark of the answer is the coach's page
        assert "You are off call until" in reloaded.text
        [change] = await availability_changes(notify, phone, 1)
        assert (change.available, change.until) == (False, datetime.fromisoformat(chosen))
        assert await answers(notify, offer.offer_id) == [
            (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
        ]
        # Off from the page is off for SMS too: ON says it was.
        assert await reply(notify, phone, "ON") == (
            f"{PROGRAM_NAME}: you are back on call; requests come on your shifts."
        )
        await client.post(f"{link}/availability", data={"availability": "off", "until": ""})
        on = await client.post(f"{link}/availability", data={"availability": "on"})
        assert on.status_code == 200
        assert "you are back on call" in on.text
        assert "I can't take calls now" in on.text
        [_, _, default_off, back] = await availability_changes(notify, phone, 4)
        assert default_off.until == default_off.changed_at + timedelta(hours=24)
        assert (back.available, back.until) == (True, None)


async def test_a_page_reached_by_email_only_offers_no_off_it_could_not_stand_for(
    notify: NotifyHarness,
) -> None:
    """OFF stands for a phone (matching finds the coach by it); an offer that went to no
    phone has none, so its page offers no OFF rather than one that changes nothing."""
    address = notify.email()
    offer = await notify.offer(email(address))
    await notify.page_events(offer.offer_id)

    async def mailed() -> Any:
        return notify.mailbox.to(address) or None

    [mail] = await eventually(mailed, within=20, what="the page by email")
    link = link_in(mail.body)
    async with httpx.AsyncClient() as client:
        page = await client.get(link)
        off = await client.post(f"{link}/availability", data={"availability": "off"})
    assert page.status_code == 200
    assert "Accept" in page.text
    assert "take calls now" not in page.text
    assert off.status_code == 404


async def test_off_from_the_page_refuses_a_bad_end_or_an_unsigned_link(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    offer, body = await paged(notify, sms(phone))
    link = link_in(body)
    too_late = (datetime.now(UTC) + timedelta(hours=30)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    async with httpx.AsyncClient() as client:
        refused = [
            await client.post(f"{link}/availability", data={"availability": "off", "until": u})
            for u in (too_late, past, "6pm", "2026-12-01T18:00")
        ]
        bad_kind = await client.post(f"{link}/availability", data={"availability": "maybe"})
        forged = await client.post(
            f"{link[:-4]}abcd/availability", data={"availability": "off", "until": ""}
        )
    for response in refused:
        assert response.status_code == 422
        assert "until" in response.text
    assert bad_kind.status_code == 422
    assert "availability" in bad_kind.text
    assert forged.status_code == 404
    assert await answers(notify, offer.offer_id) == []
    records = await read_topic(notify.bootstrap_servers, Topic.PAGES)
    events = [decode_event(r.value).data for r in records]
    assert not [e for e in events if isinstance(e, CoachAvailabilityChanged) and e.phone == phone]


@pytest.mark.parametrize("typed", ["HELP", "HELP ME", "info"])
async def test_help_names_the_program_and_the_supervisor_line(
    notify: NotifyHarness, typed: str
) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone))

    answer = await reply(notify, phone, typed)

    assert answer is not None
    assert answer.startswith(HELP_START)
    assert f"Supervisor: {SUPERVISOR_PHONE}." in answer
    assert await answers(notify, offer.offer_id) == []


async def test_stop_moves_open_offers_on_sends_nothing_more_and_start_restores(
    notify: NotifyHarness,
) -> None:
    phone, address = notify.phone(), notify.email()
    with_email, _ = await paged(notify, sms(phone), email(address))
    sms_only, _ = await paged(notify, sms(phone))

    assert await reply(notify, phone, "STOP") is None  # the carrier confirms, not us

    moved = await notify.page_events(with_email.offer_id, at_least=3)
    assert [(type(e), e.channel) for e in moved] == [
        (PageSent, Channel.SMS),
        (PageFailed, Channel.SMS),
        (PageSent, Channel.EMAIL),
    ]
    assert (moved[1].failure, moved[1].all_channels_failed) == (PageFailure.UNSUBSCRIBED, False)
    [mail] = notify.mailbox.to(address)
    assert "/p/" in mail.body
    [_, failed] = await notify.page_events(sms_only.offer_id, at_least=2)
    assert isinstance(failed, PageFailed)
    assert (failed.failure, failed.all_channels_failed) == (PageFailure.UNSUBSCRIBED, True)

    after_stop = await notify.offer(sms(phone))
    [never_sent] = await notify.page_events(after_stop.offer_id)
    assert isinstance(never_sent, PageFailed)
    assert never_sent.all_channels_failed
    await withdraw(notify, with_email, WithdrawReason.CANCELLED)  # its notice goes by email
    assert "Reply" not in mail.body  # nothing reads an email reply: the link is the way
    notice = await eventually(
        lambda: _mail_count(notify, address, 2), within=20, what="the cancel notice by email"
    )
    assert "was cancelled" in notice
    listed = (await admin(notify, "opted_out")).json()["contact_methods"]
    assert {"channel": "sms", "destination": phone, "state": "opted_out"}.items() <= next(
        m for m in listed if m["destination"] == phone
    ).items()
    assert await reply(notify, phone, "1") is None  # nothing is texted to an opted-out number
    assert len(notify.twilio.to(phone)) == 2  # the two pages before STOP, nothing since
    helped = await reply(notify, phone, "HELP")  # CTIA: HELP is answered, opted out or not
    assert helped is not None
    assert helped.startswith(HELP_START)
    listed = (await admin(notify, "opted_out")).json()["contact_methods"]
    assert phone in [m["destination"] for m in listed]  # HELP opted nothing back in

    assert await reply(notify, phone, "START") is None
    restored, body = await paged(notify, sms(phone))
    assert body.startswith("Handoff: urgent request at Mercy ED. Reply 1")
    assert phone not in [
        m["destination"] for m in (await admin(notify, None)).json()["contact_methods"]
    ]
    assert restored.offer_id != after_stop.offer_id


@pytest.mark.parametrize("typed", ["STOP ALL", "stop all", "stopall", "Unsubscribe me"])
async def test_carrier_opt_out_phrasings_opt_the_number_out(
    notify: NotifyHarness, typed: str
) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone))

    assert await reply(notify, phone, typed) is None  # the carrier confirms, not us

    [_, failed] = await notify.page_events(offer.offer_id, at_least=2)
    assert isinstance(failed, PageFailed)
    assert failed.failure is PageFailure.UNSUBSCRIBED
    listed = (await admin(notify, "opted_out")).json()["contact_methods"]
    assert phone in [m["destination"] for m in listed]


async def test_an_accept_texted_after_stop_and_start_is_confirmed_by_text(
    notify: NotifyHarness,
) -> None:
    """Issue #12: STOP moved the page to email; after START the coach texted "(b) OK!", was
    told "A text follows", and the confirmation went only by email."""
    phone, address = notify.phone(), notify.email()
    offer, _ = await paged(notify, sms(phone), email(address))
    assert await reply(notify, phone, "STOP") is None
    await notify.page_events(offer.offer_id, at_least=3)  # SMS sent, SMS failed, email sent
    assert await reply(notify, phone, "START") is None  # opted back in; the carrier says so

    thanks = await reply(notify, phone, "(b) OK!")

    assert thanks is not None
    assert "A text follows" in thanks
    assigned = CoachAssigned(
        referral_id=offer.referral_id,
        offer_id=offer.offer_id,
        coach_id=offer.coach_id,
        assigned_at=datetime.now(UTC),
        arrival_deadline=datetime.now(UTC) + timedelta(minutes=45),
    )
    await send(notify.broker, assigned, source="/handoff/matching")
    bodies = await notify.sms(phone, count=2)
    assert bodies[-1].startswith("Handoff: confirmed, the request B at Mercy ED is yours.")
    assert len(notify.mailbox.to(address)) == 1  # the page only, no confirmation by email


async def _mail_count(notify: NotifyHarness, address: str, count: int) -> str | None:
    mails = notify.mailbox.to(address)
    return mails[-1].body if len(mails) >= count else None


@pytest.mark.parametrize(
    ("reason", "told"),
    [
        (WithdrawReason.CANCELLED, "Handoff: the request B at Mercy ED was cancelled."),
        (WithdrawReason.FILLED, "Handoff: the request B at Mercy ED was filled by another coach."),
    ],
)
async def test_a_reply_to_a_cancelled_or_filled_offer_is_told_so(
    notify: NotifyHarness, reason: WithdrawReason, told: str
) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone))
    await withdraw(notify, offer, reason)
    [_, notice] = await notify.sms(phone, count=2)
    assert notice.startswith(told)

    answer = await reply(notify, phone, "yes")

    assert answer is not None
    assert answer.startswith(told)
    assert await answers(notify, offer.offer_id) == []


async def test_a_reply_to_an_expired_offer_is_told_so(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone), expires_in=10)

    async def past_expiry() -> bool:
        return datetime.now(UTC) > offer.expires_at

    await eventually(past_expiry, within=30, what="the offer's expiry")
    answer = await reply(notify, phone, "1")

    assert answer == "Handoff: the request B at Mercy ED has expired; your answer was not recorded."
    assert await answers(notify, offer.offer_id) == []


async def test_a_supervisor_answering_an_expired_offer_of_an_uncovered_request_is_asked_to_cover(
    notify: NotifyHarness,
) -> None:
    """Issue #12: told "has no coach … Please arrange cover", then told "No action needed"
    on answering their own timed-out offer of the same request."""
    phone = notify.phone()
    offer, _ = await paged(notify, sms(phone), expires_in=10)
    await send(
        notify.broker,
        ReferralUnassigned(
            referral_id=offer.referral_id,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=datetime.now(UTC),
            site_id="md-mercy",
            site_short_name="Mercy ED",
            urgency=Urgency.URGENT,
            supervisor_contacts=(sms(phone),),
        ),
        source="/handoff/matching",
    )
    [_, notice] = await notify.sms(phone, count=2)
    assert notice.endswith("Please arrange cover.")

    async def past_expiry() -> bool:
        return datetime.now(UTC) > offer.expires_at

    await eventually(past_expiry, within=30, what="the offer's expiry")

    assert await reply(notify, phone, "1B") == (
        "Handoff: the request B at Mercy ED has expired, and it still has no coach. "
        "Please arrange cover."
    )
    cancelled = ReferralCancelled(
        referral_id=offer.referral_id,
        reason=CancelReason.NO_LONGER_NEEDED,
        cancelled_at=datetime.now(UTC),
    )
    await send(notify.broker, cancelled, source="/handoff/referral")

    async def told_plainly() -> str | None:
        answer = await reply(notify, phone, "yes")
        return answer if answer and "still has no coach" not in answer else None

    assert await eventually(told_plainly, within=20, what="the cancel heard") == (
        "Handoff: the request B at Mercy ED has expired; your answer was not recorded."
    )
    assert await answers(notify, offer.offer_id) == []


async def test_an_offer_passed_on_after_stop_is_not_said_to_have_expired(
    notify: NotifyHarness,
) -> None:
    """Issue #12: matching passes an offer on (`unreachable`) once STOP left the coach no
    method; a later reply and the link said "expired"."""
    phone = notify.phone()
    offer, body = await paged(notify, sms(phone))
    await withdraw(notify, offer, WithdrawReason.UNREACHABLE)

    async def passed_on() -> str | None:
        answer = await reply(notify, phone, "1")
        return answer if answer and "passed on" in answer else None

    assert await eventually(passed_on, within=20, what="the withdrawal heard") == (
        "Handoff: the request B at Mercy ED was passed on to another coach because texts "
        "to this number were stopped or could not be delivered."
    )
    async with httpx.AsyncClient() as client:
        page = await client.get(link_in(body))
    assert "passed on to another coach because texts to your number were stopped" in page.text
    assert "expired" not in page.text


async def test_an_accept_at_capacity_is_told_it_was_passed_on(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer, body = await paged(notify, sms(phone))
    accepted = await reply(notify, phone, "OK")
    assert accepted is not None
    assert "we are confirming you" in accepted

    await withdraw(notify, offer, WithdrawReason.AT_CAPACITY)

    [_, notice] = await notify.sms(phone, count=2)
    assert notice.startswith(
        "Handoff: you are at your limit of open requests, so the request B at Mercy ED"
    )
    assert "request B at Mercy ED was passed on to another coach" in notice
    again = await reply(notify, phone, "1")
    assert again == notice
    async with httpx.AsyncClient() as client:
        page = await client.get(link_in(body))
    assert "You are at your limit of open requests" in page.text
    assert 'name="answer"' not in page.text  # no answer left to give; "Your calls" stays


async def test_a_keypad_answer_to_a_filled_offer_is_told_so_by_voice(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer = await notify.offer(voice(phone))

    [call] = await notify.sent_to(phone)
    await notify.page_events(offer.offer_id)
    await withdraw(notify, offer, WithdrawReason.FILLED)
    [_, notice] = await notify.sent_to(phone, count=2)
    answer_url = re.search(r'action="([^"]+)"', call.body)
    assert answer_url
    answered = await signed_post(answer_url.group(1), {"Digits": "1", "CallSid": call.sid})

    assert "the request at Mercy ED was filled by another coach" in answered.text
    assert "filled by another coach" in notice.body
    assert await answers(notify, offer.offer_id) == []


@pytest.mark.parametrize(
    ("code", "failure"),
    [(21610, PageFailure.UNSUBSCRIBED), (21211, PageFailure.INVALID_DESTINATION)],
)
async def test_a_never_deliverable_number_is_marked_unreachable_without_retry_and_moves_on(
    notify: NotifyHarness, code: int, failure: PageFailure
) -> None:
    phone, address = notify.phone(), notify.email()
    (notify.twilio.unsubscribed if code == 21610 else notify.twilio.invalid_numbers).add(phone)
    offer = await notify.offer(sms(phone), email(address))

    events = await notify.page_events(offer.offer_id, at_least=2)
    assert [(type(e), e.channel) for e in events] == [
        (PageFailed, Channel.SMS),
        (PageSent, Channel.EMAIL),
    ]
    assert events[0].failure is failure
    assert notify.twilio.attempts[phone] == 1
    listed = (await admin(notify, "unreachable")).json()["contact_methods"]
    [method] = [m for m in listed if m["destination"] == phone]
    assert (method["channel"], method["reason"]) == ("sms", f"provider:http_400:{code}")

    later = await notify.offer(sms(phone))
    [failed] = await notify.page_events(later.offer_id)
    assert isinstance(failed, PageFailed)
    assert failed.all_channels_failed
    assert notify.twilio.attempts[phone] == 1  # the provider was not asked again

    async def gauge() -> str | None:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{notify.url}/metrics")).text
        found = re.search(
            r'handoff_contact_methods_blocked\{channel="sms",state="unreachable"\} ([0-9.]+)', text
        )
        return text if found and float(found.group(1)) >= 1 else None

    metrics = await eventually(gauge, within=10, what="the blocked-methods gauge")
    assert phone not in metrics

    async with httpx.AsyncClient() as client:  # the coordinator fixed the number
        cleared = await client.delete(
            f"{notify.url}/v1/admin/contact-methods",
            params={"channel": "sms", "destination": phone},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert cleared.status_code == 204
    listed = (await admin(notify, "unreachable")).json()["contact_methods"]
    assert phone not in [m["destination"] for m in listed]


async def test_the_admin_api_needs_the_token_and_names_a_bad_state(notify: NotifyHarness) -> None:
    unauthorised = await admin(notify, None, token="guessed")
    bad_state = await admin(notify, "gone")

    assert unauthorised.status_code == 401
    assert bad_state.status_code == 422
    assert "state" in bad_state.text
    async with httpx.AsyncClient() as client:  # fresh34b: a NUL byte was a 500
        nul = await client.delete(
            f"{notify.url}/v1/admin/contact-methods",
            params={"channel": "sms", "destination": "+1410\x00"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert nul.status_code == 422
    assert [f["field"] for f in nul.json()["error"]["fields"]] == ["destination"]


async def test_no_first_page_leaves_after_the_page_deadline(notify: NotifyHarness) -> None:
    phone = notify.phone()
    offer = await notify.offer(sms(phone), page_deadline=datetime.now(UTC) - timedelta(seconds=1))

    async def cancelled() -> str | None:
        connection = await asyncpg.connect(notify.env["DATABASE_URL"])
        try:
            state: str | None = await connection.fetchval(
                "SELECT state FROM notify.messages WHERE offer_id = $1", offer.offer_id
            )
        finally:
            await connection.close()
        return state if state == "cancelled" else None

    await eventually(cancelled, within=20, what="the late page to be dropped")
    assert notify.twilio.attempts[phone] == 0


async def test_supervisors_are_told_each_time_a_referral_goes_unassigned_once_each(
    notify: NotifyHarness,
) -> None:
    phone, address = notify.phone(), notify.email()
    referral_id, event_id = uuid4(), uuid4()
    first_time = datetime(2026, 11, 30, 3, 7, tzinfo=UTC)

    def unassigned(at: datetime) -> ReferralUnassigned:
        return ReferralUnassigned(
            referral_id=referral_id,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=at,
            site_id="md-mercy",
            site_short_name="Mercy ED",
            site_time_zone="America/New_York",
            urgency=Urgency.URGENT,
            supervisor_contacts=(sms(phone), email(address)),
        )

    await send(notify.broker, unassigned(first_time), event_id=event_id, source="/handoff/matching")
    await send(notify.broker, unassigned(first_time), event_id=event_id, source="/handoff/matching")
    await send(
        notify.broker, unassigned(first_time + timedelta(minutes=20)), source="/handoff/matching"
    )

    bodies = await notify.sms(phone, count=2)
    reference = str(referral_id).replace("-", "")[:6].upper()
    said = f"Handoff: urgent request {reference} at Mercy ED has no coach: nobody on call"
    assert bodies == [  # the site's wall clock: 03:07 UTC is 22:07 EST the evening before
        f"{said} accepted it (22:07 EST). Please arrange cover.",
        f"{said} accepted it (22:27 EST). Please arrange cover.",
    ]
    mails = await eventually(
        lambda: _mail_count(notify, address, 2), within=20, what="two notices by email"
    )
    assert "Please arrange cover." in mails
    assert [m.subject for m in notify.mailbox.to(address)] == [
        f"Handoff: unassigned request {reference} at Mercy ED"
    ] * 2


async def test_a_supervisor_who_went_off_is_not_told_of_what_was_queued_for_her_before(
    notify: NotifyHarness,
) -> None:
    """fresh34a: fifteen notices held by the quarter-hour limit were texted as a digest to a
    supervisor who had texted OFF since, though another supervisor of the site was on.
    fresh34c: but when she is the only one told of a referral, it must still reach her; and
    a notice decided after her OFF (matching tells all when every one is off) goes."""
    phone, deputy = notify.phone(), notify.phone()
    await phones_of(notify, uuid4(), phone)
    off = await reply(notify, phone, "OFF")
    assert off is not None
    assert off.startswith(f"{PROGRAM_NAME}: you are off call until")
    now = datetime.now(UTC)
    shared, hers_alone, decided_after = uuid4(), uuid4(), uuid4()
    for referral_id, at, told in (
        (shared, now - timedelta(minutes=5), (sms(phone), sms(deputy))),
        (hers_alone, now - timedelta(minutes=4), (sms(phone),)),
        (decided_after, now + timedelta(seconds=1), (sms(phone),)),
    ):
        unassigned = ReferralUnassigned(
            referral_id=referral_id,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=at,
            site_id="md-mercy",
            site_short_name="Mercy ED",
            urgency=Urgency.URGENT,
            supervisor_contacts=told,
        )
        await send(notify.broker, unassigned, source="/handoff/matching")

    async def states() -> dict[UUID, str] | None:
        rows = await notify.rows(
            "SELECT referral_id, state FROM notify.notices WHERE destination = $1", phone
        )
        found = {row["referral_id"]: row["state"] for row in rows}
        return found if len(found) == 3 and "pending" not in found.values() else None

    settled = await eventually(states, within=20, what="her three notices settled")
    assert settled[shared] == "cancelled"
    assert settled[hers_alone] != "cancelled"
    told_her = " ".join(await notify.sms(phone, count=2))
    for referral_id in (hers_alone, decided_after):
        assert str(referral_id).replace("-", "")[:6].upper() in told_her
    [to_deputy] = await notify.sms(deputy)
    assert str(shared).replace("-", "")[:6].upper() in to_deputy


@pytest.mark.parametrize(
    ("reason", "nobody_reached", "why"),
    [
        (UnassignedReason.NOBODY_ON_CALL, False, "nobody is on call for it"),
        (UnassignedReason.LADDER_EXHAUSTED, True, "no page got through to a coach"),
    ],
)
async def test_supervisors_are_told_why_a_referral_has_no_coach(
    notify: NotifyHarness, reason: UnassignedReason, nobody_reached: bool, why: str
) -> None:
    """Matching found no coach on call to ask, or no page of the round reached its coach:
    the notice says so, not that the coaches asked did not accept (a rota gap or a paging
    problem is what the supervisor has to fix)."""
    phone, referral_id = notify.phone(), uuid4()
    await send(
        notify.broker,
        ReferralUnassigned(
            referral_id=referral_id,
            reason=reason,
            unassigned_at=datetime(2026, 11, 30, 3, 7, tzinfo=UTC),
            site_id="md-mercy",
            site_short_name="Mercy ED",
            site_time_zone="America/New_York",
            urgency=Urgency.URGENT,
            supervisor_contacts=(sms(phone),),
            nobody_reached=nobody_reached,
        ),
        source="/handoff/matching",
    )
    reference = str(referral_id).replace("-", "")[:6].upper()
    assert await notify.sms(phone, count=1) == [
        f"Handoff: urgent request {reference} at Mercy ED has no coach: {why} "
        "(22:07 EST). Please arrange cover."
    ]


async def _notice_state(notify: NotifyHarness, referral_id: UUID) -> str | None:
    connection = await asyncpg.connect(notify.env["DATABASE_URL"])
    try:
        state = await connection.fetchval(
            "SELECT state FROM notify.notices WHERE referral_id = $1", referral_id
        )
    finally:
        await connection.close()
    return None if state is None else str(state)


@pytest.mark.parametrize("resolution", ["cancelled", "assigned"])
async def test_a_held_supervisor_notice_is_dropped_once_the_request_is_cancelled_or_assigned(
    notify: NotifyHarness, resolution: str
) -> None:
    """Issue #12: a notice held back (here by a provider outage; the quarter-hour limit and
    a restart hold it the same way) went out after the ED had cancelled the request."""
    phone = notify.phone()
    referral_id, later_id = uuid4(), uuid4()

    def unassigned(referral: UUID) -> ReferralUnassigned:
        return ReferralUnassigned(
            referral_id=referral,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=datetime.now(UTC),
            site_id="md-mercy",
            site_short_name="Mercy ED",
            urgency=Urgency.URGENT,
            supervisor_contacts=(sms(phone),),
        )

    async def tried() -> int | None:
        return notify.twilio.attempts[phone] or None

    notify.twilio.fail_next(phone, *[503] * 50)
    await send(notify.broker, unassigned(referral_id), source="/handoff/matching")
    await eventually(tried, within=20, what="the notice tried and held back")
    resolved: Any = (
        ReferralCancelled(
            referral_id=referral_id,
            reason=CancelReason.PATIENT_LEFT,
            cancelled_at=datetime.now(UTC),
        )
        if resolution == "cancelled"
        else CoachAssigned(
            referral_id=referral_id,
            offer_id=uuid4(),
            coach_id=uuid4(),
            assigned_at=datetime.now(UTC),
            arrival_deadline=datetime.now(UTC) + timedelta(hours=1),
        )
    )
    await send(notify.broker, resolved, source="/handoff/tests")

    async def dropped() -> str | None:
        state = await _notice_state(notify, referral_id)
        return state if state == "cancelled" else None

    assert await eventually(dropped, within=40, what="the held notice dropped") == "cancelled"
    notify.twilio.stop_failing(phone)
    # The line works again: a request still unassigned is told, the resolved one never.
    await send(notify.broker, unassigned(later_id), source="/handoff/matching")
    [body] = await notify.sms(phone, count=1)
    assert content_reference(later_id) in body
    assert not [m for m in notify.twilio.to(phone) if content_reference(referral_id) in m.body]


def content_reference(referral_id: UUID) -> str:
    return str(referral_id).replace("-", "")[:6].upper()


@pytest.mark.parametrize("sender", ["12345", "HANDOFF", "", "+0123", "555-0100"])
@pytest.mark.parametrize("typed", ["OFF", "1", "HELP"])
async def test_a_sender_that_is_not_a_phone_number_gets_nothing_and_changes_nothing(
    notify: NotifyHarness, sender: str, typed: str
) -> None:
    response = await notify.twilio.send_sms(notify.url, sender, typed)

    assert response.status_code == 200
    assert "<Message>" not in response.text


async def test_bad_bodies_on_notify_routes_are_refused_never_a_server_error(
    notify: NotifyHarness,
) -> None:
    phone = notify.phone()
    offer, body = await paged(notify, sms(phone))
    link = link_in(body)
    admin_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient() as client:
        answers_sent = [
            await client.post(link, content=b"{not json", headers={"Content-Type": kind})
            for kind in ("application/json", "application/x-www-form-urlencoded", "text/plain")
        ]
        broken_form = await client.post(
            link,
            content=b"--x\r\nContent-Disposition: form-data; name=answer\r\n\r\naccepted",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        admin_body = await client.request(
            "DELETE",
            f"{notify.url}/v1/admin/contact-methods",
            content=b"\xff\xfe{",
            headers={**admin_headers, "Content-Type": "application/json"},
        )

    for response in [*answers_sent, broken_form, admin_body]:
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert "answer" in answers_sent[0].text
    assert "body" in broken_form.text or "answer" in broken_form.text
    assert await answers(notify, offer.offer_id) == []


async def phones_of(
    notify: NotifyHarness, coach_id: UUID, *phones: str, active: bool = True
) -> None:
    """Matching's word that the roster lists `phones` for the coach; once notify holds it."""
    changed = CoachPhonesChanged(
        coach_id=coach_id, phones=phones, active=active, changed_at=datetime.now(UTC)
    )
    await send(notify.broker, changed, source="/handoff/matching")

    async def stored() -> bool:
        connection = await asyncpg.connect(notify.env["DATABASE_URL"])
        try:
            held = {
                r["phone"]
                for r in await connection.fetch(
                    "SELECT phone FROM notify.coach_phones WHERE coach_id = $1", coach_id
                )
            }
        finally:
            await connection.close()
        return held == (set(phones) if active else set())

    await eventually(stored, within=20, what="the coach's phones in notify")


async def test_a_request_made_as_the_coach_went_off_is_passed_on_not_paged(
    notify: NotifyHarness,
) -> None:
    """fresh34c: a referral posted as the coach texted OFF was paged to her 60 ms after the
    OFF's answer, and held for the whole answer time: matching made it before it heard."""
    phone = notify.phone()
    await phones_of(notify, uuid4(), phone)
    off = await reply(notify, phone, "OFF")
    assert off is not None
    assert off.startswith(f"{PROGRAM_NAME}: you are off call until")

    offer = await notify.offer(sms(phone))

    async def declined() -> list[tuple[CoachResponse, Any]] | None:
        found = await answers(notify, offer.offer_id)
        return found or None

    assert await eventually(declined, within=20, what="the offer passed on") == [
        (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
    ]
    assert notify.twilio.to(phone) == []


async def test_off_passes_on_a_request_paged_to_the_coach_another_way(
    notify: NotifyHarness,
) -> None:
    """fresh34a: a supervisor's phone was at its offer ceiling, so two pages went by email;
    OFF from the phone left both open for five minutes, and matching counted their slots."""
    phone, address = notify.phone(), notify.email()
    offer = await notify.offer(email(address))
    await phones_of(notify, offer.coach_id, phone)
    await notify.page_events(offer.offer_id)

    off = await reply(notify, phone, "OFF")

    assert off is not None
    assert off.endswith("1 open request(s) passed on.")
    assert await answers(notify, offer.offer_id) == [
        (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
    ]


@pytest.mark.parametrize("typed", ["OFF", "ON", "1", "no", "hello there"])
async def test_a_number_on_no_coachs_roster_is_told_it_is_not_registered(
    notify: NotifyHarness, typed: str
) -> None:
    phone = notify.phone()
    registered = notify.phone()
    await phones_of(notify, uuid4(), registered)

    answer = await reply(notify, phone, typed)

    assert answer == (
        f"{PROGRAM_NAME}: this number is not registered with {PROGRAM_NAME}, so nothing was "
        "changed. A coordinator can add it to the roster."
    )
    assert "you are off" not in answer
    helped = await reply(notify, phone, "HELP")  # HELP is answered whoever asks
    assert helped is not None
    assert helped.startswith(HELP_START)
    if typed == "OFF":  # a registered coach never paged is still off at once
        off = await reply(notify, registered, "OFF")
        assert off is not None
        assert off.startswith(f"{PROGRAM_NAME}: you are off call until")
        [change] = await availability_changes(notify, registered, 1)
        assert change.available is False


async def test_a_coach_taken_off_the_roster_is_no_longer_registered(notify: NotifyHarness) -> None:
    phone, coach_id = notify.phone(), uuid4()
    await phones_of(notify, coach_id, phone)
    on = await reply(notify, phone, "ON")
    assert on is not None
    assert "you are on call as scheduled" in on

    await phones_of(notify, coach_id, phone, active=False)

    answer = await reply(notify, phone, "ON")
    assert answer is not None
    assert "this number is not registered with" in answer
