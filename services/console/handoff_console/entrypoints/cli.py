"""`handoff console …`: serve the coordinator console, and manage who may sign in."""

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Annotated, TypeVar

import asyncpg
import httpx
import typer
import uvloop

from handoff_console import SCHEMA
from handoff_console.adapters import accounts
from handoff_console.adapters.accounts import UsernameTaken
from handoff_console.adapters.services import AdminApi, Endpoint, Refused, ServiceUnavailable
from handoff_console.app import serve
from handoff_console.domain.access import Role
from handoff_console.domain.account_rules import (
    InvalidAccount,
    site_ids,
    state_codes,
    username_key,
)
from handoff_console.settings import ConsoleSettings
from handoff_platform.audit import audit_cli
from handoff_platform.runtime import instrumented
from handoff_platform.settings import settings_or_exit

T = TypeVar("T")

app = typer.Typer(help="The coordinator console (a web app).", no_args_is_help=True)
users_app = typer.Typer(help="Console accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(audit_cli(SCHEMA), name="audit")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8005,
) -> None:
    """Serve the console (and /healthz, /readyz, /metrics)."""
    settings = settings_or_exit(ConsoleSettings)
    with instrumented("console", settings.log_level, settings.log_format):
        uvloop.run(serve(settings, host, port))


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _operator() -> str:
    """Who runs the CLI, for the change log: their $USER, else "cli"."""
    return os.environ.get("USER") or "cli"


def _read_password(from_stdin: bool) -> str:
    """The new password from stdin (one line) or asked twice; exits 2 when too short."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise _fail("the passwords differ", 2)
    if len(password) < 12:
        raise _fail("a password has at least 12 characters", 2)
    return password


def _in_transaction(
    settings: ConsoleSettings, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Run `work` in one transaction of the console's database (migrated first)."""

    async def run() -> T:
        await accounts.apply_migrations(settings.database_url)
        connection = await asyncpg.connect(settings.database_url)
        try:
            async with connection.transaction():
                return await work(connection)
        finally:
            await connection.close()

    return asyncio.run(run())


def _unknown_sites(settings: ConsoleSettings, sites: list[str]) -> list[str]:
    """The sites of `sites` the referral service does not know, asked of its admin API
    (`GET /v1/admin/sites`, as the console's pages do). Exits 1 when it cannot be asked."""

    async def ask() -> list[str]:
        async with httpx.AsyncClient(timeout=10.0) as client:
            api = AdminApi(
                client,
                Endpoint("referral", settings.console_referral_url, settings.referral_admin_token),
            )
            known = {row["site_id"] for row in await api.call("GET", "/v1/admin/sites")}
        return [site for site in sites if site not in known]

    try:
        return asyncio.run(ask())
    except ServiceUnavailable:
        raise _fail(
            f"cannot check --site: the referral service at {settings.console_referral_url} "
            "(CONSOLE_REFERRAL_URL) is not answering",
            1,
        ) from None
    except Refused as refused:
        raise _fail(
            f"cannot check --site: the referral service refused ({refused.status}: "
            f"{refused.message}); is REFERRAL_ADMIN_TOKEN set?",
            1,
        ) from None


@users_app.command("add")
def add_user(
    username: Annotated[str, typer.Option(help="What they sign in with (case-insensitive).")],
    role: Annotated[Role, typer.Option(help="coordinator, supervisor or read_only")],
    name: Annotated[
        str | None, typer.Option(help="Shown in the console; default username.")
    ] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="A whole state in scope: a USPS code (repeat).")
    ] = None,
    site: Annotated[
        list[str] | None,
        typer.Option(help="A site in scope (repeat); the referral service must know it."),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from stdin (else asked twice).")
    ] = False,
    totp: Annotated[
        bool, typer.Option(help="Also ask for a code from an authenticator app (TOTP).")
    ] = False,
) -> None:
    """Add an account. Its scope is at least one state or site. Exit 2 for a bad option
    (named), 1 for a name taken or the referral service not answering about --site."""
    try:
        key = username_key(username)
        states = state_codes(state or [])
        sites = site_ids(site or [])
    except InvalidAccount as invalid:
        raise _fail(str(invalid), 2) from None
    if not states and not sites:
        raise _fail("give --state or --site (repeatable): the account's scope", 2)
    settings = settings_or_exit(ConsoleSettings)
    if sites and (unknown := _unknown_sites(settings, sites)):
        raise _fail(f"--site: {unknown[0]!r} is not a site the referral service knows", 2)
    password = _read_password(password_stdin)

    async def add(connection: asyncpg.Connection) -> str | None:
        await accounts.add_account(connection, key, name or key, password, role, states, sites)
        uri = await accounts.enable_totp(connection, key) if totp else None
        detail = {"role": role.value, "states": states, "sites": sites, "totp": totp}
        await accounts.record_operator_change(
            connection, _operator(), "account added", f"account:{key}", detail
        )
        return uri

    try:
        uri = _in_transaction(settings, add)
    except UsernameTaken:
        raise _fail(f"an account named {key!r} exists", 1) from None
    typer.echo(f"added {key} ({role.value}; {', '.join([*states, *sites])})")
    if uri:
        typer.echo(f"authenticator app (shown once): {uri}")


@users_app.command("list")
def list_users() -> None:
    """Every account: username, role, scope, TOTP on/off, disabled, last sign-in (UTC).
    Never a password hash or TOTP secret."""
    settings = settings_or_exit(ConsoleSettings)
    rows = _in_transaction(settings, accounts.list_accounts)
    table = [("USERNAME", "ROLE", "SCOPE", "TOTP", "DISABLED", "LAST SIGN-IN")]
    for a in rows:
        table.append(
            (
                a.username,
                a.role.value,
                ",".join([*a.states, *a.sites]) or "-",
                "on" if a.totp else "off",
                "no" if a.active else "yes",
                a.last_sign_in_at.strftime("%Y-%m-%dT%H:%MZ") if a.last_sign_in_at else "never",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


@users_app.command("log")
def account_log(
    limit: Annotated[int, typer.Option(min=1, max=10000, help="How many, newest first.")] = 50,
) -> None:
    """The change log's account changes: when (UTC), who (a CLI operator's $USER), what."""
    settings = settings_or_exit(ConsoleSettings)
    for change in _in_transaction(settings, lambda c: accounts.account_changes(c, limit)):
        detail = " ".join(f"{k}={v}" for k, v in sorted(change.detail.items()))
        when = change.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = f"{when}  {change.username}  {change.action}  {change.target}  {detail}"
        typer.echo(line.rstrip())


UserArgument = Annotated[str, typer.Argument(help="The account's username.", show_default=False)]


def _change_account(
    username: str,
    action: str,
    change: Callable[[asyncpg.Connection, str], Awaitable[T | None]],
    detail: Callable[[T], dict[str, object]] | None = None,
) -> T:
    """Apply `change` to the account and log it as `action`, in one transaction; exits 1
    for no such account."""
    key = username.strip().lower()
    settings = settings_or_exit(ConsoleSettings)

    async def work(connection: asyncpg.Connection) -> T | None:
        result = await change(connection, key)
        if result is not None:
            await accounts.record_operator_change(
                connection,
                _operator(),
                action,
                f"account:{key}",
                detail(result) if detail else {},
            )
        return result

    result = _in_transaction(settings, work)
    if result is None:
        raise _fail(f"no account named {key!r}", 1)
    return result


@users_app.command("disable")
def disable_user(username: UserArgument) -> None:
    """Stop the account signing in; its sessions end at once."""
    ended = _change_account(
        username,
        "account disabled",
        lambda c, key: accounts.set_active(c, key, False),
        lambda n: {"sessions_ended": n},
    )
    typer.echo(f"disabled {username.strip().lower()} ({ended} session(s) ended)")


@users_app.command("enable")
def enable_user(username: UserArgument) -> None:
    """Let a disabled account sign in again."""
    _change_account(username, "account enabled", lambda c, key: accounts.set_active(c, key, True))
    typer.echo(f"enabled {username.strip().lower()}")


@users_app.command("remove")
def remove_user(
    username: UserArgument,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask to confirm.")] = False,
) -> None:
    """Delete the account; its sessions end. The change log keeps its name."""
    if not yes and not typer.confirm(f"remove the account {username.strip().lower()!r}?"):
        raise _fail("nothing removed", 1)
    ended = _change_account(
        username, "account removed", accounts.remove_account, lambda n: {"sessions_ended": n}
    )
    typer.echo(f"removed {username.strip().lower()} ({ended} session(s) ended)")


@users_app.command("password")
def set_password(
    username: UserArgument,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the new password from stdin (else asked twice).")
    ] = False,
) -> None:
    """Set a new password; every session of the account ends."""
    password = _read_password(password_stdin)
    ended = _change_account(
        username,
        "password set",
        lambda c, key: accounts.set_password(c, key, password),
        lambda n: {"sessions_ended": n},
    )
    typer.echo(f"new password for {username.strip().lower()} ({ended} session(s) ended)")


@users_app.command("totp")
def reset_totp(
    username: UserArgument,
    reset: Annotated[
        bool, typer.Option("--reset", help="Give the account a new TOTP secret.")
    ] = False,
) -> None:
    """With --reset: a new authenticator secret (the old app's codes stop working; sessions
    end). Prints the new otpauth:// URI once."""
    if not reset:
        raise _fail("--reset: give it to replace the account's TOTP secret", 2)
    uri = _change_account(username, "totp reset", accounts.reset_totp)
    typer.echo(f"authenticator app (shown once): {uri}")
