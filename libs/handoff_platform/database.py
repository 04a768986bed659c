"""PostgreSQL: connection pools and versioned SQL migrations with a ledger.

Each service owns one schema and keeps its migrations as numbered SQL files in
its own package. They are applied in order inside one transaction per file,
under an advisory lock, so two replicas starting together apply each file once.
"""

import asyncio
import hashlib
import logging
import zlib
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection of its own or one borrowed from a pool: the queries are the same."""


COMMAND_TIMEOUT_SECONDS = 10.0
"""The longest a query on a service's pool or long-lived connection waits for its answer
(seconds); then it raises the builtin TimeoutError, a transient error (`handoff_platform.
transient`): the HTTP surface answers 503, a consumer retries the event, a loop restarts.

A network that loses a request without closing the connection (a stateful firewall or NAT
that forgot the flow, a proxy's black hole) would otherwise leave the query waiting for good,
and with it the loop that asked, even after the network heals (decision 0029). asyncpg then
sends a cancel request, bounded by the same timeout, and closes the connection if that too
goes unanswered, so the pool opens a fresh one: a dead connection costs its user about twice
this. Every query here takes milliseconds; the longest legitimate waits are row and advisory
locks held by a transaction of a few statements. Migrations run on connections without it:
they wait on each other's advisory lock."""

CONNECT_TIMEOUT_SECONDS = 5.0
"""The longest opening a connection may take (seconds; asyncpg's default is 60): a pool that
replaces a dead connection while the network is still away answers 503 soon, not in a minute."""


async def create_pool(database_url: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool of `min_size` to `max_size` connections whose queries time out after
    COMMAND_TIMEOUT_SECONDS and whose connecting times out after CONNECT_TIMEOUT_SECONDS."""
    return await asyncpg.create_pool(
        database_url,
        min_size=min(min_size, max_size),
        max_size=max_size,
        reset=_nothing_to_reset,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        timeout=CONNECT_TIMEOUT_SECONDS,
    )


async def connect(database_url: str) -> asyncpg.Connection:
    """A connection of a loop's own (an advisory lock's, a LISTEN's) whose queries time out
    after COMMAND_TIMEOUT_SECONDS, opened within CONNECT_TIMEOUT_SECONDS. Raises asyncpg's and
    the socket's errors (TimeoutError among them), as asyncpg does."""
    return await asyncpg.connect(
        database_url, command_timeout=COMMAND_TIMEOUT_SECONDS, timeout=CONNECT_TIMEOUT_SECONDS
    )


async def _nothing_to_reset(_: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on every release: a round trip per use of the pool.

    Safe because pooled connections never keep session state: settings are
    `SET LOCAL`, and LISTEN and advisory locks live on connections of their own.
    """


PROBE_TIMEOUT_SECONDS = 0.8
"""The longest a readiness probe of the database waits, connecting or asking (seconds)."""


class DatabaseProbe:
    """Whether PostgreSQL answers, asked on a connection of the probe's own, never the
    pool's: a probe must not queue behind a pool every connection of which is busy (a
    loaded replica is not an unready one). One `SELECT true` per call, at most
    `timeout` seconds to connect and as long to answer; probes run one at a time. The
    answer is never older than the call: no cache to bound."""

    def __init__(self, database_url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.database_url = database_url
        self.timeout = timeout
        self._connection: asyncpg.Connection | None = None
        self._one_at_a_time = asyncio.Lock()

    async def answers(self) -> bool:
        """True if the database answered within the timeout; never raises."""
        async with self._one_at_a_time:
            try:
                if self._connection is None or self._connection.is_closed():
                    self._connection = await asyncpg.connect(
                        self.database_url, timeout=self.timeout
                    )
                return bool(await self._connection.fetchval("SELECT true", timeout=self.timeout))
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                self._drop()
                return False

    def _drop(self) -> None:
        """Forget the connection: the next probe connects anew (a restarted server)."""
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None

    async def close(self) -> None:
        self._drop()


async def notify(connection: Connection, channel: str, payload: str) -> None:
    """NOTIFY in a transaction of its own, committed asynchronously.

    Never inside a writing transaction: one that notifies holds PostgreSQL's
    notification lock through its commit's fsync, serialising every writer.
    """
    async with connection.transaction():
        await connection.execute("SET LOCAL synchronous_commit = off")
        await connection.execute("SELECT pg_notify($1, $2)", channel, payload)


class MigrationChanged(RuntimeError):
    """An already applied migration file was edited: add a new file instead."""


def _migration_files(package: str) -> list[Traversable]:
    folder = resources.files(package)
    return sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )


PLATFORM_MIGRATIONS = "handoff_platform.migrations"


async def migrate_database(database_url: str, schema: str, package: str) -> list[str]:
    """`migrate` on a connection of its own (the advisory lock is session-scoped)."""
    connection = await asyncpg.connect(database_url)
    try:
        return await migrate(connection, schema, package)
    finally:
        await connection.close()


async def migrate(
    connection: asyncpg.Connection, schema: str, package: str | None = None
) -> list[str]:
    """Apply the platform's tables (outbox, processed events, timers), then the service's own.

    Each file is `NNNN_name.sql`; the ledger records it as `package:file`, so the
    platform's and the service's numbering never collide.
    """
    return await _apply(connection, schema, [PLATFORM_MIGRATIONS, *([package] if package else [])])


async def _apply(connection: asyncpg.Connection, schema: str, packages: list[str]) -> list[str]:
    lock_key = zlib.crc32(f"handoff-migrations:{schema}".encode())
    applied_now: list[str] = []
    await connection.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await connection.execute(
            f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                    name text PRIMARY KEY,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await connection.fetch(f'SELECT name, checksum FROM "{schema}".schema_migrations')
        done = {row["name"]: row["checksum"] for row in rows}
        pending = [
            (f"{package}:{file.name}", file)
            for package in packages
            for file in _migration_files(package)
        ]
        for name, file in pending:
            sql = file.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != checksum:
                    raise MigrationChanged(f"{schema}/{name} changed after it was applied")
                continue
            async with connection.transaction():
                await connection.execute(f'SET LOCAL search_path TO "{schema}", public')
                await connection.execute(sql)
                await connection.execute(
                    f'INSERT INTO "{schema}".schema_migrations (name, checksum) VALUES ($1, $2)',
                    name,
                    checksum,
                )
            applied_now.append(name)
            log.info("migration applied", extra={"schema": schema, "migration": name})
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied_now
