import typer

from handoff_cli import demo, dev, ops, schemas
from handoff_console.entrypoints import cli as console
from handoff_matching.entrypoints import cli as matching
from handoff_notify.entrypoints import cli as notify
from handoff_referral.entrypoints import cli as referral
from handoff_reports.entrypoints import cli as reports

app = typer.Typer(
    help="Handoff: page on-call peer recovery coaches for emergency departments.",
    no_args_is_help=True,
)
app.add_typer(dev.app, name="dev")
app.add_typer(schemas.app, name="schemas")
app.add_typer(referral.app, name="referral")
app.add_typer(matching.app, name="matching")
app.add_typer(notify.app, name="notify")
app.add_typer(demo.app, name="demo")
app.add_typer(ops.app, name="ops")
app.add_typer(console.app, name="console")
app.add_typer(reports.app, name="reports")
