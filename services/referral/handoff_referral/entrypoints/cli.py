"""`handoff referral …`: run the service, migrate its schema, administer sites and keys."""

import asyncio
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
import uvloop
from pydantic import ValidationError

from handoff_platform.audit import audit_cli
from handoff_platform.database import Connection
from handoff_platform.runtime import instrumented
from handoff_platform.settings import settings_or_exit
from handoff_referral import SCHEMA
from handoff_referral.adapters import follow_up_store
from handoff_referral.adapters import postgres as store
from handoff_referral.app import apply_migrations, serve
from handoff_referral.domain.api_keys import issue_key
from handoff_referral.domain.follow_ups import DEFAULT_SCHEDULE, BadInput, check_schedule
from handoff_referral.domain.referral import Site
from handoff_referral.entrypoints import fhir_cli, follow_ups_cli, webhooks_cli
from handoff_referral.entrypoints.database import with_connection
from handoff_referral.entrypoints.hl7_cli import interface_app, mllp_app
from handoff_referral.service import register_site
from handoff_referral.settings import ReferralServerSettings, ReferralSettings
from handoff_schemas.events import SiteFacts

app = typer.Typer(help="The referral service: the API hospitals talk to.", no_args_is_help=True)
site_app = typer.Typer(help="Sites (emergency departments).", no_args_is_help=True)
key_app = typer.Typer(help="API keys of a site's systems.", no_args_is_help=True)
app.add_typer(site_app, name="site")
app.add_typer(key_app, name="key")
app.add_typer(interface_app, name="interface")
app.add_typer(mllp_app, name="mllp")
app.add_typer(fhir_cli.app, name="fhir-client")
app.add_typer(webhooks_cli.app, name="webhooks")
app.add_typer(audit_cli(SCHEMA), name="audit")
app.add_typer(follow_ups_cli.app, name="follow-ups")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8001,
) -> None:
    """Run the API, the outbox relay and the timeline consumers (FOLLOW_UP_KEYS required)."""
    settings = settings_or_exit(ReferralServerSettings)
    with instrumented("referral", settings.log_level, settings.log_format):
        uvloop.run(serve(settings, host, port))


@app.command()
def migrate() -> None:
    """Apply pending migrations to the `referral` schema (also done at startup)."""
    applied = asyncio.run(apply_migrations(settings_or_exit(ReferralSettings).database_url))
    typer.echo("\n".join(applied) if applied else "up to date")


@site_app.command("add")
def add_site(
    site_id: Annotated[str, typer.Option("--id", help="Stable slug, e.g. md-mercy.")],
    name: Annotated[str, typer.Option(help="Full name.")],
    short_name: Annotated[str, typer.Option(help="Shown in pages, ≤ 40 characters.")],
    state: Annotated[str, typer.Option(help="USPS state code.")],
    time_zone: Annotated[str, typer.Option(help="IANA time zone.")],
    follow_up_days: Annotated[
        str,
        typer.Option(help="Days after a visit each follow-up window opens, 1..365 ascending."),
    ] = ",".join(map(str, DEFAULT_SCHEDULE)),
) -> None:
    """Register an emergency department."""
    try:
        facts = SiteFacts(site_id=site_id, short_name=short_name, state=state, time_zone=time_zone)
        ZoneInfo(time_zone)
    except (ValidationError, ZoneInfoNotFoundError, ValueError) as error:
        typer.echo(f"invalid site: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        schedule = check_schedule([int(d) for d in follow_up_days.split(",")])
    except ValueError as error:
        field = error.field if isinstance(error, BadInput) else "follow_up_days"
        typer.echo(f"invalid site: {field}: {error}", err=True)
        raise typer.Exit(2) from None
    site = Site(
        site_id=facts.site_id,
        name=name,
        short_name=facts.short_name,
        state=facts.state,
        time_zone=facts.time_zone,
    )

    async def add(connection: Connection) -> bool:
        added = await register_site(connection, site)
        if added:
            await follow_up_store.set_schedule(connection, site.site_id, schedule)
        return added

    added = asyncio.run(with_connection(add))
    typer.echo(f"site {site_id} {'added' if added else 'already exists'}")


@key_app.command("create")
def create_key(
    site_id: Annotated[str, typer.Option("--site", help="The site the key acts for.")],
    label: Annotated[str, typer.Option(help="Who holds it, e.g. 'Epic interface'.")],
) -> None:
    """Create an API key. It is printed once and stored only as a hash."""
    key = issue_key()

    async def create(connection: Connection) -> bool:
        if await store.get_site(connection, site_id) is None:
            return False
        await store.add_key(connection, site_id, key, label)
        return True

    if not asyncio.run(with_connection(create)):
        typer.echo(f"no site {site_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"key id: {key.key_id}", err=True)
    typer.echo(key.token)


@key_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a key; requests with it are refused from now on."""
    if not asyncio.run(with_connection(lambda c: store.revoke_key(c, key_id))):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
