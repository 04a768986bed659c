"""Starting and stopping the long-running server processes the dev environment owns."""

import os
import signal
import subprocess
import time
from pathlib import Path


def spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a server in its own session so it outlives the command that started it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return process.pid


def is_running(pid: int) -> bool:
    try:
        waited_pid, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited_pid = 0  # not our child: fall through to the signal probe
    if waited_pid == pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _a_zombie(pid)


def _a_zombie(pid: int) -> bool:
    """Dead but not yet reaped by its parent (a broker killed after the `handoff dev up`
    that started it exited is init's child, and init reaps when it gets to it): signal 0
    still reaches it. The state is the field after the command's closing parenthesis in
    /proc/<pid>/stat (proc(5))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def terminate(pids: list[int], grace_seconds: float = 20.0) -> None:
    """SIGTERM all at once for a clean shutdown; SIGKILL only if the grace period runs out.

    All at once, because a Kafka quorum member stopped alone waits for the others
    to acknowledge its controlled shutdown: stopped one by one, the last cannot.
    """
    for pid in pids:
        if is_running(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while alive := [pid for pid in pids if is_running(pid)]:
        if time.monotonic() > deadline:
            for pid in alive:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.1)
