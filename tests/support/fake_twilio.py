"""A local server that speaks Twilio's REST API, as GoAlert's smoke tests run one.

It takes the form-encoded `Messages` and `Calls` requests notify makes, answers
with Twilio's JSON (and its error codes when told to fail), lists what it has
for lookups, and sends signed status callbacks and inbound SMS webhooks. Every
message it accepted is recorded, so a test can assert the exact set it expected.
"""

import asyncio
import base64
import itertools
import random
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from aiohttp import web
from twilio.request_validator import RequestValidator

from handoff_devenv.ports import free_ports
from tests.support.patients import record_page_body

ACCOUNT_SID = "AC" + "0" * 30
AUTH_TOKEN = "test-twilio-auth-token"
FROM_NUMBER = "+15005550006"

BASIC_AUTH = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

_phones = itertools.count(1000)


def new_phone() -> str:
    """A number no other test uses, so each test's messages are its own."""
    return f"+1410555{next(_phones):04d}"


@dataclass(frozen=True)
class Flakiness:
    """A provider having a bad day, seeded so a run can be replayed: of the sends (Messages
    and Calls), `failing` (a fraction) answer 500 and take nothing; `timing_out` take the
    message (it reaches the phone) and answer only after `hang_seconds`, longer than the
    sender waits, so the sender cannot know it went out. Lookups always answer."""

    failing: float = 0.30
    timing_out: float = 0.05
    hang_seconds: float = 4.0
    seed: int = 18


@dataclass
class Recorded:
    sid: str
    kind: str  # "sms" or "call"
    to: str
    body: str  # the SMS body, or the call's TwiML
    status_callback: str | None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class FakeTwilio:
    def __init__(self, flakiness: Flakiness | None = None) -> None:
        """`flakiness`: fail and time out a share of the sends at random (seeded); None: never."""
        self.flakiness = flakiness
        self._dice = random.Random(flakiness.seed if flakiness else 0)
        self.flaky_outcomes: dict[str, int] = defaultdict(int)  # "failed" / "timed_out" counts
        self.accepted: list[Recorded] = []
        self.attempts: dict[str, int] = defaultdict(int)
        self.invalid_numbers: set[str] = set()
        self.unsubscribed: set[str] = set()
        self._failures: dict[str, deque[int]] = defaultdict(deque)
        self._held: dict[str, asyncio.Event] = {}
        self.held_requests: dict[str, int] = defaultdict(int)
        self._report_first: dict[str, str] = {}
        self.early_callbacks: dict[str, int] = {}  # by message sid: notify's HTTP status
        self.list_requests = 0
        self._drop_answer: set[str] = set()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    # Scripting

    def fail_next(self, to: str, *statuses: int) -> None:
        """Answer the next requests for `to` with these HTTP errors, in order."""
        self._failures[to].extend(statuses)

    def stop_failing(self, to: str) -> None:
        """Drop the failures `fail_next` scripted for `to` and not yet used."""
        self._failures[to].clear()

    def hold(self, to: str) -> None:
        """Accept messages to `to` but never answer: as if the sender died mid-request."""
        self._held[to] = asyncio.Event()

    def release(self, to: str) -> None:
        self._held.pop(to).set()

    def report_before_answering(self, to: str, status: str) -> None:
        """Call the next message to `to`'s status callback with `status`, and answer the
        send only after it: the report reaches notify before the message's sid does."""
        self._report_first[to] = status

    def lose_answer(self, to: str, status: str) -> None:
        """Take the next message to `to`, call its status callback with `status`, then drop
        the connection unanswered: the sender never learns the SID from the send itself."""
        self._report_first[to] = status
        self._drop_answer.add(to)

    # What was sent

    def to(self, number: str) -> list[Recorded]:
        return [m for m in self.accepted if m.to == number]

    # Server

    async def start(self) -> str:
        app = web.Application()
        base = f"/2010-04-01/Accounts/{ACCOUNT_SID}"
        app.router.add_post(f"{base}/Messages.json", self._create_message)
        app.router.add_post(f"{base}/Calls.json", self._create_call)
        app.router.add_get(f"{base}/Messages.json", self._list("sms", "messages"))
        app.router.add_get(f"{base}/Calls.json", self._list("call", "calls"))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_ports(1)[0]
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def __aenter__(self) -> "FakeTwilio":
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        for event in self._held.values():
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, "sms", "Body", "SM")

    async def _create_call(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, "call", "Twiml", "CA")

    async def _create(
        self, request: web.Request, kind: str, body_field: str, prefix: str
    ) -> web.StreamResponse:
        if request.headers.get("Authorization") != BASIC_AUTH:
            return _error(401, 20003, "Authenticate")
        form = await request.post()
        to = str(form["To"])
        self.attempts[to] += 1
        if self._failures[to]:
            status = self._failures[to].popleft()
            return _error(status, 20500 if status >= 500 else 20429, "scripted failure")
        hang = False
        if self.flakiness is not None:
            roll = self._dice.random()
            if roll < self.flakiness.failing:
                self.flaky_outcomes["failed"] += 1
                return _error(500, 20500, "flaky provider")
            hang = roll < self.flakiness.failing + self.flakiness.timing_out
        if to in self.invalid_numbers:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.unsubscribed:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        recorded = Recorded(
            sid=prefix + uuid.uuid4().hex,
            kind=kind,
            to=to,
            body=str(form[body_field]),
            status_callback=str(form["StatusCallback"]) if "StatusCallback" in form else None,
        )
        self.accepted.append(recorded)
        record_page_body(recorded.body)
        if to in self._held:
            self.held_requests[to] += 1
            await self._held[to].wait()
        if hang:
            self.flaky_outcomes["timed_out"] += 1
            assert self.flakiness is not None
            await asyncio.sleep(self.flakiness.hang_seconds)
        if reported := self._report_first.pop(to, None):
            callback = await self.report_status(recorded, reported)
            self.early_callbacks[recorded.sid] = callback.status_code
        if to in self._drop_answer:
            self._drop_answer.discard(to)
            assert request.transport is not None
            request.transport.close()
        return web.json_response(
            {"sid": recorded.sid, "status": "queued", "to": to, "body": recorded.body},
            status=201,
        )

    def _list(self, kind: str, key: str) -> Any:
        """Twilio's list: newest first, `PageSize` (default 50) a page, `next_page_uri`."""

        async def handler(request: web.Request) -> web.StreamResponse:
            to = request.query.get("To")
            size = int(request.query.get("PageSize", "50"))
            page = int(request.query.get("Page", "0"))
            found = [m for m in self.accepted if m.kind == kind and (to is None or m.to == to)]
            found.reverse()
            shown = found[page * size : (page + 1) * size]
            following = None
            if len(found) > (page + 1) * size:
                query = urlencode({**request.query, "Page": str(page + 1)})
                following = f"{request.path}?{query}"
            self.list_requests += 1
            records = [
                {
                    "sid": m.sid,
                    "to": m.to,
                    "body": m.body,
                    "status": "sent",
                    "date_created": format_datetime(m.created_at, usegmt=True),
                }
                for m in shown
            ]
            return web.json_response({key: records, "next_page_uri": following})

        return handler

    # Twilio calling notify

    async def report_status(
        self, message: Recorded, status: str, error_code: str | None = None
    ) -> httpx.Response:
        assert message.status_callback, "the message was sent without a status callback"
        field_names = (
            ("MessageSid", "MessageStatus")
            if message.kind == "sms"
            else (
                "CallSid",
                "CallStatus",
            )
        )
        params = {field_names[0]: message.sid, field_names[1]: status, "AccountSid": ACCOUNT_SID}
        if error_code:
            params["ErrorCode"] = error_code
        return await signed_post(message.status_callback, params)

    async def send_sms(self, notify_url: str, sender: str, body: str) -> httpx.Response:
        """A coach's SMS reply, as Twilio forwards it to notify."""
        params = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "AccountSid": ACCOUNT_SID,
            "From": sender,
            "To": FROM_NUMBER,
            "Body": body,
        }
        return await signed_post(f"{notify_url}/v1/twilio/sms", params)


async def signed_post(
    url: str, params: dict[str, str], auth_token: str = AUTH_TOKEN
) -> httpx.Response:
    signature = RequestValidator(auth_token).compute_signature(url, params)
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=params, headers={"X-Twilio-Signature": signature})


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )
