"""Matching on real Kafka and PostgreSQL: offers, the ladder, timers, duplicates, cancel.

A broker of its own, so the referrals other tests publish are not dispatched here.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker

from handoff_devenv import KafkaCluster
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import import_roster, remember_site
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.domain.dispatch import DispatchMode, DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_platform.kafka import ensure_topics, make_broker
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    CoachAssigned,
    CoachAvailabilityChanged,
    CoachResponded,
    OfferMade,
    OfferWithdrawn,
    PageSent,
    ReferralCancelled,
    ReferralEscalated,
    ReferralUnassigned,
)
from handoff_schemas.vocabulary import (
    CancelReason,
    Channel,
    CoachResponse,
    ResponseVia,
    Tier,
)
from tests.support.kafka import read_topic, send
from tests.support.matching import (
    ENGLISH_SPEAKER,
    SPANISH_SPEAKER,
    STATE_COACH,
    SUPERVISOR,
    always_on_call,
    demo_roster,
    referral_created,
    roster_coach,
)
from tests.support.waiting import eventually

ADMIN_TOKEN = "coordinator-secret"


@pytest.fixture(scope="module")
async def matching(
    matching_database: str, own_kafka: KafkaCluster
) -> AsyncIterator[MatchingRuntime]:
    await ensure_topics(own_kafka.bootstrap_servers)
    runtime = await MatchingRuntime.start(
        MatchingSettings(
            database_url=matching_database,
            kafka_bootstrap_servers=own_kafka.bootstrap_servers,
            matching_admin_token=ADMIN_TOKEN,
            coverage_interval_seconds=0.5,
        )
    )
    await eventually(lambda: _connected(runtime), within=60, what="matching on Kafka")
    yield runtime
    await runtime.stop()


async def _connected(runtime: MatchingRuntime) -> bool:
    return runtime.kafka_connected.is_set()


@pytest.fixture(scope="module")
async def hospital_and_notify(own_kafka: KafkaCluster) -> AsyncIterator[KafkaBroker]:
    """Stands in for the referral and notify services, which publish these events."""
    broker = make_broker(own_kafka.bootstrap_servers, client_id="stand-in")
    async with broker:
        yield broker


async def _site(
    database: str, settings: DispatchSettings, supervisors: tuple[uuid.UUID, ...] = (SUPERVISOR,)
) -> str:
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(database)
    try:
        await import_roster(connection, demo_roster(site_id))
        await dispatch_store.put_site_settings(connection, site_id, settings, False, supervisors)
    finally:
        await connection.close()
    return site_id


class Dispatched:
    """What matching has put on handoff.dispatch for one referral, read from the broker."""

    def __init__(self, bootstrap: str, referral_id: uuid.UUID) -> None:
        self.bootstrap = bootstrap
        self.key = str(referral_id).encode()

    async def events(self) -> list[Any]:
        records = await read_topic(self.bootstrap, Topic.DISPATCH)
        return [decode_event(r.value).data for r in records if r.key == self.key]

    async def until(self, count: int, what: str) -> list[Any]:
        async def enough() -> list[Any] | None:
            events = await self.events()
            return events if len(events) >= count else None

        return await eventually(enough, within=30, what=what)


def _kinds(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


async def _paged(broker: KafkaBroker, offer: OfferMade) -> None:
    await send(
        broker,
        PageSent(
            referral_id=offer.referral_id,
            page_id=uuid.uuid4(),
            offer_id=offer.offer_id,
            coach_id=offer.coach_id,
            channel=Channel.SMS,
            sent_at=datetime.now(UTC),
        ),
    )


async def _answer(broker: KafkaBroker, offer: OfferMade, response: CoachResponse) -> None:
    await send(
        broker,
        CoachResponded(
            referral_id=offer.referral_id,
            offer_id=offer.offer_id,
            coach_id=offer.coach_id,
            response=response,
            via=ResponseVia.LINK,
            responded_at=datetime.now(UTC),
        ),
    )


async def test_the_ladder_from_the_best_site_coach_to_unassigned(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    site_id = await _site(matching_database, DispatchSettings(ack_timeout=timedelta(seconds=1)))
    created = await send(hospital_and_notify, referral_created(site_id))
    await send(hospital_and_notify, created.data, event_id=created.id)  # a duplicate
    dispatched = Dispatched(own_kafka.bootstrap_servers, created.data.referral_id)

    [first] = await dispatched.until(1, "the first offer")
    assert isinstance(first, OfferMade)
    assert first.coach_id == SPANISH_SPEAKER  # the patient needs Spanish; no interpreter here
    assert first.tier is Tier.SITE
    await _answer(hospital_and_notify, first, CoachResponse.DECLINED)

    # The English speaker is not eligible (no interpreter): the state pool is next. Its
    # page goes out, then the ack timeout (1 s from the page) expires that offer, and the
    # supervisor is paged.
    pool_offer = (await dispatched.until(3, "the state pool's offer"))[2]
    assert isinstance(pool_offer, OfferMade)
    await _paged(hospital_and_notify, pool_offer)
    events = await dispatched.until(6, "escalation to the supervisor")
    assert _kinds(events) == [
        "OfferMade",
        "ReferralEscalated",
        "OfferMade",
        "OfferWithdrawn",
        "ReferralEscalated",
        "OfferMade",
    ]
    assert isinstance(events[2], OfferMade)
    assert events[2].coach_id == STATE_COACH
    assert isinstance(events[3], OfferWithdrawn)
    assert events[3].reason == "expired"
    supervisor_offer = events[5]
    assert isinstance(supervisor_offer, OfferMade)
    assert (supervisor_offer.coach_id, supervisor_offer.tier) == (SUPERVISOR, Tier.SUPERVISOR)

    await _answer(hospital_and_notify, supervisor_offer, CoachResponse.DECLINED)
    events = await dispatched.until(7, "unassigned")
    assert isinstance(events[6], ReferralUnassigned)
    assert events[6].reason == "ladder_exhausted"
    assert [e.coach_id for e in events if isinstance(e, OfferMade)].count(SPANISH_SPEAKER) == 1
    document = await matching.pipeline.pool.fetchval(
        "SELECT document FROM matching.dispatches WHERE referral_id = $1", created.data.referral_id
    )
    first_why = json.loads(document)["offers"][0]["why"]
    assert first_why.startswith("#1 score ")
    assert "same_site +100" in first_why
    assert "language +40" in first_why

    transport = httpx.ASGITransport(app=matching.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://matching") as client:

        async def ready() -> bool:  # probed until a deadline, as an orchestrator does
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, within=30, what="/readyz 200", interval=0.5)
        metrics = (await client.get("/metrics")).text
    assert f'handoff_escalations_total{{site="{site_id}",tier="supervisor"}} 1.0' in metrics
    assert f'handoff_offers_total{{outcome="expired",site="{site_id}"}} 1.0' in metrics
    assert (
        f'handoff_referrals_unassigned_total{{reason="ladder_exhausted",site="{site_id}"}} 1.0'
    ) in metrics
    assert 'handoff_timers_fired_total{kind="offer_expiry"}' in metrics


async def test_broadcast_with_simultaneous_acceptances_assigns_once(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    site_id = await _site(matching_database, DispatchSettings(mode=DispatchMode.BROADCAST))
    created = await send(
        hospital_and_notify, referral_created(site_id, language="en", interpreter_needed=False)
    )
    dispatched = Dispatched(own_kafka.bootstrap_servers, created.data.referral_id)
    offers = await dispatched.until(2, "a broadcast of two offers")
    assert {o.coach_id for o in offers} == {SPANISH_SPEAKER, ENGLISH_SPEAKER}
    await asyncio.gather(*(_answer(hospital_and_notify, o, CoachResponse.ACCEPTED) for o in offers))
    events = await dispatched.until(4, "one assignment and one withdrawal")
    assigned = [e for e in events if isinstance(e, CoachAssigned)]
    assert len(assigned) == 1
    [filled] = [e for e in events if isinstance(e, OfferWithdrawn)]
    assert filled.reason == "filled"
    assert filled.coach_id != assigned[0].coach_id


async def test_a_cancelled_referral_withdraws_its_open_offers(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    site_id = await _site(matching_database, DispatchSettings(mode=DispatchMode.BROADCAST))
    created = await send(
        hospital_and_notify, referral_created(site_id, language="en", interpreter_needed=False)
    )
    dispatched = Dispatched(own_kafka.bootstrap_servers, created.data.referral_id)
    await dispatched.until(2, "two offers")
    await send(
        hospital_and_notify,
        ReferralCancelled(
            referral_id=created.data.referral_id,
            reason=CancelReason.PATIENT_LEFT,
            cancelled_at=datetime.now(UTC),
        ),
    )
    events = await dispatched.until(4, "both offers withdrawn")
    withdrawn = [e for e in events if isinstance(e, OfferWithdrawn)]
    assert {w.reason for w in withdrawn} == {"cancelled"}
    assert len(withdrawn) == 2
    assert not any(isinstance(e, ReferralEscalated) for e in events)


async def test_two_replicas_make_one_first_offer_perreferral_created(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    second = await MatchingRuntime.start(
        MatchingSettings(
            database_url=matching_database, kafka_bootstrap_servers=own_kafka.bootstrap_servers
        )
    )
    try:
        await eventually(lambda: _connected(second), within=60, what="the second replica")
        site_id = await _site(matching_database, DispatchSettings())
        # Eight: the module's coaches take ten each, and later tests need the state coach.
        referrals = [await send(hospital_and_notify, referral_created(site_id)) for _ in range(8)]
        wanted = {str(r.data.referral_id).encode() for r in referrals}

        async def first_offers() -> dict[bytes, int] | None:
            counts = dict.fromkeys(wanted, 0)
            for record in await read_topic(own_kafka.bootstrap_servers, Topic.DISPATCH):
                if record.key in counts and isinstance(decode_event(record.value).data, OfferMade):
                    counts[record.key] += 1
            return counts if all(counts.values()) else None

        counts = await eventually(first_offers, within=60, what="an offer for every referral")
        assert set(counts.values()) == {1}
    finally:
        await second.stop()


async def test_coordinators_set_dispatch_settings_and_overrides_through_the_admin_api(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    site_id = await _site(matching_database, DispatchSettings())
    connection = await asyncpg.connect(matching_database)
    try:  # registered, as the referral service does: settings of unknown sites are refused
        await remember_site(
            connection, site_id, "Mercy ED", "MD", "America/New_York", datetime.now(UTC)
        )
    finally:
        await connection.close()
    transport = httpx.ASGITransport(app=matching.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://matching") as anonymous:
        assert (await anonymous.get(f"/v1/admin/sites/{site_id}/dispatch")).status_code == 401
        wrong = await anonymous.get(
            f"/v1/admin/sites/{site_id}/dispatch", headers={"Authorization": "Bearer guess"}
        )
        assert wrong.status_code == 401
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://matching",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as admin:
        settings = {
            "mode": "broadcast",
            "ack_timeout_seconds": 120,
            "arrival_target_minutes": 45,
            "broadcast_size": 2,
            "interpreter_available": False,
            "supervisors": [str(SUPERVISOR)],
            "page_deadline_seconds": 90,
            "reoffer_every_seconds": 600,
            "give_up_after_minutes": 120,
        }
        assert (
            await admin.put(f"/v1/admin/sites/{site_id}/dispatch", json=settings)
        ).status_code == 200
        assert (await admin.get(f"/v1/admin/sites/{site_id}/dispatch")).json() == settings
        too_short = await admin.put(
            f"/v1/admin/sites/{site_id}/dispatch", json={**settings, "ack_timeout_seconds": 5}
        )
        assert too_short.status_code == 422
        assert too_short.json()["error"]["fields"][0]["field"] == "ack_timeout_seconds"
        for field, bad in (
            ("page_deadline_seconds", 0),
            ("reoffer_every_seconds", -5),
            ("give_up_after_minutes", "soon"),
        ):
            refused = await admin.put(
                f"/v1/admin/sites/{site_id}/dispatch", json={**settings, field: bad}
            )
            assert refused.status_code == 422
            assert [f["field"] for f in refused.json()["error"]["fields"]] == [field]

        now = datetime.now(UTC)
        override_id = str(uuid.uuid4())
        sick = {
            "override_id": override_id,
            "kind": "remove",
            "pool": f"site:{site_id}",
            "coach_id": str(SPANISH_SPEAKER),
            "starts_at": (now - timedelta(minutes=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(),
        }
        assert (await admin.post("/v1/admin/overrides", json=sick)).status_code == 201
        unknown = await admin.post(
            "/v1/admin/overrides",
            json={**sick, "override_id": str(uuid.uuid4()), "coach_id": str(uuid.uuid4())},
        )
        assert unknown.status_code == 422

        created = await send(hospital_and_notify, referral_created(site_id))
        dispatched = Dispatched(own_kafka.bootstrap_servers, created.data.referral_id)
        events = await dispatched.until(2, "the escalation past the absent coach")
        assert isinstance(events[0], ReferralEscalated)
        assert isinstance(events[1], OfferMade)
        assert events[1].coach_id == STATE_COACH

        unknown_site = await admin.get("/v1/admin/sites/md-never-seen/coverage")
        assert unknown_site.status_code == 404
        on_call_now = (await admin.get(f"/v1/admin/sites/{site_id}/on-call")).json()
        assert on_call_now["site"] == [str(ENGLISH_SPEAKER)]  # the Spanish speaker is away
        assert on_call_now["state_pool"] == [str(STATE_COACH)]
        later = (now + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        on_call_later = (
            await admin.get(f"/v1/admin/sites/{site_id}/on-call", params={"at": later})
        ).json()
        assert sorted(on_call_later["site"]) == sorted([str(ENGLISH_SPEAKER), str(SPANISH_SPEAKER)])
        covered = (await admin.get(f"/v1/admin/sites/{site_id}/coverage?days=1")).json()
        assert covered["gaps"] == []  # the English speaker and the state pool remain
        for coach, pool in ((ENGLISH_SPEAKER, f"site:{site_id}"), (STATE_COACH, "state:MD")):
            away = {**sick, "override_id": str(uuid.uuid4()), "coach_id": str(coach), "pool": pool}
            assert (await admin.post("/v1/admin/overrides", json=away)).status_code == 201
        [gap] = (await admin.get(f"/v1/admin/sites/{site_id}/coverage?days=1")).json()["gaps"]
        assert gap["end"] == sick["ends_at"].replace("+00:00", "Z")
        assert 58 <= gap["minutes"] <= 60

        async def uncovered_now_reported() -> bool:
            metrics = (await admin.get("/metrics")).text
            return f'handoff_coverage_uncovered_now{{site="{site_id}"}} 1.0' in metrics

        await eventually(uncovered_now_reported, within=10, what="the gap in /metrics")

        assert (await admin.delete(f"/v1/admin/overrides/{override_id}")).status_code == 204
        assert (await admin.delete(f"/v1/admin/overrides/{override_id}")).status_code == 404


async def test_an_inactive_or_lapsed_supervisor_is_neither_paged_nor_told(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    """fresh34c, fresh34e: a supervisor made inactive, or whose certification in the state
    had lapsed, was paged as the last rung; the inactive one was texted the notices too."""
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    coach, gone, lapsed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    phones = {c: f"+1410556{uuid.uuid4().int % 10_000:04d}" for c in (gone, lapsed)}
    lapsed_entry = roster_coach(lapsed, phones[lapsed], "MD", 3)
    lapsed_entry["certifications"][0]["expires_on"] = "2020-06-30"
    roster = RosterFile.model_validate(
        {
            "coaches": [
                roster_coach(coach, "+14105550178", "MD", 3),
                roster_coach(gone, phones[gone], "MD", 3) | {"active": False},
                lapsed_entry,  # still the site's supervisor: told, not paged
            ],
            "shifts": always_on_call(coach, f"site:{site_id}"),
        }
    )
    connection = await asyncpg.connect(matching_database)
    try:
        await import_roster(connection, roster)
        await dispatch_store.put_site_settings(
            connection, site_id, DispatchSettings(), False, (gone, lapsed)
        )
    finally:
        await connection.close()

    told = await _declined_to_the_supervisors(hospital_and_notify, own_kafka, site_id, coach)
    assert told == [phones[lapsed]]


async def test_a_supervisor_who_texted_off_is_not_paged_and_not_waited_for(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    """fresh33: a supervisor texted OFF ("no requests meanwhile") and was paged within a
    second all the same; a referral with nobody else on call waited for her slots. The
    site's escalation list leaves out a supervisor whose own OFF is in force."""
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    coach, boss = uuid.uuid4(), uuid.uuid4()
    boss_phone = f"+1410555{uuid.uuid4().int % 10_000:04d}"
    roster = RosterFile.model_validate(
        {
            "coaches": [
                roster_coach(coach, "+14105550177", "MD", 3),
                roster_coach(boss, boss_phone, "MD", 3),
            ],
            "shifts": always_on_call(coach, f"site:{site_id}"),
        }
    )
    connection = await asyncpg.connect(matching_database)
    try:
        await import_roster(connection, roster)
        await dispatch_store.put_site_settings(
            connection, site_id, DispatchSettings(), False, (boss,)
        )
        off = CoachAvailabilityChanged(
            phone=boss_phone, available=False, changed_at=datetime.now(UTC)
        )
        await send(hospital_and_notify, off)

        async def stored() -> bool:
            found: bool = await connection.fetchval(
                """SELECT EXISTS (SELECT 1 FROM matching.overrides
                   WHERE coach_id = $1 AND source = 'sms')""",
                boss,
            )
            return found

        await eventually(stored, within=20, what="the supervisor's OFF")
    finally:
        await connection.close()

    told = await _declined_to_the_supervisors(hospital_and_notify, own_kafka, site_id, coach)
    # Every supervisor of the site is off: she is told all the same, or nobody would be.
    assert told == [boss_phone]


async def _declined_to_the_supervisors(
    broker: KafkaBroker, kafka: KafkaCluster, site_id: str, coach: uuid.UUID
) -> list[str]:
    """A referral at `site_id`, offered to `coach` (its only one on call), declined: it
    goes unassigned with no supervisor paged; whom the supervisors' notice goes to."""
    created = await send(broker, referral_created(site_id, "en", False))
    dispatched = Dispatched(kafka.bootstrap_servers, created.data.referral_id)
    [first] = await dispatched.until(1, "the site coach's offer")
    assert isinstance(first, OfferMade)
    assert first.coach_id == coach
    await _answer(broker, first, CoachResponse.DECLINED)
    events = await dispatched.until(2, "the referral to go unassigned")
    assert _kinds(events) == ["OfferMade", "ReferralUnassigned"], "a supervisor was paged"
    return [c.destination for c in events[1].supervisor_contacts]
