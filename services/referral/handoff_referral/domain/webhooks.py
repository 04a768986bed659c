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
import ipaddress
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from uuid import UUID

import httpx
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
    """The URL to store, or BadCallbackUrl: an absolute http(s) URL (RFC 3986) of printable
    ASCII, with a host that is an IP address or a DNS name of RFC 1123 labels, a port in
    1-65535 if any, no user info or fragment, at most 2048 characters; https only when
    `https_only` (production), where this machine and link-local addresses are refused too
    (a status webhook is the hospital's, never the service's own or a cloud's metadata).
    A URL that would only fail at delivery is refused now, not after 24 h of retries."""
    if len(url) > 2048:
        raise BadCallbackUrl("the callback URL is longer than 2048 characters")
    if any(not "!" <= character <= "~" for character in url):
        raise BadCallbackUrl(
            "the callback URL holds a space, control or non-ASCII character: percent-encode "
            "it (a host in punycode)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise BadCallbackUrl(f"the callback URL cannot be read: {error}") from None
    allowed = ("https",) if https_only else ("https", "http")
    if parts.scheme not in allowed:
        raise BadCallbackUrl(f"the callback URL must start with {' or '.join(allowed)}://")
    if not parts.hostname:
        raise BadCallbackUrl("the callback URL has no host")
    if port == 0:
        raise BadCallbackUrl("the callback URL's port must be 1-65535")
    if parts.username or parts.password:
        raise BadCallbackUrl("the callback URL must not carry a user name or password")
    if parts.fragment:
        raise BadCallbackUrl("the callback URL must not have a #fragment")
    try:
        _ = httpx.URL(url).host  # as the delivery will read it: IDNA labels, IP literals
    except (httpx.InvalidURL, UnicodeError) as error:
        raise BadCallbackUrl(f"the callback URL cannot be read: {error}") from None
    host = parts.hostname.removesuffix(".")  # "127.1." and "localhost." name the same
    address = _ip_address(host)
    if address is None and (not _dns_name(host) or _NUMERIC_LABEL.match(host.split(".")[-1])):
        # "127.1", "2130706433", "0x7f.1": resolvers read these as IPv4 addresses
        # (WHATWG URL's IPv4 parser too), which would slip past the rules below.
        raise BadCallbackUrl(
            f"the callback URL's host {parts.hostname!r} is no DNS name nor a dotted-quad "
            "IPv4 address"
        )
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif int(address) >> 32 == 0:  # "::127.0.0.1", IPv4-compatible (RFC 4291 2.5.5.1)
            address = ipaddress.IPv4Address(int(address))
    if https_only and (
        host == "localhost"
        or host.endswith(".localhost")  # RFC 6761 section 6.3: loopback, however resolved
        or (address is not None and (address.is_loopback or address.is_link_local))
        or (address is not None and address.is_unspecified)
    ):
        raise BadCallbackUrl(
            "the callback URL must not point at this machine or a link-local address"
        )
    return url


_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
# Underscores too: RFC 1123 has none, but hospitals' internal names do, and resolvers take them.
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _dns_name(host: str) -> bool:
    """RFC 1123 section 2.1: dot-separated labels of letters, digits and inner hyphens
    (and underscores), each 1-63 characters, at most 253 in all (one trailing dot allowed)."""
    name = host.removesuffix(".")
    return 0 < len(name) <= 253 and all(_DNS_LABEL.match(label) for label in name.split("."))


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
