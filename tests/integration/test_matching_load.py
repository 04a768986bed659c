"""Load-aware dispatch on real Kafka and PostgreSQL: bursts spread over every coach with
room, the waiting line, capacity at acceptance, the page deadline, unassigned offered
again, and giving up.

Matching runs in-process on a broker of its own, with its line sweep set to a minute: a
referral offered within seconds of capacity freeing was woken by the commit, not found by
the sweep. Each test has a state of its own, so its state pool is its own.
"""

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker

from handoff_devenv import KafkaCluster
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import import_roster
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.domain.dispatch import DispatchMode, DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_platform.kafka import ensure_topics, make_broker
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferMade,
    OfferWithdrawn,
    PageSent,
    ReferralCancelled,
    ReferralCreated,
    ReferralExpired,
    ReferralUnassigned,
    ReferralWaiting,
)
from handoff_schemas.vocabulary import (
    CancelReason,
    Channel,
    CoachResponse,
    ResponseVia,
    UnassignedReason,
    Urgency,
    WithdrawReason,
)
from tests.support.kafka import send
from tests.support.matching import EVERY_DAY, always_on_call, dispatched, referral_created
from tests.support.waiting import eventually

ADMIN_TOKEN = "coordinator-secret"
# One state per test: a state pool shared with another test would put its coaches on call.
STATES = iter(
    [
        "DE",
        "PA",
        "VA",
        "NJ",
        "NY",
        "OH",
        "WV",
        "NC",
        "SC",
        "GA",
        "FL",
        "AL",
        "TN",
        "KY",
        "IN",
        "MS",
        "LA",
        "TX",
        "AZ",
        "CO",
        "UT",
        "NV",
        "OR",
        "WA",
        "ID",
    ]
)


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
            line_sweep_seconds=60.0,
        )
    )
    await eventually(_connected(runtime), within=60, what="matching on Kafka")
    yield runtime
    await runtime.stop()


def _connected(runtime: MatchingRuntime) -> Any:
    async def probe() -> bool:
        return runtime.kafka_connected.is_set()

    return probe


@pytest.fixture(scope="module")
async def hospital_and_notify(own_kafka: KafkaCluster) -> AsyncIterator[KafkaBroker]:
    """Stands in for the referral and notify services, which publish these events."""
    broker = make_broker(own_kafka.bootstrap_servers, client_id="stand-in")
    async with broker:
        yield broker


class Line(NamedTuple):
    """What every test here works with, matching running: its database, the broker's bootstrap
    list, and a producer standing in for the referral and notify services."""

    database: str
    bootstrap: str
    hospital_and_notify: KafkaBroker


@pytest.fixture
def line(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> Line:
    return Line(matching_database, own_kafka.bootstrap_servers, hospital_and_notify)


@dataclass
class World:
    """One site in a state of its own: its coaches on call, its pool, its supervisor."""

    database: str
    site_id: str
    state: str
    site_coaches: list[uuid.UUID]
    pool_coaches: list[uuid.UUID]
    supervisor: uuid.UUID

    def roster(
        self,
        max_concurrent: int = 2,
        on_call: bool = True,
        extra_shifts: list[dict[str, Any]] | None = None,
    ) -> RosterFile:
        def coach(coach_id: uuid.UUID, n: int) -> dict[str, Any]:
            return {
                "coach_id": str(coach_id),
                "display_name": "Coach",
                "contact_methods": [{"channel": "sms", "destination": f"+1410555{n:04d}"}],
                "languages": ["en"],
                "max_concurrent": max_concurrent,
                "certifications": [
                    {"state": self.state, "credential": "CPRS", "expires_on": "2030-01-01"}
                ],
            }

        everyone = [*self.site_coaches, *self.pool_coaches, self.supervisor]
        shifts = [
            *(s for c in self.site_coaches for s in always_on_call(c, f"site:{self.site_id}")),
            *(s for c in self.pool_coaches for s in always_on_call(c, f"state:{self.state}")),
        ]
        return RosterFile.model_validate(
            {
                "coaches": [coach(c, n) for n, c in enumerate(everyone)],
                "shifts": [*(shifts if on_call else []), *(extra_shifts or [])],
            }
        )

    async def import_roster(self, roster: RosterFile) -> None:
        connection = await asyncpg.connect(self.database)
        try:
            await import_roster(connection, roster)
        finally:
            await connection.close()

    def referral(self, urgency: Urgency = Urgency.URGENT) -> ReferralCreated:
        return referral_created(
            self.site_id, "en", False, state=self.state, urgency=urgency, substances=frozenset()
        )


async def _world(
    database: str,
    settings: DispatchSettings,
    site: int = 1,
    pool: int = 2,
    supervised: bool = False,
    max_concurrent: int = 2,
    on_call: bool = True,
) -> World:
    world = World(
        database,
        f"s-{uuid.uuid4().hex[:8]}",
        next(STATES),
        [uuid.uuid4() for _ in range(site)],
        [uuid.uuid4() for _ in range(pool)],
        uuid.uuid4(),
    )
    await world.import_roster(world.roster(max_concurrent, on_call))
    connection = await asyncpg.connect(database)
    try:
        supervisors = (world.supervisor,) if supervised else ()
        await dispatch_store.put_site_settings(
            connection, world.site_id, settings, True, supervisors
        )
    finally:
        await connection.close()
    return world


async def _until(
    bootstrap: str, referral_ids: list[uuid.UUID], done: Any, what: str, within: float = 30
) -> dict[uuid.UUID, list[Any]]:
    async def probe() -> dict[uuid.UUID, list[Any]] | None:
        events = await dispatched(bootstrap, referral_ids)
        return events if done(events) else None

    return await eventually(probe, within=within, what=what)


def _of(kind: type, events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def _sent(broker: KafkaBroker, world: World) -> uuid.UUID:
    """A new referral of `world` published, as the hospital does; its id."""
    referral = world.referral()
    await send(broker, referral)
    return referral.referral_id


async def _once(
    bootstrap: str, referral_id: uuid.UUID, kind: type, count: int, what: str, within: float = 30
) -> list[Any]:
    """The referral's dispatch events, once `count` of them are a `kind` (e.g. 2 OfferMade)."""
    events = await _until(
        bootstrap, [referral_id], lambda ev: len(_of(kind, ev[referral_id])) == count, what, within
    )
    return events[referral_id]


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


async def _paged(broker: KafkaBroker, offer: OfferMade) -> datetime:
    """Say, as notify does, that the offer's first page reached a provider; returns when."""
    sent_at = datetime.now(UTC)
    await send(
        broker,
        PageSent(
            referral_id=offer.referral_id,
            page_id=uuid.uuid4(),
            offer_id=offer.offer_id,
            coach_id=offer.coach_id,
            channel=Channel.SMS,
            sent_at=sent_at,
        ),
    )
    return sent_at


def _open_offers_by_coach(
    events: dict[uuid.UUID, list[Any]], declined: frozenset[uuid.UUID] = frozenset()
) -> Counter[uuid.UUID]:
    """Per coach: offers neither withdrawn nor `declined` (accepted ones included: held)."""
    held: Counter[uuid.UUID] = Counter()
    for story in events.values():
        closed = {w.offer_id for w in _of(OfferWithdrawn, story)} | declined
        held.update(o.coach_id for o in _of(OfferMade, story) if o.offer_id not in closed)
    return held


async def test_a_burst_of_six_spreads_over_three_coaches_and_the_seventh_waits_in_line(
    line: Line, matching: MatchingRuntime
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(ack_timeout=timedelta(minutes=5)))
    [mercy] = world.site_coaches
    burst = [world.referral() for _ in range(6)]
    await asyncio.gather(*(send(hospital_and_notify, r) for r in burst))  # within one second
    ids = [r.referral_id for r in burst]

    events = await _until(
        bootstrap, ids, lambda ev: all(_of(OfferMade, s) for s in ev.values()), "six offers"
    )
    held = _open_offers_by_coach(events)
    assert held == {mercy: 2, world.pool_coaches[0]: 2, world.pool_coaches[1]: 2}
    assert all(len(_of(OfferMade, story)) == 1 for story in events.values())

    # Her four "1" replies (each of her two offers answered twice, all at once).
    hers = [o for s in events.values() for o in _of(OfferMade, s) if o.coach_id == mercy]
    await asyncio.gather(
        *(_answer(hospital_and_notify, o, CoachResponse.ACCEPTED) for o in hers * 2)
    )
    events = await _until(
        bootstrap,
        ids,
        lambda ev: sum(len(_of(CoachAssigned, s)) for s in ev.values()) == 2,
        "her two acceptances",
    )
    assigned = [a for s in events.values() for a in _of(CoachAssigned, s)]
    assert {a.coach_id for a in assigned} == {mercy}
    assert {a.offer_id for a in assigned} == {o.offer_id for o in hers}

    seventh = world.referral()
    await send(hospital_and_notify, seventh)
    events = await _until(
        bootstrap,
        [*ids, seventh.referral_id],
        lambda ev: _of(ReferralWaiting, ev[seventh.referral_id]),
        "the seventh referral in line",
    )
    assert _of(OfferMade, events[seventh.referral_id]) == []

    # A pool coach declines one of hers: her slot goes to the referral in line at once.
    pool_coach = world.pool_coaches[0]
    declined = next(
        o for s in events.values() for o in _of(OfferMade, s) if o.coach_id == pool_coach
    )
    await _answer(hospital_and_notify, declined, CoachResponse.DECLINED)
    events = await _until(
        bootstrap,
        [*ids, seventh.referral_id],
        lambda ev: _of(OfferMade, ev[seventh.referral_id]),
        "the waiting referral offered the freed slot",
        within=20,  # the sweep runs once a minute: this is the commit's wake-up
    )
    [offer] = _of(OfferMade, events[seventh.referral_id])
    assert offer.coach_id == pool_coach
    # The declined referral: everyone else on call is full, so it waits in line in turn.
    assert _of(ReferralWaiting, events[declined.referral_id])
    # Every coach still holds exactly two (her two assignments are offers accepted).
    held = _open_offers_by_coach(events, frozenset({declined.offer_id}))
    assert held == {mercy: 2, world.pool_coaches[0]: 2, world.pool_coaches[1]: 2}

    transport = httpx.ASGITransport(app=matching.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://matching") as client:

        async def waiting_reported() -> bool:
            text = (await client.get("/metrics")).text
            return (
                f'handoff_referrals_in_line{{site="{world.site_id}",state="waiting"}} 1.0' in text
            )

        await eventually(waiting_reported, within=15, what="the waiting referral in /metrics")
        text = (await client.get("/metrics")).text
    assert f'handoff_referrals_waited_total{{site="{world.site_id}"}} 2.0' in text
    assert "handoff_coach_slots_held " in text


async def test_the_line_serves_the_most_urgent_referral_first(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), pool=0, max_concurrent=1)
    first, routine, emergent = (
        world.referral(),
        world.referral(Urgency.ROUTINE),
        world.referral(Urgency.EMERGENT),
    )
    ids = [first.referral_id, routine.referral_id, emergent.referral_id]
    await send(hospital_and_notify, first)
    events = await _until(bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[0]]), "the first offer")
    await send(hospital_and_notify, routine)
    await _until(bootstrap, ids, lambda ev: _of(ReferralWaiting, ev[ids[1]]), "routine in line")
    await send(hospital_and_notify, emergent)
    await _until(bootstrap, ids, lambda ev: _of(ReferralWaiting, ev[ids[2]]), "emergent in line")

    await _answer(hospital_and_notify, _of(OfferMade, events[ids[0]])[0], CoachResponse.DECLINED)
    events = await _until(
        bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[2]]), "the emergent referral offered", 5
    )
    assert _of(OfferMade, events[ids[1]]) == []  # arrived first, but routine: still in line


async def test_a_coach_whose_capacity_was_lowered_accepting_two_at_once_is_assigned_once(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), pool=0, max_concurrent=2)
    referrals = [world.referral(), world.referral()]
    ids = [r.referral_id for r in referrals]
    for referral in referrals:
        await send(hospital_and_notify, referral)
    events = await _until(
        bootstrap, ids, lambda ev: all(_of(OfferMade, s) for s in ev.values()), "two offers"
    )
    await world.import_roster(world.roster(max_concurrent=1))  # the coordinator lowers it
    offers = [_of(OfferMade, events[r])[0] for r in ids]
    await asyncio.gather(*(_answer(hospital_and_notify, o, CoachResponse.ACCEPTED) for o in offers))

    def settled(ev: dict[uuid.UUID, list[Any]]) -> bool:
        return all(_of(CoachAssigned, s) or _of(OfferWithdrawn, s) for s in ev.values())

    events = await _until(bootstrap, ids, settled, "both acceptances decided")
    assigned = [a for r in ids for a in _of(CoachAssigned, events[r])]
    refused = [w for r in ids for w in _of(OfferWithdrawn, events[r])]
    assert len(assigned) == 1
    assert [(w.coach_id, w.reason) for w in refused] == [
        (world.site_coaches[0], WithdrawReason.AT_CAPACITY)
    ]
    # The refused referral moved on at once: nobody else is on call, and her yes at capacity
    # does not use her up (#12 F8), so it waits in line for her slot.
    events = await _until(
        bootstrap,
        [refused[0].referral_id],
        lambda ev: _of(ReferralWaiting, ev[refused[0].referral_id]),
        "the refused referral moved on",
    )
    assert _of(ReferralUnassigned, events[refused[0].referral_id]) == []


async def test_an_unassigned_referral_is_offered_when_an_override_adds_a_coach(
    line: Line, matching: MatchingRuntime
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), supervised=True, on_call=False)
    referral = world.referral()
    ids = [referral.referral_id]
    await send(hospital_and_notify, referral)
    events = await _until(bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[0]]), "the supervisor")
    [to_supervisor] = _of(OfferMade, events[ids[0]])
    assert to_supervisor.coach_id == world.supervisor
    await _answer(hospital_and_notify, to_supervisor, CoachResponse.DECLINED)
    events = await _until(
        bootstrap, ids, lambda ev: _of(ReferralUnassigned, ev[ids[0]]), "unassigned"
    )
    [unassigned] = _of(ReferralUnassigned, events[ids[0]])
    assert (unassigned.site_id, unassigned.site_short_name) == (world.site_id, "Test ED")
    [contact] = unassigned.supervisor_contacts
    assert (contact.channel, contact.destination) == (Channel.SMS, "+14105550003")

    now = datetime.now(UTC)
    cover = {
        "override_id": str(uuid.uuid4()),
        "kind": "add",
        "pool": f"site:{world.site_id}",
        "coach_id": str(world.site_coaches[0]),
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
    }
    transport = httpx.ASGITransport(app=matching.app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://matching",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as admin:
        assert (await admin.post("/v1/admin/overrides", json=cover)).status_code == 201
    events = await _until(
        bootstrap, ids, lambda ev: len(_of(OfferMade, ev[ids[0]])) == 2, "the re-offer", 5
    )
    assert _of(OfferMade, events[ids[0]])[1].coach_id == world.site_coaches[0]


async def test_a_referral_nobody_takes_expires_at_the_sites_give_up_time(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(
        matching_database, DispatchSettings(give_up_after=timedelta(seconds=3)), on_call=False
    )
    referral = world.referral()
    ids = [referral.referral_id]
    await send(hospital_and_notify, referral)
    events = await _until(
        bootstrap, ids, lambda ev: _of(ReferralExpired, ev[ids[0]]), "the referral given up"
    )
    [unassigned, expired] = events[ids[0]]
    assert isinstance(unassigned, ReferralUnassigned)
    assert unassigned.reason == "nobody_on_call"
    assert isinstance(expired, ReferralExpired)
    assert expired.expired_at - unassigned.unassigned_at >= timedelta(seconds=2.9)


async def test_the_give_up_time_lets_an_open_offer_run_its_course_then_ends_the_referral(
    line: Line,
) -> None:
    """Found by a new user (#12 F4): give-up withdrew an offer 23 s into its window as
    "coach_did_not_answer", and the coach was never told."""
    matching_database, bootstrap, hospital_and_notify = line
    give_up_after = timedelta(seconds=2)
    settings = DispatchSettings(give_up_after=give_up_after, ack_timeout=timedelta(minutes=5))
    world = await _world(matching_database, settings)
    referral = world.referral()
    ids = [referral.referral_id]
    await send(hospital_and_notify, referral)
    events = await _until(bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[0]]), "the offer")
    [offer] = _of(OfferMade, events[ids[0]])
    await _paged(hospital_and_notify, offer)

    async def deferred() -> datetime | None:
        due = await _give_up_due(matching_database, referral.referral_id)
        return due if due is not None and due > datetime.now(UTC) + timedelta(minutes=1) else None

    await eventually(deferred, within=20, what="the give-up deferred past the open offer")
    assert _of(OfferWithdrawn, (await dispatched(bootstrap, ids))[ids[0]]) == []
    assert await _dispatch_state(matching_database, referral.referral_id) == "offering"

    await _answer(hospital_and_notify, offer, CoachResponse.DECLINED)
    events = await _until(
        bootstrap, ids, lambda ev: _of(ReferralExpired, ev[ids[0]]), "the referral given up"
    )
    assert [type(e) for e in events[ids[0]]] == [OfferMade, ReferralExpired]
    assert await _give_up_due(matching_database, referral.referral_id) is None


async def _give_up_due(database: str, referral_id: uuid.UUID) -> datetime | None:
    connection = await asyncpg.connect(database)
    try:
        due: datetime | None = await connection.fetchval(
            "SELECT due_at FROM matching.timers WHERE kind = 'give_up' AND timer_id = $1",
            uuid.uuid5(referral_id, "give_up"),
        )
    finally:
        await connection.close()
    return due


async def test_an_offer_not_paged_in_time_is_not_contacted_and_the_ack_clock_starts_at_the_page(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    settings = DispatchSettings(
        ack_timeout=timedelta(seconds=5), page_deadline=timedelta(seconds=2)
    )
    world = await _world(matching_database, settings, pool=1)
    referral_id = await _sent(hospital_and_notify, world)
    events = await _once(bootstrap, referral_id, OfferMade, 2, "the pool's offer")
    first, second = _of(OfferMade, events)
    [not_contacted] = _of(OfferWithdrawn, events)
    assert (not_contacted.offer_id, not_contacted.reason) == (
        first.offer_id,
        WithdrawReason.NOT_CONTACTED,
    )
    assert first.page_deadline is not None
    assert not_contacted.withdrawn_at >= first.page_deadline
    assert second.coach_id == world.pool_coaches[0]
    assert second.page_deadline is not None

    sent_at = await _paged(hospital_and_notify, second)  # within its page deadline
    events = await _once(bootstrap, referral_id, OfferWithdrawn, 2, "the second's end")
    ended = _of(OfferWithdrawn, events)[1]
    assert (ended.offer_id, ended.reason) == (second.offer_id, WithdrawReason.EXPIRED)
    # 5 s from its page, not from the offer, and well past the page deadline it met.
    assert ended.withdrawn_at >= sent_at + timedelta(seconds=5)
    assert ended.withdrawn_at >= second.page_deadline + timedelta(seconds=2)


async def test_a_broadcast_burst_counts_every_offer_and_an_acceptance_frees_the_others(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    settings = DispatchSettings(mode=DispatchMode.BROADCAST, broadcast_size=3)
    world = await _world(matching_database, settings, site=3, pool=0)
    burst = [world.referral() for _ in range(4)]
    ids = [r.referral_id for r in burst]
    await asyncio.gather(*(send(hospital_and_notify, r) for r in burst))

    def split(ev: dict[uuid.UUID, list[Any]]) -> tuple[list[uuid.UUID], list[uuid.UUID]] | None:
        """(broadcast to all three, waiting in line): two each, once matching is done."""
        out = [r for r in ids if len(_of(OfferMade, ev[r])) == 3]
        waiting = [r for r in ids if _of(ReferralWaiting, ev[r]) and not _of(OfferMade, ev[r])]
        return (out, waiting) if len(out) == len(waiting) == 2 else None

    events = await _until(bootstrap, ids, split, "two broadcasts, two in line")
    offered, waiting = split(events) or ([], [])
    assert _open_offers_by_coach(events) == dict.fromkeys(world.site_coaches, 2)

    first_coach = world.site_coaches[0]
    taken = next(o for o in _of(OfferMade, events[offered[0]]) if o.coach_id == first_coach)
    await _answer(hospital_and_notify, taken, CoachResponse.ACCEPTED)

    # The other two coaches' offers of that referral are withdrawn (filled): their slots
    # go at once to the first referral in line; the accepting coach stays full.
    def one_more_offered(ev: dict[uuid.UUID, list[Any]]) -> bool:
        return any(_of(OfferMade, ev[r]) for r in waiting)

    events = await _until(bootstrap, ids, one_more_offered, "a waiting referral offered", 5)
    [now_offered] = [r for r in waiting if _of(OfferMade, events[r])]
    assert {o.coach_id for o in _of(OfferMade, events[now_offered])} == set(world.site_coaches[1:])
    assert _open_offers_by_coach(events) == dict.fromkeys(world.site_coaches, 2)


async def _held_at_the_bedside(
    world: World, broker: KafkaBroker, bootstrap: str
) -> tuple[uuid.UUID, uuid.UUID]:
    """Her first referral accepted and Arrived (a visit-limit timer stands for the visit),
    then a second referral, which waits in line: (the first's id, the second's id)."""
    first, second = world.referral(), world.referral()
    await send(broker, first)
    ids = [first.referral_id]
    events = await _until(bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[0]]), "her offer")
    [offer] = _of(OfferMade, events[ids[0]])
    await _answer(broker, offer, CoachResponse.ACCEPTED)
    await _until(bootstrap, ids, lambda ev: _of(CoachAssigned, ev[ids[0]]), "her assignment")
    await _answer(broker, offer, CoachResponse.ARRIVED)
    await eventually(
        lambda: _visit_limit_due(world.database, first.referral_id),
        within=15,
        what="her arrival recorded (the visit-limit timer set)",
    )
    await send(broker, second)
    events = await _until(
        bootstrap,
        [second.referral_id],
        lambda ev: _of(ReferralWaiting, ev[second.referral_id]),
        "the second referral in line behind her visit",
    )
    assert _of(OfferMade, events[second.referral_id]) == []  # at the bedside: still full
    return first.referral_id, second.referral_id


async def _visit_limit_due(database: str, referral_id: uuid.UUID) -> datetime | None:
    connection = await asyncpg.connect(database)
    try:
        due: datetime | None = await connection.fetchval(
            """SELECT due_at FROM matching.timers
               WHERE kind = 'visit_limit' AND payload->>'referral_id' = $1""",
            str(referral_id),
        )
    finally:
        await connection.close()
    return due


async def _dispatch_state(database: str, referral_id: uuid.UUID) -> str | None:
    connection = await asyncpg.connect(database)
    try:
        state: str | None = await connection.fetchval(
            "SELECT state FROM matching.dispatches WHERE referral_id = $1", referral_id
        )
    finally:
        await connection.close()
    return state


async def test_a_coach_at_the_bedside_holds_the_slot_until_completed_then_the_line_moves(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), pool=0, max_concurrent=1)
    [coach] = world.site_coaches
    first, second = await _held_at_the_bedside(world, hospital_and_notify, bootstrap)
    [assigned] = _of(CoachAssigned, (await dispatched(bootstrap, [first]))[first])

    completed = CoachResponded(
        referral_id=first,
        offer_id=assigned.offer_id,
        coach_id=coach,
        response=CoachResponse.COMPLETED,
        via=ResponseVia.LINK,
        responded_at=datetime.now(UTC),
    )
    await send(hospital_and_notify, completed)
    events = await _until(
        bootstrap,
        [second],
        lambda ev: _of(OfferMade, ev[second]),
        "the waiting referral offered her freed slot",
        within=20,  # the sweep runs once a minute: this is the completion's wake-up
    )
    [offer] = _of(OfferMade, events[second])
    assert offer.coach_id == coach
    assert await _dispatch_state(matching_database, first) == "closed"
    assert await _visit_limit_due(matching_database, first) is None  # the visit clock stopped


async def test_a_visit_never_completed_releases_the_slot_at_the_visit_limit(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), pool=0, max_concurrent=1)
    first, second = await _held_at_the_bedside(world, hospital_and_notify, bootstrap)
    due = await _visit_limit_due(matching_database, first)
    assert due is not None
    assert due - datetime.now(UTC) > timedelta(hours=3, minutes=59)  # the 4 h default

    # Four hours pass without "completed": the timer's time is the database's, so its due
    # time is brought to now, and its loop told (as a timer set by another replica is).
    connection = await asyncpg.connect(matching_database)
    try:
        await connection.execute(
            """UPDATE matching.timers SET due_at = now()
               WHERE kind = 'visit_limit' AND payload->>'referral_id' = $1""",
            str(first),
        )
        await connection.execute("SELECT pg_notify('handoff_timers', 'matching')")
    finally:
        await connection.close()
    events = await _until(
        bootstrap,
        [second],
        lambda ev: _of(OfferMade, ev[second]),
        "the waiting referral offered the released slot",
        within=20,
    )
    [offer] = _of(OfferMade, events[second])
    assert offer.coach_id == world.site_coaches[0]
    assert await _dispatch_state(matching_database, first) == "closed"


async def test_a_cancelled_referral_frees_its_coach_for_the_referral_in_line_at_once(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), pool=0, max_concurrent=1)
    first, second = world.referral(), world.referral()
    ids = [first.referral_id, second.referral_id]
    await send(hospital_and_notify, first)
    events = await _until(bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[0]]), "her offer")
    [held] = _of(OfferMade, events[ids[0]])
    await send(hospital_and_notify, second)
    await _until(bootstrap, ids, lambda ev: _of(ReferralWaiting, ev[ids[1]]), "second in line")

    cancelled = ReferralCancelled(
        referral_id=first.referral_id,
        reason=CancelReason.PATIENT_LEFT,
        cancelled_at=datetime.now(UTC),
    )
    await send(hospital_and_notify, cancelled)
    events = await _until(
        bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[1]]), "the freed slot offered", 5
    )
    [withdrawn] = _of(OfferWithdrawn, events[ids[0]])
    assert (withdrawn.offer_id, withdrawn.reason) == (held.offer_id, WithdrawReason.CANCELLED)
    assert _of(OfferMade, events[ids[1]])[0].coach_id == world.site_coaches[0]


async def test_an_unassigned_referral_is_offered_when_a_weekly_shift_starts(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    # Asked again every hour only: an offer within the next two minutes is the shift's.
    settings = DispatchSettings(reoffer_every=timedelta(hours=1))
    world = await _world(matching_database, settings, pool=0, on_call=False)
    [coach] = world.site_coaches
    referral = world.referral()
    ids = [referral.referral_id]
    await send(hospital_and_notify, referral)
    events = await _until(bootstrap, ids, lambda ev: _of(ReferralUnassigned, ev[ids[0]]), "none")
    assert _of(ReferralUnassigned, events[ids[0]])[0].reason is UnassignedReason.NOBODY_ON_CALL

    # Her weekly shift, written as rotas are (whole minutes, the site's wall clock), starts
    # at the next whole minute at least 10 s away: imported before it starts.
    zone = ZoneInfo("America/New_York")
    soon = datetime.now(UTC) + timedelta(seconds=70)
    starts = soon.replace(second=0, microsecond=0)
    local = starts.astimezone(zone)
    shift = {
        "coach_id": str(coach),
        "pool": f"site:{world.site_id}",
        "weekday": EVERY_DAY[local.weekday()],
        "start": local.strftime("%H:%M"),
        "end": (local + timedelta(hours=1)).strftime("%H:%M"),
        "time_zone": "America/New_York",
    }
    await world.import_roster(world.roster(on_call=False, extra_shifts=[shift]))
    assert datetime.now(UTC) < starts

    # Found by the line's sweep (once a minute in this module; every 2 s by default).
    events = await _until(
        bootstrap,
        ids,
        lambda ev: _of(OfferMade, ev[ids[0]]),
        "the referral offered at the shift's start",
        within=(starts - datetime.now(UTC)).total_seconds() + 75,
    )
    [offer] = _of(OfferMade, events[ids[0]])
    assert offer.coach_id == coach
    assert offer.page_deadline is not None
    made_at = offer.page_deadline - settings.page_deadline
    assert made_at >= starts  # not before her shift began


async def test_a_coach_who_said_yes_at_capacity_is_offered_that_referral_when_her_slot_frees(
    line: Line,
) -> None:
    """Found by a new user (#12 F8): her yes at capacity counted as her having been asked,
    so the referral she wanted went unassigned and was never offered her freed slot."""
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), pool=0, max_concurrent=2)
    [coach] = world.site_coaches
    first, wanted = world.referral(), world.referral()
    ids = [first.referral_id, wanted.referral_id]
    for referral in (first, wanted):
        await send(hospital_and_notify, referral)
    events = await _until(
        bootstrap, ids, lambda ev: all(_of(OfferMade, s) for s in ev.values()), "two offers"
    )
    await world.import_roster(world.roster(max_concurrent=1))  # the coordinator lowers it
    held, refused = (_of(OfferMade, events[r])[0] for r in ids)
    await _answer(hospital_and_notify, held, CoachResponse.ACCEPTED)
    await _until(bootstrap, ids, lambda ev: _of(CoachAssigned, ev[ids[0]]), "her assignment")
    await _answer(hospital_and_notify, refused, CoachResponse.ACCEPTED)  # yes, at capacity
    events = await _until(
        bootstrap, ids, lambda ev: _of(ReferralWaiting, ev[ids[1]]), "the refused one in line"
    )
    [withdrawn] = _of(OfferWithdrawn, events[ids[1]])
    assert (withdrawn.offer_id, withdrawn.reason) == (refused.offer_id, WithdrawReason.AT_CAPACITY)
    assert _of(ReferralUnassigned, events[ids[1]]) == []  # she is not used up: it waits for her

    await _answer(hospital_and_notify, held, CoachResponse.COMPLETED)
    events = await _until(
        bootstrap,
        ids,
        lambda ev: len(_of(OfferMade, ev[ids[1]])) == 2,
        "the referral she said yes to offered her freed slot",
        within=20,  # reoffer_every is 5 minutes, the sweep a minute: this is the completion's
    )
    again = _of(OfferMade, events[ids[1]])[1]
    assert again.coach_id == coach
    await _answer(hospital_and_notify, again, CoachResponse.ACCEPTED)
    events = await _until(bootstrap, ids, lambda ev: _of(CoachAssigned, ev[ids[1]]), "her yes")
    assert _of(CoachAssigned, events[ids[1]])[0].offer_id == again.offer_id


async def test_a_broadcast_round_with_a_page_that_never_went_out_asks_that_coach_again_at_once(
    line: Line,
) -> None:
    """Found by a new user: in a round where one offer ended not_contacted and another with
    no answer, the coach never paged waited the site's reoffer_every (5 minutes)."""
    matching_database, bootstrap, hospital_and_notify = line
    settings = DispatchSettings(
        mode=DispatchMode.BROADCAST,
        broadcast_size=2,
        page_deadline=timedelta(seconds=2),
        ack_timeout=timedelta(seconds=3),
    )
    world = await _world(matching_database, settings, site=2, pool=0)
    referral_id = await _sent(hospital_and_notify, world)
    events = await _once(bootstrap, referral_id, OfferMade, 2, "the broadcast")
    never_paged, paged = _of(OfferMade, events)
    await _paged(hospital_and_notify, paged)  # only one phone is reached

    events = await _once(
        bootstrap, referral_id, OfferWithdrawn, 2, "both offers of the round ended"
    )
    reasons = {w.offer_id: w.reason for w in _of(OfferWithdrawn, events)}
    assert reasons == {
        never_paged.offer_id: WithdrawReason.NOT_CONTACTED,
        paged.offer_id: WithdrawReason.EXPIRED,
    }
    events = await _once(
        bootstrap,
        referral_id,
        OfferMade,
        3,
        "the coach never paged asked again",
        within=20,  # not after reoffer_every (5 minutes)
    )
    again = _of(OfferMade, events)[2]
    assert again.coach_id == never_paged.coach_id  # not the one who did not answer
    assert _of(ReferralUnassigned, events) == []


async def test_a_ladder_whose_next_coach_was_reached_asks_the_coach_never_paged_again_at_once(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    settings = DispatchSettings(
        page_deadline=timedelta(seconds=2), ack_timeout=timedelta(seconds=3)
    )
    world = await _world(matching_database, settings, site=1, pool=1)
    referral_id = await _sent(hospital_and_notify, world)
    events = await _once(bootstrap, referral_id, OfferMade, 2, "the pool's offer")
    never_paged, pool_offer = _of(OfferMade, events)
    assert never_paged.coach_id == world.site_coaches[0]
    await _paged(hospital_and_notify, pool_offer)
    events = await _once(
        bootstrap,
        referral_id,
        OfferMade,
        3,
        "the site coach asked again when the pool coach did not answer",
        within=15,
    )
    withdrawn = _of(OfferWithdrawn, events)
    assert [(w.offer_id, w.reason) for w in withdrawn] == [
        (never_paged.offer_id, WithdrawReason.NOT_CONTACTED),
        (pool_offer.offer_id, WithdrawReason.EXPIRED),
    ]
    again = _of(OfferMade, events)[2]
    assert again.coach_id == world.site_coaches[0]
    assert _of(ReferralUnassigned, events) == []


async def _fill_then_wait(world: World, line: Line) -> tuple[list[OfferMade], ReferralCreated]:
    """Every coach of the world (capacity 1) holds one offer, then A waits in line:
    (the filling offers, A)."""
    _, bootstrap, broker = line
    fillers = [world.referral() for _ in [*world.site_coaches, *world.pool_coaches]]
    for filler in fillers:
        await send(broker, filler)
    ids = [f.referral_id for f in fillers]
    events = await _until(
        bootstrap, ids, lambda ev: all(_of(OfferMade, s) for s in ev.values()), "coaches full"
    )
    waiting = world.referral()
    await send(broker, waiting)
    await _until(
        bootstrap,
        [waiting.referral_id],
        lambda ev: _of(ReferralWaiting, ev[waiting.referral_id]),
        "A in line",
    )
    return [_of(OfferMade, events[r])[0] for r in ids], waiting


async def test_an_arrival_while_a_slot_frees_queues_behind_the_referral_already_in_line(
    line: Line,
) -> None:
    """Found by a new user: a referral arriving as a slot freed took it ahead of the one
    that had waited for it."""
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), site=1, pool=1, max_concurrent=1)
    _, a = await _fill_then_wait(world, line)
    # A slot frees that the line has not heard of yet (the moment before its wake-up): the
    # site coach's capacity raised in the database, then B arrives.
    connection = await asyncpg.connect(matching_database)
    try:
        await connection.execute(
            "UPDATE matching.coaches SET max_concurrent = 2 WHERE coach_id = $1",
            world.site_coaches[0],
        )
    finally:
        await connection.close()
    b = world.referral()
    await send(hospital_and_notify, b)
    ids = [a.referral_id, b.referral_id]
    events = await _until(
        bootstrap,
        ids,
        lambda ev: _of(OfferMade, ev[ids[0]]) and _of(ReferralWaiting, ev[ids[1]]),
        "A offered the free slot, B in line behind it",
        within=10,
    )
    assert _of(OfferMade, events[ids[0]])[0].coach_id == world.site_coaches[0]
    assert _of(OfferMade, events[ids[1]]) == []


async def test_an_arrival_in_line_does_not_take_a_slot_that_frees_later_ahead_of_the_older_one(
    line: Line,
) -> None:
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), site=1, pool=1, max_concurrent=1)
    fillers, a = await _fill_then_wait(world, line)
    b = world.referral()
    await send(hospital_and_notify, b)
    ids = [a.referral_id, b.referral_id]
    await _until(bootstrap, ids, lambda ev: _of(ReferralWaiting, ev[ids[1]]), "B in line")

    pool_offer = next(o for o in fillers if o.coach_id == world.pool_coaches[0])
    await send(
        hospital_and_notify,
        ReferralCancelled(
            referral_id=pool_offer.referral_id,
            reason=CancelReason.PATIENT_LEFT,
            cancelled_at=datetime.now(UTC),
        ),
    )
    events = await _until(
        bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[0]]), "A offered the freed slot", 5
    )
    assert _of(OfferMade, events[ids[0]])[0].coach_id == world.pool_coaches[0]
    assert _of(OfferMade, events[ids[1]]) == []


async def test_an_outage_cycling_the_ladder_texts_the_supervisors_once(
    line: Line,
) -> None:
    """Found by a new user: each cycle of a paging outage was a new "no coach" notice."""
    matching_database, bootstrap, hospital_and_notify = line
    settings = DispatchSettings(page_deadline=timedelta(seconds=1))
    world = await _world(matching_database, settings, site=1, pool=0, supervised=True)
    referral = world.referral()
    ids = [referral.referral_id]
    await send(hospital_and_notify, referral)
    events = await _until(
        bootstrap,
        ids,
        lambda ev: len(_of(ReferralUnassigned, ev[ids[0]])) >= 3,
        "three cycles of the outage",
    )
    told = [u.supervisor_contacts for u in _of(ReferralUnassigned, events[ids[0]])]
    assert len(told[0]) == 1  # the supervisor, at the start of the spell
    assert all(contacts == () for contacts in told[1:])  # the same spell: nobody texted
    assert {w.reason for w in _of(OfferWithdrawn, events[ids[0]])} == {WithdrawReason.NOT_CONTACTED}


async def test_a_roster_import_from_the_cli_raising_capacity_serves_the_line_at_once(
    line: Line, tmp_path: Path
) -> None:
    """Found by a new user: the waiting line heard of a capacity raised by `handoff matching
    roster import` ~10 s late. The sweep runs once a minute here: within 15 s is the import's."""
    matching_database, bootstrap, hospital_and_notify = line
    world = await _world(matching_database, DispatchSettings(), pool=0, max_concurrent=1)
    first, waiting = world.referral(), world.referral()
    ids = [first.referral_id, waiting.referral_id]
    await send(hospital_and_notify, first)
    await _until(bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[0]]), "her offer")
    await send(hospital_and_notify, waiting)
    await _until(bootstrap, ids, lambda ev: _of(ReferralWaiting, ev[ids[1]]), "second in line")

    roster = tmp_path / "roster.json"
    roster.write_text(world.roster(max_concurrent=2).model_dump_json())
    imported = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "handoff_cli", "matching", "roster", "import", str(roster)],
        env={**os.environ, "DATABASE_URL": matching_database},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    events = await _until(
        bootstrap, ids, lambda ev: _of(OfferMade, ev[ids[1]]), "the raised slot offered", 15
    )
    assert _of(OfferMade, events[ids[1]])[0].coach_id == world.site_coaches[0]
