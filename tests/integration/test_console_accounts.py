"""The console's accounts and sessions on a real PostgreSQL: Argon2id hashes, sessions that
end (idle, expiry, sign-out, a deactivated account), the change log by scope, and the
accounts managed from `handoff console users …` (issue #15): list, disable / enable,
remove, password, TOTP reset, case-insensitive usernames, and --state / --site checked
(--site against the referral service's real admin API, served over HTTP)."""

import asyncio
import hashlib
import importlib.resources
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pyotp
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from handoff_console.adapters import accounts
from handoff_console.adapters.accounts import MIGRATIONS, UsernameTaken
from handoff_console.domain.access import Role
from handoff_console.entrypoints.cli import app as console_cli
from handoff_platform.database import create_pool
from handoff_platform.http import install_error_handlers
from handoff_referral.app import apply_migrations as apply_referral_migrations
from handoff_referral.domain.referral import Site
from handoff_referral.entrypoints.board_admin import build_board_router
from handoff_referral.service import register_site
from tests.integration.conftest import create_database
from tests.support.waiting import eventually

PASSWORD = "a long enough passphrase"
HOURS = timedelta(hours=8)
IDLE = timedelta(minutes=30)


@pytest.fixture
async def console_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    url = await create_database(database_url)
    await accounts.apply_migrations(url)
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_password_is_kept_as_an_argon2id_hash_and_checked(
    console_db: asyncpg.Connection,
) -> None:
    added = await accounts.add_account(
        console_db, "dana", "Dana Reyes", PASSWORD, Role.COORDINATOR, ["MD"], ["ri-bay"]
    )
    stored = await console_db.fetchval(
        "SELECT password_hash FROM console.accounts WHERE username = 'dana'"
    )
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored

    signed_in = await accounts.check_password(console_db, "dana", PASSWORD)
    assert signed_in == added
    assert signed_in.states == frozenset({"MD"})
    assert signed_in.sites == frozenset({"ri-bay"})
    assert await accounts.check_password(console_db, "dana", PASSWORD + "x") is None
    assert await accounts.check_password(console_db, "nobody", PASSWORD) is None

    with pytest.raises(UsernameTaken):
        await accounts.add_account(console_db, "dana", "Other", PASSWORD, Role.READ_ONLY, ["MD"])


async def test_a_session_lives_until_idle_expired_or_signed_out(
    console_db: asyncpg.Connection,
) -> None:
    account = await accounts.add_account(
        console_db, "eli", "Eli", PASSWORD, Role.SUPERVISOR, ["VT"]
    )
    token, csrf = await accounts.open_session(console_db, account, HOURS)
    stored = await console_db.fetchval("SELECT session_hash FROM console.sessions")
    assert stored == hashlib.sha256(token.encode()).digest(), "only the token's hash is kept"

    session = await accounts.session_for(console_db, token, IDLE)
    assert session is not None
    assert session.account == account
    assert session.csrf_token == csrf
    assert await accounts.session_for(console_db, token + "x", IDLE) is None

    await console_db.execute("UPDATE console.sessions SET last_seen = now() - interval '31 min'")
    assert await accounts.session_for(console_db, token, IDLE) is None, "idle too long"

    token, _ = await accounts.open_session(console_db, account, HOURS)
    await console_db.execute(
        "UPDATE console.sessions SET expires_at = now() - interval '1 s' WHERE session_hash = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    assert await accounts.session_for(console_db, token, IDLE) is None, "past its expiry"
    assert await accounts.forget_expired_sessions(console_db) == 1

    token, _ = await accounts.open_session(console_db, account, HOURS)
    await accounts.close_session(console_db, token)
    assert await accounts.session_for(console_db, token, IDLE) is None, "signed out"

    token, _ = await accounts.open_session(console_db, account, HOURS)
    await console_db.execute("UPDATE console.accounts SET active = false")
    assert await accounts.session_for(console_db, token, IDLE) is None, "account deactivated"
    assert await accounts.check_password(console_db, "eli", PASSWORD) is None


async def test_the_change_log_shows_who_changed_what_within_the_scope(
    console_db: asyncpg.Connection,
) -> None:
    dana = await accounts.add_account(
        console_db, "dana", "Dana", PASSWORD, Role.COORDINATOR, ["MD"]
    )
    eli = await accounts.add_account(console_db, "eli", "Eli", PASSWORD, Role.COORDINATOR, ["VT"])
    await accounts.record_change(
        console_db, dana, "rotation created", "site:md-mercy", {"name": "Nights"}, "md-mercy", "MD"
    )
    await accounts.record_change(
        console_db, dana, "override added", "state:MD", {"kind": "remove"}, None, "MD"
    )
    await accounts.record_change(
        console_db, eli, "rotation created", "site:vt-green", {"name": "Days"}, "vt-green", "VT"
    )

    md = await accounts.changes(console_db, ["md-mercy"], ["MD"])
    assert [(c.username, c.action, c.target) for c in md] == [
        ("dana", "override added", "state:MD"),
        ("dana", "rotation created", "site:md-mercy"),
    ]
    assert md[1].detail == {"name": "Nights"}
    one_site = await accounts.changes(console_db, ["md-mercy"], [])
    assert [c.target for c in one_site] == ["site:md-mercy"]
    assert [c.username for c in await accounts.changes(console_db, [], ["VT"])] == ["eli"]


async def test_usernames_are_case_insensitive(console_db: asyncpg.Connection) -> None:
    await accounts.add_account(console_db, "Dana", "Dana", PASSWORD, Role.COORDINATOR, ["MD"])
    stored = await console_db.fetchval("SELECT username FROM console.accounts")
    assert stored == "dana"
    with pytest.raises(UsernameTaken):
        await accounts.add_account(console_db, "dana", "Other", PASSWORD, Role.READ_ONLY, ["MD"])
    signed_in = await accounts.check_password(console_db, "DANA", PASSWORD)
    assert signed_in is not None
    assert signed_in.username == "dana"


async def test_the_migration_folds_existing_usernames_and_keeps_both_of_a_clash(
    database_url: str,
) -> None:
    url = await create_database(database_url)
    connection = await asyncpg.connect(url)
    try:
        # The console's schema as it was before 0004, with accounts told apart by case only.
        files = sorted(
            (f for f in importlib.resources.files(MIGRATIONS).iterdir() if f.name < "0004"),
            key=lambda f: f.name,
        )
        await connection.execute("CREATE SCHEMA console")
        await connection.execute(
            """CREATE TABLE console.schema_migrations (name text PRIMARY KEY,
                   checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        for file in files:
            sql = file.read_text()
            async with connection.transaction():
                await connection.execute("SET LOCAL search_path TO console, public")
                await connection.execute(sql)
            await connection.execute(
                "INSERT INTO console.schema_migrations (name, checksum) VALUES ($1, $2)",
                f"{MIGRATIONS}:{file.name}",
                hashlib.sha256(sql.encode()).hexdigest(),
            )
        for name, age in (("Dana", "2 days"), ("dana", "1 day"), ("ELI", "1 day")):
            await connection.execute(
                """INSERT INTO console.accounts (account_id, username, display_name,
                       password_hash, role, states, created_at)
                   VALUES ($1, $2, $2, 'x', 'coordinator', '{MD}', now() - $3::interval)""",
                uuid.uuid4(),
                name,
                timedelta(days=int(age.split()[0])),
            )
        applied = await accounts.apply_migrations(url)
        console_applied = [name for name in applied if name.startswith(MIGRATIONS)]
        assert console_applied == [f"{MIGRATIONS}:0004_account_management.sql"]
        rows = await connection.fetch(
            "SELECT username, display_name FROM console.accounts ORDER BY username"
        )
        assert [(r["username"], r["display_name"]) for r in rows] == [
            ("dana", "Dana"),  # the older keeps the name
            ("dana-2", "dana"),
            ("eli", "ELI"),
        ]
    finally:
        await connection.close()


REFERRAL_TOKEN = "accounts-referral-admin"
KNOWN_SITE = Site("md-accounts", "Accounts Hospital", "Accounts ED", "MD", "America/New_York")


@dataclass
class Cli:
    """`handoff console …` run in a worker thread (it runs its own event loop) against the
    test's console database and the referral service's admin API."""

    database_url: str
    referral_url: str

    async def __call__(self, *args: str, stdin: str | None = None) -> Result:
        env = {
            "DATABASE_URL": self.database_url,
            "CONSOLE_REFERRAL_URL": self.referral_url,
            "REFERRAL_ADMIN_TOKEN": REFERRAL_TOKEN,
            "USER": "ops-oliver",
        }

        def run() -> Result:
            return CliRunner().invoke(console_cli, list(args), input=stdin, env=env)

        return await asyncio.to_thread(run)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def cli(database_url: str) -> AsyncIterator[Cli]:
    """The console's database, and the referral service's real admin API (its site
    directory, with KNOWN_SITE registered) served over HTTP on 127.0.0.1."""
    referral_url = await create_database(database_url)
    await apply_referral_migrations(referral_url)
    pool = await create_pool(referral_url, max_size=2)
    async with pool.acquire() as connection:
        await register_site(connection, KNOWN_SITE)
    referral = FastAPI()
    install_error_handlers(referral)
    referral.include_router(build_board_router(pool, SecretStr(REFERRAL_TOKEN)))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(referral, host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, within=10, what="the referral admin API to listen")
    console_url = await create_database(database_url)
    await accounts.apply_migrations(console_url)
    try:
        yield Cli(console_url, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await serving
        await pool.close()


async def _connect(cli: Cli) -> asyncpg.Connection:
    return await asyncpg.connect(cli.database_url)


async def test_add_refuses_a_state_or_site_that_does_not_exist_naming_the_option(
    cli: Cli,
) -> None:
    line = PASSWORD + "\n"
    common = ["users", "add", "--role", "coordinator", "--password-stdin"]
    bad_state = await cli(*common, "--username", "zed", "--state", "ZZ", stdin=line)
    assert bad_state.exit_code == 2
    assert bad_state.stderr.strip() == "--state: 'ZZ' is not a US state or territory code"

    bad_site = await cli(*common, "--username", "zed", "--site", "no-such-site", stdin=line)
    assert bad_site.exit_code == 2
    assert bad_site.stderr.strip() == (
        "--site: 'no-such-site' is not a site the referral service knows"
    )
    malformed = await cli(*common, "--username", "zed", "--site", "No Such", stdin=line)
    assert malformed.exit_code == 2
    assert malformed.stderr.startswith("--site: ")

    connection = await _connect(cli)
    try:
        assert await connection.fetchval("SELECT count(*) FROM console.accounts") == 0
    finally:
        await connection.close()

    added = await cli(
        *common, "--username", "Zed", "--state", "pr", "--site", KNOWN_SITE.site_id, stdin=line
    )
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == "added zed (coordinator; PR, md-accounts)"
    again = await cli(*common, "--username", "ZED", "--state", "MD", stdin=line)
    assert again.exit_code == 1
    assert again.stderr.strip() == "an account named 'zed' exists"

    away = Cli(cli.database_url, f"http://127.0.0.1:{_free_port()}")
    unanswered = await away(*common, "--username", "amy", "--site", "md-accounts", stdin=line)
    assert unanswered.exit_code == 1
    assert "cannot check --site" in unanswered.stderr


async def test_accounts_are_listed_disabled_enabled_reset_and_removed_from_the_cli(
    cli: Cli,
) -> None:
    line = PASSWORD + "\n"
    added = await cli(
        "users", "add", "--username", "dana", "--role", "coordinator", "--state", "MD",
        "--password-stdin", "--totp", stdin=line,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    added = await cli(
        "users", "add", "--username", "eli", "--role", "read_only", "--site", "md-accounts",
        "--password-stdin", stdin=line,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    connection = await _connect(cli)
    try:

        async def signed_in(username: str) -> str:
            account = await accounts.check_password(connection, username, PASSWORD)
            assert account is not None
            token, _ = await accounts.open_session(connection, account, HOURS)
            return token

        async def live(token: str) -> bool:
            return await accounts.session_for(connection, token, IDLE) is not None

        dana_session = await signed_in("dana")

        listed = await cli("users", "list")
        assert listed.exit_code == 0, listed.output
        lines = listed.stdout.splitlines()
        assert lines[0].split() == [
            "USERNAME",
            "ROLE",
            "SCOPE",
            "TOTP",
            "DISABLED",
            "LAST",
            "SIGN-IN",
        ]
        dana, eli = (line.split() for line in lines[1:])
        assert dana[:5] == ["dana", "coordinator", "MD", "on", "no"]
        assert dana[5] != "never"
        assert eli == ["eli", "read_only", "md-accounts", "off", "no", "never"]
        hashes = await connection.fetch("SELECT password_hash, totp_secret FROM console.accounts")
        for row in hashes:
            for secret in row.values():
                assert secret is None or secret not in listed.stdout

        disabled = await cli("users", "disable", "DANA")
        assert disabled.exit_code == 0, disabled.output
        assert not await live(dana_session), "a disabled account's session ends at once"
        assert await connection.fetchval("SELECT count(*) FROM console.sessions") == 0
        assert await accounts.check_password(connection, "dana", PASSWORD) is None
        assert (await cli("users", "list")).stdout.splitlines()[1].split()[4] == "yes"
        assert (await cli("users", "enable", "dana")).exit_code == 0
        dana_session = await signed_in("dana")

        new_password = "another long passphrase"
        changed = await cli("users", "password", "dana", "--password-stdin", stdin=new_password)
        assert changed.exit_code == 0, changed.output
        assert not await live(dana_session), "a new password ends the sessions"
        assert await accounts.check_password(connection, "dana", PASSWORD) is None
        assert await accounts.check_password(connection, "dana", new_password) is not None
        short = await cli("users", "password", "dana", "--password-stdin", stdin="short\n")
        assert short.exit_code == 2

        old_secret = await connection.fetchval(
            "SELECT totp_secret FROM console.accounts WHERE username = 'dana'"
        )
        account = await accounts.check_password(connection, "dana", new_password)
        assert account is not None
        dana_session, _ = await accounts.open_session(connection, account, HOURS)
        assert (await cli("users", "totp", "dana")).exit_code == 2, "--reset is required"
        reset = await cli("users", "totp", "dana", "--reset")
        assert reset.exit_code == 0, reset.output
        uri = reset.stdout.strip().removeprefix("authenticator app (shown once): ")
        new_secret = pyotp.parse_uri(uri).secret
        assert new_secret != old_secret
        assert new_secret == await connection.fetchval(
            "SELECT totp_secret FROM console.accounts WHERE username = 'dana'"
        )
        assert not await live(dana_session), "a TOTP reset ends the sessions"

        eli_session = await signed_in("eli")
        eli_account = await accounts.check_password(connection, "eli", PASSWORD)
        assert eli_account is not None
        await accounts.record_change(
            connection, eli_account, "override added", "state:MD", {}, None, "MD"
        )
        removed = await cli("users", "remove", "eli", "--yes")
        assert removed.exit_code == 0, removed.output
        assert not await live(eli_session)
        assert await accounts.check_password(connection, "eli", PASSWORD) is None
        md = await accounts.changes(connection, [], ["MD"])
        assert [(c.username, c.action) for c in md] == [("eli", "override added")]

        for command in (["disable"], ["enable"], ["remove", "--yes"], ["totp", "--reset"]):
            missing = await cli("users", *command, "nobody")
            assert missing.exit_code == 1, command
            assert missing.stderr.strip() == "no account named 'nobody'"

        log = await accounts.account_changes(connection)
        assert [(c.username, c.action, c.target) for c in reversed(log)] == [
            ("ops-oliver", "account added", "account:dana"),
            ("ops-oliver", "account added", "account:eli"),
            ("ops-oliver", "account disabled", "account:dana"),
            ("ops-oliver", "account enabled", "account:dana"),
            ("ops-oliver", "password set", "account:dana"),
            ("ops-oliver", "totp reset", "account:dana"),
            ("ops-oliver", "account removed", "account:eli"),
        ]
        printed = (await cli("users", "log", "--limit", "2")).stdout.splitlines()
        assert [line.split()[1:4] for line in printed] == [
            ["ops-oliver", "account", "removed"],
            ["ops-oliver", "totp", "reset"],
        ]
        assert log[-1].detail == {
            "role": "coordinator", "states": ["MD"], "sites": [], "totp": True
        }  # fmt: skip
    finally:
        await connection.close()
