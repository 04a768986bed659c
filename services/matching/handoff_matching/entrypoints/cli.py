"""`handoff matching …`: the roster, from files program coordinators keep."""

import asyncio
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
import uvloop

from handoff_matching.adapters.roster_store import ImportSummary, apply_migrations, import_roster
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.roster_csv import CsvFile, parse_roster_csv
from handoff_matching.roster_file import RosterFile, RosterProblems, parse_roster
from handoff_matching.service import roster_changed
from handoff_platform.http import serve_http
from handoff_platform.runtime import instrumented
from handoff_platform.settings import PlatformSettings, settings_or_exit

app = typer.Typer(help="The matching service: roster, on-call, offers.", no_args_is_help=True)
roster_app = typer.Typer(help="Coaches, certifications and shifts.", no_args_is_help=True)
app.add_typer(roster_app, name="roster")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8002,
) -> None:
    """Run the consumers, the outbox relay, the timers, and /healthz, /readyz, /metrics."""
    settings = settings_or_exit(MatchingSettings)
    with instrumented("matching", settings.log_level, settings.log_format):
        uvloop.run(_serve(settings, host, port))


async def _serve(settings: MatchingSettings, host: str, port: int) -> None:
    runtime = await MatchingRuntime.start(settings)
    try:
        await serve_http(runtime.app, host, port)
    finally:
        await runtime.stop()


@roster_app.command("import")
def import_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="One roster.json, or CSV files of coaches, shifts and overrides.",
        ),
    ],
    dry_run: Annotated[bool, typer.Option(help="Validate only; store nothing.")] = False,
) -> None:
    """Import a roster; every problem is reported with its file, row and field."""
    try:
        roster = _read_roster(files)
    except RosterProblems as problems:
        for problem in problems.problems:
            typer.echo(problem, err=True)
        typer.echo(f"{len(problems.problems)} problem(s); nothing was imported", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(f"valid: {len(roster.coaches)} coaches, {len(roster.shifts)} shifts")
        return
    summary = asyncio.run(_store(PlatformSettings().database_url, roster))
    typer.echo(
        f"imported {summary.coaches} coaches, {summary.certifications} certifications, "
        f"{summary.shifts} shifts, {summary.overrides} overrides"
    )


def _read_roster(files: list[Path]) -> RosterFile:
    if all(f.suffix.lower() == ".csv" for f in files):
        return parse_roster_csv([CsvFile(f.name, f.read_text()) for f in files])
    if len(files) == 1 and files[0].suffix.lower() == ".json":
        try:
            return parse_roster(files[0].read_text())
        except RosterProblems as problems:
            raise RosterProblems([f"{files[0]}: {p}" for p in problems.problems]) from None
    raise RosterProblems(["give one .json file, or .csv files only"])


async def _store(database_url: str, roster: RosterFile) -> ImportSummary:
    await apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        summary = await import_roster(connection, roster)
        await roster_changed(connection)  # capacity or shifts may have grown: serve the line
        return summary
    finally:
        await connection.close()
