import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class PortInUse(RuntimeError):
    pass


def ensure_free(port: int, what: str) -> None:
    if not _bindable(port):
        raise PortInUse(
            f"port {port} on 127.0.0.1, wanted for {what}, is already in use: "
            f"stop what holds it (`ss -ltnp 'sport = :{port}'` names it) or choose another port"
        )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports free now, for a cluster that numbers its
    nodes' ports from one. Taken below the kernel's ephemeral range: a block picked
    inside it lost a port to some connection's local end between the check and the
    brokers' start (seen in CI)."""
    ephemeral_start = _ephemeral_start()
    for start in random.sample(range(10_000, ephemeral_start - count), 100):
        if all(_bindable(port) for port in range(start, start + count)):
            return start
    raise PortInUse(f"no {count} consecutive free ports below {ephemeral_start}")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now, for test clusters and services that must not
    collide. Drawn at random below the kernel's ephemeral range, as `free_port_block`
    does: a port the kernel hands out from that range may be some connection's local end
    by the time a server binds it (brokers bind seconds later, after their JVM starts).
    Raises PortInUse if too few are free."""
    ephemeral_start = _ephemeral_start()
    candidates = range(10_000, ephemeral_start)
    chosen: list[int] = []
    for port in random.sample(candidates, min(len(candidates), 100 * count)):
        if _bindable(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise PortInUse(f"fewer than {count} free ports below {ephemeral_start}")


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range, whence connections' local ends come."""
    return int(EPHEMERAL_RANGE.read_text().split()[0])


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
