"""A hospital's status webhook endpoint on a local port: it verifies every call's Standard
Webhooks signature with the `standardwebhooks` library, as a hospital would, records each
call, and can be told to answer some calls with an error first."""

import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from handoff_devenv.ports import free_ports


@dataclass(frozen=True)
class StatusCall:
    """One POST: its headers and body as received, whether the signature held, what it
    was answered, and when (time.monotonic())."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int
    received_at: float

    @property
    def data(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        data: dict[str, Any] = payload["data"]
        return data


class StatusReceiver:
    def __init__(self) -> None:
        self.calls: list[StatusCall] = []
        self.secret = ""
        self.url = ""
        self._failures: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self.refuse_all: int | None = None
        """While set, every verified call is answered with this status."""

    def fail_next(self, referral_id: str, step: str, *statuses: int) -> None:
        """Answer the next calls for this referral's step with `statuses`, then 200."""
        self._failures[(referral_id, step)].extend(statuses)

    def of(self, referral_id: str) -> list[StatusCall]:
        """The calls about this referral, in the order received."""
        return [c for c in self.calls if c.verified and c.data["referral_id"] == referral_id]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/handoff-status", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_ports(1)[0]
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/handoff-status"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            data = Webhook(self.secret).verify(body, headers)["data"]
        except (WebhookVerificationError, ValueError, KeyError, TypeError):
            self.calls.append(StatusCall(headers, body, False, 401, time.monotonic()))
            return web.Response(status=401)
        failures = self._failures[(data["referral_id"], data["step"])]
        status = failures.popleft() if failures else (self.refuse_all or 200)
        self.calls.append(StatusCall(headers, body, True, status, time.monotonic()))
        return web.Response(status=status)
