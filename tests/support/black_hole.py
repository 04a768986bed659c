"""A TCP proxy that can make the connections open at a moment swallow every byte for good.

The fault a stateful firewall or NAT makes when it forgets a flow, or a peer's network goes
away without a reset: requests leave and no answer ever comes, and nothing closes the
connection, while new connections work. toxiproxy's `timeout` toxic cannot make it: it
applies to new connections too, and removing it closes the old ones, which ends the wait
(tried for issue 18). Runs an event loop in a thread of its own: tests block theirs
(a CLI run with subprocess, for one), and a proxy in it would stop forwarding meanwhile.
"""

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from handoff_devenv.ports import free_ports

T = TypeVar("T")

CHUNK = 64 * 1024


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    swallowing: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class BlackHoleProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, connection by connection.

    `swallow_all()` turns every connection open at that moment, and every one made until
    `heal()`, into a black hole: bytes either way are counted in `swallowed_bytes` and
    dropped, and the connection stays open until one end closes it (then the other end is
    closed too, as TCP would, so a client that gives up frees the server's session). After
    `heal()` new connections are forwarded; the dark ones stay dark, as after a firewall
    forgot them. Use as `with BlackHoleProxy(upstream_port) as proxy:`.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_ports(1)[0]
        self.swallowed_bytes = 0
        self._swallow_new = False
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> "BlackHoleProxy":
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        return self

    def __exit__(self, *_: object) -> None:
        self._run(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def swallow_all(self) -> int:
        """Make every open connection and every new one a black hole; how many were open."""
        return self._run(self._swallow())

    def heal(self) -> None:
        """Forward new connections again; those already dark stay dark."""
        self._run(self._heal())

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    async def _swallow(self) -> int:
        self._swallow_new = True
        for link in self._links:
            link.swallowing = True
        return len(self._links)

    async def _heal(self) -> None:
        self._swallow_new = False

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            for pump in link.pumps:
                pump.cancel()
            _close(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            writer.close()
            return
        link = _Link(writer, upstream_writer, swallowing=self._swallow_new)
        self._links.add(link)
        link.pumps = [
            asyncio.create_task(self._pump(link, reader, upstream_writer)),
            asyncio.create_task(self._pump(link, upstream_reader, writer)),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*link.pumps, return_exceptions=True)
        self._links.discard(link)

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, destination: asyncio.StreamWriter
    ) -> None:
        try:
            while chunk := await source.read(CHUNK):
                if link.swallowing:
                    self.swallowed_bytes += len(chunk)
                    continue
                destination.write(chunk)
                await destination.drain()
        except OSError:
            pass
        finally:
            _close(link)


def _close(link: _Link) -> None:
    for writer in (link.client, link.server):
        with contextlib.suppress(Exception):
            writer.close()
