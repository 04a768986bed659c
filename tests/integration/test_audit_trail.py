"""The audit trail (issue #16, decision 0024) on real PostgreSQL and Kafka: each access path of
the referral service leaves exactly one entry with the right who, what and why; the table
refuses UPDATE, DELETE and TRUNCATE; the admin API and the CLI export the entries; no entry
holds patient data."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from handoff_platform.audit import AuditRecord, entries
from handoff_referral import SCHEMA, webhook_admin
from handoff_referral.adapters import fhir_store
from handoff_referral.app import ReferralRuntime
from handoff_referral.settings import ReferralSettings
from tests.integration.conftest import create_database, handoff_command, register_site
from tests.support.fhir import ClientKeys, token_form, transaction_bundle
from tests.support.patients import PHI_MARKERS, record_page_body, referral_body
from tests.support.status_receiver import StatusReceiver
from tests.support.stored_rows import leaks, stored_rows
from tests.support.waiting import eventually

ADMIN_TOKEN = "audit-admin-token"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
CALLBACK_PHONE = "+14105550100"  # referral_body's: contact data an entry must never hold


@pytest.fixture(scope="module")
async def runtime(database_url: str, kafka_topics: str) -> AsyncIterator[ReferralRuntime]:
    """The referral service in-process on a database of the module's own: its audit table
    holds only this module's entries."""
    settings = ReferralSettings(
        database_url=await create_database(database_url),
        kafka_bootstrap_servers=kafka_topics,
        consumer_group=f"handoff-referral-audit-{uuid.uuid4().hex[:6]}",
        referral_admin_token=ADMIN_TOKEN,
        webhook_allow_http=True,
        webhook_poll_seconds=0.05,
    )
    runtime = await ReferralRuntime.start(settings)
    try:
        yield runtime
    finally:
        await runtime.stop()


def _client(runtime: ReferralRuntime, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=runtime.app), base_url="http://referral", headers=headers
    )


async def _entries_of(runtime: ReferralRuntime, record_id: str) -> list[AuditRecord]:
    far = timedelta(days=1)
    now = datetime.now(UTC)
    async with runtime.pool.acquire() as connection:
        found = await entries(connection, SCHEMA, now - far, now + far)
    return [entry for entry in found if entry.record_id == record_id]


async def _post_referral(client: httpx.AsyncClient) -> str:
    created = await client.post("/v1/referrals", json=referral_body(f"ED-{uuid.uuid4().hex[:8]}"))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_a_hospital_get_is_one_entry_with_its_key_and_a_miss_is_none(
    runtime: ReferralRuntime,
) -> None:
    _, key_id, token = await register_site(runtime)
    async with _client(runtime, token) as client:
        referral_id = await _post_referral(client)
        assert await _entries_of(runtime, referral_id) == [], "a POST is not a look"
        read = await client.get(f"/v1/referrals/{referral_id}")
        assert read.status_code == 200, read.text
        missing_id = str(uuid.uuid4())
        assert (await client.get(f"/v1/referrals/{missing_id}")).status_code == 404

    [entry] = await _entries_of(runtime, referral_id)
    assert (entry.actor_kind, entry.actor_id) == ("api_key", key_id)
    assert (entry.record_kind, entry.purpose) == ("referral", "treatment")
    assert {"patient", "callback_phone", "notes", "timeline"} <= set(entry.fields)
    assert entry.client_address == "127.0.0.1"
    assert await _entries_of(runtime, missing_id) == []


async def test_a_list_is_one_entry_per_referral_on_the_page_only(
    runtime: ReferralRuntime,
) -> None:
    _, key_id, token = await register_site(runtime)
    async with _client(runtime, token) as client:
        first, second = [await _post_referral(client) for _ in range(2)]
        page = await client.get("/v1/referrals", params={"limit": 1})
        assert page.status_code == 200, page.text
        assert [r["id"] for r in page.json()["items"]] == [first]
        assert await _entries_of(runtime, second) == [], "the look-ahead row is not shown"
        rest = await client.get(
            "/v1/referrals", params={"limit": 1, "cursor": page.json()["next_cursor"]}
        )
        assert [r["id"] for r in rest.json()["items"]] == [second]

    for referral_id in (first, second):
        [entry] = await _entries_of(runtime, referral_id)
        assert (entry.actor_kind, entry.actor_id, entry.purpose) == ("api_key", key_id, "treatment")
        assert "patient" in entry.fields


async def test_a_fhir_read_and_a_search_are_one_entry_each_with_the_client(
    runtime: ReferralRuntime,
) -> None:
    site, _, _ = await register_site(runtime)
    keys, client_id = ClientKeys(), f"hfc_{uuid.uuid4().hex[:16]}"
    async with runtime.pool.acquire() as connection:
        await fhir_store.add_client(
            connection, client_id, site.site_id, "tests", keys.public_jwks(), None
        )
    async with _client(runtime) as client:
        assertion = keys.assertion(client_id, "http://referral/fhir/r4/token")
        granted = await client.post("/fhir/r4/token", data=token_form(assertion))
        assert granted.status_code == 200, granted.text
        client.headers["Authorization"] = f"Bearer {granted.json()['access_token']}"
        external_id = f"ORD-{uuid.uuid4().hex[:10]}"
        bundle = transaction_bundle(external_id)
        posted = await client.post("/fhir/r4", json=bundle, headers=FHIR_JSON)
        assert posted.status_code == 200, posted.text
        referral_id = posted.json()["entry"][3]["resource"]["id"]
        assert await _entries_of(runtime, referral_id) == [], "a create is not a look"

        assert (await client.get(f"/fhir/r4/Task/{referral_id}")).status_code == 200
        [read] = await _entries_of(runtime, referral_id)
        found = await client.get("/fhir/r4/Task", params={"identifier": external_id})
        assert found.status_code == 200, found.text
        assert found.json()["total"] == 1

    read_then_search = await _entries_of(runtime, referral_id)
    assert len(read_then_search) == 2
    for entry in read_then_search:
        assert (entry.actor_kind, entry.actor_id) == ("fhir_client", client_id)
        assert (entry.record_kind, entry.purpose) == ("referral", "treatment")
        assert "businessStatus" in entry.fields
    assert read_then_search[0] == read


async def test_each_webhook_delivery_is_one_disclosure_to_the_sites_callback(
    runtime: ReferralRuntime,
) -> None:
    receiver = StatusReceiver()
    await receiver.start()
    try:
        site, _, token = await register_site(runtime)
        async with runtime.pool.acquire() as connection:
            callback = await webhook_admin.set_callback(
                connection, site.site_id, receiver.url, https_only=False
            )
        assert callback.secret is not None
        receiver.secret = callback.secret
        async with _client(runtime, token) as client:
            referral_id = await _post_referral(client)

        async def delivered() -> bool:
            async with runtime.pool.acquire() as connection:
                return bool(
                    await connection.fetchval(
                        """SELECT state = 'delivered' FROM referral.webhook_deliveries
                           WHERE referral_id = $1 AND step = 'received'""",
                        uuid.UUID(referral_id),
                    )
                )

        await eventually(delivered, within=30, what="the received step delivered")
        assert len(receiver.of(referral_id)) == 1
    finally:
        for call in receiver.calls:
            record_page_body(call.body.decode(errors="replace"))  # for the PHI scan
        await receiver.stop()

    [entry] = await _entries_of(runtime, referral_id)
    assert (entry.actor_kind, entry.actor_id) == ("site_callback", site.site_id)
    assert (entry.record_kind, entry.purpose) == ("referral", "disclosure")
    assert entry.fields == ["referral_id", "external_id", "step", "status", "at"]
    assert entry.client_address == "127.0.0.1"  # the callback's host, never its path


async def test_the_admin_api_and_the_cli_export_the_entries_and_none_holds_patient_data(
    runtime: ReferralRuntime,
) -> None:
    _, key_id, token = await register_site(runtime)
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with _client(runtime, token) as client:
        referral_id = await _post_referral(client)
        assert (await client.get(f"/v1/referrals/{referral_id}")).status_code == 200
    after = datetime.now(UTC) + timedelta(seconds=1)
    window = {"from": before.isoformat(), "to": after.isoformat()}

    async with _client(runtime) as anonymous:
        assert (await anonymous.get("/v1/admin/audit", params=window)).status_code == 401
    async with _client(runtime, ADMIN_TOKEN) as admin:
        exported = await admin.get("/v1/admin/audit", params=window)
        backwards = await admin.get(
            "/v1/admin/audit", params={"from": window["to"], "to": window["from"]}
        )
        naive = await admin.get("/v1/admin/audit", params={**window, "from": "2026-01-01T00:00"})
        # Plain dates are midnight UTC, as the CLI reads them (finding #16f-7).
        days = {
            "from": before.date().isoformat(),
            "to": (after + timedelta(days=1)).date().isoformat(),
        }
        by_date = await admin.get("/v1/admin/audit", params=days)
        not_a_date = await admin.get("/v1/admin/audit", params={**window, "to": "2026-13-45"})
    assert exported.status_code == 200, exported.text
    assert exported.json()["truncated"] is False
    [entry] = [e for e in exported.json()["entries"] if e["record_id"] == referral_id]
    assert (entry["actor_id"], entry["purpose"]) == (key_id, "treatment")
    assert entry["at"].endswith("Z")
    assert backwards.status_code == 422
    assert backwards.json()["error"]["fields"][0]["field"] == "to"
    assert naive.status_code == 422
    assert naive.json()["error"]["fields"][0]["field"] == "from"
    assert by_date.status_code == 200, by_date.text
    assert referral_id in {e["record_id"] for e in by_date.json()["entries"]}
    assert not_a_date.status_code == 422
    assert not_a_date.json()["error"]["fields"][0]["field"] == "to"

    database = runtime.settings.database_url
    as_json = handoff_command(
        *("referral", "audit", "export", "--from", window["from"], "--to", window["to"]),
        *("--format", "json"),
        database_url=database,
    )
    [listed] = [e for e in json.loads(as_json) if e["record_id"] == referral_id]
    assert listed == entry
    as_csv = handoff_command(
        *("referral", "audit", "export", "--from", window["from"], "--to", window["to"]),
        database_url=database,
    ).splitlines()
    assert as_csv[0] == (
        "entry_id,at,actor_kind,actor_id,record_kind,record_id,fields,purpose,client_address"
    )
    assert any(line.split(",")[5] == referral_id for line in as_csv[1:])

    async with runtime.pool.acquire() as connection:
        rows = await stored_rows(connection, SCHEMA)
    audit_rows = {"audit_log": rows["audit_log"]}
    assert audit_rows["audit_log"], "the scan must see entries"
    assert leaks(audit_rows, [*PHI_MARKERS, CALLBACK_PHONE, "ED bay 4"]) == []


async def test_update_delete_and_truncate_of_the_trail_fail_even_for_its_owner(
    runtime: ReferralRuntime,
) -> None:
    _, _, token = await register_site(runtime)
    async with _client(runtime, token) as client:
        referral_id = await _post_referral(client)
        assert (await client.get(f"/v1/referrals/{referral_id}")).status_code == 200
    statements: list[tuple[str, Any]] = [
        ("UPDATE referral.audit_log SET actor_id = 'x' WHERE record_id = $1", referral_id),
        ("DELETE FROM referral.audit_log WHERE record_id = $1", referral_id),
    ]
    connection = await asyncpg.connect(runtime.settings.database_url)
    try:
        for statement, argument in statements:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute(statement, argument)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await connection.execute("TRUNCATE referral.audit_log")
    finally:
        await connection.close()
    [entry] = await _entries_of(runtime, referral_id)
    assert entry.actor_kind == "api_key"
