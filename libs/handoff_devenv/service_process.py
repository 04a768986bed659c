"""A Handoff service run as its own process, as in production, for tests and benchmarks."""

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from handoff_devenv.ports import free_ports


@dataclass
class ServiceProcess:
    service: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def start_service(
    service: str,
    env: dict[str, str],
    log: Path | None = None,
    ready_within: float = 60.0,
    port: int | None = None,
) -> ServiceProcess:
    """Start `handoff <service> serve` on `port` (or a free one); return once /readyz says ready."""
    running = launch_service(service, env, log, port)
    process = running.process
    deadline = time.monotonic() + ready_within
    while not _ready(running.url):
        if process.poll() is not None:
            raise RuntimeError(f"the {service} service exited during startup")
        if time.monotonic() > deadline:
            running.stop()
            raise TimeoutError(f"the {service} service was not ready in {ready_within:.0f} s")
        time.sleep(0.2)
    return running


def launch_service(
    service: str, env: dict[str, str], log: Path | None = None, port: int | None = None
) -> ServiceProcess:
    """Start `handoff <service> serve` on `port` (or a free one) and return at once, ready or
    not; its output (stdout and stderr) is appended to `log`, or discarded."""
    port = port or free_ports(1)[0]
    with contextlib.ExitStack() as files:
        output: IO[bytes] | int = files.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "handoff_cli", service, "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(service, f"http://127.0.0.1:{port}", process)


@contextlib.contextmanager
def running_service(
    service: str,
    env: dict[str, str],
    log: Path | None = None,
    ready_within: float = 60.0,
    port: int | None = None,
) -> Iterator[str]:
    """`start_service` for the length of a `with` block; yields the service's URL."""
    running = start_service(service, env, log, ready_within, port)
    try:
        yield running.url
    finally:
        running.stop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
