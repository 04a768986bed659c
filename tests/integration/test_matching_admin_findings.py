"""What a new user found in matching's admin API (issue 12, fresh12 findings 6 and 7/8),
against real PostgreSQL: partial settings never reset the rest, unknown supervisors are
refused, and bad path or query input is a 422 naming it, never a 500."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from handoff_matching.adapters.roster_store import (
    apply_migrations,
    import_roster,
    remember_site,
)
from handoff_matching.entrypoints.admin import build_admin_router
from handoff_platform.http import install_error_handlers
from tests.integration.conftest import create_database
from tests.support.matching import SUPERVISOR, demo_roster

TOKEN = "coordinator-secret"


@pytest.fixture(scope="module")
async def admin(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The admin API over a fresh matching database holding one site's demo roster."""
    database = await create_database(database_url)
    await apply_migrations(database)
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(database)
    try:
        await import_roster(connection, demo_roster(site_id))
        await remember_site(
            connection, site_id, "Mercy ED", "MD", "America/New_York", datetime.now(UTC)
        )
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_admin_router(pool, SecretStr(TOKEN)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://matching",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client, site_id
    await pool.close()


FULL = {
    "mode": "sequential",
    "ack_timeout_seconds": 300,
    "arrival_target_minutes": 60,
    "broadcast_size": 3,
    "interpreter_available": True,
    "supervisors": [str(SUPERVISOR)],
    "page_deadline_seconds": 60,
    "reoffer_every_seconds": 300,
    "give_up_after_minutes": 240,
}


async def test_a_partial_patch_changes_only_what_it_names(
    admin: tuple[httpx.AsyncClient, str],
) -> None:
    """Finding 6: `{"ack_timeout_seconds":120}` used to reset the supervisors to []."""
    client, site_id = admin
    url = f"/v1/admin/sites/{site_id}/dispatch"
    assert (await client.put(url, json=FULL)).status_code == 200

    patched = await client.patch(url, json={"ack_timeout_seconds": 120})
    assert patched.status_code == 200
    expected = {**FULL, "ack_timeout_seconds": 120}
    assert patched.json() == expected
    assert (await client.get(url)).json() == expected
    assert (await client.patch(url, json={})).json() == expected  # nothing named, nothing changed


async def test_a_put_missing_fields_is_refused_naming_each(
    admin: tuple[httpx.AsyncClient, str],
) -> None:
    """Finding 6: PUT replaces the whole settings, so a field left out is a 422, not a reset."""
    client, site_id = admin
    url = f"/v1/admin/sites/{site_id}/dispatch"
    assert (await client.put(url, json=FULL)).status_code == 200

    refused = await client.put(url, json={"ack_timeout_seconds": 120})
    assert refused.status_code == 422
    named = {f["field"] for f in refused.json()["error"]["fields"]}
    assert named == set(FULL) - {"ack_timeout_seconds"}
    assert (await client.get(url)).json()["supervisors"] == [str(SUPERVISOR)]


async def test_an_unknown_supervisor_is_refused_by_put_and_patch(
    admin: tuple[httpx.AsyncClient, str],
) -> None:
    """Finding 6: a supervisor not on the roster has nowhere to be paged."""
    client, site_id = admin
    url = f"/v1/admin/sites/{site_id}/dispatch"
    assert (await client.put(url, json=FULL)).status_code == 200
    stranger = "d0000000-0000-0000-0000-000000000099"

    for answer in (
        await client.put(url, json={**FULL, "supervisors": [stranger]}),
        await client.patch(url, json={"supervisors": [str(SUPERVISOR), stranger]}),
    ):
        assert answer.status_code == 422
        [field] = answer.json()["error"]["fields"]
        assert field["field"] == "supervisors"
        assert stranger in field["message"]
    assert (await client.get(url)).json()["supervisors"] == [str(SUPERVISOR)]


async def test_dispatch_settings_of_a_site_never_registered_are_refused_as_unknown(
    admin: tuple[httpx.AsyncClient, str],
) -> None:
    """Found by a new user (#12 F7): a mistyped site id ("md-mercey") was told its
    settings were stored."""
    client, site_id = admin
    url = f"/v1/admin/sites/{site_id}x/dispatch"
    for answer in (
        await client.get(url),
        await client.put(url, json=FULL),
        await client.patch(url, json={"reoffer_every_seconds": 30}),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "site_unknown"
    assert (await client.get(f"/v1/admin/sites/{site_id}/dispatch")).status_code == 200


async def test_a_supervisor_named_twice_is_refused_naming_supervisors(
    admin: tuple[httpx.AsyncClient, str],
) -> None:
    client, site_id = admin
    url = f"/v1/admin/sites/{site_id}/dispatch"
    assert (await client.put(url, json=FULL)).status_code == 200
    twice = [str(SUPERVISOR), str(SUPERVISOR)]
    for answer in (
        await client.put(url, json={**FULL, "supervisors": twice}),
        await client.patch(url, json={"supervisors": twice}),
    ):
        assert answer.status_code == 422
        [field] = answer.json()["error"]["fields"]
        assert field["field"] == "supervisors"
        assert str(SUPERVISOR) in field["message"]
    assert (await client.get(url)).json()["supervisors"] == [str(SUPERVISOR)]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/admin/sites/%00/on-call", "site_id"),
        ("/v1/admin/sites/md%00mercy/dispatch", "site_id"),
        ("/v1/admin/sites/%00/coverage", "site_id"),
        (f"/v1/admin/sites/{'m' * 5000}/on-call", "site_id"),
        ("/v1/admin/sites/MD-Mercy/dispatch", "site_id"),
        ("/v1/admin/sites/md-mercy/on-call?at=2026-13-45T99:00:00Z", "at"),
        ("/v1/admin/sites/md-mercy/on-call?at=2026-12-01T00:00:00", "at"),  # no UTC offset
        ("/v1/admin/sites/md-mercy/on-call?at=%00", "at"),
        ("/v1/admin/sites/md-mercy/coverage?days=%00", "days"),
        ("/v1/admin/sites/md-mercy/coverage?days=99", "days"),
    ],
)
async def test_bad_path_and_query_input_is_a_422_naming_it(
    admin: tuple[httpx.AsyncClient, str], path: str, field: str
) -> None:
    """Finding 7/8: `GET /v1/admin/sites/%00/on-call` was a 500 from PostgreSQL."""
    client, _ = admin
    answer = await client.get(path)
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["error"]["fields"]] == [field]


async def test_bad_input_on_writes_is_a_422_too(admin: tuple[httpx.AsyncClient, str]) -> None:
    """Finding 7/8, the writes: a NUL site id and a bad override id."""
    client, _ = admin
    put = await client.put("/v1/admin/sites/%00/dispatch", json=FULL)
    patch = await client.patch("/v1/admin/sites/%00/dispatch", json={})
    delete = await client.delete("/v1/admin/overrides/%00")
    for answer, field in ((put, "site_id"), (patch, "site_id"), (delete, "override_id")):
        assert answer.status_code == 422, answer.text
        assert [f["field"] for f in answer.json()["error"]["fields"]] == [field]
