"""The referral service as a separate process: the CLI an operator uses, and a fuzzing run."""

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.integration.conftest import handoff_command
from tests.support.patients import ARTIFACTS, referral_body

ROOT = Path(__file__).resolve().parents[2]
MIN_GENERATED_REQUESTS = 500


def _new_site_key(database_url: str) -> tuple[str, str]:
    site_id = f"ri-ed-{uuid.uuid4().hex[:8]}"
    added = handoff_command(
        "referral",
        "site",
        "add",
        "--id",
        site_id,
        "--name",
        "Test Hospital",
        "--short-name",
        "Test ED",
        "--state",
        "RI",
        "--time-zone",
        "America/New_York",
        database_url=database_url,
    )
    assert "added" in added
    token = handoff_command(
        "referral", "key", "create", "--site", site_id, "--label", "fuzz", database_url=database_url
    ).strip()
    return site_id, token


def test_keys_made_by_the_cli_work_until_revoked(
    referral_process: str, referral_database: str
) -> None:
    _, token = _new_site_key(referral_database)
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{referral_process}/v1/referrals",
        headers=headers,
        json=referral_body(f"ED-{uuid.uuid4().hex[:8]}"),
    )
    assert created.status_code == 201, created.text

    key_id = token.split("_")[1]
    assert "revoked" in handoff_command(
        "referral", "key", "revoke", key_id, database_url=referral_database
    )
    url = f"{referral_process}/v1/referrals/{created.json()['id']}"
    # The service hears of it by NOTIFY, in milliseconds; its cache would keep the key a
    # minute. 5 s tells the two apart on a loaded runner too.
    deadline = time.monotonic() + 5
    while (status := httpx.get(url, headers=headers).status_code) != 401:
        assert status == 200
        assert time.monotonic() < deadline, "the revoked key still works after 5 s"


def test_bad_site_definitions_are_refused_by_the_cli(referral_database: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "handoff_cli",
            "referral",
            "site",
            "add",
            "--id",
            "x",
            "--name",
            "X",
            "--short-name",
            "X",
            "--state",
            "Maryland",
            "--time-zone",
            "Mars/Base",
        ],
        env={"DATABASE_URL": referral_database, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid site" in result.stderr


def test_no_generated_request_gets_a_server_error(
    referral_process: str, referral_database: str
) -> None:
    """schemathesis generates requests from the OpenAPI spec; not one may get a 5xx."""
    _, token = _new_site_key(referral_database)
    har = ARTIFACTS / "schemathesis.har"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{referral_process}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "60",
            "--seed",
            "20261127",
            "--report",
            "har",
            "--report-har-path",
            str(har),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    statuses = [
        entry["response"]["status"] for entry in json.loads(har.read_text())["log"]["entries"]
    ]
    assert len(statuses) >= MIN_GENERATED_REQUESTS
    assert [status for status in statuses if status >= 500] == []
    assert {201, 401, 404, 422} <= set(statuses)
