"""`handoff schemas generate|check`: the committed JSON Schema files of the event contract."""

import typer

from handoff_schemas.catalog import EVENT_TYPES
from handoff_schemas.compatibility import breaking_changes
from handoff_schemas.schema_files import IncompatibleChange, committed, generate, write_all

app = typer.Typer(help="The event contract's JSON Schema files.", no_args_is_help=True)


@app.command("generate")
def generate_files() -> None:
    """Rewrite schemas/jsonschema from the models; refuses breaking changes to a version."""
    try:
        for path in write_all():
            typer.echo(f"wrote {path}")
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
    for failure in failures:
        typer.echo(failure, err=True)
    if failures:
        raise typer.Exit(1)
    typer.echo(f"{len(EVENT_TYPES)} event schemas match their models")
