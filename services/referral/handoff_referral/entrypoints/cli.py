"""`handoff referral …`: run the service, migrate its schema, administer sites and keys."""

import asyncio
from typing import Annotated

import typer
import uvloop

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
from handoff_referral.domain.sites import InvalidSite, checked_site
from handoff_referral.entrypoints import fhir_cli, follow_ups_cli, webhooks_cli
from handoff_referral.entrypoints.database import with_connection
from handoff_referral.entrypoints.hl7_cli import interface_app, mllp_app
from handoff_referral.service import register_site, update_site
from handoff_referral.settings import ReferralServerSettings, ReferralSettings

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
        str | None,
        typer.Option(
            help="Days after a visit each follow-up window opens, 1..365 ascending"
            f" [default: {','.join(map(str, DEFAULT_SCHEDULE))}]."
        ),
    ] = None,
) -> None:
    """Register an emergency department. Run again with the same details, it changes
    nothing (exit 0); with other details (or other --follow-up-days, when given), it
    refuses (exit 1) naming them: `site update` and `follow-ups schedule` change them."""
    site = _checked_site(site_id, name, short_name, state, time_zone)
    try:
        days = None if follow_up_days is None else [int(d) for d in follow_up_days.split(",")]
        schedule = check_schedule(days if days is not None else list(DEFAULT_SCHEDULE))
    except ValueError as error:
        field = error.field if isinstance(error, BadInput) else "follow_up_days"
        typer.echo(f"invalid site: {field}: {error}", err=True)
        raise typer.Exit(2) from None

    async def add(connection: Connection) -> tuple[Site, tuple[int, ...] | None] | None:
        """None if added, else the site and its schedule as registered before."""
        if await register_site(connection, site):
            await follow_up_store.set_schedule(connection, site.site_id, schedule)
            return None
        before = await store.get_site(connection, site.site_id)
        assert before is not None  # sites are never deleted
        return before, await follow_up_store.schedule(connection, site.site_id)

    registered = asyncio.run(with_connection(add))
    if registered is None:
        typer.echo(f"site {site_id} added")
        return
    before, before_schedule = registered
    differing, commands = _differences(before, site), []
    if differing:
        commands.append(f"`handoff referral site update --id {site_id}`")
    if days is not None and before_schedule is not None and tuple(schedule) != before_schedule:
        differing.append("follow-up days")
        commands.append(f"`handoff referral follow-ups schedule --site {site_id}`")
    if differing:
        typer.echo(
            f"site {site_id} already exists with another {', '.join(differing)};"
            f" change it with {' and '.join(commands)}",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"site {site_id} already exists")


@site_app.command("update")
def update_site_command(
    site_id: Annotated[str, typer.Option("--id", help="The site's slug.")],
    name: Annotated[str | None, typer.Option(help="Full name.")] = None,
    short_name: Annotated[str | None, typer.Option(help="Shown in pages, ≤ 40 characters.")] = None,
    state: Annotated[str | None, typer.Option(help="USPS state code.")] = None,
    time_zone: Annotated[str | None, typer.Option(help="IANA time zone.")] = None,
) -> None:
    """Change a site's name, short name, state or time zone (those given; the others stay).
    Matching learns of it at once (SiteRegistered); referrals received from then on are
    paged with the new short name, and shifts resolve in the new time zone. Exit 1 if the
    site is not registered, 2 for a bad value."""

    async def update(connection: Connection) -> tuple[Site, Site, bool] | None:
        """(before, after, written), or None if there is no such site."""
        before = await store.get_site(connection, site_id)
        if before is None:
            return None
        after = _checked_site(
            site_id,
            name if name is not None else before.name,
            short_name if short_name is not None else before.short_name,
            state if state is not None else before.state,
            time_zone if time_zone is not None else before.time_zone,
        )
        return before, after, await update_site(connection, after)

    outcome = asyncio.run(with_connection(update))
    if outcome is None:
        typer.echo(f"no site {site_id}", err=True)
        raise typer.Exit(1)
    before, after, written = outcome
    if not written:
        typer.echo(f"site {site_id} unchanged")
        return
    typer.echo(f"site {site_id} updated: {', '.join(_differences(before, after))}")


def _checked_site(site_id: str, name: str, short_name: str, state: str, time_zone: str) -> Site:
    """The site, its details checked (`checked_site`); exits 2 naming what is wrong."""
    try:
        return checked_site(site_id, name, short_name, state, time_zone)
    except InvalidSite as error:
        typer.echo(f"invalid site: {error}", err=True)
        raise typer.Exit(2) from None


def _differences(before: Site, after: Site) -> list[str]:
    """The details that differ, named as the options are: 'name', 'short name', …"""
    fields = ("name", "short_name", "state", "time_zone")
    return [f.replace("_", " ") for f in fields if getattr(before, f) != getattr(after, f)]


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
