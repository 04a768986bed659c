"""bench/intake_path.py times the referral app's POST path in-process; bench/e2e.py counts
PostgreSQL's CPU, backends opened mid-phase included."""

import asyncio
import gc
import json
import subprocess
import sys
import time

import psutil
import pytest

from bench import intake_path
from bench.e2e import POSTGRES, cpu_seconds
from bench.referral_intake import report
from handoff_cli.demo import demo_referral


async def test_the_service_app_takes_a_referral_through_its_stubs() -> None:
    app, token = intake_path.referral_app()

    assert await intake_path.post(app, "/v1/referrals", b'{"external_id": "x"}', token) == 422
    body = json.dumps(demo_referral("unit-1")).encode()
    assert await intake_path.post(app, "/v1/referrals", body, token) == 201
    assert await intake_path.post(app, "/v1/referrals", body, "hok_wrong_key") == 401


async def test_a_run_prints_both_apps_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    await intake_path.measure(64, profile=False)

    printed = capsys.readouterr().out
    assert "reference: intake floor's app" in printed
    assert "POST /v1/referrals, the service's app" in printed
    assert "the service's app costs" in printed


async def test_an_answer_other_than_201_voids_the_figures() -> None:
    app, _ = intake_path.referral_app()
    body = json.dumps(demo_referral("unit-2")).encode()

    with pytest.raises(SystemExit, match="answered 401"):
        await intake_path.chunk(app, "/v1/referrals", [body], "hok_wrong_key")


def test_a_backend_started_after_the_first_count_is_counted_in_the_second() -> None:
    groups = {POSTGRES: [psutil.Process()]}  # this process stands for the postmaster
    before = cpu_seconds(groups)[POSTGRES]
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(burner.pid).cpu_times().user < 0.3:
            assert time.monotonic() < deadline, "the child never used 0.3 s of CPU"
            time.sleep(0.05)
        after = cpu_seconds(groups)[POSTGRES]
    finally:
        burner.kill()
        burner.wait()

    assert after - before >= 0.3


def test_a_run_leaves_the_collector_as_it_found_it() -> None:
    threshold = gc.get_threshold()

    asyncio.run(intake_path.measure(64, profile=False))

    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == 0


def test_errors_answered_fast_do_not_count_as_throughput(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rate = report("POST", latencies=[1.0] * 100, errors=60, seconds=1.0)

    assert rate == 40
    assert "errors 60" in capsys.readouterr().out


def test_a_measured_process_that_is_gone_is_an_error_not_a_negative_figure() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    groups = {"referral-1": [psutil.Process(child.pid)]}
    child.wait()  # reaped: nothing of it is left to read

    with pytest.raises(psutil.NoSuchProcess):
        cpu_seconds(groups)
