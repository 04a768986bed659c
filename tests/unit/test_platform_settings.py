"""Settings every service reads, checked at start (issue 18, findings 3-5 and 7): a bad
LOG_LEVEL, PGSSLMODE, PGSSL* file or FOLLOW_UP_KEYS is one line naming the variable, and
uvicorn's colour-coded copy of its message never reaches a log line."""

import io
import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from handoff_platform.logs import console_handler, json_handler
from handoff_platform.settings import PlatformSettings, configuration_problem
from handoff_referral.settings import ReferralServerSettings, ReferralSettings
from tests.support.follow_ups import FOLLOW_UP_KEYS, NEXT_FOLLOW_UP_KEY

SECRET = "not-a-key-and-never-printed"
VARIABLES = ("LOG_LEVEL", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "FOLLOW_UP_KEYS")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://handoff@127.0.0.1:1/handoff")


def _problem(
    settings_class: type[BaseSettings], monkeypatch: pytest.MonkeyPatch, **env: str
) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        settings_class()
    problem = configuration_problem(raised.value)
    assert problem.startswith("configuration error: ")
    assert "\n" not in problem
    return problem


def test_an_unknown_log_level_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = _problem(PlatformSettings, monkeypatch, LOG_LEVEL="LOUD")
    assert "LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in problem


def test_a_log_level_is_taken_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", " warning ")
    assert PlatformSettings().log_level == "WARNING"


def test_an_unknown_sslmode_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = _problem(PlatformSettings, monkeypatch, PGSSLMODE="bogus")
    assert "PGSSLMODE: Input should be 'disable', 'allow', 'prefer', 'require'" in problem


@pytest.mark.parametrize(
    "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
)
def test_every_libpq_sslmode_is_taken(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLMODE", mode)
    assert PlatformSettings().pgsslmode == mode


@pytest.mark.parametrize("variable", ["PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"])
def test_a_missing_tls_file_is_a_configuration_error_not_an_outage(
    variable: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Finding 4: it was retried for ever as "database not reachable"."""
    problem = _problem(
        PlatformSettings,
        monkeypatch,
        PGSSLMODE="verify-full",
        **{variable: str(tmp_path / "nonexistent.pem")},
    )
    assert f"{variable}: Path does not point to a file" in problem


def test_present_tls_files_are_taken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pem = tmp_path / "root.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", str(pem))
    assert PlatformSettings().pgsslrootcert == pem


@pytest.mark.parametrize("settings_class", [ReferralSettings, ReferralServerSettings])
@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (SECRET, "FOLLOW_UP_KEYS: key 1 of 1 is not a Fernet key"),
        (f"{FOLLOW_UP_KEYS},{SECRET}", "FOLLOW_UP_KEYS: key 2 of 2 is not a Fernet key"),
    ],
)
def test_a_malformed_follow_up_key_is_named_by_position_never_by_value(
    settings_class: type[BaseSettings],
    keys: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problem = _problem(settings_class, monkeypatch, FOLLOW_UP_KEYS=keys)
    assert expected in problem
    assert SECRET not in problem


@pytest.mark.parametrize("keys", ["", "  ", " , "])
def test_empty_follow_up_keys_are_refused_to_serve_as_unset_ones_are(
    keys: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 5: `FOLLOW_UP_KEYS=` started the service."""
    problem = _problem(ReferralServerSettings, monkeypatch, FOLLOW_UP_KEYS=keys)
    assert problem == "configuration error: FOLLOW_UP_KEYS is not set"
    monkeypatch.delenv("FOLLOW_UP_KEYS")
    assert _problem(ReferralServerSettings, monkeypatch) == problem


def test_empty_follow_up_keys_mean_none_where_they_are_optional(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOLLOW_UP_KEYS", "")
    assert ReferralSettings().follow_up_keys is None


def test_rotation_keys_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = f"{NEXT_FOLLOW_UP_KEY}, {FOLLOW_UP_KEYS}"
    monkeypatch.setenv("FOLLOW_UP_KEYS", keys)
    taken = ReferralServerSettings().follow_up_keys
    assert taken.get_secret_value() == keys


def _uvicorn_style_record() -> logging.LogRecord:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (42,), None
    )
    record.color_message = "Started server process [\x1b[36m%d\x1b[0m]"
    return record


def test_uvicorn_color_message_is_not_in_json_lines() -> None:
    """Finding 7: `"color_message": "Started server process [\\u001b[36m%d…"` in every JSON line."""
    stream = io.StringIO()
    handler = json_handler("matching", stream)
    handler.handle(_uvicorn_style_record())
    record = json.loads(stream.getvalue())
    assert record["message"] == "Started server process [42]"
    assert "color_message" not in record


def test_uvicorn_color_message_is_not_in_console_lines() -> None:
    stream = io.StringIO()
    handler = console_handler("matching", stream)
    handler.handle(_uvicorn_style_record())
    line = stream.getvalue()
    assert "Started server process [42]" in line
    assert "color_message" not in line
    assert "\x1b" not in line  # not a terminal: no colour at all
