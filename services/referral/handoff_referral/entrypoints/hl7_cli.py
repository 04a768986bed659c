"""`handoff referral mllp …` and `handoff referral interface …`: the HL7 v2 listener and the
interface registrations of the sites whose integration engines talk to it."""

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvloop
from pydantic import ValidationError

from handoff_platform.database import Connection
from handoff_platform.runtime import instrumented
from handoff_platform.settings import settings_or_exit
from handoff_referral.adapters import hl7_store
from handoff_referral.adapters import postgres as store
from handoff_referral.domain.hl7 import Interface
from handoff_referral.entrypoints.database import with_connection
from handoff_referral.mllp_app import serve
from handoff_referral.settings import ReferralSettings

mllp_app = typer.Typer(help="The HL7 v2 listener (MLLP over TCP).", no_args_is_help=True)
interface_app = typer.Typer(
    help="HL7 v2 interfaces: which sender (MSH-3, MSH-4) speaks for which site, and how its "
    "orders map to referrals.",
    no_args_is_help=True,
)


@mllp_app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="MLLP port; default MLLP_PORT, 2575.")] = None,
    http_port: Annotated[int, typer.Option(help="/healthz, /readyz, /metrics.")] = 8004,
) -> None:
    """Take HL7 v2 orders and ADT messages over MLLP; answer each with an ACK."""
    settings = settings_or_exit(ReferralSettings)
    with instrumented("referral-mllp", settings.log_level):
        mllp_port = port if port is not None else settings.mllp_port
        uvloop.run(serve(settings, host, mllp_port, http_port))


@interface_app.command("add")
def add_interface(
    mapping: Annotated[Path, typer.Argument(help="The interface's JSON file (see README).")],
    move: Annotated[
        bool,
        typer.Option(
            "--move",
            help="The sender is registered for another site: move it to this file's site_id.",
        ),
    ] = False,
) -> None:
    """Register a site's interface, or replace the mapping of one already registered.

    Exit 1 if the site does not exist, 3 if the sender (MSH-3/MSH-4) belongs to another site
    and --move was not given (nothing changed), 2 if the file cannot be read."""
    try:
        interface = Interface.model_validate_json(mapping.read_bytes())
    except (OSError, ValidationError) as error:
        typer.echo(f"invalid interface file: {error}", err=True)
        raise typer.Exit(2) from None
    sender = f"{interface.sending_application}/{interface.sending_facility}"

    async def add(connection: Connection) -> hl7_store.SavedInterface | None:
        if await store.get_site(connection, interface.site_id) is None:
            return None
        return await hl7_store.save_interface(connection, interface, move=move)

    try:
        saved = asyncio.run(with_connection(add))
    except hl7_store.SenderOfAnotherSite as taken:
        typer.echo(
            f"interface {sender} belongs to site {taken.site_id}, not {interface.site_id}; "
            f"nothing changed. Check the file's site_id, or pass --move to route this "
            f"sender's messages to {interface.site_id} from now on.",
            err=True,
        )
        raise typer.Exit(3) from None
    if saved is None:
        typer.echo(f"no site {interface.site_id}", err=True)
        raise typer.Exit(1)
    previous = saved.previous_site
    if previous is not None and previous != interface.site_id:
        typer.echo(f"interface {sender} moved from {previous} to {interface.site_id}")
    else:
        done = "added" if saved.created else "updated"
        typer.echo(f"interface {sender} for {interface.site_id} {done}")


@interface_app.command("list")
def list_interfaces(
    site_id: Annotated[str | None, typer.Option("--site", help="Only this site's.")] = None,
) -> None:
    """One line per interface: site, sending application, facility, order codes."""
    interfaces = asyncio.run(with_connection(lambda c: hl7_store.list_interfaces(c, site_id)))
    for interface in interfaces:
        codes = ",".join(sorted(interface.order_codes))
        typer.echo(
            f"{interface.site_id}\t{interface.sending_application}\t"
            f"{interface.sending_facility}\t{codes}"
        )


@interface_app.command("remove")
def remove_interface(
    application: Annotated[str, typer.Option(help="MSH-3 sending application.")],
    facility: Annotated[str, typer.Option(help="MSH-4 sending facility.")],
) -> None:
    """Remove an interface; its messages are rejected (AR) from now on."""
    removed = asyncio.run(
        with_connection(lambda c: hl7_store.remove_interface(c, application, facility))
    )
    if not removed:
        typer.echo(f"no interface {application}/{facility}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {application}/{facility}")
