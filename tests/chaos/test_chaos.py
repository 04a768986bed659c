"""A thousand referrals through faults of every kind (issue 18, decision 0027).

While a hospital posts REFERRALS referrals over about POSTING_SECONDS and bot coaches accept
every page that reaches the (flaky) provider, a script, one fault after another: SIGKILLs a
random broker and restarts it; crashes PostgreSQL (`pg_ctl stop -m immediate`, then start);
SIGKILLs a random replica of each service and restarts it; SIGSTOPs a random broker for
longer than the session timeout, then SIGCONT; then, through toxiproxy in front of PostgreSQL
and of broker 3, adds latency, cuts the connections, and heals. What the clients saw is
recorded; afterwards the history must show every referral resolved and none lost, no page
twice at the provider for one offer and channel, no event published twice under two ids, no
dead letter, no consumer lag, and how long each fault took to recover from.
"""

import asyncio
import contextlib
import random
import signal
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx

from handoff_cli.demo import LINK
from handoff_notify.domain.links import LinkSigner
from handoff_platform.lag import LagSampler
from handoff_referral.entrypoints.http import MAX_PAGE
from handoff_schemas import Topic, dead_letter_topic
from handoff_schemas.catalog import decode_event
from tests.chaos.conftest import BROKER_PROXY, PG_PROXY, SEED, ChaosRig
from tests.chaos.history import (
    Fault,
    History,
    Post,
    lost,
    pages_sent_twice,
    published_twice,
    recovery_seconds,
    stuck,
)
from tests.e2e.conftest import MAIN_SITE
from tests.support.kafka import read_topic
from tests.support.patients import referral_body
from tests.support.waiting import eventually

REFERRALS = 1000
POSTING_SECONDS = 200.0  # 5 a second: what 2 shared cores carry through the faults
HOSPITAL_WORKERS = 24
FAULT_GAP_SECONDS = 6.0  # the system runs unharmed this long between two faults
GROUPS = {
    "handoff-referral": [Topic.DISPATCH, Topic.PAGES],
    "handoff-matching": [Topic.SITES, Topic.REFERRALS, Topic.PAGES],
    "handoff-notify": [Topic.DISPATCH, Topic.REFERRALS],
}


class Hospital:
    """Posts referrals at a fixed rate (an open model: a slow answer does not slow the next
    ask), each to one referral replica and, after a 503 or a dropped connection, the same
    body again to the other (replaying an external_id is safe). Any other answer fails."""

    def __init__(self, rig: ChaosRig, history: History, client: httpx.AsyncClient) -> None:
        self.rig, self.history, self.client = rig, history, client
        self.unexpected: list[str] = []

    async def refer(self, number: int, give_up_after: float = 120.0) -> Post:
        body = referral_body(f"chaos-{uuid.uuid4().hex[:12]}")
        post = Post(body["external_id"], History.now())
        self.history.posts[post.external_id] = post
        system = self.rig.system
        deadline = time.monotonic() + give_up_after
        attempt = number
        while time.monotonic() < deadline:
            replica = system.replicas["referral"][attempt % 2]
            attempt += 1
            try:
                response = await self.client.post(
                    f"{replica.url}/v1/referrals",
                    json=body,
                    headers={"Authorization": f"Bearer {system.keys[MAIN_SITE]}"},
                    timeout=10,
                )
            except httpx.TransportError as error:
                post.answers.append(type(error).__name__)
                await asyncio.sleep(0.2)
                continue
            post.answers.append(str(response.status_code))
            if response.status_code in (200, 201):
                post.referral_id = response.json()["id"]
                post.acknowledged_at = History.now()
                return post
            if response.status_code != 503:
                self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                return post
            await asyncio.sleep(0.2)
        return post

    async def run(self, count: int, seconds: float) -> None:
        started = time.monotonic()
        numbers = iter(range(count))

        async def worker() -> None:
            for number in numbers:
                due = started + number * seconds / count
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self.refer(number)

        await asyncio.gather(*(worker() for _ in range(HOSPITAL_WORKERS)))


class CoachBots:
    """Every coach at once, on their phones: each offer page the provider took is accepted
    from its link, on either notify replica. A non-303 answer or a dropped connection is
    "nothing yet": asked again until the offer's page is answered or a minute passed."""

    def __init__(self, rig: ChaosRig, history: History) -> None:
        self.rig, self.history = rig, history
        self.signer = LinkSigner(rig.system.env["NOTIFY_LINK_SECRET"])
        self.seen = 0
        self.visits: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                accepted = self.rig.twilio.accepted
                for message in accepted[self.seen :]:
                    link = LINK.search(message.body)
                    if link and "to accept," in message.body:  # an offer page, no confirmation
                        token = link.group(0).rsplit("/", 1)[1]
                        offer = str(self.signer.offer_id(token))
                        self.history.pages.append((History.now(), offer, message.kind))
                        visit = asyncio.create_task(self._accept(client, offer, token))
                        self.visits.add(visit)
                        visit.add_done_callback(self.visits.discard)
                self.seen = len(accepted)
                await asyncio.sleep(0.1)

    async def _accept(self, client: httpx.AsyncClient, offer: str, token: str) -> None:
        deadline = time.monotonic() + 60
        replicas = self.rig.system.replicas["notify"]
        attempt = 0
        while time.monotonic() < deadline:
            notify = replicas[attempt % len(replicas)]
            attempt += 1
            with contextlib.suppress(httpx.HTTPError):
                tapped = await client.post(f"{notify.url}/p/{token}", data={"answer": "accepted"})
                if tapped.status_code == 303:  # back to the page: the answer was taken
                    self.history.accepted[offer] = History.now()
                    return
            await asyncio.sleep(0.5)


class FaultScript:
    """The faults, one after another with FAULT_GAP_SECONDS of calm between them; each waits
    for its own recovery (the broker registered again, PostgreSQL answering, the replica
    ready) before the next. Choices come from the run's seed."""

    def __init__(self, rig: ChaosRig, history: History, hospital: Hospital) -> None:
        self.rig, self.history, self.hospital = rig, history, hospital
        self.dice = random.Random(SEED)

    async def run(self) -> None:
        for step in (
            self.kill_a_broker,
            self.crash_postgres,
            self.kill_service_replicas,
            self.pause_a_broker,
            self.slow_network,
            self.cut_network,
        ):
            await asyncio.sleep(FAULT_GAP_SECONDS)
            await step()
            # One referral asked right after each fault, so its recovery is always measured.
            await self.hospital.refer(-1)

    def _begin(self, name: str, target: str) -> Fault:
        fault = Fault(name, target, History.now())
        self.history.faults.append(fault)
        return fault

    async def kill_a_broker(self) -> None:
        node = self.dice.choice(self.rig.kafka.nodes).node_id
        fault = self._begin("broker SIGKILL + restart", f"broker {node}")
        self.rig.kafka.signal_node(node, signal.SIGKILL)
        await asyncio.sleep(2)  # dead for a while, as a crashed machine is, not a blink
        await asyncio.to_thread(self.rig.kafka.restart_node, node, 120)
        fault.ended_at = History.now()

    async def crash_postgres(self) -> None:
        fault = self._begin("PostgreSQL stop -m immediate + start", "postgres")
        postgres = self.rig.postgres
        await asyncio.to_thread(postgres.stop, "immediate")
        await asyncio.to_thread(postgres.start, 60)
        fault.ended_at = History.now()

    async def kill_service_replicas(self) -> None:
        chosen = {s: self.dice.randrange(2) for s in ("referral", "matching", "notify")}
        fault = self._begin(
            "service SIGKILL + restart", ", ".join(f"{s}[{r}]" for s, r in chosen.items())
        )
        await asyncio.gather(*(self.rig.system.restart(s, r, kill=True) for s, r in chosen.items()))
        fault.ended_at = History.now()

    async def pause_a_broker(self) -> None:
        node = self.dice.choice(self.rig.kafka.nodes).node_id
        fault = self._begin("broker SIGSTOP 8 s (session timeout 3 s) + SIGCONT", f"broker {node}")
        self.rig.kafka.signal_node(node, signal.SIGSTOP)
        try:
            await asyncio.sleep(8)
        finally:
            self.rig.kafka.signal_node(node, signal.SIGCONT)
        await asyncio.to_thread(self.rig.kafka.wait_ready, 120)
        fault.ended_at = History.now()

    async def slow_network(self) -> None:
        fault = self._begin("latency 300 ms ± 100 for 8 s", f"{PG_PROXY}, {BROKER_PROXY}")
        await self._with_toxics("latency", 8, latency=300, jitter=100)
        fault.ended_at = History.now()

    async def cut_network(self) -> None:
        fault = self._begin(
            "connections cut (reset_peer toxic) for 6 s", f"{PG_PROXY}, {BROKER_PROXY}"
        )
        # Every connection reset, and each new one at once: a cable pulled, seen as a reset.
        await self._with_toxics("reset_peer", 6, timeout=0)
        fault.ended_at = History.now()

    async def _with_toxics(self, kind: str, seconds: float, **attributes: int) -> None:
        proxy = self.rig.toxiproxy
        added = []
        try:
            for name in (PG_PROXY, BROKER_PROXY):
                for stream in ("upstream", "downstream"):
                    await asyncio.to_thread(
                        proxy.add_toxic, name, f"{kind}-{stream}", kind, stream, **attributes
                    )
                    added.append((name, f"{kind}-{stream}"))
            await asyncio.sleep(seconds)
        finally:
            for name, toxic in added:
                await asyncio.to_thread(proxy.remove_toxic, name, toxic)


async def site_referrals(rig: ChaosRig, client: httpx.AsyncClient) -> dict[str, str]:
    """Every referral of the site as the hospital reads it (the list, page by page): id →
    status. A page a fault interrupts is asked again."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": MAX_PAGE, **({"cursor": cursor} if cursor else {})}
        answer = await client.get(
            f"{rig.system.referral.url}/v1/referrals",
            params=params,
            headers={"Authorization": f"Bearer {rig.system.keys[MAIN_SITE]}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text[:300]
        page = answer.json()
        found |= {item["id"]: item["status"] for item in page["items"]}
        if not (cursor := page["next_cursor"]):
            return found


async def statuses(rig: ChaosRig, referral_ids: list[str]) -> dict[str, str]:
    connection = await asyncpg.connect(rig.system.database_url)
    try:
        rows = await connection.fetch(
            """SELECT referral_id::text, status FROM referral.referrals
               WHERE referral_id::text = ANY($1)""",
            referral_ids,
        )
    finally:
        await connection.close()
    return {row["referral_id"]: row["status"] for row in rows}


async def referrals_of_offers(rig: ChaosRig) -> dict[str, str]:
    connection = await asyncpg.connect(rig.system.database_url)
    try:
        rows = await connection.fetch("SELECT offer_id::text, referral_id::text FROM notify.offers")
    finally:
        await connection.close()
    return {row["offer_id"]: row["referral_id"] for row in rows}


async def leftovers(rig: ChaosRig) -> list[str]:
    """What is left behind, for the report: each service's outbox backlog, who holds the
    relays' advisory locks, and the server's sessions by state and address."""
    connection = await asyncpg.connect(rig.system.database_url)
    try:
        lines = []
        for schema in ("referral", "matching", "notify"):
            backlog = await connection.fetchval(f'SELECT count(*) FROM "{schema}".outbox')
            lines.append(f"{schema} outbox backlog: {backlog}")
        locks = await connection.fetch(
            """SELECT l.objid, a.pid, a.state, a.client_addr::text, a.client_port,
                      now() - a.state_change AS idle
               FROM pg_locks l JOIN pg_stat_activity a USING (pid)
               WHERE l.locktype = 'advisory' AND l.granted"""
        )
        lines += [f"advisory lock: {dict(row)}" for row in locks]
    finally:
        await connection.close()
    return lines


async def no_lag(rig: ChaosRig) -> dict[tuple[str, str, int], int]:
    sampler = LagSampler(rig.system.bootstrap_servers, {g: list(t) for g, t in GROUPS.items()})
    try:
        lags = await sampler.sample()
    finally:
        await sampler.close()
    return {key: lag for key, lag in lags.items() if lag}


async def test_a_thousand_referrals_through_every_fault_lose_and_double_nothing(
    rig: ChaosRig,
) -> None:
    started = time.monotonic()
    history = History()
    bots = CoachBots(rig, history)
    bots_task = asyncio.create_task(bots.run())
    async with httpx.AsyncClient() as client:
        hospital = Hospital(rig, history, client)
        faults = FaultScript(rig, history, hospital)
        try:
            await asyncio.gather(hospital.run(REFERRALS, POSTING_SECONDS), faults.run())
            posted_at = time.monotonic()
            acknowledged = history.acknowledged()
            seen: dict[str, str] = {}

            async def all_resolved() -> bool:
                seen.update(await statuses(rig, list(acknowledged)))
                return not stuck(seen) and len(seen) == len(acknowledged)

            with contextlib.suppress(AssertionError):
                await eventually(
                    all_resolved, within=240, what="every referral resolved", interval=2
                )
            resolved_at = time.monotonic()
            read = await site_referrals(rig, client)
        finally:
            bots_task.cancel()
            for visit in list(bots.visits):
                visit.cancel()

    # What the hospital was told against what it can read now.
    unanswered = [p.external_id for p in history.posts.values() if p.referral_id is None]
    missing = lost(acknowledged, read)
    still_open = stuck({r: read[r] for r in acknowledged if r in read})
    # Pages at the provider, counted there.
    doubled_pages = pages_sent_twice((offer, kind) for _, offer, kind in history.pages)
    # Every event on every topic, from the beginning.
    envelopes = []
    for topic in Topic:
        envelopes += [
            decode_event(r.value)
            for r in await read_topic(rig.system.bootstrap_servers, topic, within=120)
        ]
    doubled_events = published_twice(envelopes)
    dead = {
        group: len(await read_topic(rig.system.bootstrap_servers, dead_letter_topic(group)))
        for group in GROUPS
    }
    lag_left: dict[tuple[str, str, int], int] = {}

    async def lag_gone() -> bool:
        lag_left.clear()
        lag_left.update(await no_lag(rig))
        return not lag_left

    with contextlib.suppress(AssertionError):
        await eventually(lag_gone, within=60, what="consumer lag back to zero", interval=1)
    offer_referral = await referrals_of_offers(rig)
    accepted_at: dict[str, float] = {}
    for offer, when in history.accepted.items():
        if (referral := offer_referral.get(offer)) is not None:
            accepted_at[referral] = min(when, accepted_at.get(referral, when))
    final = Counter(read[r] for r in acknowledged if r in read)
    lags_by_group: Counter[str] = Counter()
    for (group, _, _), lag in lag_left.items():
        lags_by_group[group] += lag
    answers = Counter(a for p in history.posts.values() for a in p.answers)

    report = [
        f"chaos run (seed {SEED}): {len(history.posts)} referrals asked, "
        f"{len(acknowledged)} acknowledged, posting {posted_at - started:.0f} s, "
        f"resolved {resolved_at - posted_at:.0f} s later",
        f"  answers to the hospital: {dict(answers)}",
        f"  final statuses: {dict(final)}",
        f"  lost: {len(missing)}, stuck: {len(still_open)}, never acknowledged: {len(unanswered)}",
        f"  offer pages at the provider: {len(history.pages)}, sent twice: {len(doubled_pages)}; "
        f"provider failures injected: {dict(rig.twilio.flaky_outcomes)}",
        f"  events read: {len(envelopes)}, published twice under two ids: {len(doubled_events)}",
        f"  dead letters: {dead}, consumer lag left: {dict(lags_by_group)}",
    ]
    report += [f"  {line}" for line in await leftovers(rig)]
    subjects: dict[str, list[str]] = {}
    for envelope in envelopes:
        subjects.setdefault(str(envelope.subject), []).append(type(envelope.data).__name__)
    for referral in list(still_open)[:5]:
        post = acknowledged[referral]
        report.append(
            f"  stuck {referral} ({still_open[referral]}), asked at "
            f"{post.asked_at - started:.1f} s, events {subjects.get(referral, [])}"
        )
    report += [
        f"  fault at {f.began_at - started:.1f}-{f.ended_at - started:.1f} s: {f.name}"
        for f in history.faults
    ]
    for fault in history.faults:
        took = recovery_seconds(fault, history.posts.values(), accepted_at)
        report.append(
            f"  {fault.name} ({fault.target}): lasted {fault.ended_at - fault.began_at:.1f} s, "
            f"recovered {'never' if took is None else f'{took:.1f} s'} after it ended"
        )
    print("\n".join(report))

    assert not hospital.unexpected, hospital.unexpected[:5]
    assert not unanswered, f"never acknowledged: {unanswered[:5]}"
    assert len(history.posts) >= REFERRALS
    assert not missing, f"acknowledged but lost: {missing[:5]}"
    assert not still_open, f"stuck: {dict(list(still_open.items())[:10])}"
    assert not doubled_pages, f"paged twice: {dict(list(doubled_pages.items())[:5])}"
    assert not doubled_events, f"published twice: {dict(list(doubled_events.items())[:5])}"
    assert not any(dead.values()), f"dead letters: {dead}"
    assert not lag_left, f"consumer lag left: {lag_left}"
    assert len(history.faults) == 6
    assert all(f.ended_at for f in history.faults)
    recovered = [recovery_seconds(f, history.posts.values(), accepted_at) for f in history.faults]
    assert all(r is not None for r in recovered), "a fault after which nothing was accepted"
