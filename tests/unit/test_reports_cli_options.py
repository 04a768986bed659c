"""`handoff reports write` refuses a bad option with exit 2 naming it, before it touches
the database."""

import pytest
from typer.testing import CliRunner

from handoff_reports.entrypoints.cli import app


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--month", "2026-13"], "--month"),
        (["--month", "Nov 2026"], "--month"),
        (["--month", "2026-11", "--state", "Rhode Island"], "--state"),
        (["--month", "2026-11", "--site", "Bad Site"], "--site"),
        (["--month", "2026-11", "--format", "xlsx"], "--format"),
    ],
)
def test_a_bad_option_is_exit_2_naming_it(options: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["write", *options, "--output", "report.csv"])
    assert result.exit_code == 2, result.output
    assert named in result.output
