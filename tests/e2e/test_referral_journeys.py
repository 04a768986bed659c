"""A referral's journeys through the three services, as the hospital and the coaches see them."""

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from handoff_devenv.ports import free_ports
from tests.e2e.conftest import COACHES, LADDER_SITE, MAIN_SITE, System
from tests.support.notify import link_in
from tests.support.otlp import SPAN_KIND_SERVER, OtlpCollector, ReceivedSpan
from tests.support.patients import SERVICE_LOGS, referral_body
from tests.support.processes import running
from tests.support.waiting import eventually

ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy/prometheus/alerts.yml"
MAIN_PHONES = {COACHES["main-1"].phone, COACHES["main-2"].phone}


async def _status_becomes(
    system: System, site: str, referral_id: str, status: str
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        found = await system.referral_status(site, referral_id)
        return found if found["status"] == status else None

    return await eventually(reached, within=20, what=f"referral {status}", interval=0.2)


async def _first_page(system: System, phones: set[str], before: dict[str, int]) -> tuple[str, str]:
    """The first new page to any of `phones`: (phone, body)."""

    async def paged() -> tuple[str, str] | None:
        for phone in phones:
            bodies = await system.inbox(phone)
            if len(bodies) > before[phone]:
                return phone, bodies[before[phone]]
        return None

    return await eventually(paged, within=10, what="a page", interval=0.05)


async def _counts(system: System, phones: set[str]) -> dict[str, int]:
    return {phone: len(await system.inbox(phone)) for phone in phones}


async def test_a_referral_is_paged_within_2_s_and_accepted_from_the_link(system: System) -> None:
    before = await _counts(system, MAIN_PHONES)
    referral = await system.post_referral(MAIN_SITE)
    answered = time.monotonic()

    _, body = await _first_page(system, MAIN_PHONES, before)
    paged_after = time.monotonic() - answered
    assert paged_after < 2.0, f"the first page took {paged_after:.2f} s"
    assert body.startswith("Handoff: urgent ED request at Mercy ED. Reply 1 to accept")
    async with httpx.AsyncClient(follow_redirects=True) as client:
        accepted = await client.post(link_in(body), data={"answer": "accepted"})
    assert "You accepted" in accepted.text or "Confirmed" in accepted.text

    status = await _status_becomes(system, MAIN_SITE, referral["id"], "accepted")
    assert [step["status"] for step in status["timeline"]] == ["received", "offered", "accepted"]


async def test_a_decline_pages_the_next_coach(system: System) -> None:
    before = await _counts(system, MAIN_PHONES)
    referral = await system.post_referral(MAIN_SITE)
    first_phone, body = await _first_page(system, MAIN_PHONES, before)
    async with httpx.AsyncClient(follow_redirects=True) as client:
        declined = await client.post(link_in(body), data={"answer": "declined"})
    assert "You declined" in declined.text

    second_phone, _ = await _first_page(system, MAIN_PHONES - {first_phone}, before)
    assert second_phone != first_phone
    status = await system.referral_status(MAIN_SITE, referral["id"])
    assert status["status"] == "offered"


async def test_a_cancelled_referral_tells_the_paged_coach_and_the_link_says_so(
    system: System,
) -> None:
    before = await _counts(system, MAIN_PHONES)
    referral = await system.post_referral(MAIN_SITE)
    phone, body = await _first_page(system, MAIN_PHONES, before)
    async with httpx.AsyncClient() as client:
        cancelled = await client.post(
            f"{system.referral.url}/v1/referrals/{referral['id']}/cancel",
            json={"reason": "patient_left"},
            headers={"Authorization": f"Bearer {system.keys[MAIN_SITE]}"},
        )
        assert cancelled.status_code == 200, cancelled.text

        notice = (await system.page(phone, before[phone] + 2))[-1]
        page = await client.get(link_in(body))
    assert notice == "Handoff: the request at Mercy ED was cancelled. No action needed."
    assert "The ED cancelled this request" in page.text


async def test_nobody_answering_climbs_the_ladder_to_unassigned(system: System) -> None:
    referral = await system.post_referral(LADDER_SITE)

    status = await _status_becomes(system, LADDER_SITE, referral["id"], "unassigned")
    paged = {name: await system.inbox(c.phone) for name, c in COACHES.items()}
    for rung in ("ladder-1", "ladder-2", "state", "supervisor"):
        assert len(paged[rung]) >= 1, f"{rung} was never paged"
    assert status["timeline"][-1]["status"] == "unassigned"
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
    before = await _counts(system, MAIN_PHONES)
    await system.post_referral(MAIN_SITE)
    _, body = await _first_page(system, MAIN_PHONES, before)
    link = link_in(body)
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
