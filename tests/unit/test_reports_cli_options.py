"""`handoff reports write` refuses a bad option with exit 2 naming it, before it touches
the database; a missing setting or folder is one line and exit 2, PostgreSQL unreachable
one line and exit 1, never a traceback."""

import re
import socket
from pathlib import Path

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


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_a_full_width_digit_in_the_month_is_exit_2() -> None:
    result = CliRunner().invoke(app, ["write", "--month", "\uff12026-12", "--output", "report.csv"])
    assert result.exit_code == 2, result.output
    assert "--month" in result.output


def test_database_url_unset_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["write", "--month", "2026-11", "--output", str(tmp_path / "r.csv")],
        env={"DATABASE_URL": None},
    )
    assert result.exit_code == 2, result.output
    assert "DATABASE_URL" in _one_line(result.output)
    assert not (tmp_path / "r.csv").exists()


def test_a_missing_output_folder_is_exit_2_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "absent" / "r.csv"
    result = CliRunner().invoke(
        app,
        ["write", "--month", "2026-11", "--output", str(target)],
        env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/db"},
    )
    assert result.exit_code == 2, result.output
    assert "--output" in result.output
    # Click boxes the error and wraps it at the terminal's width: read the path across lines.
    assert str(target.parent) in re.sub(r"[\s│]", "", result.output)
    assert "Traceback" not in result.output


def test_postgresql_unreachable_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A port nothing listens on (just bound, then closed): connection refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(
        app,
        ["write", "--month", "2026-11", "--output", str(tmp_path / "r.csv")],
        env={"DATABASE_URL": f"postgresql://u:secret-pw@127.0.0.1:{port}/db"},
    )
    assert result.exit_code == 1, result.output
    line = _one_line(result.output)
    assert "cannot reach PostgreSQL" in line
    assert "secret-pw" not in line
    assert not (tmp_path / "r.csv").exists()
