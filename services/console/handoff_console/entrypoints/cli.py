"""`handoff console …`: serve the coordinator console, and manage who may sign in."""

import asyncio
import getpass
import sys
from typing import Annotated

import asyncpg
import typer
import uvloop

from handoff_console import SCHEMA
from handoff_console.adapters import accounts
from handoff_console.adapters.accounts import UsernameTaken
from handoff_console.app import serve
from handoff_console.domain.access import Role
from handoff_console.settings import ConsoleSettings
from handoff_platform.audit import audit_cli
from handoff_platform.runtime import instrumented
from handoff_platform.settings import PlatformSettings, settings_or_exit

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


@users_app.command("add")
def add_user(
    username: Annotated[str, typer.Option(help="What they sign in with.")],
    role: Annotated[Role, typer.Option(help="coordinator, supervisor or read_only")],
    name: Annotated[
        str | None, typer.Option(help="Shown in the console; default username.")
    ] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="A whole state in scope (repeat).")
    ] = None,
    site: Annotated[list[str] | None, typer.Option(help="A site in scope (repeat).")] = None,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from stdin (else asked twice).")
    ] = False,
    totp: Annotated[
        bool, typer.Option(help="Also ask for a code from an authenticator app (TOTP).")
    ] = False,
) -> None:
    """Add an account. Its scope is at least one state or site."""
    states = [s.upper() for s in state or []]
    if not states and not site:
        typer.echo("give --state or --site (repeatable): the account's scope", err=True)
        raise typer.Exit(2)
    if any(len(s) != 2 or not s.isalpha() for s in states):
        typer.echo("--state is a two-letter USPS code, such as MD", err=True)
        raise typer.Exit(2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            typer.echo("the passwords differ", err=True)
            raise typer.Exit(2)
    if len(password) < 12:
        typer.echo("a password has at least 12 characters", err=True)
        raise typer.Exit(2)
    database_url = settings_or_exit(PlatformSettings).database_url
    try:
        uri = asyncio.run(
            _add(database_url, username, name or username, password, role, states, site or [], totp)
        )
    except UsernameTaken:
        typer.echo(f"an account named {username!r} exists", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"added {username} ({role.value}; {', '.join([*states, *(site or [])])})")
    if uri:
        typer.echo(f"authenticator app (shown once): {uri}")


async def _add(
    database_url: str,
    username: str,
    name: str,
    password: str,
    role: Role,
    states: list[str],
    sites: list[str],
    totp: bool,
) -> str | None:
    await accounts.apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await accounts.add_account(connection, username, name, password, role, states, sites)
            return await accounts.enable_totp(connection, username) if totp else None
    finally:
        await connection.close()
