"""`handoff schemas generate|check`: the committed JSON Schema files of the event contract,
and the AsyncAPI document built from them (schemas/asyncapi.yaml)."""

from importlib.metadata import version

import typer
import yaml

from handoff_schemas.asyncapi import ASYNCAPI_FILE, document
from handoff_schemas.catalog import EVENT_TYPES
from handoff_schemas.compatibility import breaking_changes
from handoff_schemas.schema_files import IncompatibleChange, committed, generate, write_all

app = typer.Typer(help="The event contract's JSON Schema and AsyncAPI files.", no_args_is_help=True)


def asyncapi_yaml() -> str:
    """The AsyncAPI document of the contract as this code defines it, as YAML text."""
    return yaml.safe_dump(
        document(version("handoff")), sort_keys=False, allow_unicode=True, width=100
    )


@app.command("generate")
def generate_files() -> None:
    """Rewrite schemas/jsonschema from the models; refuses breaking changes to a version."""
    try:
        for path in write_all():
            typer.echo(f"wrote {path}")
        ASYNCAPI_FILE.write_text(asyncapi_yaml())
        typer.echo(f"wrote {ASYNCAPI_FILE}")
    except IncompatibleChange as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@app.command()
def check() -> None:
    """Fail if a committed file differs from its model, or a change would break consumers."""
    failures = []
    for payload_class in EVENT_TYPES.values():
        old = committed(payload_class)
        new = generate(payload_class)
        if old is None:
            failures.append(f"{payload_class.event_type}: no committed schema file")
        elif old != new:
            breaking = breaking_changes(old, new)
            kind = "breaking change: " + "; ".join(breaking) if breaking else "not regenerated"
            failures.append(f"{payload_class.event_type}: {kind}")
    if not ASYNCAPI_FILE.exists() or ASYNCAPI_FILE.read_text() != asyncapi_yaml():
        failures.append(f"{ASYNCAPI_FILE.name}: not regenerated (handoff schemas generate)")
    for failure in failures:
        typer.echo(failure, err=True)
    if failures:
        raise typer.Exit(1)
    typer.echo(f"{len(EVENT_TYPES)} event schemas and {ASYNCAPI_FILE.name} match their models")
