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
    model in DATABASE_URL: CSV (README columns) or JSON, as the API gives it."""
    if state is not None and not (len(state) == 2 and state.isalpha() and state.isupper()):
        raise typer.BadParameter("a USPS code such as RI", param_hint="--state")
    if site is not None and not SITE_SLUG.fullmatch(site):
        raise typer.BadParameter("a site's slug such as ri-miriam", param_hint="--site")
    text = asyncio.run(_report(PlatformSettings().database_url, month, output_format, state, site))
    output.write_text(text, encoding="utf-8", newline="")
    typer.echo(f"wrote {output} ({month}, {output_format.value})")


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
