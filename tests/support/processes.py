"""A helper program the tests run beside the system (Prometheus, the lag exporter)."""

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def running(command: list[str], env: Mapping[str, str] | None = None) -> Iterator[None]:
    """`command` in the background for the length of a `with` block, its output discarded."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
