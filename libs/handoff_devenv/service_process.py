"""A Handoff service run as its own process, as in production, for tests and benchmarks."""

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from handoff_devenv.ports import free_ports


@contextlib.contextmanager
def running_service(
    service: str, env: dict[str, str], log: Path | None = None, ready_within: float = 60.0
) -> Iterator[str]:
    """Start `handoff <service> serve` on a free port; yield its URL once /readyz says ready."""
    port = free_ports(1)[0]
    with contextlib.ExitStack() as files:
        output: IO[bytes] | int = files.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "handoff_cli", service, "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while not _ready(url):
            if process.poll() is not None:
                raise RuntimeError(f"the {service} service exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {service} service was not ready in {ready_within:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
