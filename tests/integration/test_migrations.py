"""Migrations apply once, even when replicas start together, and refuse edited history."""

import asyncio

import asyncpg
import pytest

from handoff_platform.database import MigrationChanged, migrate
from handoff_referral.app import MIGRATIONS
from tests.integration.conftest import create_database


async def test_two_replicas_migrating_at_once_apply_each_file_once(database_url: str) -> None:
    database = await create_database(database_url)
    connections = [await asyncpg.connect(database) for _ in range(2)]
    try:
        applied = await asyncio.gather(*(migrate(c, "referral", MIGRATIONS) for c in connections))
        assert sorted(applied, key=len) == [
            [],
            [
                "handoff_platform.migrations:0001_outbox_and_inbox.sql",
                "handoff_platform.migrations:0002_timers.sql",
                "handoff_platform.migrations:0003_outbox_trace_context.sql",
                "handoff_platform.migrations:0004_audit_log.sql",
                "handoff_platform.migrations:0005_timer_deferrals.sql",
                "handoff_referral.adapters.migrations:0001_referrals.sql",
                "handoff_referral.adapters.migrations:0002_timeline_occurrences.sql",
                "handoff_referral.adapters.migrations:0003_hl7_interfaces.sql",
                "handoff_referral.adapters.migrations:0004_fhir_clients.sql",
                "handoff_referral.adapters.migrations:0005_webhooks.sql",
                "handoff_referral.adapters.migrations:0006_timeline_details.sql",
                "handoff_referral.adapters.migrations:0007_webhook_abandoned.sql",
                "handoff_referral.adapters.migrations:0008_follow_ups.sql",
                "handoff_referral.adapters.migrations:0009_location_sent_at.sql",
            ],
        ]
        ledger = await connections[0].fetchval("SELECT count(*) FROM referral.schema_migrations")
        assert ledger == 14
        assert await migrate(connections[0], "referral", MIGRATIONS) == []

        await connections[0].execute(
            "UPDATE referral.schema_migrations SET checksum = 'edited' "
            "WHERE name LIKE 'handoff_referral%'"
        )
        with pytest.raises(MigrationChanged, match=r"0001_referrals\.sql changed"):
            await migrate(connections[0], "referral", MIGRATIONS)
    finally:
        for connection in connections:
            await connection.close()
