"""The console's accounts and sessions on a real PostgreSQL: Argon2id hashes, sessions that
end (idle, expiry, sign-out, a deactivated account), and the change log by scope."""

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from handoff_console.adapters import accounts
from handoff_console.adapters.accounts import UsernameTaken
from handoff_console.domain.access import Role
from tests.integration.conftest import create_database

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
