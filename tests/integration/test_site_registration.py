"""A site registered with the referral service is known to matching before its first
referral: its on-call coverage is reported from the start (decision 0004)."""

from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from handoff_devenv import KafkaCluster
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_referral.app import ReferralRuntime
from handoff_schemas import Topic
from tests.integration.conftest import create_database, handoff_command, start_referral
from tests.support.waiting import eventually

ADMIN_TOKEN = "coordinator-secret"


@pytest.fixture
async def services(
    database_url: str, own_kafka: KafkaCluster
) -> AsyncIterator[tuple[str, ReferralRuntime, MatchingRuntime]]:
    database = await create_database(database_url)
    referral = await start_referral(database, own_kafka.bootstrap_servers)
    matching = await MatchingRuntime.start(
        MatchingSettings(
            database_url=database,
            kafka_bootstrap_servers=own_kafka.bootstrap_servers,
            matching_admin_token=ADMIN_TOKEN,
            coverage_interval_seconds=0.5,
        )
    )
    try:
        yield database, referral, matching
    finally:
        await matching.stop()
        await referral.stop()


async def test_a_new_site_has_coverage_reported_before_any_referral(
    services: tuple[str, ReferralRuntime, MatchingRuntime],
) -> None:
    database, _, matching = services
    transport = httpx.ASGITransport(app=matching.app)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://m", headers=headers) as api:
        unknown = await api.get("/v1/admin/sites/vt-newport/coverage?days=1")
        assert unknown.status_code == 404

        added = handoff_command(
            "referral", "site", "add", "--id", "vt-newport", "--name", "North Country Hospital",
            "--short-name", "Newport ED", "--state", "VT", "--time-zone", "America/New_York",
            database_url=database,
        )  # fmt: skip
        assert "site vt-newport added" in added

        async def covered() -> httpx.Response | None:
            response = await api.get("/v1/admin/sites/vt-newport/coverage?days=1")
            return response if response.status_code == 200 else None

        coverage = await eventually(covered, within=30, what="matching to learn of the site")

    # Nobody is on its rota yet: the whole day is one gap, and the metrics say so.
    [gap] = coverage.json()["gaps"]
    assert gap["minutes"] >= 24 * 60 - 1

    async def uncovered_in_metrics() -> bool:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            text = (await client.get("/metrics")).text
        return 'handoff_coverage_uncovered_now{site="vt-newport"} 1.0' in text

    await eventually(uncovered_in_metrics, within=10, what="the site uncovered in the metrics")


async def test_site_facts_are_kept_past_retention_and_referral_events_are_not(
    kafka_topics: str,
) -> None:
    """A consumer starting from scratch (a new matching database) must still find every
    site ever registered; a referral's events expire with the topic's retention."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_topics)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in Topic]
        )
    finally:
        await admin.close()
    policies = {
        name: dict((entry[0], entry[1]) for entry in entries)["cleanup.policy"]
        for response in responses
        for _, _, _, name, entries in response.resources
    }
    assert policies == {
        Topic.SITES: "compact",
        Topic.REFERRALS: "delete",
        Topic.DISPATCH: "delete",
        Topic.PAGES: "delete",
    }
