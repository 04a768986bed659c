"""Notify's follow-up reminders and visit link on a real PostgreSQL, its use cases called
in turn (issue #16): a reminder queued is dropped by the attempt recorded, the consent
revoked or a re-assignment; a STOPped number is not reminded; a send whose outcome is
unknown is never repeated; a text back is answered with the link; the coach's page links
the visit record once they arrived, and not before."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from handoff_notify import SCHEMA
from handoff_notify.adapters import pages_store as store
from handoff_notify.adapters.providers import Outgoing
from handoff_notify.domain.delivery import Accepted, Ambiguous
from handoff_notify.entrypoints.http import LinkNotFound, build_coach_router, link_not_found_page
from handoff_notify.service import NotifyService
from handoff_notify.settings import Delivery, NotifySettings
from handoff_platform.links import FOLLOW_UP_LINK, VISIT_LINK, LinkSigner
from handoff_platform.outbox import Outbox
from handoff_platform.timers import Timers
from handoff_schemas import Envelope
from handoff_schemas.envelope import EventPayload
from handoff_schemas.events import (
    CoachAssigned,
    ContactPoint,
    FollowUpAssigned,
    FollowUpAttempted,
    FollowUpConsentRevoked,
)
from handoff_schemas.vocabulary import (
    CoachResponse,
    FollowUpAssignee,
    FollowUpResult,
    ResponseVia,
)
from tests.integration.conftest import create_database
from tests.support.fake_twilio import new_phone
from tests.support.notify import email as email_point
from tests.support.notify import offer_made, sms
from tests.support.waiting import eventually

SECRET = "follow-up-service-test-secret"
REFERRAL_URL = "https://r.example.org"


@pytest.fixture(scope="module")
async def service(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NotifyService]:
    url = await create_database(database_url)
    await store.apply_migrations(url)
    spool: Path = tmp_path_factory.mktemp("follow-up-service") / "reports.jsonl"
    settings = NotifySettings(
        database_url=url,
        notify_delivery=Delivery.SANDBOX,
        notify_link_secret=SecretStr("offer-link-secret"),
        follow_up_link_secret=SecretStr(SECRET),
        referral_public_url=REFERRAL_URL,
        notify_report_spool=spool,
    )
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield NotifyService(pool, Outbox(SCHEMA), Timers(SCHEMA), settings)
    finally:
        await pool.close()


async def _hear(
    service: NotifyService, payload: EventPayload, event_id: UUID | None = None
) -> None:
    """Run the consumer's handler for `payload` in one transaction, as Kafka would."""
    handlers = {
        FollowUpAssigned: service.follow_up_assigned,
        FollowUpAttempted: service.follow_up_attempted,
        FollowUpConsentRevoked: service.follow_up_consent_revoked,
        CoachAssigned: service.coach_assigned,
    }
    envelope = Envelope.wrap(
        payload, source="/handoff/tests", correlation_id="tests", event_id=event_id
    )
    async with service.pool.acquire() as connection, connection.transaction():
        await handlers[type(payload)](connection, envelope)


def _assigned(
    *contacts: ContactPoint,
    referral_id: UUID | None = None,
    task_id: UUID | None = None,
    attempt: int = 1,
) -> FollowUpAssigned:
    now = datetime.now(UTC)
    return FollowUpAssigned(
        referral_id=referral_id or uuid4(),
        assignment_id=uuid4(),
        task_id=task_id or uuid4(),
        attempt=attempt,
        coach_id=uuid4(),
        assignee=FollowUpAssignee.VISITING_COACH,
        site_id="md-elsewhere",
        site_short_name="St. Elsewhere ED",
        site_time_zone="America/New_York",
        window_days=30,
        due_at=now,
        window_ends_at=now + timedelta(days=7),
        contacts=contacts,
        assigned_at=now,
    )


async def _claimed_for(service: NotifyService, *destinations: str) -> list[Outgoing]:
    """Claim every due reminder; those to `destinations` (the others are left `sending`
    to other tests of the module, which never claim them again)."""
    claimed = await service.claim_due_reminders(200)
    return [o for o in claimed if o.destination in destinations]


async def _states(service: NotifyService, assignment_id: UUID) -> list[str]:
    rows = await service.pool.fetch(
        f"SELECT state FROM {SCHEMA}.reminders WHERE assignment_id = $1 ORDER BY channel",
        assignment_id,
    )
    return [row["state"] for row in rows]


async def test_a_queued_reminder_is_dropped_when_the_attempt_is_recorded_first(
    service: NotifyService,
) -> None:
    phone, address = new_phone(), f"c-{uuid4().hex[:8]}@example.org"
    assigned = _assigned(sms(phone), email_point(address))
    await _hear(service, assigned)
    assert await _states(service, assigned.assignment_id) == ["pending", "pending"]
    await _hear(
        service,
        FollowUpAttempted(
            referral_id=assigned.referral_id,
            task_id=assigned.task_id,
            site_id=assigned.site_id,
            window_days=30,
            attempt=1,
            coach_id=assigned.coach_id,
            result=FollowUpResult.NO_ANSWER,
            attempted_at=datetime.now(UTC),
        ),
    )
    assert await _claimed_for(service, phone, address) == []
    assert await _states(service, assigned.assignment_id) == ["cancelled", "cancelled"]


async def test_consent_revoked_drops_every_reminder_of_the_referral_and_later_ones(
    service: NotifyService,
) -> None:
    phone = new_phone()
    first = _assigned(sms(phone))
    await _hear(service, first)
    await _hear(
        service,
        FollowUpConsentRevoked(
            referral_id=first.referral_id,
            site_id=first.site_id,
            tasks_cancelled=2,
            revoked_at=datetime.now(UTC),
        ),
    )
    late = _assigned(sms(phone), referral_id=first.referral_id)  # heard after the revocation
    await _hear(service, late)
    assert await _claimed_for(service, phone) == []
    assert await _states(service, first.assignment_id) == ["cancelled"]
    assert await _states(service, late.assignment_id) == []


async def test_a_reassignment_replaces_the_reminder_not_yet_sent(service: NotifyService) -> None:
    gone, taking_over = new_phone(), new_phone()
    first = _assigned(sms(gone))
    await _hear(service, first)
    second = _assigned(sms(taking_over), referral_id=first.referral_id, task_id=first.task_id)
    await _hear(service, second)
    claimed = await _claimed_for(service, gone, taking_over)
    assert [o.destination for o in claimed] == [taking_over]
    assert await _states(service, first.assignment_id) == ["cancelled"]


async def test_a_redelivered_assignment_queues_nothing_more(service: NotifyService) -> None:
    phone = new_phone()
    assigned = _assigned(sms(phone))
    event_id = uuid4()
    await _hear(service, assigned, event_id)
    await _hear(service, assigned, event_id)
    assert len(await _claimed_for(service, phone)) == 1


async def test_a_stopped_number_is_not_reminded_and_an_unknown_outcome_is_never_resent(
    service: NotifyService,
) -> None:
    stopped, fine = new_phone(), new_phone()
    assert await service.sms_reply(stopped, "STOP") is None
    assigned = _assigned(sms(stopped))
    await _hear(service, assigned)
    assert await _claimed_for(service, stopped) == []
    assert await _states(service, assigned.assignment_id) == ["cancelled"]

    other = _assigned(sms(fine))
    await _hear(service, other)
    [outgoing] = await _claimed_for(service, fine)
    await service.record_reminder(outgoing, Ambiguous("timeout"))
    assert await _states(service, other.assignment_id) == ["failed"]
    assert await _claimed_for(service, fine) == []


async def test_a_text_back_to_a_reminder_is_answered_with_its_link(service: NotifyService) -> None:
    phone = new_phone()
    coach_id = uuid4()
    async with service.pool.acquire() as connection:
        await store.replace_coach_phones(connection, coach_id, (phone,), datetime.now(UTC))
    assigned = _assigned(sms(phone))
    await _hear(service, assigned)
    [outgoing] = await _claimed_for(service, phone)
    token = outgoing.content.text.rsplit("/f/", 1)[1]
    assert LinkSigner(SECRET, FOLLOW_UP_LINK).record_id(token) == assigned.assignment_id
    await service.record_reminder(outgoing, Accepted("SM-reminder", delivered=False))

    answer = await service.sms_reply(phone, "yes")
    assert answer is not None
    assert answer.startswith("Handoff: reminders take no reply.")
    assert answer.endswith(f"{REFERRAL_URL}/f/{token}")
    assert len(answer) <= 160


async def _paged_then_closed(service: NotifyService, phone: str, *responses: CoachResponse) -> None:
    """An offer paged to `phone` by SMS (sent), then answered with `responses` in turn."""
    made = offer_made(sms(phone))
    async with service.pool.acquire() as connection, connection.transaction():
        await service.offer_made(
            connection, Envelope.wrap(made, source="/handoff/matching", correlation_id="tests")
        )

    async def paged() -> Outgoing | None:
        mine = [o for o in await service.claim_due(50) if o.destination == phone]
        return mine[0] if mine else None

    page = await eventually(paged, within=10, what="the offer's page claimed")
    await service.record_send(page, Accepted(f"SM-{uuid4().hex}", delivered=False))
    for response in responses:
        if response is CoachResponse.ARRIVED:
            now = datetime.now(UTC)
            await _hear(
                service,
                CoachAssigned(
                    referral_id=made.referral_id,
                    offer_id=made.offer_id,
                    coach_id=made.coach_id,
                    assigned_at=now,
                    arrival_deadline=now + timedelta(hours=1),
                ),
            )
        assert await service.answer(made.offer_id, response, ResponseVia.LINK)


async def test_a_text_after_a_reminder_with_only_closed_offers_is_answered_with_its_link(
    service: NotifyService,
) -> None:
    """Finding #16f-5: a coach whose offers of the day were declined or completed got the
    HELP text, not the reminder's answer."""
    declined, completed = new_phone(), new_phone()
    for phone, responses in (
        (declined, (CoachResponse.DECLINED,)),
        (
            completed,
            (CoachResponse.ACCEPTED, CoachResponse.ARRIVED, CoachResponse.COMPLETED),
        ),
    ):
        async with service.pool.acquire() as connection:
            await store.replace_coach_phones(connection, uuid4(), (phone,), datetime.now(UTC))
        await _paged_then_closed(service, phone, *responses)
        assigned = _assigned(sms(phone))
        await _hear(service, assigned)
        [outgoing] = await _claimed_for(service, phone)
        token = outgoing.content.text.rsplit("/f/", 1)[1]
        await service.record_reminder(outgoing, Accepted("SM-reminder", delivered=False))

        answer = await service.sms_reply(phone, "called her")
        assert answer is not None
        assert answer.startswith("Handoff: reminders take no reply."), answer
        assert answer.endswith(f"{REFERRAL_URL}/f/{token}")


async def test_the_coach_page_links_the_visit_record_once_arrived(service: NotifyService) -> None:
    made = offer_made(sms(new_phone()))
    async with service.pool.acquire() as connection, connection.transaction():
        await service.offer_made(
            connection, Envelope.wrap(made, source="/handoff/matching", correlation_id="tests")
        )
    app = FastAPI()
    app.include_router(build_coach_router(service))
    app.add_exception_handler(LinkNotFound, link_not_found_page)
    page = f"/p/{service.signer.token(made.offer_id)}"
    visit = f"{REFERRAL_URL}/v/{LinkSigner(SECRET, VISIT_LINK).token(made.offer_id)}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notify") as client:
        assert await service.answer(made.offer_id, CoachResponse.ACCEPTED, ResponseVia.LINK)
        now = datetime.now(UTC)
        await _hear(
            service,
            CoachAssigned(
                referral_id=made.referral_id,
                offer_id=made.offer_id,
                coach_id=made.coach_id,
                assigned_at=now,
                arrival_deadline=now + timedelta(hours=1),
            ),
        )
        assigned_page = await client.get(page)
        assert assigned_page.status_code == 200
        assert visit not in assigned_page.text
        assert "Record the visit" not in assigned_page.text

        await service.answer(made.offer_id, CoachResponse.ARRIVED, ResponseVia.LINK)
        arrived_page = await client.get(page)
        assert f'href="{visit}"' in arrived_page.text
        assert "Record the visit and the patient's follow-up choice" in arrived_page.text

        await service.answer(made.offer_id, CoachResponse.COMPLETED, ResponseVia.LINK)
        completed_page = await client.get(page)
        assert f'href="{visit}"' in completed_page.text
