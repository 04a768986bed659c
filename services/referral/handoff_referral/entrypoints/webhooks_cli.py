"""`handoff referral webhooks …`: a site's status webhook (callback URL, signing secret),
and its deliveries: list the failing ones, replay them (decision 0022)."""

import asyncio
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import typer

from handoff_platform.settings import settings_or_exit
from handoff_referral import webhook_admin
from handoff_referral.domain.webhooks import BadCallbackUrl
from handoff_referral.entrypoints.database import with_connection
from handoff_referral.settings import ReferralSettings

app = typer.Typer(
    help="Status webhooks: every timeline step POSTed, signed, to the site's callback URL.",
    no_args_is_help=True,
)

SiteOption = Annotated[str, typer.Option("--site", help="The site, e.g. md-mercy.")]


@app.command("set")
def set_callback(
    site_id: SiteOption,
    url: Annotated[str, typer.Option(help="Where to POST, https://…")],
) -> None:
    """Set or change the site's callback URL. A new callback's signing secret is printed
    once (stdout); changing the URL keeps the secret."""
    settings = settings_or_exit(ReferralSettings)
    try:
        result = asyncio.run(
            with_connection(
                lambda c: webhook_admin.set_callback(
                    c, site_id, url, https_only=not settings.webhook_allow_http
                )
            )
        )
    except BadCallbackUrl as error:
        typer.echo(f"invalid --url: {error}", err=True)
        raise typer.Exit(2) from None
    except webhook_admin.UnknownSite:
        typer.echo(f"no site {site_id}", err=True)
        raise typer.Exit(1) from None
    if result.secret is None:
        typer.echo(f"callback of {site_id} changed; its signing secret is unchanged", err=True)
    else:
        typer.echo(f"callback of {site_id} set; its signing secret (shown once):", err=True)
        typer.echo(result.secret)


@app.command("rotate-secret")
def rotate_secret(site_id: SiteOption) -> None:
    """A new signing secret, printed once; the old one also signs for 24 hours."""
    try:
        secret, until = asyncio.run(
            with_connection(lambda c: webhook_admin.rotate_secret(c, site_id))
        )
    except webhook_admin.NoCallback:
        typer.echo(f"site {site_id} has no callback", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"new secret; the old one also signs until {until:%Y-%m-%dT%H:%M:%SZ}", err=True)
    typer.echo(secret)


@app.command("remove")
def remove_callback(site_id: SiteOption) -> None:
    """Stop the site's webhooks; steps not yet delivered are marked abandoned (replayable
    once a callback is set again)."""
    try:
        asyncio.run(with_connection(lambda c: webhook_admin.remove_callback(c, site_id)))
    except webhook_admin.NoCallback:
        typer.echo(f"site {site_id} has no callback", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"callback of {site_id} removed")


@app.command("callbacks")
def list_callbacks(
    site_id: Annotated[str | None, typer.Option("--site", help="Only this site's.")] = None,
) -> None:
    """Each site's callback URL (never its secret)."""
    for endpoint in asyncio.run(with_connection(lambda c: webhook_admin.callbacks(c, site_id))):
        rotating = (
            f"previous secret valid until {endpoint.rotating_until:%Y-%m-%dT%H:%M:%SZ}"
            if endpoint.rotating_until
            else ""
        )
        typer.echo(f"{endpoint.site_id}\t{endpoint.url}\t{rotating}".rstrip())


@app.command("list")
def list_deliveries(
    site_id: Annotated[str | None, typer.Option("--site", help="Only this site's.")] = None,
    referral_id: Annotated[
        UUID | None, typer.Option("--referral", help="Only this referral's.")
    ] = None,
    failing: Annotated[
        bool,
        typer.Option(
            "--failing",
            help="Only failed and abandoned ones, ones being retried, and ones waiting "
            "behind those.",
        ),
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """Deliveries, newest first: id, site, referral, step, state, attempts, created, next
    attempt, last error (or `waiting behind <id>`: the failing step of its referral that
    holds it)."""
    rows = asyncio.run(
        with_connection(lambda c: webhook_admin.deliveries(c, site_id, referral_id, failing, limit))
    )
    for row in rows:
        behind = f"waiting behind {row.waiting_behind}" if row.waiting_behind else ""
        next_attempt = f"{row.next_attempt_at:%Y-%m-%dT%H:%M:%SZ}" if row.state == "pending" else ""
        typer.echo(
            f"{row.delivery_id}\t{row.site_id}\t{row.referral_id}\t{row.step}\t{row.state}\t"
            f"{row.attempts}\t{row.created_at:%Y-%m-%dT%H:%M:%SZ}\t{next_attempt}\t"
            f"{row.last_error or behind}"
        )


@app.command("replay")
def replay(
    site_id: Annotated[str | None, typer.Option("--site", help="The site's deliveries.")] = None,
    referral_id: Annotated[
        UUID | None, typer.Option("--referral", help="One referral's deliveries.")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="Steps queued at or after this time (ISO 8601, UTC if no offset)."),
    ] = None,
    failed_only: Annotated[
        bool,
        typer.Option("--failed-only", help="Only failed or abandoned ones, not delivered ones."),
    ] = False,
) -> None:
    """Send delivered or failed steps again, in order, with their original webhook-id, and
    a new 24 h of retries."""
    if site_id is None and referral_id is None:
        typer.echo("give --site (and --since) or --referral", err=True)
        raise typer.Exit(2)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        count = asyncio.run(
            with_connection(
                lambda c: webhook_admin.replay(c, site_id, referral_id, since, failed_only)
            )
        )
    except webhook_admin.UnknownSite:
        typer.echo(f"no site {site_id}", err=True)
        raise typer.Exit(1) from None
    except webhook_admin.UnknownReferral:
        typer.echo(f"no referral {referral_id}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{count} deliveries queued again")
