"""`handoff matching roster import`: a coordinator's file into the roster, or a list of fixes."""

import csv
import json
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from handoff_matching.adapters.roster_store import (
    coaches_by_id,
    contact_points,
    overrides_for,
    shifts_for,
)
from handoff_matching.domain.schedules import Interval, Pool, on_call
from tests.integration.conftest import create_database, handoff_run

ANA, BEN, SICK_NIGHT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def roster() -> dict[str, Any]:
    return {
        "coaches": [
            {
                "coach_id": str(ANA),
                "display_name": "Ana",
                "contact_methods": [
                    {"channel": "sms", "destination": "+14105550101"},
                    {"channel": "email", "destination": "ana@example.org"},
                ],
                "languages": ["en", "es"],
                "gender": "woman",
                "lived_experience": ["opioids"],
                "max_concurrent": 2,
                "home_sites": ["md-mercy"],
                "certifications": [
                    {"state": "MD", "credential": "CPRS", "expires_on": "2027-01-31"}
                ],
            },
            {
                "coach_id": str(BEN),
                "display_name": "Ben",
                "contact_methods": [{"channel": "voice", "destination": "+14105550102"}],
                "languages": ["en"],
                "certifications": [],
            },
        ],
        "shifts": [
            {
                "coach_id": str(ANA),
                "pool": "site:md-mercy",
                "weekday": "saturday",
                "start": "20:00",
                "end": "08:00",
                "time_zone": "America/New_York",
            },
            {
                "coach_id": str(BEN),
                "pool": "state:MD",
                "weekday": "sunday",
                "start": "08:00",
                "end": "20:00",
                "time_zone": "America/New_York",
            },
        ],
        "overrides": [
            {
                "override_id": str(SICK_NIGHT),
                "kind": "remove",
                "pool": "site:md-mercy",
                "coach_id": str(ANA),
                "starts_at": "2026-11-29T02:00:00Z",
                "ends_at": "2026-11-29T04:00:00Z",
            },
        ],
    }


def run_import(*paths: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    return handoff_run("matching", "roster", "import", *map(str, paths), database_url=database_url)


async def test_a_roster_file_is_imported_idempotently_and_read_back(
    database_url: str, tmp_path: Path
) -> None:
    database = await create_database(database_url)
    path = tmp_path / "roster.json"
    path.write_text(json.dumps(roster()))
    for _ in range(2):  # importing the same file again changes nothing
        result = run_import(path, database_url=database)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            "imported 2 coaches, 1 certifications, 2 shifts, 1 overrides"
        )

    connection = await asyncpg.connect(database)
    try:
        coaches = await coaches_by_id(connection, [ANA, BEN])
        shifts = await shifts_for(connection, [Pool.site("md-mercy"), Pool.state("MD")])
        instant = datetime(2026, 11, 29, 3, tzinfo=UTC)
        sick = await overrides_for(
            connection, [Pool.site("md-mercy")], Interval(instant, instant + timedelta(seconds=1))
        )
        assert await connection.fetchval("SELECT count(*) FROM matching.shifts") == 2
    finally:
        await connection.close()
    assert coaches[ANA].languages == {"en", "es"}
    assert coaches[ANA].certifications[0].expires_on == date(2027, 1, 31)
    assert coaches[ANA].certifications[0].state == "MD"
    assert coaches[BEN].certifications == ()
    saturday_night = datetime(2026, 11, 29, 3, tzinfo=UTC)  # Sat 22:00 EST
    assert on_call(Pool.site("md-mercy"), saturday_night, shifts, []) == {ANA}
    assert on_call(Pool.site("md-mercy"), saturday_night, shifts, sick) == set()
    sunday_noon = datetime(2026, 11, 29, 17, tzinfo=UTC)
    assert on_call(Pool.state("MD"), sunday_noon, shifts, []) == {BEN}


async def test_a_bad_file_lists_every_problem_by_row_and_field_and_stores_nothing(
    database_url: str, tmp_path: Path
) -> None:
    database = await create_database(database_url)
    bad = roster()
    bad["coaches"][1]["contact_methods"][0]["destination"] = "555-0102"
    bad["shifts"][0]["time_zone"] = "Mars/Base"
    path = tmp_path / "roster.json"
    path.write_text(json.dumps(bad))
    result = run_import(path, database_url=database)
    assert result.returncode == 2
    assert "coaches[1].contact_methods[0].destination" in result.stderr
    assert "shifts[0].time_zone: Value error, unknown IANA time zone 'Mars/Base'" in result.stderr
    assert "2 problem(s); nothing was imported" in result.stderr
    connection = await asyncpg.connect(database)
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'matching'"
        )
    finally:
        await connection.close()
    assert stored == 0


COACH_HEADER = (
    "coach_id", "display_name", "contact_methods", "languages", "gender", "lived_experience",
    "max_concurrent", "home_sites", "certifications",
)  # fmt: skip


def as_spreadsheets(document: dict[str, Any], directory: Path) -> list[Path]:
    """The roster as a coordinator keeps it in a spreadsheet: one CSV file per kind of row."""
    coaches = directory / "coaches.csv"
    with coaches.open("w", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(COACH_HEADER)
        for c in document["coaches"]:
            rows.writerow([
                c["coach_id"], c["display_name"],
                ";".join(f"{m['channel']}:{m['destination']}" for m in c["contact_methods"]),
                ";".join(c["languages"]), c.get("gender", ""),
                ";".join(c.get("lived_experience", [])), c.get("max_concurrent", ""),
                ";".join(c.get("home_sites", [])),
                ";".join(f"{x['state']}:{x['credential']}:{x['expires_on']}"
                         for x in c["certifications"]),
            ])  # fmt: skip
    files = [coaches]
    for kind in ("shifts", "overrides"):
        path = directory / f"{kind}.csv"
        with path.open("w", newline="") as file:
            table = csv.DictWriter(file, fieldnames=list(document[kind][0]))
            table.writeheader()
            table.writerows(document[kind])
        files.append(path)
    return files


async def test_the_same_roster_as_csv_files_imports_the_same(
    database_url: str, tmp_path: Path
) -> None:
    database = await create_database(database_url)
    result = run_import(*as_spreadsheets(roster(), tmp_path), database_url=database)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported 2 coaches, 1 certifications, 2 shifts, 1 overrides"
    connection = await asyncpg.connect(database)
    try:
        coaches = await coaches_by_id(connection, [ANA, BEN])
        shifts = await shifts_for(connection, [Pool.site("md-mercy"), Pool.state("MD")])
        contacts = await contact_points(connection, ANA)
    finally:
        await connection.close()
    assert coaches[ANA].languages == {"en", "es"}
    assert coaches[ANA].lived_experience == {"opioids"}
    assert coaches[ANA].certifications[0].expires_on == date(2027, 1, 31)
    assert [(c.channel.value, c.destination) for c in contacts] == [
        ("sms", "+14105550101"),
        ("email", "ana@example.org"),
    ]
    saturday_night = datetime(2026, 11, 29, 3, tzinfo=UTC)
    assert on_call(Pool.site("md-mercy"), saturday_night, shifts, []) == {ANA}


async def test_a_bad_spreadsheet_names_the_file_line_and_column(
    database_url: str, tmp_path: Path
) -> None:
    bad = roster()
    bad["coaches"][1]["contact_methods"][0]["destination"] = "555-0102"
    bad["shifts"][1]["weekday"] = "funday"
    result = run_import(*as_spreadsheets(bad, tmp_path), database_url=database_url)
    assert result.returncode == 2
    assert "coaches.csv line 3, column contact_methods: String should match" in result.stderr
    assert "shifts.csv line 3, column weekday: Input should be 'monday'" in result.stderr
    assert "2 problem(s); nothing was imported" in result.stderr
