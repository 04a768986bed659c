"""API keys for hospital systems: random, shown once, stored as a hash of the secret.

A key reads `hok_<key id>_<secret>`. The key id finds the row; the secret, 256
random bits, is compared by hash in constant time. A fast hash suffices for a
secret that long: there is nothing to guess.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_KEY = re.compile(r"^hok_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    secret_sha256: bytes
    token: str


def issue_key() -> IssuedKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(key_id, hash_secret(secret), f"hok_{key_id}_{secret}")


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(token: str) -> tuple[str, str] | None:
    match = _KEY.match(token)
    return (match["key_id"], match["secret"]) if match else None


def secret_matches(secret: str, stored_sha256: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_sha256)
