"""Shopify's toxiproxy, a TCP proxy whose faults are set over a REST API, for network faults.

This kernel has no `netem`, so latency and cut connections are made in user space: a proxy
stands between a client and PostgreSQL or a broker, and "toxics" added to it delay bytes,
hold them forever (`timeout` with 0: a black hole) or reset connections. The server is
built from the Go module proxy by `scripts/bootstrap.sh` (TOXIPROXY_VERSION, into the cache's
`bin`); its REST API is driven with httpx (the PyPI client is from 2019).
"""

import time
from pathlib import Path
from typing import Any

import httpx

from handoff_devenv.kafka import CACHE_ROOT
from handoff_devenv.ports import accepts_connections, ensure_free, free_ports
from handoff_devenv.processes import spawn, terminate

TOXIPROXY_VERSION = "2.12.0"
TOXIPROXY_BINARY = CACHE_ROOT / "bin" / f"toxiproxy-server-{TOXIPROXY_VERSION}"


class Toxiproxy:
    """One toxiproxy server on loopback, its API on `port`, logging to `log_file`."""

    def __init__(self, log_file: Path, port: int | None = None) -> None:
        self.log_file = log_file
        self.port = port or free_ports(1)[0]
        self.pid: int | None = None
        self._api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and return once its API answers. RuntimeError if the binary is
        missing (run scripts/bootstrap.sh) or the server exits; TimeoutError if slow."""
        if not TOXIPROXY_BINARY.exists():
            raise RuntimeError(
                f"no toxiproxy at {TOXIPROXY_BINARY}: ./scripts/bootstrap.sh builds it "
                f"(go install github.com/Shopify/toxiproxy/v2/cmd/server@v{TOXIPROXY_VERSION})"
            )
        ensure_free(self.port, "toxiproxy's API")
        self.pid = spawn(
            [str(TOXIPROXY_BINARY), "-host", "127.0.0.1", "-port", str(self.port)], self.log_file
        )
        deadline = time.monotonic() + timeout
        while not accepts_connections(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"toxiproxy not answering after {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.pid is not None:
            terminate([self.pid])
            self.pid = None
        self._api.close()

    def proxy(self, name: str, upstream_port: int, listen_port: int | None = None) -> int:
        """A proxy `name` from 127.0.0.1:`listen_port` (a free one if None) to the upstream
        port on loopback, enabled; returns the port it listens on. The upstream need not
        listen yet: each client connection is forwarded as it comes."""
        listen_port = listen_port or free_ports(1)[0]
        self._call(
            "POST",
            "/proxies",
            {
                "name": name,
                "listen": f"127.0.0.1:{listen_port}",
                "upstream": f"127.0.0.1:{upstream_port}",
                "enabled": True,
            },
        )
        return listen_port

    def add_toxic(
        self, proxy: str, name: str, kind: str, stream: str = "downstream", **attributes: int
    ) -> None:
        """Add toxic `name` of `kind` ("latency" with latency/jitter ms, "timeout" with
        timeout ms (0: hold data forever), "reset_peer" with timeout ms, ...) on `stream`
        ("downstream": server to client, or "upstream") of every connection of `proxy`."""
        self._call(
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": name,
                "type": kind,
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            },
        )

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        """Disable a proxy (every connection through it closed, new ones refused) or enable it."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        response = self._api.request(method, path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"toxiproxy {method} {path}: {response.status_code} {response.text}")
