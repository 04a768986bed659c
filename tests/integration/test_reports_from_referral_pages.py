"""Program reports fed by the real producers (issue #16, fresh-eyes finding 1): a visit
recorded on the referral service's /v/ page, its first follow-up falling due and a
no-answer recorded on the /f/ page reach the reports read model as VisitRecorded,
FollowUpDue and FollowUpAttempted, and count in the site's figures for the month they
happened in.

The referral service runs in process on the session's Kafka and database; the test stands
in for matching (offer, assignment, follow-up assignment), as test_referral_follow_ups
does. The reports service runs in process with a database and a consumer group of its
own; the test finds its own referral and task by id. The figures asserted are the raw
per-site counts (before the small-cell rule, which would withhold a count of 1) and the
read model's rows, which are internal.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker

from handoff_platform.kafka import make_broker
from handoff_platform.links import FOLLOW_UP_LINK, VISIT_LINK, LinkSigner
from handoff_referral.app import ReferralRuntime
from handoff_reports.adapters.read_model import month_facts
from handoff_reports.app import ReportsRuntime
from handoff_reports.domain.figures import Month, site_months
from handoff_reports.settings import ReportsSettings
from tests.integration.conftest import HospitalFactory, create_database
from tests.integration.test_referral_follow_ups import (
    CONSENTING,
    _assigned,
    _assignment_kept,
    _completed_visit,
    _fire,
    _tasks,
)
from tests.support.follow_ups import FOLLOW_UP_LINK_SECRET
from tests.support.kafka import send
from tests.support.waiting import eventually

VISITS = LinkSigner(FOLLOW_UP_LINK_SECRET, VISIT_LINK)
FOLLOW_UPS = LinkSigner(FOLLOW_UP_LINK_SECRET, FOLLOW_UP_LINK)


@pytest.fixture
async def stand_in_matching(kafka_topics: str) -> AsyncIterator[KafkaBroker]:
    broker = make_broker(kafka_topics, client_id="stand-in-for-matching-reports-16")
    async with broker:
        yield broker


@pytest.fixture
async def reports(database_url: str, kafka_topics: str) -> AsyncIterator[ReportsRuntime]:
    """The reports service on the session's topics, its own database and consumer group."""
    runtime = await ReportsRuntime.start(
        ReportsSettings(
            database_url=await create_database(database_url),
            kafka_bootstrap_servers=kafka_topics,
            consumer_group=f"handoff-reports-{uuid.uuid4().hex[:8]}",
        )
    )
    try:
        await eventually(
            lambda: _connected(runtime), within=60, what="reports on Kafka", interval=0.2
        )
        yield runtime
    finally:
        await runtime.stop()


async def _connected(runtime: ReportsRuntime) -> bool:
    return runtime.kafka_connected.is_set()


def _month_of(moment: datetime) -> Month:
    at = moment.astimezone(UTC)
    return Month(at.year, at.month)


async def test_a_visit_and_its_follow_up_recorded_on_the_pages_count_in_the_report(
    referral: ReferralRuntime,
    reports: ReportsRuntime,
    hospital: HospitalFactory,
    stand_in_matching: KafkaBroker,
) -> None:
    ed = await hospital()
    site_id = ed.site.site_id
    referral_id, offer_id, coach_id = await _completed_visit(ed, stand_in_matching)
    pages = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=referral.app), base_url="http://referral"
    )
    async with pages:
        saved = await pages.post(f"/v/{VISITS.token(offer_id)}", data=CONSENTING)
        assert saved.status_code == 303, saved.text

        day_one = (await _tasks(referral.pool, referral_id))[0]
        await _fire(referral.pool, day_one["task_id"])
        [due] = [t for t in await _tasks(referral.pool, referral_id) if t["window_days"] == 1]
        assignment = _assigned(referral_id, due, 1, coach_id, datetime.now(UTC))
        await send(stand_in_matching, assignment)
        await eventually(
            lambda: _assignment_kept(referral.pool, assignment.assignment_id),
            within=30,
            what="the follow-up assignment",
        )
        answered = await pages.post(
            f"/f/{FOLLOW_UPS.token(assignment.assignment_id)}", data={"result": "no_answer"}
        )
        assert answered.status_code == 200, answered.text

    async with reports.pipeline.pool.acquire() as connection:

        async def counted() -> tuple[asyncpg.Record, asyncpg.Record] | None:
            visit = await connection.fetchrow(
                """SELECT site_id, visit_recorded_at, visit_outcomes
                   FROM reports.referral_facts WHERE referral_id = $1""",
                referral_id,
            )
            task = await connection.fetchrow(
                """SELECT site_id, window_days, due_at, attempted_at
                   FROM reports.follow_up_facts WHERE task_id = $1""",
                day_one["task_id"],
            )
            if visit is None or visit["visit_recorded_at"] is None:
                return None
            if task is None or task["attempted_at"] is None:
                return None
            return visit, task

        visit, task = await eventually(
            counted, within=30, what="the visit and follow-up in the read model", interval=0.2
        )
        assert visit["site_id"] == site_id
        assert sorted(visit["visit_outcomes"]) == ["moud", "naloxone_kit"]
        assert (task["site_id"], task["window_days"]) == (site_id, 1)
        assert task["due_at"] is not None

        # The site's figures for the months these happened in (raw counts: 1 each).
        visit_month = _month_of(visit["visit_recorded_at"])
        referrals, follow_ups = await month_facts(connection, visit_month, site_id=site_id)
        [figures] = site_months(visit_month, referrals, follow_ups)
        assert figures.counts["visit_outcome_moud"] == 1
        assert figures.counts["visit_outcome_naloxone_kit"] == 1
        for moment, column in (
            (task["due_at"], "follow_ups_due_1d"),
            (task["attempted_at"], "follow_ups_attempted_1d"),
        ):
            month = _month_of(moment)
            referrals, follow_ups = await month_facts(connection, month, site_id=site_id)
            [figures] = site_months(month, referrals, follow_ups)
            assert figures.counts[column] == 1, column
