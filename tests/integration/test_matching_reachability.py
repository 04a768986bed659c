"""Coaches notify cannot reach, on real Kafka and PostgreSQL with notify in live mode
against the fake Twilio (decision 0019): a coach whose only number texted STOP, or whose
number the provider calls never deliverable, is offered nothing, at any site; START, or
a coordinator clearing the number, wakes the waiting line at once (most urgent first, a
referral whose offer bounced before it included); a roster import that raises a coach's
capacity wakes it too.

Matching runs in-process with its line sweep set to an hour: a referral offered within the
test's deadline (30 s, for a loaded runner) was woken by the change, not found by the
sweep. Each test has states and sites of its own, and finds its referrals' events by their
ids.
"""

import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from handoff_devenv import KafkaCluster
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import import_roster
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_schemas.events import (
    CoachResponded,
    OfferMade,
    OfferWithdrawn,
    ReferralUnassigned,
    ReferralWaiting,
)
from handoff_schemas.vocabulary import (
    CoachResponse,
    ResponseVia,
    Urgency,
    WithdrawReason,
)
from tests.support.kafka import send
from tests.support.matching import always_on_call, dispatched, referral_created, roster_coach
from tests.support.notify import ADMIN_TOKEN, NotifyHarness, link_in, notify_harness
from tests.support.waiting import eventually

STATES = iter(["ME", "NH", "VT", "RI", "CT", "MA", "MI", "WI", "MN", "IA"])
SETTINGS = DispatchSettings(ack_timeout=timedelta(minutes=5), page_deadline=timedelta(seconds=60))


@pytest.fixture(scope="module")
async def notify(database_url: str, own_kafka: KafkaCluster) -> AsyncIterator[NotifyHarness]:
    async with notify_harness(database_url, own_kafka, "notify-reachability.log") as harness:
        yield harness


@pytest.fixture(scope="module")
async def matching(
    matching_database: str, own_kafka: KafkaCluster, notify: NotifyHarness
) -> AsyncIterator[MatchingRuntime]:
    runtime = await MatchingRuntime.start(
        MatchingSettings(
            database_url=matching_database,
            kafka_bootstrap_servers=own_kafka.bootstrap_servers,
            line_sweep_seconds=3600.0,
        )
    )

    async def connected() -> bool:
        return runtime.kafka_connected.is_set()

    await eventually(connected, within=60, what="matching on Kafka")
    yield runtime
    await runtime.stop()


@dataclass
class Coach:
    coach_id: uuid.UUID
    phone: str
    pools: list[str]
    max_concurrent: int = 2


@dataclass
class World:
    """Sites of a state of their own, their coaches (SMS only, each on its own number)."""

    database: str
    notify: NotifyHarness
    state: str = field(default_factory=lambda: next(STATES))
    coaches: list[Coach] = field(default_factory=list)

    def site(self) -> str:
        return f"s-{uuid.uuid4().hex[:8]}"

    def coach(self, *pools: str, max_concurrent: int = 2) -> Coach:
        coach = Coach(uuid.uuid4(), self.notify.phone(), list(pools), max_concurrent)
        self.coaches.append(coach)
        return coach

    async def import_roster(self) -> None:
        """As any importer does (the CLI, the demo seed): one call, nothing else."""
        roster = RosterFile.model_validate(
            {
                "coaches": [
                    roster_coach(c.coach_id, c.phone, self.state, c.max_concurrent)
                    for c in self.coaches
                ],
                "shifts": [
                    s for c in self.coaches for p in c.pools for s in always_on_call(c.coach_id, p)
                ],
            }
        )
        connection = await asyncpg.connect(self.database)
        try:
            await import_roster(connection, roster)
        finally:
            await connection.close()

    async def settle(self, *sites: str) -> None:
        connection = await asyncpg.connect(self.database)
        try:
            for site in sites:
                await dispatch_store.put_site_settings(connection, site, SETTINGS, True, ())
        finally:
            await connection.close()

    async def refer(self, site: str, urgency: Urgency = Urgency.URGENT) -> uuid.UUID:
        """Post a referral and wait until matching has dispatched it (so arrival order is
        the order of these calls)."""
        referral = referral_created(
            site, "en", False, state=self.state, urgency=urgency, substances=frozenset()
        )
        await send(self.notify.broker, referral, source="/handoff/referral")
        await until(self.notify, [referral.referral_id], lambda ev: all(ev.values()), "dispatched")
        return referral.referral_id


async def until(
    notify: NotifyHarness, referral_ids: list[uuid.UUID], done: Any, what: str, within: float = 20
) -> dict[uuid.UUID, list[Any]]:
    async def probe() -> dict[uuid.UUID, list[Any]] | None:
        events = await dispatched(notify.bootstrap_servers, referral_ids)
        return events if done(events) else None

    return await eventually(probe, within=within, what=what, interval=0.2)


def offers_to(coach: Coach, events: dict[uuid.UUID, list[Any]]) -> list[OfferMade]:
    """The coach's offers across these referrals, in the order they were made."""
    made = [e for story in events.values() for e in story if isinstance(e, OfferMade)]
    return sorted((o for o in made if o.coach_id == coach.coach_id), key=lambda o: o.expires_at)


def last(story: list[Any]) -> Any:
    return story[-1]


async def sms_from(notify: NotifyHarness, phone: str, body: str) -> None:
    response = await notify.twilio.send_sms(notify.url, phone, body)
    assert response.status_code == 200


async def matching_knows(database: str, coach: Coach, reachable: bool) -> None:
    """Wait until matching has heard notify's word on the coach's number."""

    async def heard() -> bool:
        connection = await asyncpg.connect(database)
        try:
            found = await connection.fetchval(
                "SELECT reachable FROM matching.contact_reachability WHERE destination = $1",
                coach.phone,
            )
        finally:
            await connection.close()
        return found is reachable

    await eventually(heard, within=20, what=f"matching to hear the number is reachable={reachable}")


async def test_after_stop_nothing_is_offered_to_the_coach_and_start_serves_the_line_at_once(
    matching: MatchingRuntime, matching_database: str, notify: NotifyHarness
) -> None:
    world = World(matching_database, notify)
    site = world.site()
    await world.settle(site)
    thirteen = world.coach(f"site:{site}")
    await world.import_roster()
    first, second = [await world.refer(site) for _ in range(2)]  # both to thirteen: alone
    await notify.sent_to(thirteen.phone, 2)

    other = world.coach(f"site:{site}")
    await world.import_roster()
    held_by_other = [await world.refer(site) for _ in range(2)]
    in_line = [await world.refer(site) for _ in range(2)]
    everyone = [first, second, *held_by_other, *in_line]
    events = await until(notify, everyone, lambda ev: all(ev.values()), "six dispatched")
    assert [o.referral_id for o in offers_to(thirteen, events)] == [first, second]
    assert {o.referral_id for o in offers_to(other, events)} == set(held_by_other)
    assert all(isinstance(last(events[r]), ReferralWaiting) for r in in_line)

    await sms_from(notify, thirteen.phone, "STOP")

    def bounced_and_waiting(ev: dict[uuid.UUID, list[Any]]) -> bool:
        return all(
            any(isinstance(e, OfferWithdrawn) for e in ev[r])
            and isinstance(last(ev[r]), ReferralWaiting)
            for r in (first, second)
        )

    events = await until(notify, everyone, bounced_and_waiting, "thirteen's offers moved on")
    for referral in (first, second):
        [withdrawn] = [e for e in events[referral] if isinstance(e, OfferWithdrawn)]
        assert withdrawn.reason is WithdrawReason.UNREACHABLE
    await matching_knows(matching_database, thirteen, reachable=False)
    # A new, emergent referral: other is full, thirteen cannot be reached: it waits.
    emergent = await world.refer(site, Urgency.EMERGENT)
    everyone.append(emergent)
    events = await until(
        notify,
        everyone,
        lambda ev: isinstance(last(ev[emergent]), ReferralWaiting),
        "emergent waits",
    )
    assert [o.referral_id for o in offers_to(thirteen, events)] == [first, second]  # no storm
    assert len(notify.twilio.to(thirteen.phone)) == 2

    await sms_from(notify, thirteen.phone, "START")

    # Two free slots: the emergent referral first, then the one that arrived first (its
    # offer to thirteen bounced before START, so it was not "tried").
    events = await until(
        notify,
        everyone,
        lambda ev: len(offers_to(thirteen, ev)) >= 4,
        "offers after START",
        within=30,
    )
    assert [o.referral_id for o in offers_to(thirteen, events)] == [first, second, emergent, first]
    await notify.sent_to(thirteen.phone, 4)  # paged, for real
    assert all(isinstance(last(events[r]), ReferralWaiting) for r in [second, *in_line])


async def clear_number(notify: NotifyHarness, phone: str) -> None:
    """The coordinator fixed the roster's number and clears it in notify's admin API."""
    async with httpx.AsyncClient() as client:
        cleared = await client.delete(
            f"{notify.url}/v1/admin/contact-methods",
            params={"channel": "sms", "destination": phone},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert cleared.status_code == 204


async def test_a_number_the_provider_calls_never_deliverable_is_not_offered_at_another_site(
    matching: MatchingRuntime, matching_database: str, notify: NotifyHarness
) -> None:
    world = World(matching_database, notify)
    here, there = world.site(), world.site()
    await world.settle(here, there)
    thirteen = world.coach(f"state:{world.state}")  # the state pool serves both sites
    await world.import_roster()
    notify.twilio.invalid_numbers.add(thirteen.phone)  # Twilio 400 / 21211

    bounced = await world.refer(here)
    events = await until(
        notify, [bounced], lambda ev: isinstance(last(ev[bounced]), ReferralUnassigned), "bounce"
    )
    [withdrawn] = [e for e in events[bounced] if isinstance(e, OfferWithdrawn)]
    assert withdrawn.reason is WithdrawReason.UNREACHABLE
    await matching_knows(matching_database, thirteen, reachable=False)

    elsewhere = await world.refer(there)
    events = await until(
        notify,
        [bounced, elsewhere],
        lambda ev: isinstance(last(ev[elsewhere]), ReferralUnassigned),
        "the other site's referral unassigned",
    )
    assert [o.referral_id for o in offers_to(thirteen, events)] == [bounced]
    assert notify.twilio.attempts[thirteen.phone] == 1  # nothing more was sent to try it

    notify.twilio.invalid_numbers.discard(thirteen.phone)
    await clear_number(notify, thirteen.phone)

    # Cleared: the line is served at once, the referral that bounced included.
    events = await until(
        notify,
        [bounced, elsewhere],
        lambda ev: len(offers_to(thirteen, ev)) >= 3,
        "offers after the number was cleared",
        within=30,
    )
    assert [o.referral_id for o in offers_to(thirteen, events)] == [bounced, bounced, elsewhere]
    await notify.sent_to(thirteen.phone, 2)


async def test_a_roster_import_raising_capacity_or_adding_a_coach_serves_the_line_at_once(
    matching: MatchingRuntime, matching_database: str, notify: NotifyHarness
) -> None:
    world = World(matching_database, notify)
    site = world.site()
    await world.settle(site)
    busy = world.coach(f"site:{site}", max_concurrent=1)
    await world.import_roster()
    held = await world.refer(site)
    raised_for, added_for = await world.refer(site), await world.refer(site)
    everyone = [held, raised_for, added_for]
    events = await until(notify, everyone, lambda ev: all(ev.values()), "three dispatched")
    assert [o.referral_id for o in offers_to(busy, events)] == [held]
    assert all(isinstance(last(events[r]), ReferralWaiting) for r in (raised_for, added_for))

    busy.max_concurrent = 2
    await world.import_roster()
    events = await until(
        notify, everyone, lambda ev: len(offers_to(busy, ev)) == 2, "capacity raised", within=30
    )
    assert [o.referral_id for o in offers_to(busy, events)] == [held, raised_for]
    assert isinstance(last(events[added_for]), ReferralWaiting)

    newcomer = world.coach(f"site:{site}")
    await world.import_roster()
    events = await until(
        notify, everyone, lambda ev: len(offers_to(newcomer, ev)) == 1, "coach added", within=30
    )
    assert [o.referral_id for o in offers_to(newcomer, events)] == [added_for]
    await notify.sent_to(busy.phone, 2)
    await notify.sent_to(newcomer.phone, 1)


async def test_a_coach_texting_off_with_an_open_offer_passes_it_on_at_once_and_is_told(
    matching: MatchingRuntime, matching_database: str, notify: NotifyHarness
) -> None:
    world = World(matching_database, notify)
    site = world.site()
    await world.settle(site)
    going_off = world.coach(f"site:{site}")
    await world.import_roster()
    referral = await world.refer(site)
    await notify.sent_to(going_off.phone, 1)
    backup = world.coach(f"site:{site}")
    await world.import_roster()

    response = await notify.twilio.send_sms(notify.url, going_off.phone, "OFF")
    assert response.status_code == 200
    answer = html.unescape(response.text)
    assert "you are off call until" in answer
    assert "1 open request(s) passed on." in answer

    # Passed on at once (the ack timeout is 5 minutes), and the timeline's story says why.
    events = await until(
        notify, [referral], lambda ev: len(offers_to(backup, ev)) == 1, "offered on", within=30
    )
    [first] = offers_to(going_off, events)
    answered = await notify.page_events(first.offer_id, at_least=2)
    [declined] = [e for e in answered if isinstance(e, CoachResponded)]
    assert (declined.response, declined.via) == (CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
    await notify.sent_to(backup.phone, 1)
    assert len(notify.twilio.to(going_off.phone)) == 1  # nothing more to the coach who is off


async def sms_off_in_matching(database: str, coach: Any) -> list[tuple[Any, Any]]:
    """The coach's own OFF overrides in matching (starts_at, ends_at), oldest first."""
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch(
            """SELECT starts_at, ends_at FROM matching.overrides
               WHERE coach_id = $1 AND source = 'sms' AND kind = 'remove' ORDER BY starts_at""",
            coach.coach_id,
        )
    finally:
        await connection.close()
    return [(r["starts_at"], r["ends_at"]) for r in rows]


async def test_a_coach_going_off_call_from_their_page_is_off_in_matching_and_back_on(
    matching: MatchingRuntime, matching_database: str, notify: NotifyHarness
) -> None:
    """Issue #15: the page offered only Accept / Decline; OFF was SMS only."""
    world = World(matching_database, notify)
    site = world.site()
    await world.settle(site)
    going_off = world.coach(f"site:{site}")
    await world.import_roster()
    referral = await world.refer(site)
    [sent] = await notify.sent_to(going_off.phone, 1)
    backup = world.coach(f"site:{site}")
    await world.import_roster()
    link = link_in(sent.body)
    async with httpx.AsyncClient() as client:
        page = (await client.get(link)).text
        chosen = re.findall(r'<option value="([^"]+)"', page)[5]

        off = await client.post(
            f"{link}/availability", data={"availability": "off", "until": chosen}
        )

        assert off.status_code == 200
        assert "1 open request(s) passed on." in html.unescape(off.text)
        # Passed on at once, and matching holds the OFF until the chosen hour.
        await until(
            notify, [referral], lambda ev: len(offers_to(backup, ev)) == 1, "offered on", within=30
        )

        async def held() -> list[tuple[Any, Any]] | None:
            found = await sms_off_in_matching(matching_database, going_off)
            return found or None

        [(_, ends)] = await eventually(held, within=30, what="the page's OFF in matching")
        assert ends == datetime.fromisoformat(chosen)

        on = await client.post(f"{link}/availability", data={"availability": "on"})

    assert "you are back on call" in html.unescape(on.text)

    async def ended() -> bool:
        [(_, ends)] = await sms_off_in_matching(matching_database, going_off)
        return bool(ends <= datetime.now(UTC))

    await eventually(ended, within=30, what="the page's ON in matching")
    await notify.sent_to(backup.phone, 1)
    assert len(notify.twilio.to(going_off.phone)) == 1  # nothing more to the coach while off


async def test_a_block_matching_never_heard_of_is_learned_from_the_first_bounce(
    matching: MatchingRuntime, matching_database: str, notify: NotifyHarness
) -> None:
    world = World(matching_database, notify)
    site = world.site()
    await world.settle(site)
    coach = world.coach(f"site:{site}")
    await world.import_roster()
    # Opted out before matching heard of opt-outs: in notify's table, no event ever sent.
    connection = await asyncpg.connect(notify.env["DATABASE_URL"])
    try:
        await connection.execute(
            """INSERT INTO notify.contact_methods (channel, destination, state, reason, since)
               VALUES ('sms', $1, 'opted_out', 'stop_keyword', now())""",
            coach.phone,
        )
    finally:
        await connection.close()

    bounced = await world.refer(site)
    await until(
        notify, [bounced], lambda ev: isinstance(last(ev[bounced]), ReferralUnassigned), "bounce"
    )
    await matching_knows(matching_database, coach, reachable=False)
    later = await world.refer(site)
    events = await until(
        notify,
        [bounced, later],
        lambda ev: isinstance(last(ev[later]), ReferralUnassigned),
        "the next referral unassigned",
    )
    assert [o.referral_id for o in offers_to(coach, events)] == [bounced]
    assert notify.twilio.to(coach.phone) == []


async def test_a_roster_coach_never_paged_may_text_off_and_a_stranger_is_told_not_registered(
    matching: MatchingRuntime, matching_database: str, notify: NotifyHarness
) -> None:
    """The roster import reaches notify (CoachPhonesChanged): whose numbers are a coach's."""
    world = World(matching_database, notify)
    coach = world.coach(f"site:{world.site()}")
    stranger = notify.phone()
    await world.import_roster()

    async def off_answered() -> str | None:
        response = await notify.twilio.send_sms(notify.url, coach.phone, "ON")
        answer = html.unescape(response.text)
        return answer if "you are on call as scheduled" in answer else None

    # Until matching's announcement is consumed the number is a stranger's: ON changes
    # nothing either way, so it is safe to ask until it is answered as a coach.
    await eventually(off_answered, within=30, what="the coach's number known to notify")
    off = html.unescape((await notify.twilio.send_sms(notify.url, coach.phone, "OFF")).text)
    refused = html.unescape((await notify.twilio.send_sms(notify.url, stranger, "OFF")).text)

    assert "you are off call until" in off
    assert "this number is not registered with" in refused
    assert "you are off" not in refused
