"""The link in a page: a token naming one offer, signed by notify (libs/handoff_platform/links).

An offer is made to one coach, so naming the offer names the coach too.
"""

from uuid import UUID

from handoff_platform.links import OFFER_LINK, TOKEN_CHARACTERS
from handoff_platform.links import LinkSigner as _Signer

LINK_PATH_CHARACTERS = len("/p/") + TOKEN_CHARACTERS
"""What a page's link adds to the public URL: the path and the unpadded base64 token."""
FOLLOW_UP_PATH_CHARACTERS = len("/f/") + TOKEN_CHARACTERS
"""What a follow-up reminder's link adds to REFERRAL_PUBLIC_URL."""


class LinkSigner(_Signer):
    """The offer-page signer: tokens minted before the signer moved to the platform still
    verify, because the purpose and the MAC are unchanged."""

    def __init__(self, secret: str) -> None:
        super().__init__(secret, OFFER_LINK)

    def offer_id(self, token: str) -> UUID | None:
        """The offer a token was signed for; None if notify did not sign it."""
        return self.record_id(token)
