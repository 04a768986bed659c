"""The roster as spreadsheets: coaches, shifts and overrides as CSV files.

Coordinators keep rotas in spreadsheets. Each CSV file holds one kind of row,
told apart by its header; list values are separated by `;` (`en;es`), a contact
method is `channel:destination` (`sms:+14105550101`), a certification is
`state:credential:expires_on` (`MD:CPRS:2028-12-31`). The rows become the same
RosterFile as the JSON format, so the same rules apply, and every problem names
its file, line and column: `coaches.csv line 5, column languages: …`.
"""

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from handoff_matching.roster_file import RosterFile, RosterProblems, problem_location

COACH_COLUMNS = ("coach_id", "display_name", "contact_methods", "languages")
SHIFT_COLUMNS = ("coach_id", "pool", "weekday", "start", "end", "time_zone")
OVERRIDE_COLUMNS = ("override_id", "kind", "pool", "coach_id", "starts_at", "ends_at")
KINDS = (("coaches", COACH_COLUMNS), ("overrides", OVERRIDE_COLUMNS), ("shifts", SHIFT_COLUMNS))
LISTS = ("languages", "lived_experience", "home_sites")
FLAGS = ("veteran", "lgbtq_affirming", "telehealth", "active")
TRUE, FALSE = {"yes", "y", "true", "1"}, {"no", "n", "false", "0", ""}


@dataclass(frozen=True)
class CsvFile:
    name: str
    text: str


@dataclass(frozen=True)
class _Table:
    name: str
    kind: str  # "coaches", "shifts" or "overrides"
    rows: list[dict[str, Any]]


def parse_roster_csv(files: list[CsvFile]) -> RosterFile:
    """The validated roster from one to three CSV files, or RosterProblems naming each cell."""
    tables, problems = [], []
    for file in files:
        try:
            tables.append(_table(file))
        except RosterProblems as found:
            problems += found.problems
    kinds = [t.kind for t in tables]
    if "coaches" not in kinds and not problems:
        problems.append("no coaches file: one file needs the columns " + ", ".join(COACH_COLUMNS))
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            problems.append(f"two {kind} files: give one of each kind")
    if problems:
        raise RosterProblems(problems)
    by_kind = {t.kind: t for t in tables}
    document = {kind: table.rows for kind, table in by_kind.items()}
    try:
        return RosterFile.model_validate(document)
    except ValidationError as error:
        raise RosterProblems(
            [_where(by_kind, item["loc"]) + ": " + item["msg"] for item in error.errors()]
        ) from None


def _table(file: CsvFile) -> _Table:
    reader = csv.DictReader(io.StringIO(file.text.lstrip("\ufeff")))
    header = set(reader.fieldnames or ())
    kind = next((kind for kind, needed in KINDS if set(needed) <= header), None)
    if kind is None:
        raise RosterProblems(
            [f"{file.name}: the header names neither coaches, shifts nor overrides"]
        )
    rows, problems = [], []
    for line, row in enumerate(reader, start=2):
        cells = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        try:
            rows.append(_COERCE[kind](cells))
        except ValueError as error:
            problems.append(f"{file.name} line {line}: {error}")
    if problems:
        raise RosterProblems(problems)
    return _Table(file.name, kind, rows)


def _coach(cells: Mapping[str, str]) -> dict[str, Any]:
    coach: dict[str, Any] = {k: v for k, v in cells.items() if v != ""}
    coach["contact_methods"] = [
        dict(zip(("channel", "destination"), _split_pair(m, "contact_methods"), strict=True))
        for m in _list(cells.get("contact_methods", ""))
    ]
    for column in LISTS:
        if column in cells:
            coach[column] = _list(cells[column])
    for column in FLAGS:
        if cells.get(column, "") != "":
            coach[column] = _flag(cells[column], column)
    if cells.get("certifications"):
        coach["certifications"] = [_certification(c) for c in _list(cells["certifications"])]
    return coach


def _plain(cells: Mapping[str, str]) -> dict[str, Any]:
    return {k: v for k, v in cells.items() if v != ""}


_COERCE = {"coaches": _coach, "shifts": _plain, "overrides": _plain}


def _list(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(";") if part.strip()]


def _split_pair(value: str, column: str) -> tuple[str, str]:
    channel, separator, destination = value.partition(":")
    if not separator:
        raise ValueError(f"column {column}: {value!r} is not channel:destination")
    return channel.strip(), destination.strip()


def _flag(value: str, column: str) -> bool:
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ValueError(f"column {column}: {value!r} is not yes or no")


def _certification(value: str) -> dict[str, str]:
    parts = [p.strip() for p in value.split(":")]
    if len(parts) != 3:
        raise ValueError(f"column certifications: {value!r} is not state:credential:expires_on")
    return dict(zip(("state", "credential", "expires_on"), parts, strict=True))


def _where(tables: Mapping[str, _Table], location: tuple[int | str, ...]) -> str:
    """`coaches[3].languages[0]` → `coaches.csv line 5, column languages`."""
    if len(location) >= 2 and location[0] in tables and isinstance(location[1], int):
        table = tables[str(location[0])]
        rest = [p for p in location[2:] if isinstance(p, str)]
        column = problem_location(tuple(rest)) if rest else "row"
        return f"{table.name} line {location[1] + 2}, column {column.split('.')[0]}"
    return problem_location(location)
