"""Status webhooks to the hospital: what is sent, how it is signed, when it is tried again.

Every timeline step of a referral is POSTed to its site's callback URL, signed in the
Standard Webhooks form (headers `webhook-id`, `webhook-timestamp`, `webhook-signature`:
HMAC-SHA256 over `id.timestamp.body`, `v1,<base64>`, secrets `whsec_<base64>`), with
the `standardwebhooks` library. A delivery is tried until the site answers 2xx, with
exponential backoff, for a retry window (24 h); then it is failed, and replayable.

The body is the minimum the hospital needs to follow its request, and no PHI:

    {"type": "referral.step", "timestamp": "<at>",
     "data": {"referral_id", "external_id", "step", "status", "at"}}
"""

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from uuid import UUID

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix of every secret, not a secret)
EVENT_TYPE = "referral.step"
DISCLOSED_FIELDS = ("referral_id", "external_id", "step", "status", "at")
"""The fields of a referral a status webhook's body carries, for its audit entry."""


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again: `initial` seconds after the first failure,
    doubling each time up to `maximum` seconds, until `window` seconds after the delivery
    became due; then it is failed."""

    initial: float = 5.0
    maximum: float = 3600.0
    window: float = 24 * 3600.0

    def delay(self, attempts: int, jitter: float) -> timedelta:
        """The wait after the `attempts`-th failed attempt (1-based); `jitter` in [0, 1)
        spreads it over 80-100 % so sites coming back are not hit by every retry at once."""
        exponent = min(max(attempts - 1, 0), 32)
        base = min(self.initial * 2**exponent, self.maximum)
        return timedelta(seconds=base * (0.8 + 0.2 * jitter))

    def next_attempt(
        self, attempts: int, now: datetime, due_since: datetime, jitter: float
    ) -> datetime | None:
        """When to try again after the `attempts`-th failure at `now` (UTC) of a delivery
        due since `due_since`; None once the retry window has passed: fail it."""
        if now - due_since >= timedelta(seconds=self.window):
            return None
        return min(now + self.delay(attempts, jitter), due_since + timedelta(seconds=self.window))


@dataclass(frozen=True)
class StatusStep:
    """One timeline step as the hospital is told it. `at` is UTC."""

    delivery_id: UUID
    referral_id: UUID
    external_id: str
    step: str
    status: str
    at: datetime

    def body(self) -> bytes:
        """The JSON body: compact, keys in a stable order, times ISO 8601 UTC."""
        at = self.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        payload = {
            "type": EVENT_TYPE,
            "timestamp": at,
            "data": {
                "referral_id": str(self.referral_id),
                "external_id": self.external_id,
                "step": self.step,
                "status": self.status,
                "at": at,
            },
        }
        return json.dumps(payload, separators=(",", ":")).encode()


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(
    delivery_id: UUID, body: bytes, now: datetime, signing_secrets: list[str]
) -> dict[str, str]:
    """The Standard Webhooks headers for `body` sent at `now` (UTC): one `v1,` signature
    per secret, space-separated (the current one, and the previous one during a rotation's
    grace period), so a receiver holding either verifies it. `webhook-id` is the delivery's
    id, the same on every retry, so the receiver can drop a repeat."""
    message_id = str(delivery_id)
    text = body.decode()
    signatures = [Webhook(s).sign(message_id, now, text) for s in signing_secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


class BadCallbackUrl(ValueError):
    """The callback URL cannot be used; the message says why."""


def check_callback_url(url: str, https_only: bool) -> str:
    """The URL to store, or BadCallbackUrl: an absolute http(s) URL with a host, no user
    info or fragment, at most 2048 characters; https only when `https_only` (production)."""
    if len(url) > 2048:
        raise BadCallbackUrl("the callback URL is longer than 2048 characters")
    parts = urlsplit(url)
    allowed = ("https",) if https_only else ("https", "http")
    if parts.scheme not in allowed:
        raise BadCallbackUrl(f"the callback URL must start with {' or '.join(allowed)}://")
    if not parts.hostname:
        raise BadCallbackUrl("the callback URL has no host")
    if parts.username or parts.password:
        raise BadCallbackUrl("the callback URL must not carry a user name or password")
    if parts.fragment:
        raise BadCallbackUrl("the callback URL must not have a #fragment")
    return url
