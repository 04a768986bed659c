"""The small-cell rule and the report's published shapes (JSON document, CSV rows); no I/O.

A count from 1 to 10 is suppressed, and so is a percentile computed from fewer than 11
values: its value is withheld (None in JSON; in CSV `<11` for a count, `n<11` for a
percentile, which no spreadsheet can take for a time) and the cell flagged. A zero is
published: it reveals no one. Complementary suppression (docs/decisions/0028): no figure
the report publishes is the sum of others (there is no total across tiers, sites or
states, and no sample size beside a percentile), so a suppressed cell cannot be recovered
by subtraction within a report; figures are never rounded.
"""

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handoff_reports.domain.figures import (
    FIGURE_COLUMNS,
    PERCENTILE_COLUMNS,
    Month,
    SiteMonth,
    percentile,
)

SMALL_CELL = 11
"""The smallest count published as is, and the fewest values a percentile is taken of."""

SUPPRESSED_TEXT = "<11"
"""What a suppressed count reads in CSV."""

SUPPRESSED_PERCENTILE_TEXT = "n<11"
"""What a withheld percentile reads in CSV: the sample is under 11, not the time."""

CSV_LEAD_COLUMNS: tuple[str, ...] = ("month", "state", "site_id")
CSV_COLUMNS: tuple[str, ...] = (*CSV_LEAD_COLUMNS, *FIGURE_COLUMNS)
"""The CSV header, in order (README: "Program reports")."""


@dataclass(frozen=True)
class Cell:
    """One published figure: `value` None when suppressed (or, for a percentile, when no
    referral of the month got that far)."""

    value: float | int | None
    suppressed: bool = False


@dataclass(frozen=True)
class SiteRow:
    """A site's month as published: every cell already through the small-cell rule."""

    site_id: str
    state: str
    month: Month
    cells: dict[str, Cell]


def count_cell(count: int) -> Cell:
    """A count through the small-cell rule: 1..10 suppressed, 0 and 11+ published."""
    if 0 < count < SMALL_CELL:
        return Cell(None, suppressed=True)
    return Cell(count)


def percentile_cell(values: list[float], p: float) -> Cell:
    """The p-th percentile in minutes (one decimal) if there are at least 11 values;
    suppressed for 1-10 values; no value, not suppressed, for none."""
    if not values:
        return Cell(None)
    if len(values) < SMALL_CELL:
        return Cell(None, suppressed=True)
    return Cell(round(percentile(values, p), 1))


def deidentified(site: SiteMonth) -> SiteRow:
    """The site's month with every cell through the small-cell rule."""
    cells: dict[str, Cell] = {}
    for column in FIGURE_COLUMNS:
        if column in PERCENTILE_COLUMNS:
            sample, _, p = column.rpartition("_")
            cells[column] = percentile_cell(site.samples.get(sample, []), float(p[1:]))
        else:
            cells[column] = count_cell(site.counts.get(column, 0))
    return SiteRow(site.site_id, site.state, site.month, cells)


def report_document(
    month: Month, rows: Iterable[SiteRow], generated_at: datetime, filters: dict[str, str]
) -> dict[str, Any]:
    """The JSON report: its month, when it was made (ISO 8601, UTC), the filters asked
    for, the rule applied, and per site every figure as `{"value": …, "suppressed": …}`."""
    return {
        "month": str(month),
        "generated_at": generated_at.isoformat(),
        "filters": filters,
        "time_unit": "minutes",
        "small_cell_threshold": SMALL_CELL,
        "columns": list(FIGURE_COLUMNS),
        "sites": [
            {
                "site_id": row.site_id,
                "state": row.state,
                "figures": {
                    name: {"value": cell.value, "suppressed": cell.suppressed}
                    for name, cell in row.cells.items()
                },
            }
            for row in rows
        ],
    }


def _csv_text(column: str, cell: Cell) -> str:
    if cell.suppressed:
        return SUPPRESSED_PERCENTILE_TEXT if column in PERCENTILE_COLUMNS else SUPPRESSED_TEXT
    return "" if cell.value is None else str(cell.value)


def report_csv(rows: Iterable[SiteRow]) -> str:
    """The CSV report (RFC 4180: a header row, CRLF line ends, fields quoted when they need
    it), one row per site: `CSV_COLUMNS`; suppressed counts read `<11`, withheld
    percentiles `n<11`, figures with no value are empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                str(row.month),
                row.state,
                row.site_id,
                *(_csv_text(column, row.cells[column]) for column in FIGURE_COLUMNS),
            ]
        )
    return out.getvalue()
