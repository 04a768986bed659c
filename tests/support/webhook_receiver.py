"""A local HTTPS endpoint for notify's webhook pages, with a certificate from a throwaway
CA (trustme) that the notify process is told to trust through SSL_CERT_FILE. It records
every request and can be told to fail the next ones for a path."""

import ssl
import tempfile
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import trustme
from aiohttp import web

from handoff_devenv.ports import free_ports
from tests.support.patients import record_page_body


@dataclass(frozen=True)
class WebhookCall:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class WebhookReceiver:
    def __init__(self) -> None:
        self.calls: list[WebhookCall] = []
        self.base_url = ""
        self._failures: dict[str, deque[int]] = defaultdict(deque)
        self._authority = trustme.CA()
        self._files = tempfile.TemporaryDirectory(prefix="handoff-webhooks-")
        self.ca_file = Path(self._files.name) / "ca.pem"
        self._authority.cert_pem.write_to_path(str(self.ca_file))
        self._runner: web.AppRunner | None = None

    def url(self) -> str:
        """An endpoint of its own, so each test's calls are its own."""
        return f"{self.base_url}/hooks/{uuid.uuid4().hex[:10]}"

    def fail_next(self, url: str, *statuses: int) -> None:
        self._failures[url.removeprefix(self.base_url)].extend(statuses)

    def to(self, url: str) -> list[WebhookCall]:
        """The calls to `url` that it answered 2xx."""
        path = url.removeprefix(self.base_url)
        return [c for c in self.calls if c.path == path and c.answered < 300]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._authority.issue_cert("127.0.0.1").configure_cert(server_context)
        port = free_ports(1)[0]
        await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=server_context).start()
        self.base_url = f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._files.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        failures = self._failures[request.path]
        status = failures.popleft() if failures else 200
        self.calls.append(WebhookCall(request.path, dict(request.headers), body, status))
        record_page_body(body.decode(errors="replace"))
        return web.Response(status=status)
