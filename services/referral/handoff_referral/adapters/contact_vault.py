"""Encryption at rest of a patient's follow-up contact details (decision 0025).

`FOLLOW_UP_KEYS` holds comma-separated Fernet keys (AES-128-CBC with HMAC-SHA256, from
the `cryptography` library): the first encrypts, every one decrypts, so a new key is put
first, `handoff referral follow-ups rotate-keys` re-encrypts every row under it, and the
old key is then dropped.
"""

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from handoff_referral.domain.follow_ups import Contact


def key_texts(keys: str | None) -> list[str]:
    """The keys of a `FOLLOW_UP_KEYS` value, in order: comma-separated, spaces around each
    and empty entries ignored (None, "" or " , " gives none)."""
    return [k.strip() for k in (keys or "").split(",") if k.strip()]


class VaultNotConfigured(Exception):
    """FOLLOW_UP_KEYS is not set: contact details can be neither stored nor read."""


class UnreadableContact(Exception):
    """A stored contact none of the configured keys opens (a key dropped too early)."""


class ContactVault:
    """Seals and opens contacts with the keys of `FOLLOW_UP_KEYS` (comma-separated
    url-safe base64 Fernet keys; None or empty: not configured). Raises ValueError for a
    malformed key, so a bad setting stops the service at start."""

    def __init__(self, keys: str | None) -> None:
        texts = key_texts(keys)
        self._fernet = MultiFernet([Fernet(k) for k in texts]) if texts else None

    @property
    def configured(self) -> bool:
        return self._fernet is not None

    def seal(self, contact: Contact) -> bytes:
        """The contact's JSON encrypted under the first key. Raises VaultNotConfigured."""
        return self._keys().encrypt(contact.model_dump_json().encode())

    def open(self, sealed: bytes) -> Contact:
        """The contact sealed in `sealed`. Raises UnreadableContact, VaultNotConfigured."""
        try:
            return Contact.model_validate_json(self._keys().decrypt(sealed))
        except InvalidToken:
            raise UnreadableContact from None

    def reseal(self, sealed: bytes) -> bytes:
        """`sealed` encrypted again under the first key (its time stamp kept)."""
        try:
            return self._keys().rotate(sealed)
        except InvalidToken:
            raise UnreadableContact from None

    def _keys(self) -> MultiFernet:
        if self._fernet is None:
            raise VaultNotConfigured
        return self._fernet
