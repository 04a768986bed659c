import typer

from handoff_cli import dev, schemas

app = typer.Typer(
    help="Handoff: page on-call peer recovery coaches for emergency departments.",
    no_args_is_help=True,
)
app.add_typer(dev.app, name="dev")
app.add_typer(schemas.app, name="schemas")
