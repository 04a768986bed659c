"""The `handoff` command: one group of subcommands per service and per tool.

A group's module is imported only when the group is named (`handoff referral site add`
imports the referral service's CLI, not the other services' web apps): an operator's
command starts in about half the time, and a test run that calls the CLI a few hundred
times spends minutes less CPU. `handoff --help` imports them all, to list them.
"""

import importlib

import typer
from typer import _click
from typer.core import TyperGroup

GROUPS: dict[str, str] = {
    "dev": "handoff_cli.dev",
    "schemas": "handoff_cli.schemas",
    "referral": "handoff_referral.entrypoints.cli",
    "matching": "handoff_matching.entrypoints.cli",
    "notify": "handoff_notify.entrypoints.cli",
    "demo": "handoff_cli.demo",
    "ops": "handoff_cli.ops",
    "console": "handoff_console.entrypoints.cli",
    "reports": "handoff_reports.entrypoints.cli",
}
"""Group name → the module whose `app` (a typer.Typer) holds its subcommands, in help order."""


class LazyGroups(TyperGroup):
    """The top-level group: GROUPS' modules imported on first use."""

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in GROUPS:
            return None
        group = typer.main.get_command(importlib.import_module(GROUPS[cmd_name]).app)
        group.name = cmd_name
        return group


app = typer.Typer(cls=LazyGroups, no_args_is_help=True)


@app.callback()
def handoff() -> None:
    """Handoff: page on-call peer recovery coaches for emergency departments."""
