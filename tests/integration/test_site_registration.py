"""A site registered with the referral service is known to matching before its first
referral: its on-call coverage is reported from the start (decision 0004). A site's facts
changed with `site update` reach matching and every referral received after the change."""

import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from handoff_devenv import KafkaCluster
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_referral.app import ReferralRuntime
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import ReferralCreated
from tests.integration.conftest import (
    create_database,
    handoff_command,
    handoff_run,
    start_referral,
)
from tests.support.kafka import read_topic
from tests.support.patients import referral_body
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


def add_site(
    database: str, short_name: str, state: str, zone: str
) -> subprocess.CompletedProcess[str]:
    """`handoff referral site add` for the site `de-rename`, as an operator runs it."""
    return handoff(
        database, "site", "add", "--id", "de-rename", "--name", "Rename General",
        "--short-name", short_name, "--state", state, "--time-zone", zone,
    )  # fmt: skip


def handoff(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`handoff referral …`, whatever its exit status."""
    return handoff_run("referral", *args, database_url=database)


async def test_a_site_updated_reaches_matching_and_the_next_referral_and_its_key_cache(
    services: tuple[str, ReferralRuntime, MatchingRuntime], own_kafka: KafkaCluster
) -> None:
    """The helper's finding (stop 28): `site add` again said "already exists", exited 0 and
    changed nothing, and nothing else could change a site. The key used before the change
    is cached with the site's facts: the next referral must carry the new ones all the same."""
    database, referral, matching = services
    assert add_site(database, "Old Name ED", "DE", "America/New_York").returncode == 0
    token = handoff_command("referral", "key", "create", "--site", "de-rename", "--label", "EHR",
                            database_url=database).strip()  # fmt: skip
    transport = httpx.ASGITransport(app=matching.app)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def facts_in_matching(short_name: str) -> dict[str, str] | None:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://m", headers=admin
        ) as api:
            sites = (await api.get("/v1/admin/sites")).json()
        site = next((s for s in sites if s["site_id"] == "de-rename"), None)
        return site if site and site["short_name"] == short_name else None

    async def post_referral() -> uuid.UUID:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=referral.app),
            base_url="http://r",
            headers={"Authorization": f"Bearer {token}"},
        ) as api:
            response = await api.post(
                "/v1/referrals", json=referral_body(f"ED-{uuid.uuid4().hex[:8]}")
            )
        assert response.status_code == 201, response.text
        return uuid.UUID(response.json()["id"])

    await eventually(lambda: facts_in_matching("Old Name ED"), within=30, what="the site")
    before = await post_referral()  # the key is cached now, with the old facts

    updated = handoff(database, "site", "update", "--id", "de-rename", "--short-name",
                      "New Name ED", "--state", "MD", "--time-zone", "America/Chicago")  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.strip() == "site de-rename updated: short name, state, time zone"

    facts = await eventually(
        lambda: facts_in_matching("New Name ED"), within=30, what="the new facts in matching"
    )
    assert (facts["state"], facts["time_zone"]) == ("MD", "America/Chicago")
    after = await post_referral()
    created = await eventually(
        lambda: referrals_created(own_kafka.bootstrap_servers, {before, after}),
        within=30,
        what="both referrals on handoff.referrals",
    )
    assert created[before]["short_name"] == "Old Name ED"
    assert created[after] == {
        "site_id": "de-rename",
        "short_name": "New Name ED",
        "state": "MD",
        "time_zone": "America/Chicago",
    }


async def referrals_created(bootstrap: str, ids: set[uuid.UUID]) -> dict[uuid.UUID, Any] | None:
    """The site facts each of `ids`' ReferralCreated carries, once all are on the topic."""
    found = {}
    for record in await read_topic(bootstrap, Topic.REFERRALS):
        headers = dict(record.headers or ())
        if headers.get("ce_type") != ReferralCreated.event_type.encode():
            continue
        event = decode_event(record.value or b"").data
        if event.referral_id in ids:
            found[event.referral_id] = event.site.model_dump()
    return found if set(found) == ids else None


async def test_site_add_again_with_other_details_is_refused_and_update_says_what_it_did(
    database_url: str,
) -> None:
    """A script re-running its `site add` must not believe it renamed the site."""
    database = await create_database(database_url)
    assert handoff(database, "migrate").returncode == 0
    first = add_site(database, "Old Name ED", "DE", "America/New_York")
    assert first.returncode == 0
    assert "site de-rename added" in first.stdout

    again = add_site(database, "Old Name ED", "DE", "America/New_York")
    assert again.returncode == 0
    assert "site de-rename already exists" in again.stdout

    other = add_site(database, "New Name ED", "DE", "America/Denver")
    assert other.returncode == 1
    assert "already exists with another short name, time zone" in other.stderr
    assert "handoff referral site update --id de-rename" in other.stderr

    same = handoff(database, "site", "update", "--id", "de-rename", "--state", "DE")
    assert (same.returncode, same.stdout.strip()) == (0, "site de-rename unchanged")
    unknown = handoff(database, "site", "update", "--id", "de-nowhere", "--state", "MD")
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "no site de-nowhere")
    # fresh29: each of these was accepted, the line break then shown in a coach's text.
    for option, value, field in [
        ("--state", "XX", "state"),
        ("--name", "   ", "name"),
        ("--short-name", "Rename\nED", "short_name"),
    ]:
        refused = handoff(database, "site", "update", "--id", "de-rename", option, value)
        assert refused.returncode == 2, refused.stdout
        assert f"invalid site: {field}:" in refused.stderr
    other_days = handoff(database, "site", "add", "--id", "de-rename", "--name", "Rename General",
                         "--short-name", "Old Name ED", "--state", "DE",
                         "--time-zone", "America/New_York", "--follow-up-days", "2,14")  # fmt: skip
    assert other_days.returncode == 1
    assert "another follow-up days" in other_days.stderr
    assert "follow-ups schedule --site de-rename" in other_days.stderr
    no_days = handoff(database, "site", "add", "--id", "de-rename", "--name", "Rename General",
                      "--short-name", "Old Name ED", "--state", "DE",
                      "--time-zone", "America/New_York", "--follow-up-days", "")  # fmt: skip
    assert no_days.returncode == 2
    assert "invalid site: follow_up_days" in no_days.stderr
    bad = handoff(database, "site", "update", "--id", "de-rename", "--time-zone", "Mars/Base")
    assert bad.returncode == 2
    assert "invalid site: time_zone:" in bad.stderr
    long_name = handoff(database, "site", "update", "--id", "de-rename", "--short-name", "x" * 41)
    assert long_name.returncode == 2
    assert "short_name" in long_name.stderr
    renamed = handoff(database, "site", "update", "--id", "de-rename", "--name", "Rename Regional")
    assert (renamed.returncode, renamed.stdout.strip()) == (0, "site de-rename updated: name")
