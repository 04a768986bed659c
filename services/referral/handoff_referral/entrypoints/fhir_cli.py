"""`handoff referral fhir-client …`: register a site's FHIR clients (SMART Backend Services)
by their public keys, list them, revoke them."""

import asyncio
import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from handoff_platform.database import Connection
from handoff_referral.adapters import fhir_store as store
from handoff_referral.adapters import postgres as referral_store
from handoff_referral.domain.smart import InvalidJwks, load_public_jwks
from handoff_referral.entrypoints.database import with_connection

app = typer.Typer(
    help="FHIR clients of a site: systems that get access tokens with signed assertions.",
    no_args_is_help=True,
)


@app.command("add")
def add_client(
    site_id: Annotated[str, typer.Option("--site", help="The site the client acts for.")],
    jwks_file: Annotated[
        Path | None, typer.Option("--jwks", help="A JSON file with the client's public keys.")
    ] = None,
    jwks_url: Annotated[
        str | None, typer.Option("--jwks-url", help="Where the client publishes its JWKS.")
    ] = None,
    label: Annotated[str, typer.Option(help="Who holds it, e.g. 'Epic Bridges'.")] = "FHIR client",
) -> None:
    """Register a client; prints its client_id (the `iss` and `sub` of its assertions)."""
    if (jwks_file is None) == (jwks_url is None):
        typer.echo("give exactly one of --jwks FILE or --jwks-url URL", err=True)
        raise typer.Exit(2)
    jwks: dict[str, Any] | None = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
            load_public_jwks(jwks if isinstance(jwks, dict) else {})
        except (OSError, ValueError, InvalidJwks) as error:
            typer.echo(f"invalid JWKS: {error}", err=True)
            raise typer.Exit(2) from None
    elif jwks_url is not None and not jwks_url.startswith("https://"):
        typer.echo("warning: a JWKS URL should be https", err=True)
    client_id = f"hfc_{secrets.token_hex(8)}"

    async def add(connection: Connection) -> bool:
        if await referral_store.get_site(connection, site_id) is None:
            return False
        await store.add_client(connection, client_id, site_id, label, jwks, jwks_url)
        return True

    if not asyncio.run(with_connection(add)):
        typer.echo(f"no site {site_id}", err=True)
        raise typer.Exit(1)
    typer.echo(client_id)


@app.command("list")
def list_clients(
    site_id: Annotated[str | None, typer.Option("--site", help="Only this site's.")] = None,
) -> None:
    """Every client: id, site, label, where its keys are, and whether it is revoked."""
    for client in asyncio.run(with_connection(lambda c: store.list_clients(c, site_id))):
        keys = client.jwks_url or f"{len((client.jwks or {}).get('keys', []))} key(s) stored"
        state = f"revoked {client.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if client.revoked_at else "active"
        typer.echo(f"{client.client_id}\t{client.site_id}\t{client.label}\t{keys}\t{state}")


@app.command("revoke")
def revoke_client(client_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a client: no new tokens, and its current ones stop working at once."""
    if not asyncio.run(with_connection(lambda c: store.revoke_client(c, client_id))):
        typer.echo(f"no active client {client_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {client_id}")
