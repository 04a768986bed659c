"""Follow-up attempts on real Kafka and PostgreSQL (issue #16): matching gives a
FollowUpDue to a coach (FollowUpAssigned) and notify reminds them, in the sandbox, with
the referral service's signed /f/ link; the coach gone from the roster -> the site's
on-call coach (before the attempt is given, or after: a new assignment); a redelivery
sends nothing twice; an attempt recorded first sends nothing; nobody at all -> a retry.

Matching and notify run in this process on a broker of their own; the test stands in for
the referral service, which publishes FollowUpDue and FollowUpAttempted.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.kafka import KafkaBroker
from pydantic import SecretStr

from handoff_devenv import KafkaCluster
from handoff_matching.adapters.roster_store import import_roster, remember_site
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.roster_file import RosterFile
from handoff_matching.service import follow_up_timer
from handoff_notify import SCHEMA as NOTIFY
from handoff_notify.adapters import sandbox
from handoff_notify.app import NotifyRuntime
from handoff_notify.settings import Delivery, NotifySettings
from handoff_platform.kafka import ensure_topics, make_broker
from handoff_platform.links import FOLLOW_UP_LINK, LinkSigner
from handoff_schemas import Envelope, Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import FollowUpAssigned, FollowUpAttempted, FollowUpDue
from handoff_schemas.vocabulary import FollowUpAssignee, FollowUpResult
from tests.integration.conftest import create_database
from tests.support.fake_twilio import new_phone
from tests.support.kafka import read_topic, send
from tests.support.matching import always_on_call, roster_coach
from tests.support.waiting import eventually

SECRET = "follow-up-link-test-secret"
REFERRAL_URL = "https://r.example.org"
SITE_NAME = "St. Elsewhere ED"
REFERRAL_SOURCE = "/handoff/referral"


@pytest.fixture(scope="module")
async def services(
    matching_database: str, database_url: str, own_kafka: KafkaCluster, tmp_path_factory: Any
) -> AsyncIterator[tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool]]:
    await ensure_topics(own_kafka.bootstrap_servers)
    notify_database = await create_database(database_url)
    spool: Path = tmp_path_factory.mktemp("follow-up-spool") / "reports.jsonl"
    matching = await MatchingRuntime.start(
        MatchingSettings(
            database_url=matching_database, kafka_bootstrap_servers=own_kafka.bootstrap_servers
        )
    )
    notify = await NotifyRuntime.start(
        NotifySettings(
            database_url=notify_database,
            kafka_bootstrap_servers=own_kafka.bootstrap_servers,
            handoff_environment="test",
            notify_delivery=Delivery.SANDBOX,
            notify_link_secret=SecretStr("offer-link-secret"),
            follow_up_link_secret=SecretStr(SECRET),
            referral_public_url=REFERRAL_URL,
            notify_report_spool=spool,
        )
    )
    pool = await asyncpg.create_pool(notify_database, min_size=1, max_size=2)
    try:

        async def connected() -> bool:
            return matching.kafka_connected.is_set() and notify.pipeline.kafka_connected.is_set()

        await eventually(connected, within=60, what="matching and notify on Kafka")
        yield matching, notify, pool
    finally:
        await pool.close()
        await notify.stop()
        await matching.stop()


@pytest.fixture(scope="module")
async def referral_service(own_kafka: KafkaCluster) -> AsyncIterator[KafkaBroker]:
    """Stands in for the referral service, which publishes the follow-up events."""
    broker = make_broker(own_kafka.bootstrap_servers, client_id="referral-stand-in")
    async with broker:
        yield broker


@dataclass(frozen=True)
class Site:
    site_id: str
    visiting: uuid.UUID  # the coach who saw the patient: on no shift
    visiting_phone: str
    visiting_email: str
    on_call: uuid.UUID  # on call for the site around the clock
    on_call_phone: str


async def _site(matching_database: str) -> Site:
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    visiting, on_call = uuid.uuid4(), uuid.uuid4()
    site = Site(
        site_id,
        visiting,
        new_phone(),
        f"coach-{uuid.uuid4().hex[:8]}@example.org",
        on_call,
        new_phone(),
    )

    def coach(coach_id: uuid.UUID, *methods: tuple[str, str]) -> dict[str, Any]:
        return {
            "coach_id": str(coach_id),
            "display_name": "Coach",
            "contact_methods": [{"channel": c, "destination": d} for c, d in methods],
            "languages": ["en"],
            "max_concurrent": 3,
            "certifications": [{"state": "MD", "credential": "CPRS", "expires_on": "2030-01-01"}],
        }

    roster = RosterFile.model_validate(
        {
            "coaches": [
                coach(visiting, ("sms", site.visiting_phone), ("email", site.visiting_email)),
                coach(on_call, ("sms", site.on_call_phone)),
            ],
            "shifts": always_on_call(on_call, f"site:{site_id}"),
        }
    )
    connection = await asyncpg.connect(matching_database)
    try:
        await import_roster(connection, roster)
        await remember_site(
            connection, site_id, SITE_NAME, "MD", "America/New_York", datetime.now(UTC)
        )
    finally:
        await connection.close()
    return site


def _due(site: Site, *, task_id: uuid.UUID | None = None, attempt: int = 1) -> FollowUpDue:
    now = datetime.now(UTC)
    return FollowUpDue(
        referral_id=uuid.uuid4(),
        task_id=task_id or uuid.uuid4(),
        site_id=site.site_id,
        window_days=30,
        attempt=attempt,
        coach_id=site.visiting,
        due_at=now,
        window_ends_at=now + timedelta(days=7),
    )


async def _assigned(bootstrap: str, due: FollowUpDue, count: int = 1) -> list[FollowUpAssigned]:
    """The FollowUpAssigned matching published for this task and attempt, once `count`."""

    async def found() -> list[FollowUpAssigned] | None:
        key = str(due.referral_id).encode()
        events = [
            decode_event(record.value).data
            for record in await read_topic(bootstrap, Topic.DISPATCH)
            if record.key == key
        ]
        mine = [
            e
            for e in events
            if isinstance(e, FollowUpAssigned)
            and e.task_id == due.task_id
            and e.attempt == due.attempt
        ]
        return mine if len(mine) >= count else None

    return await eventually(found, within=30, what="FollowUpAssigned")


async def _due_with_nobody_to_take_it(
    matching: asyncpg.Connection, site: Site, referral_service: KafkaBroker
) -> tuple[FollowUpDue, uuid.UUID]:
    """Both of the site's coaches made inactive, then an attempt due: the attempt and the id
    of the retry timer it will wait on."""
    await matching.execute(
        "UPDATE matching.coaches SET active = false WHERE coach_id = ANY($1::uuid[])",
        [site.visiting, site.on_call],
    )
    due = _due(site)
    await send(referral_service, due, source=REFERRAL_SOURCE)
    return due, follow_up_timer(due.task_id, due.attempt)


async def _inbox(pool: asyncpg.Pool, destination: str, count: int) -> list[asyncpg.Record]:
    async def arrived() -> list[asyncpg.Record] | None:
        messages = await sandbox.inbox(pool, to=destination)
        return messages if len(messages) >= count else None

    return await eventually(arrived, within=30, what=f"{count} message(s) in the sandbox")


def _token(body: str) -> str:
    [token] = [word.split("/f/")[1] for word in body.split() if f"{REFERRAL_URL}/f/" in word]
    return token


async def _processed(pool: asyncpg.Pool, event_id: uuid.UUID) -> bool:
    return bool(
        await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {NOTIFY}.processed_events WHERE event_id = $1)",
            event_id,
        )
    )


async def test_the_coach_who_saw_the_patient_is_reminded_with_a_link_to_the_assignment(
    services: tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool],
    referral_service: KafkaBroker,
    matching_database: str,
    own_kafka: KafkaCluster,
) -> None:
    _, _, pool = services
    site = await _site(matching_database)
    due = _due(site)
    await send(referral_service, due, source=REFERRAL_SOURCE)

    [assigned] = await _assigned(own_kafka.bootstrap_servers, due)
    assert (assigned.coach_id, assigned.assignee) == (
        site.visiting,
        FollowUpAssignee.VISITING_COACH,
    )
    assert (assigned.site_short_name, assigned.window_days) == (SITE_NAME, 30)
    [text] = await _inbox(pool, site.visiting_phone, 1)
    [email] = await _inbox(pool, site.visiting_email, 1)
    for message in (text, email):
        token = _token(message["body"])
        assert LinkSigner(SECRET, FOLLOW_UP_LINK).record_id(token) == assigned.assignment_id
    assert text["body"].startswith(f"Handoff: a 30-day follow-up call for {SITE_NAME} is due.")
    assert len(text["body"]) <= 160
    assert await sandbox.inbox(pool, to=site.on_call_phone) == []


async def test_a_coach_gone_from_the_roster_leaves_it_to_the_sites_on_call_coach(
    services: tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool],
    referral_service: KafkaBroker,
    matching_database: str,
    own_kafka: KafkaCluster,
) -> None:
    _, _, pool = services
    site = await _site(matching_database)
    connection = await asyncpg.connect(matching_database)
    try:
        await connection.execute(
            "UPDATE matching.coaches SET active = false WHERE coach_id = $1", site.visiting
        )
    finally:
        await connection.close()
    due = _due(site)
    await send(referral_service, due, source=REFERRAL_SOURCE)

    [assigned] = await _assigned(own_kafka.bootstrap_servers, due)
    assert (assigned.coach_id, assigned.assignee) == (site.on_call, FollowUpAssignee.SITE_POOL)
    [text] = await _inbox(pool, site.on_call_phone, 1)
    token = _token(text["body"])
    assert LinkSigner(SECRET, FOLLOW_UP_LINK).record_id(token) == assigned.assignment_id
    assert await sandbox.inbox(pool, to=site.visiting_phone) == []


async def test_a_redelivered_follow_up_is_assigned_and_reminded_once(
    services: tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool],
    referral_service: KafkaBroker,
    matching_database: str,
    own_kafka: KafkaCluster,
) -> None:
    _, _, pool = services
    site = await _site(matching_database)
    due = _due(site)
    first = await send(referral_service, due, source=REFERRAL_SOURCE)
    [assigned] = await _assigned(own_kafka.bootstrap_servers, due)
    await _inbox(pool, site.visiting_phone, 1)

    # The same event again, the same attempt published anew, and notify's event again.
    await send(referral_service, due, event_id=first.id, source=REFERRAL_SOURCE)
    await send(referral_service, due, source=REFERRAL_SOURCE)
    assigned_event = await _assignment_event_id(own_kafka.bootstrap_servers, assigned)
    await send(referral_service, assigned, event_id=assigned_event, source="/handoff/matching")
    # Then the next attempt of the same referral (same partitions, so heard after them).
    following = due.model_copy(update={"attempt": 2})
    await send(referral_service, following, source=REFERRAL_SOURCE)
    [next_assigned] = await _assigned(own_kafka.bootstrap_servers, following)
    next_assigned_event = await _assignment_event_id(own_kafka.bootstrap_servers, next_assigned)
    texts = await _inbox(pool, site.visiting_phone, 2)
    await eventually(
        lambda: _processed(pool, next_assigned_event), within=30, what="the next one heard"
    )

    # Matching published one FollowUpAssigned for the attempt (the copy this test sent has
    # its event id): one event id, one assignment.
    published = {
        (envelope.id, envelope.data.assignment_id)
        for record in await read_topic(own_kafka.bootstrap_servers, Topic.DISPATCH)
        if record.key == str(due.referral_id).encode()
        and isinstance((envelope := decode_event(record.value)).data, FollowUpAssigned)
        and envelope.data.attempt == due.attempt
    }
    assert published == {(assigned_event, assigned.assignment_id)}
    tokens = sorted(_token(m["body"]) for m in await sandbox.inbox(pool, to=site.visiting_phone))
    signer = LinkSigner(SECRET, FOLLOW_UP_LINK)
    assert [signer.record_id(t) for t in tokens].count(assigned.assignment_id) == 1
    assert {signer.record_id(t) for t in tokens} == {
        assigned.assignment_id,
        next_assigned.assignment_id,
    }
    assert len(texts) == 2
    queued = await pool.fetchval(
        f"SELECT count(*) FROM {NOTIFY}.reminders WHERE assignment_id = $1",
        assigned.assignment_id,
    )
    assert queued == 2  # the text and the email, once each


async def test_an_attempt_recorded_before_its_reminder_is_sent_sends_nothing(
    services: tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool],
    referral_service: KafkaBroker,
    matching_database: str,
    own_kafka: KafkaCluster,
) -> None:
    _, _, pool = services
    site = await _site(matching_database)
    due = _due(site)
    attempted = await send(
        referral_service,
        FollowUpAttempted(
            referral_id=due.referral_id,
            task_id=due.task_id,
            site_id=due.site_id,
            window_days=due.window_days,
            attempt=due.attempt,
            coach_id=site.visiting,
            result=FollowUpResult.REACHED,
            attempted_at=datetime.now(UTC),
        ),
        source=REFERRAL_SOURCE,
    )
    await eventually(
        lambda: _processed(pool, attempted.id), within=30, what="notify to hear the attempt"
    )
    await send(referral_service, due, source=REFERRAL_SOURCE)
    [assigned] = await _assigned(own_kafka.bootstrap_servers, due)
    assigned_id = await _assignment_event_id(own_kafka.bootstrap_servers, assigned)
    await eventually(
        lambda: _processed(pool, assigned_id), within=30, what="notify to hear the assignment"
    )

    assert await sandbox.inbox(pool, to=site.visiting_phone) == []
    assert await sandbox.inbox(pool, to=site.visiting_email) == []
    queued = await pool.fetchval(
        f"SELECT count(*) FROM {NOTIFY}.reminders WHERE assignment_id = $1",
        assigned.assignment_id,
    )
    assert queued == 0


async def test_with_nobody_to_make_it_the_attempt_waits_and_goes_to_whoever_comes_back(
    services: tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool],
    referral_service: KafkaBroker,
    matching_database: str,
    own_kafka: KafkaCluster,
) -> None:
    _, _, pool = services
    site = await _site(matching_database)
    matching = await asyncpg.connect(matching_database)
    try:
        due, timer_id = await _due_with_nobody_to_take_it(matching, site, referral_service)

        async def retry_set() -> datetime | None:
            due_at: datetime | None = await matching.fetchval(
                "SELECT due_at FROM matching.timers WHERE timer_id = $1", timer_id
            )
            return due_at

        retry_due = await eventually(retry_set, within=30, what="the retry timer")
        state = await matching.fetchval(
            "SELECT state FROM matching.follow_ups WHERE task_id = $1", due.task_id
        )
        assert state == "waiting"
        assert timedelta(minutes=14) < retry_due - datetime.now(UTC) <= timedelta(minutes=15)

        # The on-call coach is back; the retry's 15 minutes are cut short.
        await matching.execute(
            "UPDATE matching.coaches SET active = true WHERE coach_id = $1", site.on_call
        )
        await matching.execute(
            "UPDATE matching.timers SET due_at = now() WHERE timer_id = $1", timer_id
        )
        [assigned] = await _assigned(own_kafka.bootstrap_servers, due)
        assert (assigned.coach_id, assigned.assignee) == (
            site.on_call,
            FollowUpAssignee.SITE_POOL,
        )
        [text] = await _inbox(pool, site.on_call_phone, 1)
        assert LinkSigner(SECRET, FOLLOW_UP_LINK).record_id(_token(text["body"])) == (
            assigned.assignment_id
        )
        assert await retry_set() is None  # given: no timer left
    finally:
        await matching.close()


async def test_a_waiting_attempt_goes_at_once_to_a_coach_a_roster_import_brings_back(
    services: tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool],
    referral_service: KafkaBroker,
    matching_database: str,
    own_kafka: KafkaCluster,
) -> None:
    """A fresh tester's finding (fresh28, 5): the attempt waited for its 15-minute retry
    although the coordinator's import had just made a coach available; now every roster
    or on-call change tries the attempts nobody could take again at once."""
    site = await _site(matching_database)
    matching = await asyncpg.connect(matching_database)
    try:
        due, timer_id = await _due_with_nobody_to_take_it(matching, site, referral_service)

        async def waiting() -> bool:
            state = await matching.fetchval(
                "SELECT state FROM matching.follow_ups WHERE task_id = $1", due.task_id
            )
            retry = await matching.fetchval(
                "SELECT due_at FROM matching.timers WHERE timer_id = $1", timer_id
            )
            return state == "waiting" and retry is not None

        await eventually(waiting, within=30, what="the attempt waiting for its retry")

        # The coordinator's next roster import has the on-call coach active again.
        roster = RosterFile.model_validate(
            {
                "coaches": [
                    roster_coach(site.on_call, site.on_call_phone, "MD", 3) | {"active": True}
                ],
                "shifts": always_on_call(site.on_call, f"site:{site.site_id}"),
            }
        )
        await import_roster(matching, roster)  # as `handoff matching roster import` does
    finally:
        await matching.close()

    # Within _assigned's 30 s, where before the import's change it took 15 minutes.
    [assigned] = await _assigned(own_kafka.bootstrap_servers, due)
    assert (assigned.coach_id, assigned.assignee) == (site.on_call, FollowUpAssignee.SITE_POOL)


async def test_an_attempt_whose_coach_leaves_the_roster_is_given_again_with_a_new_link(
    services: tuple[MatchingRuntime, NotifyRuntime, asyncpg.Pool],
    referral_service: KafkaBroker,
    matching_database: str,
    own_kafka: KafkaCluster,
) -> None:
    _, _, pool = services
    site = await _site(matching_database)
    due = _due(site)
    await send(referral_service, due, source=REFERRAL_SOURCE)
    [first] = await _assigned(own_kafka.bootstrap_servers, due)
    assert first.coach_id == site.visiting
    await _inbox(pool, site.visiting_phone, 1)

    matching = await asyncpg.connect(matching_database)
    try:
        await matching.execute(
            "UPDATE matching.coaches SET active = false WHERE coach_id = $1", site.visiting
        )
    finally:
        await matching.close()

    first_again, second = await _assigned(own_kafka.bootstrap_servers, due, count=2)
    assert first_again == first
    assert (second.coach_id, second.assignee) == (site.on_call, FollowUpAssignee.SITE_POOL)
    assert second.assignment_id != first.assignment_id
    [text] = await _inbox(pool, site.on_call_phone, 1)
    token = _token(text["body"])
    assert LinkSigner(SECRET, FOLLOW_UP_LINK).record_id(token) == second.assignment_id
    assert len(await sandbox.inbox(pool, to=site.visiting_phone)) == 1


async def _assignment_event_id(bootstrap: str, assigned: FollowUpAssigned) -> uuid.UUID:
    for record in await read_topic(bootstrap, Topic.DISPATCH):
        if record.key == str(assigned.referral_id).encode():
            envelope: Envelope[Any] = decode_event(record.value)
            if getattr(envelope.data, "assignment_id", None) == assigned.assignment_id:
                return envelope.id
    raise AssertionError("the FollowUpAssigned envelope is not on handoff.dispatch")
