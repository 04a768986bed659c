"""`handoff referral follow-ups …`: a site's follow-up schedule, withdrawing a patient's
follow-up consent, and re-encrypting the stored contact details under a new key."""

import asyncio
from typing import Annotated
from uuid import UUID

import asyncpg
import typer

from handoff_platform import outbox, timers
from handoff_platform.database import Connection, notify
from handoff_platform.outbox import Outbox
from handoff_platform.settings import settings_or_exit
from handoff_platform.timers import Timers
from handoff_referral import SCHEMA
from handoff_referral.adapters import follow_up_store as store
from handoff_referral.adapters.contact_vault import ContactVault, UnreadableContact
from handoff_referral.app import apply_migrations
from handoff_referral.domain.follow_ups import BadInput, check_schedule
from handoff_referral.entrypoints.database import with_connection
from handoff_referral.follow_ups import FollowUpService, NoConsent, Revocation, rotate_keys
from handoff_referral.settings import ReferralSettings

app = typer.Typer(
    help="Follow-ups after the bedside visit: schedules, consent, contact encryption keys.",
    no_args_is_help=True,
)


def _vault(settings: ReferralSettings) -> ContactVault:
    keys = settings.follow_up_keys.get_secret_value() if settings.follow_up_keys else None
    vault = ContactVault(keys)
    if not vault.configured:
        typer.echo("FOLLOW_UP_KEYS is not set", err=True)
        raise typer.Exit(2)
    return vault


@app.command("rotate-keys")
def rotate_keys_command() -> None:
    """Re-encrypt every stored contact under the first key of FOLLOW_UP_KEYS. First restart
    every referral replica with FOLLOW_UP_KEYS=new,old; then run this with new,old; then
    restart them with the new key alone."""
    settings = settings_or_exit(ReferralSettings)
    try:
        vault = _vault(settings)
    except ValueError:
        typer.echo("FOLLOW_UP_KEYS: each key must be a Fernet key (32 bytes, base64)", err=True)
        raise typer.Exit(2) from None
    try:
        count = asyncio.run(with_connection(lambda c: rotate_keys(c, vault)))
    except UnreadableContact:
        typer.echo("a stored contact opens with none of FOLLOW_UP_KEYS: add its key", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"re-encrypted {count} contacts under the first key")
    # It cannot see the running services' keys: the order is the operator's to keep.
    typer.echo(
        "next: restart every referral replica with the new key alone in FOLLOW_UP_KEYS "
        "(they had to run with new,old before this), then destroy the old key"
    )


@app.command("schedule")
def set_schedule(
    site_id: Annotated[str, typer.Option("--site", help="The site, e.g. md-mercy.")],
    days: Annotated[str, typer.Option(help="Days after the visit, e.g. 1,30,90.")],
) -> None:
    """Set the days after a visit each of the site's follow-up windows opens."""
    try:
        parsed = check_schedule([int(d) for d in days.split(",")])
    except ValueError as error:
        field = error.field if isinstance(error, BadInput) else "days"
        typer.echo(f"{field}: {error}", err=True)
        raise typer.Exit(2) from None
    if not asyncio.run(with_connection(lambda c: store.set_schedule(c, site_id, parsed))):
        typer.echo(f"no site {site_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"site {site_id}: follow-ups {', '.join(map(str, parsed))} days after the visit")


@app.command("revoke-consent")
def revoke_consent(
    referral_id: Annotated[UUID, typer.Option("--referral", help="The referral's id.")],
) -> None:
    """The patient withdrew their follow-up consent: cancel every open follow-up and
    erase their contact details."""
    settings = settings_or_exit(ReferralSettings)
    try:
        revoked = asyncio.run(_revoke(settings, referral_id))
    except NoConsent:
        typer.echo(f"no follow-up consent recorded for referral {referral_id}", err=True)
        raise typer.Exit(1) from None
    if revoked.already:
        typer.echo(
            "withdrawal recorded; nothing was left to stop (consent revoked before, or "
            "follow-up already ended and the number deleted): 0 follow-ups cancelled"
        )
    else:
        typer.echo(f"consent revoked: {revoked.tasks_cancelled} follow-ups cancelled")


async def _revoke(settings: ReferralSettings, referral_id: UUID) -> Revocation:
    await apply_migrations(settings.database_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        # No contact is read or sealed to revoke: the vault needs no keys here.
        service = FollowUpService(pool, Outbox(SCHEMA), Timers(SCHEMA), ContactVault(None))
        revoked = await service.revoke(referral_id, None)
        async with pool.acquire() as connection:
            await _wake_service(connection)
        return revoked
    finally:
        await pool.close()


async def _wake_service(connection: Connection) -> None:
    """Tell the running service's relay and timer loops (NOTIFY) to look now."""
    await notify(connection, outbox.NOTIFY_CHANNEL, SCHEMA)
    await notify(connection, timers.NOTIFY_CHANNEL, SCHEMA)
