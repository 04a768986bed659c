"""Program reports on real Kafka and PostgreSQL (issue #16): a seeded month of events, as
the referral, matching and notify services publish them, gives figures computed here by
hand; the small-cell rule holds; the CSV reads back with the documented columns; a
redelivered event changes nothing.

A broker of its own, so other tests' referrals do not enter the read model.
"""

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY

from handoff_devenv import KafkaCluster
from handoff_platform.kafka import ensure_topics, make_broker
from handoff_reports import CONSUMER_GROUP
from handoff_reports.app import ReportsRuntime
from handoff_reports.domain.suppression import CSV_COLUMNS
from handoff_reports.settings import ReportsSettings
from handoff_schemas import Envelope
from handoff_schemas.events import (
    CoachAssigned,
    FollowUpAttempted,
    ReferralCreated,
    SiteFacts,
    VisitRecorded,
)
from tests.integration.conftest import create_database, handoff_command
from tests.support.kafka import send
from tests.support.reports import seeded_month
from tests.support.waiting import eventually

TOKEN = "reports-secret"
MONTH = "2026-10"
BASE = datetime(2026, 10, 5, 8, tzinfo=UTC)
BIG = SiteFacts(site_id="ri-big", short_name="Big ED", state="RI", time_zone="America/New_York")
SMALL = SiteFacts(
    site_id="ri-small", short_name="Small ED", state="RI", time_zone="America/New_York"
)
OTHER = SiteFacts(site_id="ma-far", short_name="Far ED", state="MA", time_zone="America/New_York")


@dataclass
class Published:
    """What the test put on the topics, to count and to send again."""

    envelopes: list[Envelope[Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
async def reports_database(database_url: str) -> str:
    return await create_database(database_url)


@pytest.fixture(scope="module")
async def reports(reports_database: str, own_kafka: KafkaCluster) -> AsyncIterator[ReportsRuntime]:
    await ensure_topics(own_kafka.bootstrap_servers)
    runtime = await ReportsRuntime.start(
        ReportsSettings(
            database_url=reports_database,
            kafka_bootstrap_servers=own_kafka.bootstrap_servers,
            reports_admin_token=TOKEN,
        )
    )

    async def connected() -> bool:
        return runtime.kafka_connected.is_set()

    await eventually(connected, within=60, what="reports on Kafka")
    yield runtime
    await runtime.stop()


@pytest.fixture(scope="module")
async def services(own_kafka: KafkaCluster) -> AsyncIterator[KafkaBroker]:
    """Stands in for the referral, matching and notify services, which publish these."""
    broker = make_broker(own_kafka.bootstrap_servers, client_id="stand-in")
    async with broker:
        yield broker


@pytest.fixture(scope="module")
async def api(reports: ReportsRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=reports.app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://reports",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


@pytest.fixture(scope="module")
async def seeded(
    reports: ReportsRuntime, services: KafkaBroker, reports_database: str
) -> Published:
    """The month published, and every event of it in the read model (each one recorded as
    processed by the reports' consumer)."""
    published = Published()
    for payload in seeded_month(BIG, SMALL, OTHER, BASE):
        published.envelopes.append(await send(services, payload))
    expected = len(published.envelopes)

    async def all_processed() -> bool:
        connection = await asyncpg.connect(reports_database)
        try:
            count = await connection.fetchval(
                "SELECT count(*) FROM reports.processed_events WHERE consumer_group = $1",
                CONSUMER_GROUP,
            )
        finally:
            await connection.close()
        return bool(count == expected)

    await eventually(all_processed, within=90, what=f"{expected} events in the read model")
    return published


def _figures(document: dict[str, Any], site_id: str) -> dict[str, Any]:
    [site] = [s for s in document["sites"] if s["site_id"] == site_id]
    return {
        name: cell["value"] if not cell["suppressed"] else "<11"
        for name, cell in site["figures"].items()
    }


EXPECTED_BIG = {
    "referrals_received": 13,
    # First pages after 1..13 minutes: p50 rank ceil(6.5) = 7, p90 rank ceil(11.7) = 12.
    "minutes_to_first_page_p50": 7.0,
    "minutes_to_first_page_p90": 12.0,
    # Accepted after 2, 4, ... 24 minutes (12 values): ranks 6 and ceil(10.8) = 11.
    "minutes_to_acceptance_p50": 12.0,
    "minutes_to_acceptance_p90": 22.0,
    "minutes_to_bedside_p50": 60.0,
    "minutes_to_bedside_p90": 110.0,
    "accepted_site": "<11",  # 9
    "accepted_state_pool": "<11",  # 2
    "accepted_supervisor": "<11",  # 1
    "unassigned": "<11",  # 1
    "expired": "<11",  # 1
    "visits_completed": 12,
    "visit_outcome_naloxone_kit": 12,
    "visit_outcome_moud": "<11",  # 6
    "visit_outcome_none": 0,
    "follow_ups_due_1d": 12,
    "follow_ups_attempted_1d": 12,
    "follow_ups_reached_1d": 11,
    "follow_ups_due_30d": 0,
    "follow_up_outcome_recovery_support": 11,
    "referrals_cancelled": 0,
}


async def test_a_seeded_month_gives_the_figures_computed_by_hand(
    seeded: Published, api: httpx.AsyncClient
) -> None:
    response = await api.get("/v1/reports/monthly", params={"month": MONTH})
    assert response.status_code == 200, response.text
    document = response.json()
    assert [(s["state"], s["site_id"]) for s in document["sites"]] == [
        ("RI", "ri-big"),
        ("RI", "ri-small"),
    ]  # ma-far had nothing in October
    big = _figures(document, "ri-big")
    assert {name: big[name] for name in EXPECTED_BIG} == EXPECTED_BIG
    small = _figures(document, "ri-small")
    # 3 referrals, 3 unassigned: every non-zero count suppressed; no percentile to give.
    assert small["referrals_received"] == small["unassigned"] == "<11"
    assert small["minutes_to_first_page_p50"] is None
    assert small["visits_completed"] == 0


async def test_no_published_count_is_between_1_and_10(
    seeded: Published, api: httpx.AsyncClient
) -> None:
    document = (await api.get("/v1/reports/monthly", params={"month": MONTH})).json()
    for site in document["sites"]:
        for name, cell in site["figures"].items():
            if cell["suppressed"]:
                assert cell["value"] is None, name
            elif not name.startswith("minutes_to_"):
                assert cell["value"] == 0 or cell["value"] >= 11, (site["site_id"], name)


async def test_the_csv_has_the_documented_columns_and_the_cli_writes_the_same(
    seeded: Published, api: httpx.AsyncClient, reports_database: str, tmp_path: Path
) -> None:
    response = await api.get(
        "/v1/reports/monthly",
        params={"month": MONTH, "state": "RI"},
        headers={"Accept": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="handoff-report-2026-10-RI.csv"' in response.headers["content-disposition"]
    text = response.content.decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = {row["site_id"]: row for row in reader}
    assert set(rows) == {"ri-big", "ri-small"}
    assert rows["ri-big"]["month"] == "2026-10"
    assert rows["ri-big"]["referrals_received"] == "13"
    assert rows["ri-big"]["accepted_site"] == "<11"
    assert rows["ri-small"]["referrals_received"] == "<11"
    by_format = await api.get(
        "/v1/reports/monthly", params={"month": MONTH, "state": "RI", "format": "csv"}
    )
    assert by_format.text == text

    output = tmp_path / "funder.csv"
    handoff_command(
        "reports", "write", "--month", MONTH, "--state", "RI", "--format", "csv",
        "--output", str(output),
        database_url=reports_database,
    )  # fmt: skip
    assert output.read_bytes() == response.content
    only_small = await api.get(
        "/v1/reports/monthly", params={"month": MONTH, "site_id": "ri-small", "format": "csv"}
    )
    assert [row["site_id"] for row in csv.DictReader(io.StringIO(only_small.text))] == ["ri-small"]


def _duplicates() -> float:
    return sum(
        REGISTRY.get_sample_value(
            "handoff_events_consumed_total",
            {"group": CONSUMER_GROUP, "event_type": kind.event_type, "outcome": "duplicate"},
        )
        or 0.0
        for kind in (ReferralCreated, CoachAssigned, FollowUpAttempted, VisitRecorded)
    )


async def test_a_redelivered_event_changes_nothing(
    seeded: Published, api: httpx.AsyncClient, services: KafkaBroker
) -> None:
    before = (await api.get("/v1/reports/monthly", params={"month": MONTH})).json()
    again = [
        e
        for e in seeded.envelopes
        if isinstance(e.data, ReferralCreated | CoachAssigned | FollowUpAttempted | VisitRecorded)
    ]
    duplicates_before = _duplicates()
    for envelope in again:
        await send(services, envelope.data, event_id=envelope.id)

    async def skipped() -> bool:
        return _duplicates() - duplicates_before >= len(again)

    await eventually(skipped, within=60, what="the redelivered events skipped as duplicates")
    after = (await api.get("/v1/reports/monthly", params={"month": MONTH})).json()
    assert after["sites"] == before["sites"]


async def test_the_api_needs_the_token_and_names_a_bad_field(
    reports: ReportsRuntime, api: httpx.AsyncClient
) -> None:
    transport = httpx.ASGITransport(app=reports.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://reports") as anonymous:
        refused = await anonymous.get("/v1/reports/monthly", params={"month": MONTH})
    assert refused.status_code == 401
    for params, name in (
        ({"month": "2026-13"}, "month"),
        ({"month": "0000-01"}, "month"),
        ({"month": "\uff12026-12"}, "month"),  # a full-width 2 is not an ASCII digit
        ({"month": "2026-\u0661\u0662"}, "month"),
        ({}, "month"),
        ({"month": MONTH, "state": "rhode"}, "state"),
        ({"month": MONTH, "site_id": "X;drop"}, "site_id"),
        ({"month": MONTH, "format": "xlsx"}, "format"),
    ):
        response = await api.get("/v1/reports/monthly", params=params)
        assert response.status_code == 422, (params, response.text)
        assert name in response.text, (params, response.text)
        if params.get("month", MONTH) != MONTH:
            # One error code for every bad month, whatever is wrong with it.
            error = response.json()["error"]
            assert error["code"] == "invalid_request", (params, error)
            assert [(f["field"], f["code"]) for f in error["fields"]] == [
                ("month", "string_pattern_mismatch")
            ], (params, error)


async def test_the_read_model_keeps_no_patient_or_briefing_data(
    seeded: Published, reports_database: str
) -> None:
    """The events held a callback phone and a location (ReferralCreated, OfferMade's
    briefing); no table of the reports schema has either."""
    connection = await asyncpg.connect(reports_database)
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'reports'"
        )
        stored = [
            row[0]
            for table in tables
            for row in await connection.fetch(
                f'SELECT row_to_json(t)::text FROM reports."{table["table_name"]}" t'
            )
        ]
    finally:
        await connection.close()
    assert any("ri-big" in text for text in stored)  # the scan reads the facts
    for secret in ("+14015550123", "4015550123", "ED bay", "+14105550100"):
        assert not [text for text in stored if secret in text], secret
