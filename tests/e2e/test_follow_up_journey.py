"""Follow-ups end to end (issue #16): referral, matching and notify as processes on their own
Kafka broker and a fresh database, notify texting into the sandbox.

A coach accepts, arrives and completes from the page link; notify's page links the visit
record; the coach records the patient's consent and number on the referral service's
page; every service is killed and started again; the first follow-up falls due (its timer
row moved to now: the processes' clocks are the real one), matching gives it to the coach,
notify texts a reminder whose /f/ link names that assignment; the coach records a no-answer,
the retry falls due, is reminded and reached; the hospital withdraws consent, which stops
the rest and deletes the number. The number is then looked for in every event on every
topic, every text and email the sandbox kept, and each service's metrics; the session's
PHI scan reads every log line of the processes.
"""

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_notify.domain.links import LinkSigner as OfferSigner
from handoff_platform.links import FOLLOW_UP_LINK, VISIT_LINK, LinkSigner
from handoff_schemas import Topic
from tests.e2e.conftest import MAIN_SITE, System, start_system, stop_system
from tests.support.follow_ups import (
    FOLLOW_UP_KEYS,
    FOLLOW_UP_LINK_SECRET,
    FOLLOW_UP_PHONE,
    FOLLOW_UP_PHONE_DIGITS,
    FOLLOW_UP_PHONE_TYPED,
)
from tests.support.kafka import read_topic
from tests.support.waiting import eventually

VISITS = LinkSigner(FOLLOW_UP_LINK_SECRET, VISIT_LINK)
FOLLOW_UPS = LinkSigner(FOLLOW_UP_LINK_SECRET, FOLLOW_UP_LINK)
NEW_YORK = ZoneInfo("America/New_York")
LINK = re.compile(r"https?://[^\s\"<]+")


@pytest.fixture(scope="module")
async def system(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[System]:
    running = await start_system(
        database_url,
        own_kafka,
        FOLLOW_UP_LINK_SECRET=FOLLOW_UP_LINK_SECRET,
        FOLLOW_UP_KEYS=FOLLOW_UP_KEYS,
    )
    try:
        yield running
    finally:
        await stop_system(running)


async def _rows(system: System, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(system.database_url)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


async def _sandbox(system: System) -> list[tuple[str, str]]:
    rows = await _rows(
        system, "SELECT destination, body FROM notify.sandbox_messages ORDER BY sandbox_id"
    )
    return [(r["destination"], r["body"]) for r in rows]


async def _events(system: System, topic: Topic, kind: str) -> list[dict[str, Any]]:
    """The data of every `kind` event on `topic`, oldest first."""
    found = []
    for record in await read_topic(system.bootstrap_servers, topic.value):
        envelope = json.loads(record.value)
        if envelope["type"] == f"org.handoff.{kind}":
            found.append(envelope["data"])
    return found


async def _offer_page(system: System, referral_id: str) -> tuple[str, str]:
    """(phone, link) of the first page of one of the referral's offers: the link's token
    names the offer, OfferMade names its referral."""
    signer = OfferSigner(system.env["NOTIFY_LINK_SECRET"])

    async def paged() -> tuple[str, str] | None:
        offers = {
            e["offer_id"]: e["referral_id"]
            for e in await _events(system, Topic.DISPATCH, "dispatch.offer_made")
        }
        for phone, body in await _sandbox(system):
            for link in LINK.findall(body):
                offer_id = signer.offer_id(link.rsplit("/", 1)[1])
                if offer_id is not None and offers.get(str(offer_id)) == referral_id:
                    return phone, link
        return None

    return await eventually(paged, within=30, what=f"a page for {referral_id}", interval=0.2)


async def _at_the_bedside(system: System, referral_id: str) -> tuple[str, str, UUID]:
    """The coach accepts, arrives and completes from the page; (phone, /v/ link, offer)."""
    phone, link = await _offer_page(system, referral_id)
    async with httpx.AsyncClient(follow_redirects=True) as client:
        for answer, status in (
            ("accepted", "accepted"),
            ("arrived", "arrived"),
            ("completed", "completed"),
        ):
            # Notify takes an answer once its own copy of the offer allows it, which may
            # come after the referral service shows the step before: tap when the page
            # shows the button, as the coach would.
            async def button(answer: str = answer) -> bool:
                return f'value="{answer}"' in (await client.get(link)).text

            await eventually(button, within=30, what=f"the {answer} button", interval=0.2)
            await client.post(link, data={"answer": answer})
            await _status_is(system, referral_id, status)
        page = (await client.get(link)).text
    [visit_link] = re.findall(r'href="([^"]*/v/[^"]+)"', page)
    offer_id = VISITS.record_id(visit_link.rsplit("/", 1)[1])
    assert offer_id is not None
    return phone, _at_referral(system, visit_link), offer_id


async def _status_is(system: System, referral_id: str, status: str) -> None:
    async def reached() -> bool:
        return bool((await system.referral_status(MAIN_SITE, referral_id))["status"] == status)

    await eventually(reached, within=30, what=f"referral {status}", interval=0.2)


def _at_referral(system: System, link: str) -> str:
    """The link's path at the referral process (its public URL is the default here)."""
    return system.referral.url + "/" + link.split("/", 3)[3]


async def _tasks(system: System, referral_id: str) -> list[asyncpg.Record]:
    return await _rows(
        system,
        """SELECT task_id, window_days, window_opens_at, window_ends_at, attempt, state
           FROM referral.follow_up_tasks WHERE referral_id = $1 ORDER BY window_days""",
        UUID(referral_id),
    )


async def _fire(system: System, task_id: UUID) -> None:
    """Make the task's timer due now; the referral process's loop is told as by a replica."""
    connection = await asyncpg.connect(system.database_url)
    try:
        moved = await connection.execute(
            "UPDATE referral.timers SET due_at = now() WHERE timer_id = $1", task_id
        )
        assert moved == "UPDATE 1"
        await connection.execute("SELECT pg_notify('handoff_timers', 'referral')")
    finally:
        await connection.close()


async def _reminder(system: System, task_id: UUID, attempt: int) -> tuple[str, str]:
    """(phone, /f/ link) of the reminder whose link names this attempt's assignment."""

    async def reminded() -> tuple[str, str] | None:
        assignments = {
            e["assignment_id"]: (e["task_id"], e["attempt"])
            for e in await _events(system, Topic.DISPATCH, "dispatch.follow_up_assigned")
        }
        for phone, body in await _sandbox(system):
            for link in LINK.findall(body):
                if "/f/" not in link:
                    continue
                assignment = FOLLOW_UPS.record_id(link.rsplit("/", 1)[1])
                if assignments.get(str(assignment)) == (str(task_id), attempt):
                    return phone, link
        return None

    return await eventually(
        reminded, within=60, what=f"a reminder of attempt {attempt}", interval=0.2
    )


async def test_a_consented_visit_is_followed_up_through_restarts_until_consent_is_withdrawn(
    system: System,
) -> None:
    referral = await system.post_referral(MAIN_SITE)
    referral_id = referral["id"]
    coach_phone, visit_link, _ = await _at_the_bedside(system, referral_id)

    async with httpx.AsyncClient() as client:
        form = await client.get(visit_link)
        assert "42 CFR Part 2" in form.text
        shown = re.search(r'name="schedule" value="([^"]*)"', form.text)
        assert shown is not None
        saved = await client.post(
            visit_link,
            data={
                "consent": "yes",
                # The hidden field of the schedule the statement read out.
                "schedule": shown[1],
                "callback_phone": FOLLOW_UP_PHONE_TYPED,
                "day_part": "evenings",
                "days": "any_day",
                "outcomes": ["moud", "naloxone_kit"],
            },
        )
        assert saved.status_code == 303

    # Three tasks: at 18:00 New York time (the patient's evenings) 1, 30 and 90 days after
    # the visit's local date; each window ends where the next opens, the last 14 days on.
    [visit] = await _rows(
        system, "SELECT recorded_at FROM referral.visits WHERE referral_id = $1", UUID(referral_id)
    )
    visit_day = visit["recorded_at"].astimezone(NEW_YORK).date()
    opens = [
        datetime.combine(visit_day + timedelta(days=n), datetime.min.time(), NEW_YORK).replace(
            hour=18
        )
        for n in (1, 30, 90)
    ]
    tasks = await _tasks(system, referral_id)
    assert [(t["window_days"], t["window_opens_at"]) for t in tasks] == list(
        zip((1, 30, 90), opens, strict=True)
    )
    assert [t["window_ends_at"] for t in tasks] == [
        opens[1],
        opens[2],
        opens[2] + timedelta(days=14),
    ]

    # Every service killed and started again: the follow-ups are rows and timers.
    for service in ("referral", "matching", "notify"):
        await system.restart(service, 0, kill=True)

    day_one = tasks[0]["task_id"]
    await _fire(system, day_one)
    reminded_phone, follow_up_link = await _reminder(system, day_one, 1)
    assert reminded_phone == coach_phone  # the coach who saw the patient, on call
    async with httpx.AsyncClient() as client:
        page = await client.get(_at_referral(system, follow_up_link))
        assert f'href="tel:{FOLLOW_UP_PHONE}"' in page.text
        no_answer = await client.post(
            _at_referral(system, follow_up_link), data={"result": "no_answer"}
        )
        assert "try again" in no_answer.text
    [retry] = [t for t in await _tasks(system, referral_id) if t["window_days"] == 1]
    assert (retry["attempt"], retry["state"]) == (2, "scheduled")

    await _fire(system, day_one)
    _, second_link = await _reminder(system, day_one, 2)
    async with httpx.AsyncClient() as client:
        reached = await client.post(
            _at_referral(system, second_link), data={"result": "reached", "outcomes": "housing"}
        )
        assert "reached" in reached.text
        revoked = await client.post(
            f"{system.referral.url}/v1/referrals/{referral_id}/follow-up-consent/revoke",
            headers={"Authorization": f"Bearer {system.keys[MAIN_SITE]}"},
        )
    assert revoked.json()["tasks_cancelled"] == 2
    assert [t["state"] for t in await _tasks(system, referral_id)] == [
        "reached",
        "cancelled",
        "cancelled",
    ]
    contact = await _rows(
        system,
        "SELECT 1 FROM referral.follow_up_contacts WHERE referral_id = $1",
        UUID(referral_id),
    )
    assert contact == []

    async def both_attempts() -> list[tuple[Any, Any]] | None:
        attempts = [
            (e["attempt"], e["result"])
            for e in await _events(system, Topic.REFERRALS, "referral.follow_up_attempted")
            if e["task_id"] == str(day_one)
        ]
        return attempts if len(attempts) >= 2 else None  # the second may be in the outbox

    attempts = await eventually(both_attempts, within=30, what="both attempts on the topic")
    assert attempts == [(1, "no_answer"), (2, "reached")]

    # The number is in no event, no text or email, no metric.
    for topic in (Topic.REFERRALS, Topic.DISPATCH, Topic.PAGES, Topic.SITES):
        for record in await read_topic(system.bootstrap_servers, topic.value):
            assert FOLLOW_UP_PHONE_DIGITS not in record.value.decode(), topic
    for _, body in await _sandbox(system):
        assert FOLLOW_UP_PHONE_DIGITS not in re.sub(r"\D", "", body)
    async with httpx.AsyncClient() as client:
        for processes in system.replicas.values():
            metrics = (await client.get(f"{processes[0].url}/metrics")).text
            assert FOLLOW_UP_PHONE_DIGITS not in metrics


async def test_without_consent_no_follow_up_is_made(system: System) -> None:
    referral = await system.post_referral(MAIN_SITE)
    _, visit_link, _ = await _at_the_bedside(system, referral["id"])
    async with httpx.AsyncClient() as client:
        saved = await client.post(visit_link, data={"consent": "no", "outcomes": "none"})
    assert saved.status_code == 303
    assert await _tasks(system, referral["id"]) == []

    async def recorded() -> list[dict[str, Any]] | None:
        found = [
            e
            for e in await _events(system, Topic.REFERRALS, "referral.visit_recorded")
            if e["referral_id"] == referral["id"]
        ]
        return found or None

    [visit] = await eventually(recorded, within=30, what="VisitRecorded")
    assert visit["follow_up_consent"] is False
