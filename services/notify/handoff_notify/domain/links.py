"""The link in a page: a token naming one offer, signed by notify.

An offer is made to one coach, so naming the offer names the coach too. The token
is the offer id's 16 bytes and the first 12 bytes of their HMAC-SHA256, base64url:
38 characters, where itsdangerous's JSON payload and full signature took about
120, which made every offer SMS two segments. Twelve bytes of MAC (96 bits) leave
nothing to find by guessing against a web server.

The token carries no expiry of its own: whether the offer can still be answered
is the offer's state, looked up when the link is opened, so an expired or filled
offer shows what became of it instead of an error.
"""

import base64
import binascii
import hashlib
import hmac
from uuid import UUID

_PURPOSE = b"handoff-offer-link\x00"  # the same secret signs nothing else this way
_MAC_BYTES = 12
_TOKEN_BYTES = 16 + _MAC_BYTES
LINK_PATH_CHARACTERS = len("/p/") + -(-_TOKEN_BYTES * 4 // 3)
"""What a page's link adds to the public URL: the path and the unpadded base64 token."""


class LinkSigner:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def token(self, offer_id: UUID) -> str:
        signed = offer_id.bytes + self._mac(offer_id.bytes)
        return base64.urlsafe_b64encode(signed).rstrip(b"=").decode()

    def offer_id(self, token: str) -> UUID | None:
        """The offer a token was signed for; None if notify did not sign it."""
        try:
            signed = base64.b64decode(token + "==", altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            return None
        offer_bytes, mac = signed[:16], signed[16:]
        if len(signed) != _TOKEN_BYTES or not hmac.compare_digest(mac, self._mac(offer_bytes)):
            return None
        return UUID(bytes=offer_bytes)

    def _mac(self, offer_bytes: bytes) -> bytes:
        return hmac.digest(self._key, _PURPOSE + offer_bytes, hashlib.sha256)[:_MAC_BYTES]
