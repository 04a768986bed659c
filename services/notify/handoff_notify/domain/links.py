"""The link in a page: a token signed by notify, bound to one offer and one coach.

The token carries no expiry of its own: whether the offer can still be answered
is the offer's state, looked up when the link is opened, so an expired or filled
offer shows what became of it instead of an error.
"""

from dataclasses import dataclass
from uuid import UUID

from itsdangerous import BadSignature, URLSafeSerializer


@dataclass(frozen=True)
class LinkTarget:
    offer_id: UUID
    coach_id: UUID


class LinkSigner:
    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="handoff-offer-link")

    def token(self, target: LinkTarget) -> str:
        return self._serializer.dumps([target.offer_id.hex, target.coach_id.hex])

    def target(self, token: str) -> LinkTarget | None:
        """The (offer, coach) a token was signed for; None if it was not signed by us."""
        try:
            offer_hex, coach_hex = self._serializer.loads(token)
            return LinkTarget(UUID(hex=offer_hex), UUID(hex=coach_hex))
        except (BadSignature, ValueError, TypeError):
            return None
