"""Visits and follow-ups in the referral service, on real Kafka and PostgreSQL (issue #16).

The test stands in for matching and notify: it publishes CoachAssigned, CoachResponded and
FollowUpAssigned, mints the links notify would send, and finds its own events on the
topics by referral or task id. The follow-up clock is injected (a visit in 2031, so no
timer falls due by itself); a timer is made due by moving its row, as the service's own
loop then finds it.
"""

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from pydantic import SecretStr

from handoff_platform.http import install_error_handlers
from handoff_platform.kafka import make_broker
from handoff_platform.links import FOLLOW_UP_LINK, VISIT_LINK, LinkSigner
from handoff_referral.adapters.contact_vault import ContactVault
from handoff_referral.app import ReferralRuntime
from handoff_referral.entrypoints.follow_up_admin import build_schedule_router
from handoff_referral.metrics import CONTACTS_UNREADABLE
from handoff_schemas import Topic
from handoff_schemas.events import FollowUpAssigned
from handoff_schemas.vocabulary import CoachResponse, FollowUpAssignee
from tests.integration.conftest import Hospital, HospitalFactory, handoff_command
from tests.support.events import coach_assigned, coach_responded, offer_made
from tests.support.follow_ups import (
    FOLLOW_UP_ENV,
    FOLLOW_UP_LINK_SECRET,
    FOLLOW_UP_PHONE,
    FOLLOW_UP_PHONE_DIGITS,
    FOLLOW_UP_PHONE_TYPED,
    NEXT_FOLLOW_UP_KEY,
)
from tests.support.kafka import read_topic, send
from tests.support.patients import referral_body
from tests.support.stored_rows import leaks, stored_rows
from tests.support.waiting import eventually

VISITS = LinkSigner(FOLLOW_UP_LINK_SECRET, VISIT_LINK)
FOLLOW_UPS = LinkSigner(FOLLOW_UP_LINK_SECRET, FOLLOW_UP_LINK)
VISIT_AT = datetime(2031, 3, 10, 15, 0, tzinfo=UTC)  # 11:00 in New York (summer time)
CONSENTING = {
    "consent": "yes",
    "schedule": "1,30,90",  # the hidden field: the schedule the statement read out
    "callback_phone": FOLLOW_UP_PHONE_TYPED,
    "day_part": "evenings",
    "days": "any_day",
    "outcomes": ["moud", "naloxone_kit"],
}


@pytest.fixture
async def other_services(kafka_topics: str) -> AsyncIterator[KafkaBroker]:
    """A producer standing in for matching and notify."""
    broker = make_broker(kafka_topics, client_id="stand-in-for-matching-and-notify-16")
    async with broker:
        yield broker


@pytest.fixture
def clock(referral: ReferralRuntime, monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Sets the follow-up clock (the session's runtime gets the real one back after)."""
    now = [VISIT_AT]
    monkeypatch.setattr(referral.follow_ups, "clock", lambda: now[0])

    def set_to(at: datetime) -> None:
        now[0] = at

    return set_to


@pytest.fixture
def coach_pages(referral: ReferralRuntime) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=referral.app), base_url="http://referral"
    )


async def _completed_visit(
    ed: Hospital, other_services: KafkaBroker, response: CoachResponse = CoachResponse.COMPLETED
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A referral whose coach accepted and then gave `response`: (referral, offer, coach)."""
    created = await ed.client.post(
        "/v1/referrals", json=referral_body(f"ED-{uuid.uuid4().hex[:8]}")
    )
    referral_id = uuid.UUID(created.json()["id"])
    coach_id, offer_id = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    await send(other_services, offer_made(referral_id, coach_id=coach_id, offer_id=offer_id))
    await send(other_services, coach_assigned(referral_id, offer_id, coach_id, now))
    # CoachAssigned (dispatch) and CoachResponded (pages) travel on two topics: the
    # response is sent once the acceptance (and so the accepted offer) is recorded.
    await eventually(lambda: _status_is(ed, referral_id, "accepted"), within=30, what="accepted")
    if response is not CoachResponse.ACCEPTED:
        at = now + timedelta(seconds=1)
        await send(other_services, coach_responded(referral_id, offer_id, coach_id, response, at))
        await eventually(
            lambda: _status_is(ed, referral_id, response.value), within=30, what=response.value
        )
    return referral_id, offer_id, coach_id


async def _status_is(ed: Hospital, referral_id: uuid.UUID, status: str) -> bool:
    body = (await ed.client.get(f"/v1/referrals/{referral_id}")).json()
    return bool(body["status"] == status)


async def _events(
    kafka: str, topic: Topic, kind: str, key: str, value: str
) -> list[dict[str, Any]]:
    """The `kind` events on `topic` whose data has `key` == `value`, oldest first."""
    found = []
    for record in await read_topic(kafka, topic.value):
        envelope = json.loads(record.value)
        if envelope["type"] == f"org.handoff.{kind}" and str(envelope["data"].get(key)) == value:
            found.append(envelope["data"])
    return found


async def _event(
    kafka: str, topic: Topic, kind: str, key: str, value: Any, count: int = 1
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        found = await _events(kafka, topic, kind, key, str(value))
        return found if len(found) >= count else None

    return await eventually(probe, within=30, what=f"{count} {kind} of {key} {value}")


async def _fire(pool: asyncpg.Pool, timer_id: uuid.UUID) -> None:
    """Make the timer due now and wake the service's loop, as its own NOTIFY would."""
    async with pool.acquire() as connection:
        moved = await connection.execute(
            "UPDATE referral.timers SET due_at = now() WHERE timer_id = $1", timer_id
        )
        assert moved == "UPDATE 1"
        await connection.execute("SELECT pg_notify('handoff_timers', 'referral')")


async def _tasks(pool: asyncpg.Pool, referral_id: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT task_id, window_days, window_opens_at, window_ends_at, due_at, attempt, state
           FROM referral.follow_up_tasks WHERE referral_id = $1 ORDER BY window_days""",
        referral_id,
    )


def _assigned(
    referral_id: uuid.UUID, task: asyncpg.Record, attempt: int, coach_id: uuid.UUID, at: datetime
) -> FollowUpAssigned:
    return FollowUpAssigned(
        referral_id=referral_id,
        assignment_id=uuid.uuid4(),
        task_id=task["task_id"],
        attempt=attempt,
        coach_id=coach_id,
        assignee=FollowUpAssignee.VISITING_COACH,
        site_id="md-test",
        site_short_name="Test ED",
        site_time_zone="America/New_York",
        window_days=task["window_days"],
        due_at=task["due_at"],
        window_ends_at=task["window_ends_at"],
        contacts=(),
        assigned_at=at,
    )


async def _assignment_kept(pool: asyncpg.Pool, assignment_id: uuid.UUID) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT true FROM referral.follow_up_assignments WHERE assignment_id = $1",
            assignment_id,
        )
    )


def _no_number_in(text: str) -> bool:
    return FOLLOW_UP_PHONE_DIGITS not in re.sub(r"\D", "", text.replace("\n", " "))


async def test_a_consented_visit_is_followed_up_until_consent_is_revoked(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
) -> None:
    ed = await hospital()
    referral_id, offer_id, coach_id = await _completed_visit(ed, other_services)
    token = VISITS.token(offer_id)
    pool = referral.pool

    page = await coach_pages.get(f"/v/{token}")
    assert page.status_code == 200
    assert "42 CFR Part 2" in page.text
    assert "1 day, 30 days and 90 days" in page.text

    bad = await coach_pages.post(f"/v/{token}", data={**CONSENTING, "callback_phone": "555-01"})
    assert bad.status_code == 422
    assert 'data-field="callback_phone"' in bad.text
    none_stored = "SELECT count(*) FROM referral.visits WHERE referral_id = $1"
    assert await pool.fetchval(none_stored, referral_id) == 0

    saved = await coach_pages.post(f"/v/{token}", data=CONSENTING)
    assert saved.status_code == 303
    again = await coach_pages.post(f"/v/{token}", data={**CONSENTING, "consent": "no"})
    assert again.status_code == 409

    # Three windows at 18:00 New York time (the patient's evenings) on days 1, 30 and 90
    # after the visit's local date, 10 March 2031; each ends where the next opens.
    tasks = await _tasks(pool, referral_id)
    assert [(t["window_days"], t["window_opens_at"], t["window_ends_at"]) for t in tasks] == [
        (1, datetime(2031, 3, 11, 22, tzinfo=UTC), datetime(2031, 4, 9, 22, tzinfo=UTC)),
        (30, datetime(2031, 4, 9, 22, tzinfo=UTC), datetime(2031, 6, 8, 22, tzinfo=UTC)),
        (90, datetime(2031, 6, 8, 22, tzinfo=UTC), datetime(2031, 6, 22, 22, tzinfo=UTC)),
    ]
    assert {t["state"] for t in tasks} == {"scheduled"}
    timers = await pool.fetch(
        "SELECT timer_id, due_at FROM referral.timers WHERE timer_id = ANY($1::uuid[])",
        [t["task_id"] for t in tasks],
    )
    assert sorted(r["due_at"] for r in timers) == [t["due_at"] for t in tasks]

    [visit] = await _event(
        kafka_topics, Topic.REFERRALS, "referral.visit_recorded", "referral_id", referral_id
    )
    assert visit["follow_up_consent"] is True
    assert sorted(visit["outcomes"]) == ["moud", "naloxone_kit"]
    assert visit["coach_id"] == str(coach_id)
    async with pool.acquire() as connection:
        rows = await stored_rows(connection, "referral", ed.site.site_id)
    # Sealed: neither the number nor its digits is in any row, the contact's included.
    assert leaks(rows, [FOLLOW_UP_PHONE, FOLLOW_UP_PHONE_DIGITS]) == []
    assert len(rows["follow_up_contacts"]) >= 1

    # Day 1 falls due: FollowUpDue, attempt 1.
    day_one = tasks[0]
    await _fire(pool, day_one["task_id"])
    [due] = await _event(
        kafka_topics, Topic.REFERRALS, "referral.follow_up_due", "task_id", day_one["task_id"]
    )
    assert (due["attempt"], due["window_days"], due["coach_id"]) == (1, 1, str(coach_id))

    # Matching gave it to the coach, then (off the roster) to another: the first link
    # shows no number any more, the second shows it and is audited once per view.
    first = _assigned(referral_id, day_one, 1, coach_id, datetime.now(UTC))
    other_coach = uuid.uuid4()
    second = _assigned(
        referral_id, day_one, 1, other_coach, datetime.now(UTC) + timedelta(seconds=1)
    )
    await send(other_services, first)
    await send(other_services, second)
    await eventually(
        lambda: _assignment_kept(pool, second.assignment_id), within=30, what="the assignment"
    )
    await eventually(
        lambda: _assignment_kept(pool, first.assignment_id), within=30, what="the assignment"
    )
    replaced = await coach_pages.get(f"/f/{FOLLOW_UPS.token(first.assignment_id)}")
    assert replaced.status_code == 200
    assert "given to another coach" in replaced.text
    assert _no_number_in(replaced.text)
    link = f"/f/{FOLLOW_UPS.token(second.assignment_id)}"
    shown = await coach_pages.get(link)
    assert shown.status_code == 200
    assert f'href="tel:{FOLLOW_UP_PHONE}"' in shown.text
    assert "Evenings, any day" in shown.text
    audited = await pool.fetch(
        """SELECT actor_id, record_kind, fields, purpose FROM referral.audit_log
           WHERE record_id = $1 AND actor_kind = 'coach'""",
        str(referral_id),
    )
    assert [tuple(r) for r in audited] == [
        (
            str(other_coach),
            "referral",
            ["follow_up_callback_phone", "follow_up_preferred_times"],
            "treatment",
        )
    ]

    # No answer: attempt 2 falls due the next evening, inside the window.
    clock(datetime(2031, 3, 11, 22, 30, tzinfo=UTC))
    bad_attempt = await coach_pages.post(link, data={"result": "no_answer", "outcomes": "moud"})
    assert bad_attempt.status_code == 422
    assert 'data-field="outcomes"' in bad_attempt.text
    no_answer = await coach_pages.post(link, data={"result": "no_answer"})
    assert no_answer.status_code == 200
    assert "try again" in no_answer.text
    [retry] = [t for t in await _tasks(pool, referral_id) if t["window_days"] == 1]
    assert (retry["attempt"], retry["state"], retry["due_at"]) == (
        2,
        "scheduled",
        datetime(2031, 3, 12, 22, tzinfo=UTC),
    )
    [attempted] = await _event(
        kafka_topics, Topic.REFERRALS, "referral.follow_up_attempted", "task_id", day_one["task_id"]
    )
    assert (attempted["attempt"], attempted["result"]) == (1, "no_answer")
    assert _no_number_in((await coach_pages.get(link)).text)  # attempt 1 is done

    await _fire(pool, day_one["task_id"])
    await _event(
        kafka_topics,
        Topic.REFERRALS,
        "referral.follow_up_due",
        "task_id",
        day_one["task_id"],
        count=2,
    )
    third = _assigned(referral_id, retry, 2, coach_id, datetime.now(UTC))
    await send(other_services, third)
    await eventually(
        lambda: _assignment_kept(pool, third.assignment_id), within=30, what="the assignment"
    )
    reached = await coach_pages.post(
        f"/f/{FOLLOW_UPS.token(third.assignment_id)}",
        data={"result": "reached", "outcomes": ["treatment_outpatient", "housing"]},
    )
    assert reached.status_code == 200
    assert "reached" in reached.text
    attempts = await _event(
        kafka_topics,
        Topic.REFERRALS,
        "referral.follow_up_attempted",
        "task_id",
        day_one["task_id"],
        count=2,
    )
    assert (attempts[1]["attempt"], attempts[1]["result"]) == (2, "reached")
    assert sorted(attempts[1]["outcomes"]) == ["housing", "treatment_outpatient"]
    assert [t["state"] for t in await _tasks(pool, referral_id)] == [
        "reached",
        "scheduled",
        "scheduled",
    ]

    # The hospital tells Handoff the patient withdrew consent: the rest stop at once.
    revoke = await ed.client.post(f"/v1/referrals/{referral_id}/follow-up-consent/revoke")
    assert revoke.status_code == 200
    assert revoke.json() == {
        "referral_id": str(referral_id),
        "tasks_cancelled": 2,
        "already_revoked": False,
    }
    assert [t["state"] for t in await _tasks(pool, referral_id)] == [
        "reached",
        "cancelled",
        "cancelled",
    ]
    left = "SELECT count(*) FROM referral.timers WHERE timer_id = ANY($1::uuid[])"
    assert await pool.fetchval(left, [t["task_id"] for t in tasks]) == 0
    contact = "SELECT count(*) FROM referral.follow_up_contacts WHERE referral_id = $1"
    assert await pool.fetchval(contact, referral_id) == 0
    [revoked] = await _event(
        kafka_topics,
        Topic.REFERRALS,
        "referral.follow_up_consent_revoked",
        "referral_id",
        referral_id,
    )
    assert revoked["tasks_cancelled"] == 2
    repeat = await ed.client.post(f"/v1/referrals/{referral_id}/follow-up-consent/revoke")
    assert repeat.json()["already_revoked"] is True
    visit_page = await coach_pages.get(f"/v/{token}")
    assert "withdrew their consent" in visit_page.text

    # One visit, one VisitRecorded; and the number is in no event on any topic.
    assert (
        len(
            await _events(
                kafka_topics,
                Topic.REFERRALS,
                "referral.visit_recorded",
                "referral_id",
                str(referral_id),
            )
        )
        == 1
    )
    for topic in (Topic.REFERRALS, Topic.DISPATCH, Topic.PAGES):
        for record in await read_topic(kafka_topics, topic.value):
            assert FOLLOW_UP_PHONE_DIGITS not in record.value.decode()
    metrics = (await coach_pages.get("/metrics")).text
    assert FOLLOW_UP_PHONE_DIGITS not in metrics
    for step in ("visit_recorded_consented", "due", "attempted_reached", "consent_revoked"):
        counted = f'handoff_referral_follow_ups_total{{site="{ed.site.site_id}",step="{step}"}}'
        assert counted in metrics, step


async def test_without_consent_no_task_and_no_number_is_kept(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
) -> None:
    ed = await hospital()
    referral_id, offer_id, _ = await _completed_visit(ed, other_services, CoachResponse.ARRIVED)
    token = VISITS.token(offer_id)
    saved = await coach_pages.post(
        f"/v/{token}", data={**CONSENTING, "consent": "no", "outcomes": "none"}
    )
    assert saved.status_code == 303
    assert await _tasks(referral.pool, referral_id) == []
    contact = "SELECT count(*) FROM referral.follow_up_contacts WHERE referral_id = $1"
    assert await referral.pool.fetchval(contact, referral_id) == 0
    [visit] = await _event(
        kafka_topics, Topic.REFERRALS, "referral.visit_recorded", "referral_id", referral_id
    )
    assert (visit["follow_up_consent"], visit["outcomes"]) == (False, ["none"])
    revoke = await ed.client.post(f"/v1/referrals/{referral_id}/follow-up-consent/revoke")
    assert revoke.status_code == 409
    assert revoke.json()["error"]["code"] == "no_follow_up_consent"


async def test_a_visit_page_is_only_the_accepted_coachs_at_the_bedside(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
) -> None:
    ed = await hospital()
    referral_id, offer_id, _ = await _completed_visit(ed, other_services, CoachResponse.ACCEPTED)
    token = VISITS.token(offer_id)
    early = await coach_pages.post(f"/v/{token}", data=CONSENTING)
    assert early.status_code == 409
    assert "tap Arrived first" in early.text
    assert (
        await referral.pool.fetchval(
            "SELECT count(*) FROM referral.visits WHERE referral_id = $1", referral_id
        )
        == 0
    )
    # A link for another purpose, a tampered one, and an unknown offer's are not pages.
    for path in (
        f"/v/{FOLLOW_UPS.token(offer_id)}",
        f"/v/{token[:-2]}xx",
        f"/v/{VISITS.token(uuid.uuid4())}",
        f"/f/{FOLLOW_UPS.token(uuid.uuid4())}",
    ):
        assert (await coach_pages.get(path)).status_code == 404


async def test_a_wrong_number_ends_follow_up_and_the_cli_rotates_keys_and_revokes(
    referral: ReferralRuntime,
    referral_database: str,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
) -> None:
    ed = await hospital()
    pool = referral.pool
    # The site's schedule: two windows, set through the CLI (validated).
    handoff_command(
        "referral",
        "follow-ups",
        "schedule",
        "--site",
        ed.site.site_id,
        "--days",
        "2,14",
        database_url=referral_database,
    )
    referral_id, offer_id, coach_id = await _completed_visit(ed, other_services)
    recorded = await coach_pages.post(
        f"/v/{VISITS.token(offer_id)}", data={**CONSENTING, "schedule": "2,14"}
    )
    assert recorded.status_code == 303
    tasks = await _tasks(pool, referral_id)
    assert [t["window_days"] for t in tasks] == [2, 14]

    # A new key first, the old one after it: every contact is sealed again under the new.
    sealed = "SELECT sealed FROM referral.follow_up_contacts WHERE referral_id = $1"
    before = await pool.fetchval(sealed, referral_id)
    rotated = handoff_command(
        "referral",
        "follow-ups",
        "rotate-keys",
        database_url=referral_database,
        env={"FOLLOW_UP_KEYS": f"{NEXT_FOLLOW_UP_KEY},{FOLLOW_UP_ENV['FOLLOW_UP_KEYS']}"},
    )
    assert "re-encrypted" in rotated
    assert await pool.fetchval(sealed, referral_id) != before

    await _fire(pool, tasks[0]["task_id"])
    await _event(
        kafka_topics, Topic.REFERRALS, "referral.follow_up_due", "task_id", tasks[0]["task_id"]
    )
    assignment = _assigned(referral_id, tasks[0], 1, coach_id, datetime.now(UTC))
    await send(other_services, assignment)
    await eventually(
        lambda: _assignment_kept(pool, assignment.assignment_id), within=30, what="the assignment"
    )
    # The runtime holds only the old key: rotation kept it able to open (MultiFernet).
    link = f"/f/{FOLLOW_UPS.token(assignment.assignment_id)}"
    wrong = await coach_pages.post(link, data={"result": "wrong_number"})
    assert wrong.status_code == 200
    assert [t["state"] for t in await _tasks(pool, referral_id)] == ["closed", "closed"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM referral.follow_up_contacts WHERE referral_id = $1", referral_id
        )
        == 0
    )

    # Revoking after follow-up ended records the withdrawal; the CLI says nothing was open.
    out = handoff_command(
        "referral",
        "follow-ups",
        "revoke-consent",
        "--referral",
        str(referral_id),
        database_url=referral_database,
    )
    assert "0 follow-ups cancelled" in out
    await _event(
        kafka_topics,
        Topic.REFERRALS,
        "referral.follow_up_consent_revoked",
        "referral_id",
        referral_id,
    )


async def test_a_sites_follow_up_schedule_is_set_by_admin_and_validated(
    referral: ReferralRuntime, hospital: HospitalFactory
) -> None:
    ed = await hospital()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_schedule_router(referral.pool, SecretStr("admin-16")))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://referral",
        headers={"Authorization": "Bearer admin-16"},
    ) as admin:
        path = f"/v1/admin/sites/{ed.site.site_id}/follow-up-schedule"
        assert (await admin.get(path)).json()["follow_up_days"] == [1, 30, 90]
        for days in ([30, 1], [0, 7], [1, 400], []):
            refused = await admin.put(path, json={"follow_up_days": days})
            assert refused.status_code == 422, days
            assert refused.json()["error"]["fields"][0]["field"] == "follow_up_days"
        # Strict types and no unknown field (finding #16f-8): true is not 1, "7" not 7.
        for body in (
            {"follow_up_days": [True]},
            {"follow_up_days": ["7"]},
            {"follow_up_days": [2, 7], "extra": 1},
        ):
            refused = await admin.put(path, json=body)
            assert refused.status_code == 422, body
            [named] = refused.json()["error"]["fields"]
            assert named["field"].split("[")[0] in ("follow_up_days", "extra"), body
            assert ("extra" in body) == (named["field"] == "extra"), body
        assert (await admin.get(path)).json()["follow_up_days"] == [1, 30, 90]
        assert (await admin.put(path, json={"follow_up_days": [3, 45]})).status_code == 200
        assert (await admin.get(path)).json()["follow_up_days"] == [3, 45]
        missing = await admin.put(
            "/v1/admin/sites/no-such-site/follow-up-schedule", json={"follow_up_days": [1]}
        )
        assert missing.status_code == 404


async def test_a_coach_records_the_withdrawal_from_either_page(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
) -> None:
    ed = await hospital()
    pool = referral.pool
    contact = "SELECT count(*) FROM referral.follow_up_contacts WHERE referral_id = $1"

    # From the visit page: the confirm box is required, then every task is cancelled.
    first, offer_id, _ = await _completed_visit(ed, other_services)
    visit = f"/v/{VISITS.token(offer_id)}"
    assert (await coach_pages.post(visit, data=CONSENTING)).status_code == 303
    unconfirmed = await coach_pages.post(f"{visit}/revoke", data={})
    assert unconfirmed.status_code == 422
    assert 'data-field="confirm"' in unconfirmed.text
    assert await pool.fetchval(contact, first) == 1
    confirmed = await coach_pages.post(f"{visit}/revoke", data={"confirm": "yes"})
    assert confirmed.status_code == 303
    assert [t["state"] for t in await _tasks(pool, first)] == ["cancelled"] * 3
    assert await pool.fetchval(contact, first) == 0
    [revoked] = await _event(
        kafka_topics,
        Topic.REFERRALS,
        "referral.follow_up_consent_revoked",
        "referral_id",
        first,
    )
    assert revoked["tasks_cancelled"] == 3

    # From the follow-up page, during the day-1 call: its own task closes too.
    second, offer_id, coach_id = await _completed_visit(ed, other_services)
    visit = f"/v/{VISITS.token(offer_id)}"
    assert (await coach_pages.post(visit, data=CONSENTING)).status_code == 303
    day_one = (await _tasks(pool, second))[0]
    await _fire(pool, day_one["task_id"])
    await _event(
        kafka_topics, Topic.REFERRALS, "referral.follow_up_due", "task_id", day_one["task_id"]
    )
    assignment = _assigned(second, day_one, 1, coach_id, datetime.now(UTC))
    await send(other_services, assignment)
    await eventually(
        lambda: _assignment_kept(pool, assignment.assignment_id),
        within=30,
        what="the assignment",
    )
    link = f"/f/{FOLLOW_UPS.token(assignment.assignment_id)}"
    withdrawn = await coach_pages.post(f"{link}/revoke", data={"confirm": "yes"})
    assert withdrawn.status_code == 200
    assert "withdrew their consent" in withdrawn.text
    assert _no_number_in(withdrawn.text)
    assert [t["state"] for t in await _tasks(pool, second)] == ["cancelled"] * 3
    assert await pool.fetchval(contact, second) == 0
    after = await coach_pages.get(link)
    assert _no_number_in(after.text)


async def _due_and_assigned(
    pool: asyncpg.Pool,
    other_services: KafkaBroker,
    kafka_topics: str,
    referral_id: uuid.UUID,
    coach_id: uuid.UUID,
) -> FollowUpAssigned:
    """Day 1 of a consented visit falls due and is assigned to `coach_id`."""
    day_one = (await _tasks(pool, referral_id))[0]
    await _fire(pool, day_one["task_id"])
    await _event(
        kafka_topics, Topic.REFERRALS, "referral.follow_up_due", "task_id", day_one["task_id"]
    )
    assignment = _assigned(referral_id, day_one, 1, coach_id, datetime.now(UTC))
    await send(other_services, assignment)
    await eventually(
        lambda: _assignment_kept(pool, assignment.assignment_id), within=30, what="the assignment"
    )
    return assignment


async def test_consent_is_refused_when_the_schedule_changed_after_it_was_read_out(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
) -> None:
    """Finding #16f-1: the coach read "2 days and 7 days", the operator then set five
    windows; consent=yes must not store five calls the patient never heard of."""
    ed = await hospital()
    pool = referral.pool
    async with pool.acquire() as connection:
        await connection.execute(
            "UPDATE referral.sites SET follow_up_days = '{2,7}' WHERE site_id = $1",
            ed.site.site_id,
        )
    referral_id, offer_id, _ = await _completed_visit(ed, other_services)
    link = f"/v/{VISITS.token(offer_id)}"
    read_out = await coach_pages.get(link)
    assert "2 days and 7 days after today" in read_out.text
    shown = re.search(r'name="schedule" value="([^"]*)"', read_out.text)
    assert shown is not None
    assert shown[1] == "2,7"

    async with pool.acquire() as connection:
        await connection.execute(
            "UPDATE referral.sites SET follow_up_days = '{1,30,90,180,365}' WHERE site_id = $1",
            ed.site.site_id,
        )
    refused = await coach_pages.post(link, data={**CONSENTING, "schedule": shown[1]})
    assert refused.status_code == 409
    assert "follow-up schedule changed" in refused.text
    assert "read the new statement" in refused.text.lower()
    assert "1 day, 30 days, 90 days, 180 days and 365 days after today" in refused.text
    stored = "SELECT count(*) FROM referral.visits WHERE referral_id = $1"
    assert await pool.fetchval(stored, referral_id) == 0
    assert await _tasks(pool, referral_id) == []
    missing = await coach_pages.post(
        link, data={k: v for k, v in CONSENTING.items() if k != "schedule"}
    )
    assert missing.status_code == 409
    assert await pool.fetchval(stored, referral_id) == 0

    # Read out again: the new statement's schedule is the one consented to.
    again = await coach_pages.post(link, data={**CONSENTING, "schedule": "1,30,90,180,365"})
    assert again.status_code == 303
    assert [t["window_days"] for t in await _tasks(pool, referral_id)] == [1, 30, 90, 180, 365]


async def test_of_simultaneous_submits_only_the_one_stored_says_saved(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
) -> None:
    """Finding #16f-3: concurrent /v/ and /f/ submits all said "Saved"; one was stored."""
    ed = await hospital()
    pool = referral.pool
    referral_id, offer_id, coach_id = await _completed_visit(ed, other_services)
    visit = f"/v/{VISITS.token(offer_id)}"
    numbers = ["4105557777", "4105558888", "4105559999", "4105556666"]
    answers = await asyncio.gather(
        *(coach_pages.post(visit, data={**CONSENTING, "callback_phone": n}) for n in numbers)
    )
    assert sorted(a.status_code for a in answers) == [303, 409, 409, 409]
    for lost in (a for a in answers if a.status_code == 409):
        assert "already recorded" in lost.text
    assert len(await _tasks(pool, referral_id)) == 3

    assignment = await _due_and_assigned(pool, other_services, kafka_topics, referral_id, coach_id)
    link = f"/f/{FOLLOW_UPS.token(assignment.assignment_id)}"
    forms: list[dict[str, Any]] = [
        {"result": "no_answer"},
        {"result": "no_answer"},
        {"result": "reached", "outcomes": ["moud"]},
        {"result": "deceased"},
    ]
    results = await asyncio.gather(*(coach_pages.post(link, data=f) for f in forms))
    saved = [r for r in results if "Saved" in r.text]
    assert len(saved) == 1
    assert saved[0].status_code == 200
    [stored] = await pool.fetch(
        "SELECT result FROM referral.follow_up_attempts WHERE task_id = $1",
        assignment.task_id,
    )
    for form, answer in zip(forms, results, strict=True):
        if answer is saved[0]:
            continue
        assert answer.status_code == 409
        assert "already recorded" in answer.text
        if form["result"] != stored["result"]:
            assert "was not saved" in answer.text
    # Sequentially too: a later, different result is not stored and says so.
    later = await coach_pages.post(link, data={"result": "reached", "outcomes": ["housing"]})
    assert later.status_code == 409
    assert "Saved" not in later.text


async def test_a_replaced_links_withdraw_button_says_given_to_another_coach(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
) -> None:
    """Finding #16f-9: GET said "given to another coach", the revoke POST 404 "not valid"."""
    ed = await hospital()
    pool = referral.pool
    referral_id, offer_id, coach_id = await _completed_visit(ed, other_services)
    assert (
        await coach_pages.post(f"/v/{VISITS.token(offer_id)}", data=CONSENTING)
    ).status_code == 303
    first = await _due_and_assigned(pool, other_services, kafka_topics, referral_id, coach_id)
    task = (await _tasks(pool, referral_id))[0]
    second = _assigned(referral_id, task, 1, uuid.uuid4(), datetime.now(UTC) + timedelta(seconds=1))
    await send(other_services, second)
    await eventually(
        lambda: _assignment_kept(pool, second.assignment_id), within=30, what="the assignment"
    )
    old = f"/f/{FOLLOW_UPS.token(first.assignment_id)}"
    withdraw = await coach_pages.post(f"{old}/revoke", data={"confirm": "yes"})
    assert withdraw.status_code == 409
    assert "given to another coach" in withdraw.text
    assert "not valid" not in withdraw.text
    assert [t["state"] for t in await _tasks(pool, referral_id)] == [
        "due",
        "scheduled",
        "scheduled",
    ]


async def test_a_number_the_running_keys_cannot_open_is_a_503_and_an_error(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding #16f-4: rotated before the service had the new key, the coach was told
    "not yours to make now"."""
    ed = await hospital()
    pool = referral.pool
    referral_id, offer_id, coach_id = await _completed_visit(ed, other_services)
    assert (
        await coach_pages.post(f"/v/{VISITS.token(offer_id)}", data=CONSENTING)
    ).status_code == 303
    assignment = await _due_and_assigned(pool, other_services, kafka_topics, referral_id, coach_id)
    # The running service holds a key the number was not sealed with.
    monkeypatch.setattr(referral.follow_ups, "vault", ContactVault(NEXT_FOLLOW_UP_KEY))
    unreadable = CONTACTS_UNREADABLE._value.get()
    link = f"/f/{FOLLOW_UPS.token(assignment.assignment_id)}"
    with caplog.at_level(logging.ERROR):
        page = await coach_pages.get(link)
    assert page.status_code == 503
    assert "cannot be read right now" in page.text
    assert "not yours" not in page.text
    assert CONTACTS_UNREADABLE._value.get() == unreadable + 1
    [error] = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert error.levelno == logging.ERROR
    assert _no_number_in(caplog.text)
    posted = await coach_pages.post(link, data={"result": "no_answer"})
    assert posted.status_code in (409, 503)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM referral.follow_up_attempts WHERE task_id = $1",
            assignment.task_id,
        )
        == 0
    )


async def test_revoking_after_a_wrong_number_says_already_revoked(
    referral: ReferralRuntime,
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    coach_pages: httpx.AsyncClient,
    clock: Callable[[datetime], None],
    kafka_topics: str,
) -> None:
    """Finding #16f cosmetic: the first REST revoke after a wrong number said false."""
    ed = await hospital()
    pool = referral.pool
    referral_id, offer_id, coach_id = await _completed_visit(ed, other_services)
    assert (
        await coach_pages.post(f"/v/{VISITS.token(offer_id)}", data=CONSENTING)
    ).status_code == 303
    assignment = await _due_and_assigned(pool, other_services, kafka_topics, referral_id, coach_id)
    link = f"/f/{FOLLOW_UPS.token(assignment.assignment_id)}"
    assert (await coach_pages.post(link, data={"result": "wrong_number"})).status_code == 200
    path = f"/v1/referrals/{referral_id}/follow-up-consent/revoke"
    first = (await ed.client.post(path)).json()
    assert (first["already_revoked"], first["tasks_cancelled"]) == (True, 0)
    second = (await ed.client.post(path)).json()
    assert (second["already_revoked"], second["tasks_cancelled"]) == (True, 0)
