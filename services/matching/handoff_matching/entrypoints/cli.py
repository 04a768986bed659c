"""`handoff matching …`: the roster, from files program coordinators keep."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar
from uuid import UUID

import asyncpg
import typer
import uvloop
from pydantic import ValidationError

from handoff_matching.adapters import schedule_store
from handoff_matching.adapters.roster_store import ImportSummary, apply_migrations, import_roster
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.domain.rotations import ShiftUnit
from handoff_matching.entrypoints.schedules_api import (
    RotationIn,
    RotationOut,
    store_calendar,
    store_rotation,
)
from handoff_matching.roster_csv import CsvFile, parse_roster_csv
from handoff_matching.roster_file import RosterFile, RosterProblems, _pool, parse_roster
from handoff_matching.service import roster_changed
from handoff_platform.http import ApiError
from handoff_platform.runtime import instrumented
from handoff_platform.settings import PlatformSettings, settings_or_exit
from handoff_platform.startup import serve_when_started

T = TypeVar("T")

app = typer.Typer(help="The matching service: roster, on-call, offers.", no_args_is_help=True)
roster_app = typer.Typer(help="Coaches, certifications and shifts.", no_args_is_help=True)
app.add_typer(roster_app, name="roster")
rotation_app = typer.Typer(help="Rotations: coaches taking turns on call.", no_args_is_help=True)
app.add_typer(rotation_app, name="rotation")
schedule_app = typer.Typer(
    help="A pool's schedule layers and who is on call.", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")
calendar_app = typer.Typer(
    help="Private iCalendar feeds of coaches and sites.", no_args_is_help=True
)
app.add_typer(calendar_app, name="calendar")
ics_app = typer.Typer(help="Schedule layers from .ics files.", no_args_is_help=True)
app.add_typer(ics_app, name="ics")

PoolOption = Annotated[str, typer.Option("--pool", help="site:<site id> or state:<USPS code>")]


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
    await serve_when_started(
        lambda: MatchingRuntime.start(settings),
        lambda runtime: runtime.app,
        MatchingRuntime.stop,
        host,
        port,
    )


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
    summary = asyncio.run(_store(settings_or_exit(PlatformSettings).database_url, roster))
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
        return await import_roster(connection, roster)  # wakes the line itself
    finally:
        await connection.close()


async def _with_connection(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on a connection to the matching schema (migrated first). An ApiError or
    an invalid value is printed with what to fix, and the command exits 2."""
    database_url = settings_or_exit(PlatformSettings).database_url
    await apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        return await work(connection)
    finally:
        await connection.close()


def _run(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_with_connection(work))
    except ApiError as error:
        typer.echo(f"{error.field + ': ' if error.field else ''}{error.message}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"])
            typer.echo(f"{where}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
    except ValueError as error:  # e.g. a pool not written site:<id> or state:<code>
        typer.echo(f"invalid: {error}", err=True)
        raise typer.Exit(2) from None


@rotation_app.command("add")
def rotation_add(
    pool: PoolOption,
    name: Annotated[str, typer.Option()],
    time_zone: Annotated[str, typer.Option(help="IANA zone of the handoff's wall clock.")],
    start_date: Annotated[str, typer.Option(help="Local date of the first handoff.")],
    handoff: Annotated[str, typer.Option(help="Wall-clock time of the handoff, HH:MM.")],
    every: Annotated[int, typer.Option(help="Shift length, in --unit.")],
    unit: Annotated[ShiftUnit, typer.Option()],
    participant: Annotated[list[str], typer.Option(help="Coach id, in turn; repeat.")],
    priority: Annotated[int, typer.Option(help="Higher layers win (0-100).", min=0, max=100)] = 0,
) -> None:
    """Add a rotation layer: `--every 1 --unit days --handoff 08:00` is 24-hour on-call."""

    async def work(connection: asyncpg.Connection) -> RotationOut:
        body = RotationIn.model_validate(
            {
                "pool": pool,
                "name": name,
                "priority": priority,
                "time_zone": time_zone,
                "start_date": start_date,
                "handoff": handoff,
                "shift_length": every,
                "shift_unit": unit,
                "participants": participant,
            }
        )
        return await store_rotation(connection, body)

    created = _run(work)
    typer.echo(f"rotation {created.layer_id} added to {created.pool}")


@rotation_app.command("list")
def rotation_list(pool: Annotated[str | None, typer.Option(help="One pool only.")] = None) -> None:
    """Rotations by pool, highest priority first."""
    rows = _run(lambda c: schedule_store.list_layers(c, _pool(pool) if pool else None))
    for row in rows:
        if row.rotation is not None:
            r = row.rotation
            typer.echo(
                f"{row.layer_id}  {row.pool.kind.value}:{row.pool.key}  {row.name!r}  "
                f"priority {row.priority}  every {r.shift_length} {r.unit.value} from "
                f"{r.start_date} {r.handoff:%H:%M} {r.zone.key}  "
                f"{' '.join(str(p) for p in r.participants)}"
            )


@schedule_app.command("layers")
def schedule_layers(
    pool: Annotated[str | None, typer.Option(help="One pool only.")] = None,
) -> None:
    """Every layer (weekly shifts, rotations, imported calendars) by pool and priority."""
    rows = _run(lambda c: schedule_store.list_layers(c, _pool(pool) if pool else None))
    for row in rows:
        typer.echo(
            f"{row.layer_id}  {row.pool.kind.value}:{row.pool.key}  {row.kind:<8}  "
            f"priority {row.priority:>4}  {row.name}"
        )


@schedule_app.command("priority")
def schedule_priority(
    layer_id: UUID, priority: Annotated[int, typer.Argument(help="0-100.", min=0, max=100)]
) -> None:
    """Move a layer up or down: the highest with someone on call wins."""

    async def work(connection: asyncpg.Connection) -> bool:
        changed = await schedule_store.set_layer_priority(connection, layer_id, priority)
        await roster_changed(connection)
        return changed

    if not _run(work):
        typer.echo("no such layer", err=True)
        raise typer.Exit(1)
    typer.echo(f"layer {layer_id} now has priority {priority}")


@schedule_app.command("remove")
def schedule_remove(layer_id: UUID) -> None:
    """Remove a rotation or an imported calendar layer."""
    if not _run(lambda c: schedule_store.delete_layer(c, layer_id)):
        typer.echo("no such rotation or calendar layer", err=True)
        raise typer.Exit(1)
    typer.echo(f"layer {layer_id} removed")


@calendar_app.command("token")
def calendar_token(
    coach: Annotated[UUID | None, typer.Option(help="A coach's own feed.")] = None,
    site: Annotated[str | None, typer.Option(help="A site's feed.")] = None,
) -> None:
    """Create a private feed URL (the next 60 days); the token is printed only now."""
    if (coach is None) == (site is None):
        typer.echo("give exactly one of --coach and --site", err=True)
        raise typer.Exit(2)
    subject = schedule_store.CalendarSubject(coach, site)
    token_id, token = _run(lambda c: schedule_store.create_calendar_token(c, subject))
    typer.echo(f"token {token_id}: GET /v1/calendars/{token}.ics on the matching service")


@calendar_app.command("revoke")
def calendar_revoke(token_id: UUID) -> None:
    """The feed stops answering at once."""
    if not _run(lambda c: schedule_store.revoke_calendar_token(c, token_id)):
        typer.echo("no such calendar token", err=True)
        raise typer.Exit(1)
    typer.echo(f"token {token_id} revoked")


@ics_app.command("import")
def ics_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    pool: PoolOption,
    name: Annotated[str, typer.Option(help="The layer's name; importing again replaces it.")],
    priority: Annotated[int, typer.Option(help="Higher layers win (0-100).", min=0, max=100)] = 0,
    time_zone: Annotated[
        str | None, typer.Option(help="For floating times (default: the site's zone).")
    ] = None,
    days: Annotated[int, typer.Option(help="How far ahead recurrences are expanded.")] = 365,
) -> None:
    """Import a schedule layer from an .ics file (RRULE, EXDATE, RECURRENCE-ID, zones)."""
    text = file.read_text(encoding="utf-8")
    imported = _run(lambda c: store_calendar(c, _pool(pool), name, priority, text, time_zone, days))
    typer.echo(f"layer {imported.layer_id}: {imported.shifts} shifts until {imported.end:%Y-%m-%d}")
