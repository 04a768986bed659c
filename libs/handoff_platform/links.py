"""Short signed links: a token naming one record (a UUID), signed with a secret and a purpose.

The token is the id's 16 bytes and the first 12 bytes of their HMAC-SHA256, base64url:
38 characters, where itsdangerous's JSON payload and full signature took about 120, which
made every SMS carrying a link two segments. Twelve bytes of MAC (96 bits) leave nothing
to find by guessing against a web server.

The purpose is part of what is signed, so a token minted for one kind of record (an offer,
a visit, a follow-up attempt) is refused as another even under the same secret. A token
carries no expiry of its own: whether the record may still be acted on is its state, looked
up when the link is opened, so a closed record shows what became of it instead of an error.
"""

import base64
import binascii
import hashlib
import hmac
from uuid import UUID

_MAC_BYTES = 12
TOKEN_BYTES = 16 + _MAC_BYTES
TOKEN_CHARACTERS = -(-TOKEN_BYTES * 4 // 3)
"""Length of a token: unpadded base64 of the id and its MAC."""


class LinkSigner:
    """Signs and checks tokens for one purpose (e.g. b"handoff-offer-link").

    `secret` is the deployment's signing secret (str, from the environment); services that
    must read each other's links (notify mints the referral service's visit and follow-up
    links) are given the same secret.
    """

    def __init__(self, secret: str, purpose: bytes) -> None:
        self._key = secret.encode()
        self._purpose = purpose + b"\x00"

    def token(self, record_id: UUID) -> str:
        """The token for `record_id`: 38 URL-safe characters."""
        signed = record_id.bytes + self._mac(record_id.bytes)
        return base64.urlsafe_b64encode(signed).rstrip(b"=").decode()

    def record_id(self, token: str) -> UUID | None:
        """The id a token was signed for with this secret and purpose; None otherwise."""
        try:
            signed = base64.b64decode(token + "==", altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            return None
        id_bytes, mac = signed[:16], signed[16:]
        if len(signed) != TOKEN_BYTES or not hmac.compare_digest(mac, self._mac(id_bytes)):
            return None
        return UUID(bytes=id_bytes)

    def _mac(self, id_bytes: bytes) -> bytes:
        return hmac.digest(self._key, self._purpose + id_bytes, hashlib.sha256)[:_MAC_BYTES]


OFFER_LINK = b"handoff-offer-link"
"""Notify's offer page, /p/{token}: names an offer (and so its one coach)."""
VISIT_LINK = b"handoff-visit-link"
"""The referral service's visit record, /v/{token}: names the accepted offer."""
FOLLOW_UP_LINK = b"handoff-follow-up-link"
"""The referral service's follow-up page, /f/{token}: names a FollowUpAssigned assignment."""
