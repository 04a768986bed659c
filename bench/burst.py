"""Benchmark: an overdose cluster at one emergency department, dispatched by the real system.

Sixty referrals arrive within ten minutes at one site that has three site coaches and six
state-pool coaches, each able to take two patients at once. The coaches' behaviour is
drawn once from a seeded RNG: for every (referral, coach) pair, how long the coach takes
to answer a page of that referral and whether they accept, decline or never answer, and
how long the visit lasts if they take it. Time is compressed (30x by default): arrivals,
the site's ack timeout, answer delays and visit lengths are all divided by it; figures are
printed in scenario minutes.

It runs Kafka and PostgreSQL (the configured ones, or its own), then referral, matching
and notify as separate processes, notify paging into the sandbox. Simulated coaches
read their pages from the sandbox, tell which offer a page is by its signed link, and,
after their drawn delay, accept or decline through that link; a coach who was assigned
taps Arrived, and Completed after the drawn visit length. Everything it reports about
the system comes from the events on handoff.dispatch and handoff.pages, read as they
are published: time from the `201` to CoachAssigned, and, per coach, the most offers
open at once (OfferMade until OfferWithdrawn, its CoachAssigned or its decline), the
most assignments at once (CoachAssigned until Completed: a coach at the bedside is
with that patient until the visit ends) and the most of both. Matching's own load
model frees a coach on Arrived instead; the script prints that count too, so the two
can be told apart.

The reference, computed in the same run from the same draws: an ideal dispatcher (a
discrete-event simulation) that offers a referral, oldest first, the instant any
eligible coach has a free slot (an open offer holds a slot), site coaches before the
state pool, least loaded first, one offer per referral at a time; a coach answers it
exactly as drawn for that (referral, coach).

Goals, each printed PASS or FAIL: no coach ever held more assignments than their
capacity; the measured p90 time to acceptance within 1.2x the ideal's.

    .venv/bin/python -m bench.burst [--seed 12] [--compression 30] [--max-wall 150]
"""

import argparse
import asyncio
import contextlib
import heapq
import math
import os
import random
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer
from cryptography.fernet import Fernet

from bench.common import fresh_database, handoff, infrastructure, percentile, sandbox_messages
from handoff_cli.demo import LINK, demo_referral
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import ServiceProcess, start_service
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations, import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_notify.domain.links import LinkSigner
from handoff_schemas import Envelope, Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferMade,
    OfferWithdrawn,
    ReferralExpired,
)
from handoff_schemas.vocabulary import CoachResponse

SITE, STATE = "md-burst", "MD"
REFERRALS, WINDOW_S = 60, 600.0  # scenario seconds
SITE_COACHES, STATE_COACHES, CAPACITY = 3, 6, 2
ACK_TIMEOUT_S = 300.0  # the site's ack timeout, scenario seconds
ACCEPT, DECLINE = 0.75, 0.15  # the rest never answer
ANSWER_MEDIAN_S, ANSWER_SIGMA = 60.0, 0.8  # log-normal answer delay
VISIT_S = (600.0, 1500.0)  # uniform visit length
P90_FACTOR = 1.2
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class Answer(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    NONE = "none"


@dataclass(frozen=True)
class Behaviour:
    """What one coach does with a page of one referral, in scenario seconds."""

    delay: float
    answer: Answer
    visit: float


@dataclass(frozen=True)
class Scenario:
    arrivals: list[float]  # scenario seconds from the first referral, ascending
    behaviour: dict[tuple[int, int], Behaviour]  # (referral, coach) -> behaviour

    @property
    def coaches(self) -> int:
        return SITE_COACHES + STATE_COACHES

    def answers(self, referral: int, coach: int) -> Behaviour:
        drawn = self.behaviour[(referral, coach)]
        if drawn.delay >= ACK_TIMEOUT_S:  # too late to count: the offer is gone by then
            return Behaviour(drawn.delay, Answer.NONE, drawn.visit)
        return drawn


def draw(seed: int) -> Scenario:
    rng = random.Random(seed)
    arrivals = sorted(rng.uniform(0, WINDOW_S) for _ in range(REFERRALS))
    arrivals = [a - arrivals[0] for a in arrivals]
    behaviour = {}
    for referral in range(REFERRALS):
        for coach in range(SITE_COACHES + STATE_COACHES):
            roll = rng.random()
            answer = (
                Answer.ACCEPT if roll < ACCEPT else Answer.DECLINE if roll < ACCEPT + DECLINE
                else Answer.NONE
            )  # fmt: skip
            delay = rng.lognormvariate(math.log(ANSWER_MEDIAN_S), ANSWER_SIGMA)
            behaviour[(referral, coach)] = Behaviour(delay, answer, rng.uniform(*VISIT_S))
    return Scenario(arrivals, behaviour)


@dataclass
class Outcome:
    """Acceptance times and per-coach holding intervals, all in scenario seconds."""

    accepted_after: dict[int, float] = field(default_factory=dict)  # referral -> from arrival
    offers: list[tuple[int, float, float]] = field(default_factory=list)  # coach, start, end
    assignments: list[tuple[int, float, float]] = field(default_factory=list)
    until_arrived: list[tuple[int, float, float]] = field(default_factory=list)  # assigned
    stopped_at: float = math.inf  # where intervals still open at the end were cut


def ideal(scenario: Scenario) -> Outcome:
    """The ideal dispatcher, as a discrete-event simulation over the same draws."""
    outcome = Outcome()
    load = [0] * scenario.coaches
    tried: dict[int, set[int]] = defaultdict(set)
    line: list[int] = []  # referrals with no open offer, by arrival
    opened: dict[tuple[int, int], float] = {}  # (referral, coach) -> when offered
    events: list[tuple[float, int, str, int, int]] = []
    sequence = 0

    def schedule(at: float, kind: str, referral: int, coach: int) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, kind, referral, coach))

    for referral, arrival in enumerate(scenario.arrivals):
        schedule(arrival, "arrive", referral, -1)

    def dispatch(now: float) -> None:
        for referral in list(line):
            free = [c for c in range(scenario.coaches) if load[c] < CAPACITY]
            untried = [c for c in free if c not in tried[referral]]
            if not untried:
                continue
            coach = min(untried, key=lambda c: (c >= SITE_COACHES, load[c], c))
            line.remove(referral)
            tried[referral].add(coach)
            load[coach] += 1
            drawn = scenario.answers(referral, coach)
            if drawn.answer is Answer.NONE:
                schedule(now + ACK_TIMEOUT_S, "offer_ends", referral, coach)
            elif drawn.answer is Answer.DECLINE:
                schedule(now + drawn.delay, "offer_ends", referral, coach)
            else:
                schedule(now + drawn.delay, "accept", referral, coach)
            opened[(referral, coach)] = now

    while events:
        now, _, kind, referral, coach = heapq.heappop(events)
        if kind == "arrive":
            line.append(referral)
        elif kind == "offer_ends":
            load[coach] -= 1
            outcome.offers.append((coach, opened[(referral, coach)], now))
            if len(tried[referral]) < scenario.coaches:
                line.append(referral)
                line.sort()
        elif kind == "accept":
            outcome.offers.append((coach, opened[(referral, coach)], now))
            outcome.accepted_after[referral] = now - scenario.arrivals[referral]
            end = now + scenario.answers(referral, coach).visit
            outcome.assignments.append((coach, now, end))
            schedule(end, "complete", referral, coach)
        elif kind == "complete":
            load[coach] -= 1
        dispatch(now)
    return outcome


def most_at_once(intervals: Iterable[tuple[int, float, float]]) -> int:
    """The most intervals any one coach held at the same moment (an end frees its slot
    before a start at the same instant: an accepted offer becomes its assignment)."""
    by_coach: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for coach, start, end in intervals:
        by_coach[coach] += [(start, 1), (end, -1)]
    most = 0
    for changes in by_coach.values():
        held = 0
        for _, change in sorted(changes):
            held += change
            most = max(most, held)
    return most


# --- the real system -----------------------------------------------------------------


@dataclass
class Observed:
    """Events read from handoff.dispatch and handoff.pages as they are published."""

    events: list[Envelope[Any]] = field(default_factory=list)
    offers: dict[UUID, OfferMade] = field(default_factory=dict)
    offered_at: dict[UUID, datetime] = field(default_factory=dict)  # the OfferMade's time
    assigned: dict[UUID, CoachAssigned] = field(default_factory=dict)  # by offer
    assigned_referrals: set[UUID] = field(default_factory=set)
    expired_referrals: set[UUID] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: Envelope[Any]) -> None:
        self.events.append(event)
        data = event.data
        if isinstance(data, OfferMade):
            self.offers[data.offer_id] = data
            self.offered_at[data.offer_id] = event.time
        elif isinstance(data, CoachAssigned):
            self.assigned[data.offer_id] = data
            self.assigned_referrals.add(data.referral_id)
        elif isinstance(data, ReferralExpired):
            self.expired_referrals.add(data.referral_id)
        self.changed.set()


async def observe(bootstrap_servers: str, observed: Observed, ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        Topic.DISPATCH.value,
        Topic.PAGES.value,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    ready.set()
    try:
        async for record in consumer:
            with contextlib.suppress(ValueError):  # another producer's bytes: not ours
                observed.add(decode_event(record.value or b""))
    finally:
        await consumer.stop()


@dataclass
class Run:
    scenario: Scenario
    compression: float
    bootstrap_servers: str
    coach_ids: list[UUID]
    phones: list[str]
    signer: LinkSigner
    observed: Observed
    referral_ids: dict[UUID, int] = field(default_factory=dict)  # -> scenario index
    answered_at: dict[UUID, datetime] = field(default_factory=dict)  # the 201
    errors: int = 0

    def wall(self, scenario_seconds: float) -> float:
        return scenario_seconds / self.compression


def roster(coach_ids: list[UUID], phones: list[str]) -> RosterFile:
    pools = [f"site:{SITE}"] * SITE_COACHES + [f"state:{STATE}"] * STATE_COACHES
    return RosterFile.model_validate(
        {
            "coaches": [
                {
                    "coach_id": str(coach_id),
                    "display_name": f"Coach {n}",
                    "contact_methods": [{"channel": "sms", "destination": phones[n]}],
                    "languages": ["en"],
                    "max_concurrent": CAPACITY,
                    "certifications": [
                        {"state": STATE, "credential": "CPRS", "expires_on": "2030-01-01"}
                    ],
                }
                for n, coach_id in enumerate(coach_ids)
            ],
            "shifts": [
                {
                    "coach_id": str(coach_id),
                    "pool": pool,
                    "weekday": day,
                    "start": "00:00",
                    "end": "00:00",
                    "time_zone": "America/New_York",
                }
                for coach_id, pool in zip(coach_ids, pools, strict=True)
                for day in DAYS
            ],
        }
    )


async def seed(database_url: str, run: Run) -> None:
    await apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await import_roster(connection, roster(run.coach_ids, run.phones))
        ack_timeout = timedelta(seconds=max(1, round(run.wall(ACK_TIMEOUT_S))))
        await dispatch_store.put_site_settings(
            connection, SITE, DispatchSettings(ack_timeout=ack_timeout), True, ()
        )
    finally:
        await connection.close()


async def post_referrals(referral_url: str, token: str, run: Run) -> None:
    """The i-th referral is posted at its drawn arrival, compressed."""
    batch = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession(
        referral_url, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def post(number: int) -> None:
            async with http.post(
                "/v1/referrals", json=demo_referral(f"burst-{batch}-{number}")
            ) as response:
                created = await response.json()
                if response.status != 201:
                    run.errors += 1
                    return
                referral_id = UUID(created["id"])
                run.answered_at[referral_id] = datetime.now(UTC)
                run.referral_ids[referral_id] = number

        started = time.monotonic()
        posts = []
        for number, arrival in enumerate(run.scenario.arrivals):
            await asyncio.sleep(max(0.0, started + run.wall(arrival) - time.monotonic()))
            posts.append(asyncio.create_task(post(number)))
        await asyncio.gather(*posts)


async def coaches(notify_url: str, run: Run) -> None:
    """The simulated coaches: each page, told by its link, is answered as drawn."""
    answering: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as http:
        try:
            await _read_pages(http, notify_url, run, answering)
        finally:
            # The run stopped: coaches still at a bedside stop with it, before the session
            # closes under them.
            stopping = list(answering)
            for task in stopping:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)


async def _read_pages(
    http: aiohttp.ClientSession, notify_url: str, run: Run, answering: set[asyncio.Task[None]]
) -> None:
    """Poll the sandbox for new pages, forever; each page's answer runs in `answering`."""
    seen = 0
    pending: dict[UUID, str] = {}  # offer -> its link, until its OfferMade and 201 are known
    paged: set[UUID] = set()  # offers whose page was seen: later messages are notices
    phones = set(run.phones)
    while True:
        messages, seen = await sandbox_messages(http, notify_url, seen)
        for message in messages:
            found_link = LINK.search(message["body"])
            if found_link is None or message["to"] not in phones:
                continue
            offer_id = run.signer.offer_id(found_link.group(0).rsplit("/", 1)[1])
            if offer_id and offer_id not in paged:
                paged.add(offer_id)
                pending[offer_id] = found_link.group(0)
        for offer_id, link in list(pending.items()):
            offer = run.observed.offers.get(offer_id)
            if offer is None or offer.referral_id not in run.referral_ids:
                continue  # its OfferMade or 201 not seen yet
            del pending[offer_id]
            referral = run.referral_ids[offer.referral_id]
            coach = run.coach_ids.index(offer.coach_id)
            task = asyncio.create_task(answer(http, run, offer, link, referral, coach))
            answering.add(task)
            task.add_done_callback(answering.discard)
        await asyncio.sleep(0.1)


async def answer(
    http: aiohttp.ClientSession, run: Run, offer: OfferMade, link: str, referral: int, coach: int
) -> None:
    drawn = run.scenario.answers(referral, coach)
    if drawn.answer is Answer.NONE:
        return
    await asyncio.sleep(run.wall(drawn.delay))
    if drawn.answer is Answer.DECLINE:
        await tap(http, link, "declined", wait=False)
        return
    if not await tap(http, link, "accepted", wait=False):
        return  # the offer was withdrawn or filled before the coach answered
    observed = run.observed
    deadline = time.monotonic() + 30
    while offer.offer_id not in observed.assigned:
        if offer.referral_id in observed.assigned_referrals or time.monotonic() > deadline:
            return  # another coach has it, or matching did not take this acceptance
        observed.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(observed.changed.wait(), timeout=1)
    await tap(http, link, "arrived", wait=True)
    await asyncio.sleep(run.wall(drawn.visit))
    await tap(http, link, "completed", wait=True)


async def tap(http: aiohttp.ClientSession, link: str, answer: str, wait: bool) -> bool:
    """Press `answer` on the coach's page; with `wait`, until the page offers it (it shows
    Arrived once notify has the assignment)."""
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(link) as page:
                if f'value="{answer}"' in await page.text():
                    async with http.post(link, data={"answer": answer}, allow_redirects=False):
                        return True
        if not wait or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)


def measured(run: Run, stopped: datetime) -> Outcome:
    """The outcome as the events tell it, converted to scenario seconds."""
    first = min(run.answered_at.values())

    def scenario_s(at: datetime) -> float:
        return (at - first).total_seconds() * run.compression

    outcome = Outcome(stopped_at=scenario_s(stopped))

    ends: dict[UUID, datetime] = {}
    completed: dict[UUID, datetime] = {}
    arrived: dict[UUID, datetime] = {}
    for event in run.observed.events:
        data = event.data
        if isinstance(data, OfferWithdrawn):
            ends.setdefault(data.offer_id, data.withdrawn_at)
        elif isinstance(data, CoachAssigned):
            ends.setdefault(data.offer_id, data.assigned_at)
        elif isinstance(data, CoachResponded) and data.response is CoachResponse.DECLINED:
            ends.setdefault(data.offer_id, data.responded_at)
        elif isinstance(data, CoachResponded) and data.response is CoachResponse.COMPLETED:
            completed.setdefault(data.offer_id, data.responded_at)
        elif isinstance(data, CoachResponded) and data.response is CoachResponse.ARRIVED:
            arrived.setdefault(data.offer_id, data.responded_at)
    coach_index = {coach_id: n for n, coach_id in enumerate(run.coach_ids)}
    for offer_id, offer in run.observed.offers.items():
        if offer.referral_id not in run.referral_ids:
            continue
        made = run.observed.offered_at[offer_id]
        end = ends.get(offer_id, stopped)
        outcome.offers.append((coach_index[offer.coach_id], scenario_s(made), scenario_s(end)))
    for offer_id, assigned in run.observed.assigned.items():
        if assigned.referral_id not in run.referral_ids:
            continue
        end = completed.get(offer_id, stopped)
        coach = coach_index[assigned.coach_id]
        outcome.assignments.append((coach, scenario_s(assigned.assigned_at), scenario_s(end)))
        until = arrived.get(offer_id, stopped)
        outcome.until_arrived.append((coach, scenario_s(assigned.assigned_at), scenario_s(until)))
        after = (assigned.assigned_at - run.answered_at[assigned.referral_id]).total_seconds()
        referral = run.referral_ids[assigned.referral_id]
        outcome.accepted_after[referral] = min(
            after * run.compression, outcome.accepted_after.get(referral, math.inf)
        )
    return outcome


async def play(referral_url: str, notify_url: str, token: str, run: Run, max_wall: float) -> None:
    ready = asyncio.Event()
    background = [asyncio.create_task(observe(run.bootstrap_servers, run.observed, ready))]
    await ready.wait()
    background.append(asyncio.create_task(coaches(notify_url, run)))
    try:
        started = time.monotonic()
        await post_referrals(referral_url, token, run)
        done = run.observed.assigned_referrals | run.observed.expired_referrals
        while not set(run.referral_ids) <= done and time.monotonic() - started < max_wall:
            await asyncio.sleep(0.5)
            done = run.observed.assigned_referrals | run.observed.expired_referrals
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)


def figures(name: str, outcome: Outcome) -> tuple[str, float]:
    minutes = sorted(outcome.accepted_after.get(r, math.inf) / 60 for r in range(REFERRALS))
    missing = sum(1 for m in minutes if math.isinf(m))
    p50, p90 = statistics.median(minutes), percentile(minutes, 0.9)
    row = (
        f"{name:<22} {p50:8.1f} {p90:8.1f} {max(minutes):8.1f} {missing:8d}"
        f" {most_at_once(outcome.offers):10d} {most_at_once(outcome.assignments):10d}"
        f" {most_at_once(outcome.offers + outcome.assignments):10d}"
    )
    return row, p90


def report(run: Run, seed: int, real: Outcome, reference: Outcome, wall: float) -> None:
    print(
        f"scenario: {REFERRALS} referrals in {WINDOW_S / 60:.0f} min at one site; "
        f"{SITE_COACHES} site + {STATE_COACHES} state-pool coaches, capacity {CAPACITY} each; "
        f"ack timeout {ACK_TIMEOUT_S / 60:.0f} min; answers {ACCEPT:.0%} accept, "
        f"{DECLINE:.0%} decline, the rest never; visits {VISIT_S[0] / 60:.0f}-"
        f"{VISIT_S[1] / 60:.0f} min; seed {seed}; time compressed {run.compression:g}x; "
        f"{wall:.0f} s of wall time; {run.errors} failed POSTs"
    )
    print(
        f"{'':<22} {'201 → accepted (scenario min)':>26} {'never':>8}"
        f" {'most held by one coach at once':>32}"
    )
    print(
        f"{'':<22} {'p50':>8} {'p90':>8} {'max':>8} {'accepted':>8}"
        f" {'offers':>10} {'assigned':>10} {'both':>10}"
    )
    row, p90 = figures("Handoff (measured)", real)
    print(row)
    ideal_row, ideal_p90 = figures("ideal dispatcher", reference)
    print(ideal_row)
    completed = sum(1 for _, _, end in real.assignments if end < real.stopped_at)
    print(
        f"observed: {len(real.offers)} offers, {len(real.assignments)} assignments, "
        f"{completed} visits completed before the run stopped (the rest count as held to the end)"
    )
    print(
        "counted until Arrived instead of Completed (a coach at the bedside is free): "
        f"{most_at_once(real.until_arrived)} assignments, "
        f"{most_at_once(real.offers + real.until_arrived)} offers and assignments at most"
    )
    over = most_at_once(real.assignments)
    goals = [
        (f"no coach over capacity ({over} held at most, capacity {CAPACITY})", over <= CAPACITY),
        (
            f"p90 to acceptance {p90:.1f} min within {P90_FACTOR}x the ideal's {ideal_p90:.1f}",
            p90 <= P90_FACTOR * ideal_p90,
        ),
    ]
    for goal, met in goals:
        print(f"{'PASS' if met else 'FAIL'}: {goal}")


def main(seed_value: int, compression: float, max_wall: float) -> None:
    scenario = draw(seed_value)
    reference = ideal(scenario)
    with infrastructure() as servers:
        database_url = asyncio.run(fresh_database(servers.database_url))
        secret = uuid.uuid4().hex
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
            "LOG_LEVEL": "WARNING",
            "NOTIFY_DELIVERY": "sandbox",
            "NOTIFY_LINK_SECRET": secret,
            "FOLLOW_UP_KEYS": Fernet.generate_key().decode(),  # referral serves only with a key
            # Many pages to few phones in minutes: the per-phone throttles would hold them.
            "OFFERS_PER_15_MINUTES": "1000000",
            "NOTICES_PER_15_MINUTES": "1000000",
        }
        handoff(
            "referral", "site", "add", "--id", SITE, "--name", "Burst", "--short-name",
            "Burst ED", "--state", STATE, "--time-zone", "America/New_York", env=env,
        )  # fmt: skip
        token = handoff("referral", "key", "create", "--site", SITE, "--label", "burst", env=env)
        coach_ids = [uuid.uuid4() for _ in range(scenario.coaches)]
        phones = [f"+1410557{n:04d}" for n in range(scenario.coaches)]
        run = Run(
            scenario,
            compression,
            servers.bootstrap_servers,
            coach_ids,
            phones,
            LinkSigner(secret),
            Observed(),
        )
        asyncio.run(seed(database_url, run))
        notify_port = free_ports(1)[0]
        env["NOTIFY_PUBLIC_URL"] = f"http://127.0.0.1:{notify_port}"
        services: dict[str, ServiceProcess] = {}
        try:
            for name, port in (("referral", None), ("matching", None), ("notify", notify_port)):
                services[name] = start_service(name, env, port=port)
            started = time.monotonic()
            asyncio.run(
                play(services["referral"].url, services["notify"].url, token, run, max_wall)
            )
            wall = time.monotonic() - started
            real = measured(run, datetime.now(UTC))
        finally:
            for service in services.values():
                service.stop()
    report(run, seed_value, real, reference, wall)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=12, help="draws the coaches' behaviour")
    parser.add_argument("--compression", type=float, default=30.0, help="scenario time / wall")
    parser.add_argument(
        "--max-wall",
        type=float,
        default=150.0,
        help="wall seconds from the first referral after which one not yet accepted never is",
    )
    arguments = parser.parse_args()
    main(arguments.seed, arguments.compression, arguments.max_wall)
