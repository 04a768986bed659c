"""Pages as signed JSON POSTs, for a coach's own endpoint or a Slack incoming webhook.

The signature follows Slack's scheme: `v1=` + HMAC-SHA256 over `v1:{timestamp}:{body}`,
with the timestamp in its own header, so a receiver can refuse replays.
"""

import hashlib
import hmac
import json
import time
from datetime import datetime

import httpx

from handoff_notify.adapters.providers import Outgoing
from handoff_notify.domain.delivery import (
    Accepted,
    Ambiguous,
    LookupOutcome,
    Permanent,
    SendOutcome,
    Transient,
    Unknowable,
)
from handoff_schemas.vocabulary import PageFailure

SIGNATURE_HEADER = "X-Handoff-Signature"
TIMESTAMP_HEADER = "X-Handoff-Request-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v1:" + timestamp.encode() + b":" + body
    return "v1=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def body_for(message: Outgoing, slack_format: bool) -> bytes:
    if slack_format:
        document: dict[str, object] = {"text": message.content.text}
    else:
        document = {
            "message_id": str(message.message_id),
            "title": message.content.subject,
            "text": message.content.text,
        }
    return json.dumps(document, separators=(",", ":")).encode()


class WebhookProvider:
    def __init__(self, *, secret: str, slack_format: bool, timeout: float) -> None:
        self.secret = secret
        self.slack_format = slack_format
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send(self, message: Outgoing) -> SendOutcome:
        body = body_for(message, self.slack_format)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self.secret, timestamp, body),
        }
        try:
            response = await self._client.post(message.destination, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            return Transient(type(error).__name__)
        except httpx.TransportError as error:
            return Ambiguous(type(error).__name__)
        code = f"http_{response.status_code}"
        if response.is_success:
            return Accepted(None, delivered=True)
        if response.status_code == 429 or response.status_code >= 500:
            return Transient(code)
        return Permanent(PageFailure.INVALID_DESTINATION, code)

    async def lookup(self, message: Outgoing, since: datetime) -> LookupOutcome:
        return Unknowable()

    async def close(self) -> None:
        await self._client.aclose()
