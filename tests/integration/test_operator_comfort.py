"""What an operator sees: one line and exit code 2 for a bad configuration, JSON log lines
for collectors, readable lines at a terminal."""

import json
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from tests.support.follow_ups import FOLLOW_UP_KEYS

HANDOFF = [sys.executable, "-m", "handoff_cli"]
SECRET = "s3cret-Pa55word"  # never to be printed back
VALID = {
    "DATABASE_URL": f"postgresql://handoff:{SECRET}@127.0.0.1:1/handoff",
    "NOTIFY_DELIVERY": "sandbox",
    "NOTIFY_LINK_SECRET": SECRET,
    "FOLLOW_UP_KEYS": FOLLOW_UP_KEYS,
}
ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")
CONFIG_VARIABLES = (
    *VALID,
    "KAFKA_BOOTSTRAP_SERVERS",
    "NOTIFY_LINK_SECRET",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
)


def _environment(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES and "KAFKA" not in k}
    env.update(VALID)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


CASES = [
    pytest.param("referral", {"DATABASE_URL": None}, "DATABASE_URL is not set", id="no db"),
    # Finding #16f-4: without keys, /f/ pages were a 500 and reminders still went out.
    pytest.param(
        "referral", {"FOLLOW_UP_KEYS": None}, "FOLLOW_UP_KEYS is not set", id="no follow-up keys"
    ),
    pytest.param(
        "matching",
        {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:70000"},
        "KAFKA_BOOTSTRAP_SERVERS entry 'kafka-2:70000': port '70000' is not a number",
        id="bad port",
    ),
    pytest.param(
        "notify",
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "handoff-notify"},
        "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        id="sasl without password",
    ),
    pytest.param(
        "referral",
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/nonexistent/ca.crt"},
        "KAFKA_SSL_CA_FILE: Path does not point to a file",
        id="missing ca file",
    ),
    pytest.param(
        "matching",
        {"KAFKA_SECURITY_PROTOCOL": "TLS"},
        "KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or",
        id="unknown protocol",
    ),
    pytest.param(
        "notify",
        {"NOTIFY_DELIVERY": "live"},
        "NOTIFY_DELIVERY=live needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN",
        id="live without providers",
    ),
    pytest.param("notify", {"LOG_FORMAT": "xml"}, "LOG_FORMAT: Input should be", id="log format"),
    # A new operator's typos (fresh-eyes run): both were 140 lines of traceback and exit 1.
    pytest.param(
        "referral",
        {"DATABASE_URL": f"postgresq://handoff:{SECRET}@127.0.0.1:1/handoff"},
        "DATABASE_URL: must start with postgresql://",
        id="db scheme typo",
    ),
    pytest.param(
        "matching",
        {"DATABASE_URL": f"postgresql://handoff:{SECRET}@127.0.0.1:1"},
        "DATABASE_URL: names no database",
        id="db url without database",
    ),
    # Issue 18 fresh-eyes findings 3-5: tracebacks (exit 1), or retried for ever as an outage.
    pytest.param(
        "reports",
        {"LOG_LEVEL": "LOUD"},
        "LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        id="unknown log level",
    ),
    pytest.param(
        "referral",
        {"FOLLOW_UP_KEYS": f"{FOLLOW_UP_KEYS},{SECRET}"},
        "FOLLOW_UP_KEYS: key 2 of 2 is not a Fernet key",
        id="malformed follow-up key",
    ),
    pytest.param(
        "referral", {"FOLLOW_UP_KEYS": ""}, "FOLLOW_UP_KEYS is not set", id="empty follow-up keys"
    ),
    pytest.param(
        "console",
        {"PGSSLMODE": "bogus"},
        "PGSSLMODE: Input should be 'disable', 'allow', 'prefer', 'require', 'verify-ca' or",
        id="unknown sslmode",
    ),
    pytest.param(
        "matching",
        {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/nonexistent/root.pem"},
        "PGSSLROOTCERT: Path does not point to a file",
        id="missing postgres ca file",
    ),
]


@pytest.mark.parametrize(("service", "changes", "expected"), CASES)
def test_a_configuration_error_is_one_line_naming_the_variable_and_exit_code_2(
    service: str, changes: dict[str, str | None], expected: str
) -> None:
    done = subprocess.run(
        [*HANDOFF, service, "serve", "--port", "1"],
        env=_environment(**changes),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("configuration error: ")
    assert expected in lines[0]
    assert SECRET not in done.stderr + done.stdout


LOG_ONE_LINE = """
import logging
from handoff_platform.logs import LogFormat, configure_logging, correlation
configure_logging("referral", log_format=LogFormat.{log_format})
log = logging.getLogger("handoff_referral.service")
with correlation("corr-42"):
    log.info("referral received", extra={{"site_id": "md-x"}})
    # As uvicorn logs: its message again with colour codes, never to be shown (finding 7).
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 7, extra={{"color_message": "Started [\x1b[36m%d\x1b[0m]"}}
    )
"""


def test_log_lines_are_json_when_stderr_is_not_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOG_ONE_LINE.format(log_format="AUTO")],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line, started = done.stderr.splitlines()
    assert "color_message" not in json.loads(started)
    record = json.loads(line)
    assert record["message"] == "referral received"
    assert record["correlation_id"] == "corr-42"
    assert record["service"] == "referral"
    assert record["site_id"] == "md-x"


def _run_on_a_terminal(code: str, env: dict[str, str]) -> str:
    """Run `code` with stderr on a pseudo-terminal; everything it wrote there."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=terminal, stdout=subprocess.DEVNULL
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    return output.decode()


def test_log_lines_are_readable_on_a_terminal_and_json_when_asked() -> None:
    shown = _run_on_a_terminal(LOG_ONE_LINE.format(log_format="AUTO"), _environment())
    coloured, started = [line for line in shown.splitlines() if line.strip()]
    assert "color_message" not in started
    line = ANSI_STYLE.sub("", coloured)
    assert not line.lstrip().startswith("{")
    assert "referral received" in line
    assert "[info" in line
    assert "correlation_id=corr-42" in line
    assert "site_id=md-x" in line

    forced = _run_on_a_terminal(LOG_ONE_LINE.format(log_format="JSON"), _environment())
    json_line, forced_started = [line for line in forced.splitlines() if line.strip()]
    assert "color_message" not in json.loads(forced_started)
    assert json.loads(json_line)["correlation_id"] == "corr-42"


@pytest.mark.parametrize("service", ["referral", "matching", "notify"])
def test_a_database_that_does_not_exist_is_one_line_and_exit_code_2(
    service: str, database_url: str
) -> None:
    """The server answers, but the database named is not there (a typo such as `handof`):
    a setting to correct, not an outage to wait out."""
    server = database_url.rsplit("/", 1)[0]
    done = subprocess.run(
        [*HANDOFF, service, "serve", "--port", "1"],
        env=_environment(DATABASE_URL=f"{server}/handof_{service}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("configuration error: DATABASE_URL: "), done.stderr
    assert f'"handof_{service}" does not exist' in lines[-1]
    assert "Traceback" not in done.stderr
