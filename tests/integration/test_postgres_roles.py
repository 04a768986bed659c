"""The CloudNativePG bootstrap of deploy/k8s, run on a real PostgreSQL: each service logs in
as its own role, applies its migrations in the schema it owns (two replicas at once), and
can read no other service's schema."""

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml

from handoff_matching.adapters.roster_store import apply_migrations as migrate_matching
from handoff_notify.adapters.pages_store import apply_migrations as migrate_notify
from handoff_platform import audit
from handoff_platform.audit import Accessor, ActorKind, Purpose
from handoff_referral.app import apply_migrations as migrate_referral
from handoff_reports.adapters.read_model import apply_migrations as migrate_reports

CLUSTER = Path(__file__).resolve().parents[2] / "deploy/k8s/base/postgres/cluster.yaml"
MIGRATIONS: dict[str, Callable[[str], Awaitable[list[str]]]] = {
    "referral": migrate_referral,
    "matching": migrate_matching,
    "notify": migrate_notify,
    "reports": migrate_reports,
}


def _bootstrap_sql(database: str, roles: dict[str, str]) -> list[str]:
    """The cluster's postInitApplicationSQL for `database`, with each role renamed (roles
    are server-wide: a test server may hold earlier runs' roles)."""
    cluster = yaml.safe_load(CLUSTER.read_text())
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    statements: list[str] = []
    for statement in initdb["postInitApplicationSQL"]:
        statement = re.sub(rf"\b{initdb['database']}\b", database, statement)
        statement = re.sub(r"\bROLE (\w+)", lambda m: f"ROLE {roles[m[1]]}", statement)
        statement = re.sub(
            r"AUTHORIZATION (\w+)", lambda m: f"AUTHORIZATION {roles[m[1]]}", statement
        )
        statement = re.sub(
            r"TO ([\w, ]+)$",
            lambda m: "TO " + ", ".join(roles[r.strip()] for r in m[1].split(",")),
            statement,
        )
        statements.append(statement)
    return statements


def _url(server_url: str, database: str, user: str, password: str) -> str:
    parts = urlsplit(server_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", f"/{database}", "", ""))


async def test_each_service_role_migrates_its_own_schema_and_reads_no_other(
    database_url: str,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    database = f"k8s_{suffix}"
    roles = {service: f"{service}_{suffix}" for service in MIGRATIONS}
    password = uuid.uuid4().hex
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    owner = await asyncpg.connect(_url(database_url, database, *_admin_login(database_url)))
    try:
        for statement in _bootstrap_sql(database, roles):
            await owner.execute(statement)
        for role in roles.values():  # what the operator's managed roles do with the Secrets
            await owner.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
    finally:
        await owner.close()

    urls = {s: _url(database_url, database, role, password) for s, role in roles.items()}
    for service, migrate in MIGRATIONS.items():
        two_replicas = await asyncio.gather(migrate(urls[service]), migrate(urls[service]))
        applied = [name for run in two_replicas for name in run]
        assert applied, f"{service} applied no migration"
        assert len(applied) == len(set(applied)), f"{service} applied a migration twice"

    referral = await asyncpg.connect(urls["referral"])
    try:
        own = await referral.fetchval("SELECT count(*) FROM referral.outbox")
        assert own == 0
        for other in ("matching", "notify", "reports"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await referral.fetchval(f"SELECT count(*) FROM {other}.outbox")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await referral.execute("CREATE TABLE public.stray (id int)")
        await _audit_trail_is_append_only_for(referral)
    finally:
        await referral.close()

    # The reports read model is kept from events alone (decision 0028): its role cannot
    # read the referral service's tables, where the patients' data is.
    reports = await asyncpg.connect(urls["reports"])
    try:
        assert await reports.fetchval("SELECT count(*) FROM reports.referral_facts") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reports.fetchval("SELECT count(*) FROM referral.outbox")
    finally:
        await reports.close()


async def _audit_trail_is_append_only_for(service: asyncpg.Connection) -> None:
    """The service's role writes its audit trail but can neither change nor remove an entry,
    not even after granting itself the privileges back (it owns the table): the trigger
    refuses."""
    entry = Accessor(ActorKind.API_KEY, "hok_test", Purpose.TREATMENT).saw(
        "referral", uuid.uuid4(), ["status"]
    )
    await audit.record(service, "referral", entry)
    changes = [
        "UPDATE referral.audit_log SET actor_id = 'someone-else'",
        "DELETE FROM referral.audit_log",
        "TRUNCATE referral.audit_log",
    ]
    for change in changes:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await service.execute(change)
    await service.execute("GRANT UPDATE, DELETE, TRUNCATE ON referral.audit_log TO CURRENT_USER")
    for change in changes:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await service.execute(change)
    assert await service.fetchval("SELECT count(*) FROM referral.audit_log") == 1


def _admin_login(server_url: str) -> tuple[str, str]:
    parts = urlsplit(server_url)
    return parts.username or "postgres", parts.password or ""
