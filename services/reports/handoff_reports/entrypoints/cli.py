"""`handoff reports …`: the reports service, and the monthly report for a funder."""

import asyncio
import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
import uvloop

from handoff_platform.runtime import instrumented
from handoff_platform.settings import PlatformSettings, settings_or_exit
from handoff_platform.startup import serve_when_started
from handoff_reports.adapters.read_model import apply_migrations
from handoff_reports.app import ReportsRuntime
from handoff_reports.domain.figures import Month
from handoff_reports.domain.suppression import report_csv, report_document
from handoff_reports.reports import monthly_rows
from handoff_reports.settings import ReportsSettings

SITE_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,39}")

app = typer.Typer(help="Program reports: de-identified monthly figures.", no_args_is_help=True)


class Format(StrEnum):
    CSV = "csv"
    JSON = "json"


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8006,
) -> None:
    """Run the read model's consumer, the reports API, and /healthz, /readyz, /metrics."""
    settings = settings_or_exit(ReportsSettings)
    with instrumented("reports", settings.log_level, settings.log_format):
        uvloop.run(_serve(settings, host, port))


async def _serve(settings: ReportsSettings, host: str, port: int) -> None:
    await serve_when_started(
        lambda: ReportsRuntime.start(settings),
        lambda runtime: runtime.app,
        ReportsRuntime.stop,
        host,
        port,
    )


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--month") from None


@app.command("write")
def write_command(
    month: Annotated[
        Month, typer.Option(parser=_month, metavar="YYYY-MM", help="The UTC calendar month.")
    ],
    output: Annotated[Path, typer.Option(dir_okay=False, writable=True, help="File to write.")],
    output_format: Annotated[Format, typer.Option("--format")] = Format.CSV,
    state: Annotated[str | None, typer.Option(help="One state only (USPS code, e.g. RI).")] = None,
    site: Annotated[str | None, typer.Option(help="One site only (its slug).")] = None,
) -> None:
    """Write the month's de-identified report (per site) for a funder, from the read
    model in DATABASE_URL: CSV (README columns) or JSON, as the API gives it.

    Exit 2 with one line for a bad option, a DATABASE_URL unset or malformed, or an output
    folder that does not exist (before the database is touched); exit 1 with one line when
    PostgreSQL cannot be reached or the file cannot be written. Never a traceback."""
    if state is not None and not (len(state) == 2 and state.isalpha() and state.isupper()):
        raise typer.BadParameter("a USPS code such as RI", param_hint="--state")
    if site is not None and not SITE_SLUG.fullmatch(site):
        raise typer.BadParameter("a site's slug such as ri-miriam", param_hint="--site")
    if not output.parent.is_dir():
        raise typer.BadParameter(f"folder {output.parent} does not exist", param_hint="--output")
    database_url = settings_or_exit(PlatformSettings).database_url
    try:
        text = asyncio.run(_report(database_url, month, output_format, state, site))
    except UNREACHABLE as error:
        # The URL may carry a password: name the problem, never the URL.
        typer.echo(
            f"reports write: cannot reach PostgreSQL at DATABASE_URL: {_reason(error)}", err=True
        )
        raise typer.Exit(1) from None
    try:
        output.write_text(text, encoding="utf-8", newline="")
    except OSError as error:
        typer.echo(f"reports write: cannot write {output}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {output} ({month}, {output_format.value})")


UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
"""What connecting to PostgreSQL raises when it is down, refuses or rejects the login."""


def _reason(error: BaseException) -> str:
    """The error's one-line reason, its type when it has no message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _report(
    database_url: str, month: Month, output_format: Format, state: str | None, site: str | None
) -> str:
    await apply_migrations(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        rows = await monthly_rows(connection, month, state, site)
    finally:
        await connection.close()
    if output_format is Format.CSV:
        return report_csv(rows)
    filters = {key: value for key, value in (("state", state), ("site_id", site)) if value}
    document = report_document(month, rows, datetime.now(UTC), filters)
    return json.dumps(document, indent=2) + "\n"
