"""The console's own tables: accounts (Argon2id password hashes), server-side sessions,
the change log and the audit of referral views."""

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from handoff_console import SCHEMA
from handoff_console.domain.access import Account, Role, new_token
from handoff_console.domain.account_rules import username_key
from handoff_platform import audit
from handoff_platform.audit import Accessor, ActorKind, Purpose
from handoff_platform.database import Connection, migrate_database

MIGRATIONS = "handoff_console.adapters.migrations"
_hasher = PasswordHasher()  # argon2-cffi's defaults: Argon2id, RFC 9106 low-memory profile
# Verified against when the username is unknown, so a wrong name costs as long as a wrong
# password and the answer's timing does not tell which names exist.
_DUMMY_HASH = _hasher.hash(new_token())


async def apply_migrations(database_url: str) -> list[str]:
    return await migrate_database(database_url, SCHEMA, MIGRATIONS)


class UsernameTaken(Exception):
    """An account with this username exists."""


@dataclass(frozen=True)
class Session:
    account: Account
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class Change:
    at: datetime
    username: str
    action: str
    site_id: str | None
    state: str | None
    target: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class AccountSummary:
    """An account as `handoff console users list` shows it: never its hashes or secrets."""

    username: str
    display_name: str
    role: Role
    states: tuple[str, ...]
    sites: tuple[str, ...]
    totp: bool
    active: bool
    last_sign_in_at: datetime | None  # UTC; None: never signed in
    created_at: datetime


def _account(row: asyncpg.Record) -> Account:
    return Account(
        account_id=row["account_id"],
        username=row["username"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        states=frozenset(row["states"]),
        sites=frozenset(row["sites"]),
    )


async def add_account(
    connection: Connection,
    username: str,
    display_name: str,
    password: str,
    role: Role,
    states: Iterable[str] = (),
    sites: Iterable[str] = (),
) -> Account:
    """A new account with the password hashed by Argon2id, its username lower-cased
    (usernames are case-insensitive); raises UsernameTaken, InvalidAccount (the username)."""
    username = username_key(username)
    try:
        row = await connection.fetchrow(
            f"""INSERT INTO {SCHEMA}.accounts (account_id, username, display_name,
                    password_hash, role, states, sites)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            uuid.uuid4(),
            username,
            display_name,
            _hasher.hash(password),
            role.value,
            sorted(set(states)),
            sorted(set(sites)),
        )
    except asyncpg.UniqueViolationError:
        raise UsernameTaken(username) from None
    assert row is not None
    return _account(row)


async def check_password(connection: Connection, username: str, password: str) -> Account | None:
    """The active account if the password is right, else None (same work either way).
    Rehashes a password whose hash used older parameters."""
    row = await connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.accounts WHERE username = $1 AND active",
        username.strip().lower(),
    )
    stored = row["password_hash"] if row else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(stored):
        await connection.execute(
            f"UPDATE {SCHEMA}.accounts SET password_hash = $2 WHERE account_id = $1",
            row["account_id"],
            _hasher.hash(password),
        )
    return _account(row)


async def enable_totp(connection: Connection, username: str) -> str | None:
    """Give the account a new TOTP secret (RFC 6238: 6 digits, 30 s); returns its
    provisioning URI for an authenticator app, shown once, or None for no such account."""
    secret = pyotp.random_base32()
    changed = await connection.fetchval(
        f"""UPDATE {SCHEMA}.accounts SET totp_secret = $2, totp_last_step = NULL
            WHERE username = $1 RETURNING true""",
        username.strip().lower(),
        secret,
    )
    if not changed:
        return None
    return pyotp.TOTP(secret).provisioning_uri(
        name=username.strip().lower(), issuer_name="Handoff console"
    )


async def list_accounts(connection: Connection) -> list[AccountSummary]:
    """Every account, by username."""
    rows = await connection.fetch(
        f"""SELECT username, display_name, role, states, sites, totp_secret IS NOT NULL AS totp,
                   active, last_sign_in_at, created_at
            FROM {SCHEMA}.accounts ORDER BY username"""
    )
    return [
        AccountSummary(
            username=r["username"],
            display_name=r["display_name"],
            role=Role(r["role"]),
            states=tuple(r["states"]),
            sites=tuple(r["sites"]),
            totp=r["totp"],
            active=r["active"],
            last_sign_in_at=r["last_sign_in_at"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def _end_sessions(connection: Connection, account_id: UUID) -> int:
    result: str = await connection.execute(
        f"DELETE FROM {SCHEMA}.sessions WHERE account_id = $1", account_id
    )
    return int(result.split()[-1])


async def _account_id(connection: Connection, username: str) -> UUID | None:
    account_id: UUID | None = await connection.fetchval(
        f"SELECT account_id FROM {SCHEMA}.accounts WHERE username = $1 FOR UPDATE",
        username.strip().lower(),
    )
    return account_id


async def set_active(connection: Connection, username: str, active: bool) -> int | None:
    """Enable or disable an account; disabling ends its sessions at once. Returns how many
    sessions ended, or None for no such account."""
    account_id = await _account_id(connection, username)
    if account_id is None:
        return None
    await connection.execute(
        f"UPDATE {SCHEMA}.accounts SET active = $2 WHERE account_id = $1", account_id, active
    )
    return 0 if active else await _end_sessions(connection, account_id)


async def remove_account(connection: Connection, username: str) -> int | None:
    """Delete an account and its sessions; the change log and the audit of referral views
    keep its username (their account id becomes NULL). Returns how many sessions ended, or
    None for no such account."""
    account_id = await _account_id(connection, username)
    if account_id is None:
        return None
    ended = await _end_sessions(connection, account_id)
    await connection.execute(f"DELETE FROM {SCHEMA}.accounts WHERE account_id = $1", account_id)
    return ended


async def set_password(connection: Connection, username: str, password: str) -> int | None:
    """A new password (Argon2id); every session of the account ends. Returns how many
    ended, or None for no such account."""
    account_id = await _account_id(connection, username)
    if account_id is None:
        return None
    await connection.execute(
        f"UPDATE {SCHEMA}.accounts SET password_hash = $2 WHERE account_id = $1",
        account_id,
        _hasher.hash(password),
    )
    return await _end_sessions(connection, account_id)


async def reset_totp(connection: Connection, username: str) -> str | None:
    """A new TOTP secret (the old authenticator's codes stop working) and every session
    ended, as a lost phone may be in someone else's hands. Returns the new provisioning URI
    (shown once), or None for no such account."""
    account_id = await _account_id(connection, username)
    if account_id is None:
        return None
    await _end_sessions(connection, account_id)
    return await enable_totp(connection, username)


async def second_factor_ok(
    connection: Connection, account: Account, code: str, now: datetime
) -> bool:
    """True for an account without TOTP. With it: the code of the 30 s step at `now` (or
    the one either side, for clock drift), and a step later than any used before, so a
    code signs in once."""
    secret = await connection.fetchval(
        f"SELECT totp_secret FROM {SCHEMA}.accounts WHERE account_id = $1", account.account_id
    )
    if secret is None:
        return True
    totp = pyotp.TOTP(secret)
    step = totp.timecode(now)
    for candidate in (step - 1, step, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code.strip()):
            used_now = await connection.fetchval(
                f"""UPDATE {SCHEMA}.accounts SET totp_last_step = $2
                    WHERE account_id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)
                    RETURNING true""",
                account.account_id,
                candidate,
            )
            return bool(used_now)
    return False


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def open_session(
    connection: Connection, account: Account, lifetime: timedelta
) -> tuple[str, str]:
    """A new session for `lifetime`; returns (cookie value, CSRF token). Only the cookie
    value's SHA-256 is stored."""
    token, csrf = new_token(), new_token()
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.sessions (session_hash, account_id, csrf_token, expires_at)
            VALUES ($1, $2, $3, now() + $4::interval)""",
        _digest(token),
        account.account_id,
        csrf,
        lifetime,
    )
    await connection.execute(
        f"UPDATE {SCHEMA}.accounts SET last_sign_in_at = now() WHERE account_id = $1",
        account.account_id,
    )
    return token, csrf


async def session_for(connection: Connection, token: str, idle: timedelta) -> Session | None:
    """The live session of this cookie value (not expired, used within `idle`, account
    active), its last use moved to now; None otherwise."""
    row = await connection.fetchrow(
        f"""UPDATE {SCHEMA}.sessions s SET last_seen = now()
            FROM {SCHEMA}.accounts a
            WHERE s.session_hash = $1 AND a.account_id = s.account_id AND a.active
              AND s.expires_at > now() AND s.last_seen > now() - $2::interval
            RETURNING a.*, s.csrf_token, s.expires_at""",
        _digest(token),
        idle,
    )
    if row is None:
        return None
    return Session(_account(row), row["csrf_token"], row["expires_at"])


async def close_session(connection: Connection, token: str) -> None:
    await connection.execute(
        f"DELETE FROM {SCHEMA}.sessions WHERE session_hash = $1", _digest(token)
    )


async def claim_form_token(connection: Connection, account: Account, nonce: str) -> bool:
    """Mark a form's one-time nonce used; False when it was used already (the same form
    sent again: the caller saves nothing). Nonces older than a day are forgotten here:
    they belong to sessions that have ended, whose CSRF token no longer signs anything."""
    await connection.execute(
        f"DELETE FROM {SCHEMA}.used_form_tokens WHERE used_at < now() - interval '1 day'"
    )
    claimed = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.used_form_tokens (nonce_hash, account_id) VALUES ($1, $2)
            ON CONFLICT DO NOTHING RETURNING true""",
        _digest(nonce),
        account.account_id,
    )
    return bool(claimed)


async def release_form_token(connection: Connection, nonce: str) -> None:
    """The form was not saved after all (refused, or a service away): it may be sent again."""
    await connection.execute(
        f"DELETE FROM {SCHEMA}.used_form_tokens WHERE nonce_hash = $1", _digest(nonce)
    )


async def recent_sign_in_failures(connection: Connection, username: str, within: timedelta) -> int:
    """How many sign-ins failed for this username (case-folded) within `within`."""
    count: int = await connection.fetchval(
        f"""SELECT count(*) FROM {SCHEMA}.sign_in_failures
            WHERE username_key = $1 AND at > now() - $2::interval""",
        username.casefold(),
        within,
    )
    return count


async def record_sign_in_failure(connection: Connection, username: str) -> None:
    await connection.execute(
        f"INSERT INTO {SCHEMA}.sign_in_failures (username_key) VALUES ($1)",
        username.casefold(),
    )


async def clear_sign_in_failures(connection: Connection, username: str) -> None:
    """A successful sign-in: earlier failures stop counting (and old ones are dropped)."""
    await connection.execute(
        f"""DELETE FROM {SCHEMA}.sign_in_failures
            WHERE username_key = $1 OR at < now() - interval '1 day'""",
        username.casefold(),
    )


async def forget_expired_sessions(connection: Connection) -> int:
    """Delete sessions past their expiry; returns how many."""
    result: str = await connection.execute(
        f"DELETE FROM {SCHEMA}.sessions WHERE expires_at <= now()"
    )
    return int(result.split()[-1])


async def record_change(
    connection: Connection,
    account: Account,
    action: str,
    target: str,
    detail: dict[str, Any],
    site_id: str | None = None,
    state: str | None = None,
) -> None:
    """One line of the change log: who, when (the database's now), what, on which site or state."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.changes (account_id, username, action, site_id, state,
                target, detail)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
        account.account_id,
        account.username,
        action,
        site_id,
        state,
        target,
        json.dumps(detail, default=str),
    )


async def record_operator_change(
    connection: Connection, operator: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    """One line of the change log made from the CLI: `operator` is who ran it (their $USER,
    or "cli"); there is no console account behind it."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.changes (account_id, username, action, target, detail)
            VALUES (NULL, $1, $2, $3, $4::jsonb)""",
        operator,
        action,
        target,
        json.dumps(detail, default=str),
    )


async def account_changes(connection: Connection, limit: int = 200) -> list[Change]:
    """The newest changes to accounts (targets `account:<username>`), newest first."""
    rows = await connection.fetch(
        f"""SELECT at, username, action, site_id, state, target, detail
            FROM {SCHEMA}.changes WHERE target LIKE 'account:%'
            ORDER BY at DESC, change_id DESC LIMIT $1""",
        limit,
    )
    return [_change(r) for r in rows]


def _change(r: asyncpg.Record) -> Change:
    return Change(
        at=r["at"],
        username=r["username"],
        action=r["action"],
        site_id=r["site_id"],
        state=r["state"].strip() if r["state"] else None,
        target=r["target"],
        detail=json.loads(r["detail"]),
    )


async def changes(
    connection: Connection, sites: Iterable[str], states: Iterable[str], limit: int = 200
) -> list[Change]:
    """The newest changes touching these sites or states (or their sites' states)."""
    rows = await connection.fetch(
        f"""SELECT at, username, action, site_id, state, target, detail
            FROM {SCHEMA}.changes
            WHERE site_id = ANY($1::text[]) OR state = ANY($2::text[])
            ORDER BY at DESC, change_id DESC LIMIT $3""",
        list(sites),
        list(states),
        limit,
    )
    return [_change(r) for r in rows]


BOARD_FIELDS = ("status", "urgency", "location", "received_at", "updated_at", "holding")
"""What the board shows of each referral, for its audit entries."""


async def record_referral_view(
    connection: Connection,
    account: Account,
    site_id: str,
    referral_ids: Iterable[UUID],
    client_address: str | None = None,
) -> None:
    """Audit: this person was shown these referrals of the site, now. One row of the
    console's own `referral_views`, and, in the same transaction, one entry of the shared
    audit trail per referral shown (the account by id, for operations; decision 0024)."""
    shown = list(referral_ids)
    viewer = Accessor(
        ActorKind.CONSOLE_USER, str(account.account_id), Purpose.OPERATIONS, client_address
    )
    async with connection.transaction():
        await connection.execute(
            f"""INSERT INTO {SCHEMA}.referral_views (account_id, username, site_id, referral_ids)
                VALUES ($1, $2, $3, $4)""",
            account.account_id,
            account.username,
            site_id,
            shown,
        )
        for referral_id in shown:
            entry = viewer.saw("referral", referral_id, BOARD_FIELDS)
            await audit.record(connection, SCHEMA, entry)


async def override_authors(connection: Connection, override_ids: Iterable[str]) -> dict[str, str]:
    """Who added each of these overrides through the console, by override id: the person's
    name as their account has it (the change log's "override added" line names them)."""
    rows = await connection.fetch(
        f"""SELECT DISTINCT ON (c.detail->>'override_id') c.detail->>'override_id' AS id,
                   a.display_name
            FROM {SCHEMA}.changes c JOIN {SCHEMA}.accounts a USING (account_id)
            WHERE c.action = 'override added' AND c.detail->>'override_id' = ANY($1::text[])
            ORDER BY c.detail->>'override_id', c.at""",
        list(override_ids),
    )
    return {row["id"]: row["display_name"] for row in rows}
