"""A referral's journeys through the three services, as the hospital and the coaches see them."""

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml

from handoff_cli.demo import LINK
from handoff_devenv.ports import free_ports
from handoff_notify.domain.links import LinkSigner
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import OfferMade
from tests.e2e.conftest import COACHES, LADDER_SITE, MAIN_SITE, System
from tests.support.kafka import read_topic
from tests.support.notify import link_in, reply_code_in
from tests.support.otlp import SPAN_KIND_SERVER, OtlpCollector, ReceivedSpan
from tests.support.patients import SERVICE_LOGS, referral_body
from tests.support.processes import running
from tests.support.waiting import eventually

ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy/prometheus/alerts.yml"
MAIN_PHONES = {COACHES["main-1"].phone, COACHES["main-2"].phone}
PAGED_AT_ONCE_SECONDS = 5.0


async def _status_becomes(
    system: System, site: str, referral_id: str, status: str, within: float = 20
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        found = await system.referral_status(site, referral_id)
        return found if found["status"] == status else None

    return await eventually(reached, within=within, what=f"referral {status}", interval=0.2)


@dataclass(frozen=True)
class Page:
    """A page of one of the test's own offers, as the coach's phone received it."""

    phone: str
    body: str
    offer_id: UUID
    sent_at: datetime  # when notify handed it to the sandbox provider (UTC)


async def _page_of(
    system: System, referral_id: str, besides: frozenset[UUID] = frozenset()
) -> Page:
    """The first page of one of the referral's offers (other than `besides`).

    A page is the first message carrying its offer's link; the link's token names the
    offer, and the OfferMade on handoff.dispatch names the offer's referral. Never "the
    next new SMS": that can be another test's confirmation or notice.
    """
    signer = LinkSigner(system.env["NOTIFY_LINK_SECRET"])
    referral = UUID(referral_id)
    referral_of: dict[UUID, UUID | None] = {}

    async def paged() -> Page | None:
        firsts: dict[UUID, tuple[str, str, datetime]] = {}
        for phone, body, sent_at in await _sandbox_messages(system):
            link = LINK.search(body)
            offer_id = signer.offer_id(link.group(0).rsplit("/", 1)[1]) if link else None
            if offer_id is not None and offer_id not in firsts:
                firsts[offer_id] = (phone, body, sent_at)
        if firsts.keys() - referral_of.keys():
            # OfferMade is on handoff.dispatch before notify can page it.
            offers = await _offers_on_dispatch(system)
            referral_of.update({offer_id: offers.get(offer_id) for offer_id in firsts})
        for offer_id, (phone, body, sent_at) in firsts.items():
            if referral_of[offer_id] == referral and offer_id not in besides:
                return Page(phone, body, offer_id, sent_at)
        return None

    return await eventually(paged, within=10, what=f"a page for {referral_id}", interval=0.05)


async def _sandbox_messages(system: System) -> list[tuple[str, str, datetime]]:
    """Every (destination, body, sent_at) the sandbox phones received, oldest first."""
    rows = await system.rows(
        "SELECT destination, body, sent_at FROM notify.sandbox_messages ORDER BY sandbox_id"
    )
    return [(row["destination"], row["body"], row["sent_at"]) for row in rows]


async def _offers_on_dispatch(system: System) -> dict[UUID, UUID]:
    """Every offer on handoff.dispatch so far: offer id to referral id."""
    records = await read_topic(system.bootstrap_servers, Topic.DISPATCH)
    events = [decode_event(record.value) for record in records]
    return {e.data.offer_id: e.data.referral_id for e in events if isinstance(e.data, OfferMade)}


async def test_a_referral_is_paged_at_once_and_accepted_from_the_link(system: System) -> None:
    """Paged at once: the time from the referral's receipt to its page leaving for the
    provider, both as the services recorded them (not as this test's polling saw them).
    Well under a second on a quiet machine (`bench/e2e.py` measures it); the bound only
    tells "at once" from waiting on a deadline or a retry (tens of seconds), on a loaded
    runner too."""
    referral = await system.post_referral(MAIN_SITE)

    page = await _page_of(system, referral["id"])
    paged_after = (page.sent_at - datetime.fromisoformat(referral["received_at"])).total_seconds()
    assert paged_after < PAGED_AT_ONCE_SECONDS, f"the first page took {paged_after:.2f} s"
    assert page.phone in MAIN_PHONES
    assert page.body.startswith("Handoff: urgent request at Mercy ED.")
    async with httpx.AsyncClient(follow_redirects=True) as client:
        accepted = await client.post(link_in(page.body), data={"answer": "accepted"})
    assert "You accepted" in accepted.text or "Confirmed" in accepted.text

    status = await _status_becomes(system, MAIN_SITE, referral["id"], "accepted")
    assert [step["status"] for step in status["timeline"]] == ["received", "offered", "accepted"]


async def test_a_decline_pages_the_next_coach(system: System) -> None:
    referral = await system.post_referral(MAIN_SITE)
    first = await _page_of(system, referral["id"])
    async with httpx.AsyncClient(follow_redirects=True) as client:
        declined = await client.post(link_in(first.body), data={"answer": "declined"})
    assert "You declined" in declined.text

    second = await _page_of(system, referral["id"], besides=frozenset({first.offer_id}))
    assert {first.phone, second.phone} == MAIN_PHONES
    status = await system.referral_status(MAIN_SITE, referral["id"])
    assert status["status"] == "offered"


async def test_a_cancelled_referral_tells_the_paged_coach_and_the_link_says_so(
    system: System,
) -> None:
    referral = await system.post_referral(MAIN_SITE)
    page = await _page_of(system, referral["id"])
    await system.cancel(MAIN_SITE, referral["id"])
    async with httpx.AsyncClient() as client:

        async def notice_after_the_page() -> bool:
            # This module cancels no other referral, so a cancellation notice to the paged
            # phone after this referral's page is this referral's.
            bodies = await system.inbox(page.phone)
            told = (
                f"Handoff: the request {reply_code_in(page.body)} at Mercy ED was cancelled. "
                "No action needed."
            )
            return told in bodies[bodies.index(page.body) + 1 :]

        await eventually(notice_after_the_page, within=10, what="the cancellation notice")
        opened = await client.get(link_in(page.body))
    assert "The ED cancelled this request" in opened.text


async def test_nobody_answering_climbs_the_ladder_to_unassigned(system: System) -> None:
    referral = await system.post_referral(LADDER_SITE)

    # Four rungs, each paged and then left for its 2 s ack timeout (counted from the page):
    # on a loaded CI machine the walk takes longer than one step's 20 s.
    status = await _status_becomes(system, LADDER_SITE, referral["id"], "unassigned", within=90)
    paged = {name: await system.inbox(c.phone) for name, c in COACHES.items()}
    for rung in ("ladder-1", "ladder-2", "state", "supervisor"):
        assert len(paged[rung]) >= 1, f"{rung} was never paged"
    steps = [step["status"] for step in status["timeline"]]
    # Every rung was paged and let the ack timeout pass: the hospital reads "did not
    # answer" for each, never "not contacted", and the ladder ends in unassigned.
    assert steps.count("coach_did_not_answer") == steps.count("offered") >= 4
    assert "coach_not_contacted" not in steps
    assert [s for s in steps if not s.startswith("coach_")][-1] == "unassigned"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{system.matching.url}/metrics")).text
    assert re.search(
        rf'handoff_referrals_unassigned_total\{{[^}}]*site="{LADDER_SITE}"[^}}]*\}} 1\.0', metrics
    )


@pytest.fixture
def prometheus(system: System, tmp_path: Path) -> Iterator[str]:
    """Debian's Prometheus scraping the running services every second; yields its API URL."""
    port = free_ports(1)[0]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [
            {
                "job_name": f"handoff-{name}",
                "static_configs": [{"targets": [p.url.removeprefix("http://") for p in replicas]}],
            }
            for name, replicas in system.replicas.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with running(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
    ):  # fmt: skip
        yield f"http://127.0.0.1:{port}/api/v1"


async def test_prometheus_scrapes_every_service_and_loads_the_alert_rules(
    system: System, prometheus: str
) -> None:
    async def query(expr: str) -> list[dict[str, Any]] | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                found = await client.get(f"{prometheus}/query", params={"query": expr})
        except httpx.HTTPError:
            return None
        if found.status_code != 200:  # still starting
            return None
        result: list[dict[str, Any]] = found.json()["data"]["result"]
        return result or None

    async def every_job_up() -> list[dict[str, Any]] | None:
        up = await query('up{job=~"handoff-.*"} == 1')
        return up if up and len(up) == len(system.replicas) else None

    up = await eventually(every_job_up, within=30, what="all three services scraped and up")
    assert {series["metric"]["job"] for series in up} == {f"handoff-{n}" for n in system.replicas}
    for metric, job in (
        ("handoff_referrals_received_total", "handoff-referral"),
        ("handoff_offers_total", "handoff-matching"),
        ("handoff_pages_total", "handoff-notify"),
        ("handoff_ready", "handoff-notify"),
    ):
        selector = f'{metric}{{job="{job}"}}'
        assert await eventually(lambda s=selector: query(s), within=30, what=selector)  # type: ignore[misc]
    async with httpx.AsyncClient() as client:
        groups = (await client.get(f"{prometheus}/rules")).json()["data"]["groups"]
    defined = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    assert sum(len(g["rules"]) for g in groups) == sum(len(g["rules"]) for g in defined)


async def test_one_trace_follows_a_referral_from_the_api_through_kafka_to_the_page(
    system: System, otlp: OtlpCollector
) -> None:
    trace_id, correlation_id = uuid.uuid4().hex, f"trace-test-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient() as client:
        posted = await client.post(
            f"{system.referral.url}/v1/referrals",
            json=referral_body(f"e2e-{uuid.uuid4().hex[:10]}"),
            headers={
                "Authorization": f"Bearer {system.keys[MAIN_SITE]}",
                "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
                "X-Correlation-Id": correlation_id,
            },
        )
    assert posted.status_code == 201

    wanted = {
        ("handoff-referral", "POST /v1/referrals"),
        ("handoff-matching", "consume org.handoff.referral.created"),
        ("handoff-notify", "consume org.handoff.dispatch.offer_made"),
        ("handoff-referral", "consume org.handoff.dispatch.offer_made"),
    }

    async def traced() -> set[tuple[str, str]] | None:
        seen = {(s.service, s.name) for s in otlp.in_trace(trace_id)}
        return seen if wanted <= seen else None

    await eventually(traced, within=20, what="the referral's spans in every service")
    spans = {s.span_id: s for s in otlp.in_trace(trace_id)}
    consume = next(s for s in spans.values() if s.name == "consume org.handoff.referral.created")
    assert consume.parent_span_id in spans, "matching's span continues the referral's trace"

    async def logged() -> list[dict[str, Any]] | None:
        lines = (SERVICE_LOGS / "e2e-matching-0.log").read_text().splitlines()
        found = [json.loads(line) for line in lines if correlation_id in line]
        return found or None

    lines = await eventually(logged, within=20, what="matching's log lines for the referral")
    assert {line.get("trace_id") for line in lines} == {trace_id}


async def test_coach_page_spans_are_named_by_route_never_by_their_link_token(
    system: System, otlp: OtlpCollector
) -> None:
    referral = await system.post_referral(MAIN_SITE)
    link = link_in((await _page_of(system, referral["id"])).body)
    token = link.rsplit("/", 1)[1]
    trace_id = uuid.uuid4().hex
    async with httpx.AsyncClient() as client:
        traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
        assert (await client.get(link, headers={"traceparent": traceparent})).status_code == 200

    async def request_spans() -> list[ReceivedSpan] | None:
        return otlp.in_trace(trace_id) or None

    spans = await eventually(request_spans, within=20, what="the coach page's span")
    assert [(s.name, s.kind) for s in spans if s.kind == SPAN_KIND_SERVER] == [
        ("GET /p/{token}", SPAN_KIND_SERVER)
    ], "one server span per request, named by its route, and none from the framework"
    leaked = [s for s in otlp.spans if token in s.name or token in str(s.attributes)]
    assert not leaked, f"the link token reached the trace backend in {leaked}"
