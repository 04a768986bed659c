"""API keys held in memory, and forgotten the moment one is revoked, on every replica.

Every request is authenticated; without this each one costs a database round
trip before any work is done. Revocation sends NOTIFY on `handoff_api_keys`
(in the revoking transaction); each replica LISTENs and drops the key at once. A
site's facts changed (`site update`) send `site:<site id>` on the same channel, and
the site's keys, which carry its facts, are dropped the same way.
While the LISTEN connection is down nothing is cached, so a revocation can never
be missed, only the cache lost.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg

from handoff_platform.database import Connection, connect
from handoff_platform.supervision import beat, wait_until_set
from handoff_referral.domain.referral import Site

log = logging.getLogger(__name__)

REVOCATION_CHANNEL = "handoff_api_keys"
SITE_CHANGED_PREFIX = "site:"
"""A notification on REVOCATION_CHANNEL with this prefix names a site, not a key."""


@dataclass(frozen=True)
class CachedKey:
    site: Site
    secret_sha256: bytes
    expires_at: float


class KeyCache:
    def __init__(self, database_url: str, ttl_seconds: float = 60.0) -> None:
        self.database_url = database_url
        self.ttl_seconds = ttl_seconds
        self._keys: dict[str, CachedKey] = {}
        self._listening = False
        self._revocations = 0

    def get(self, key_id: str) -> CachedKey | None:
        cached = self._keys.get(key_id)
        if cached is None or not self._listening or cached.expires_at < time.monotonic():
            return None
        return cached

    def revocations_seen(self) -> int:
        """Take this before a lookup and pass it to `put`, so a revocation in between wins."""
        return self._revocations

    def put(self, key_id: str, site: Site, secret_sha256: bytes, revocations_seen: int) -> None:
        if self._listening and revocations_seen == self._revocations:
            expires_at = time.monotonic() + self.ttl_seconds
            self._keys[key_id] = CachedKey(site, secret_sha256, expires_at)

    async def listen_forever(self, idle_beat: float = 5.0) -> None:
        """Listen for revocations until the connection is lost, then raise for the
        supervisor to restart it; meanwhile keys are checked in the database.
        A cycle ends every `idle_beat` seconds while listening."""
        connection = await connect(self.database_url)
        try:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(REVOCATION_CHANNEL, self._on_revoked)
            self._listening = True
            while not lost.is_set():
                beat()
                await wait_until_set(lost, idle_beat)
            raise asyncpg.ConnectionDoesNotExistError("revocation listener lost its connection")
        finally:
            self._forget_all()
            with contextlib.suppress(Exception):
                await connection.close()

    def _on_revoked(self, _conn: Connection, _pid: int, _channel: str, payload: object) -> None:
        self._revocations += 1
        named = str(payload)
        if named.startswith(SITE_CHANGED_PREFIX):
            site_id = named.removeprefix(SITE_CHANGED_PREFIX)
            for key_id in [k for k, cached in self._keys.items() if cached.site.site_id == site_id]:
                del self._keys[key_id]
            return
        self._keys.pop(named, None)

    def _forget_all(self) -> None:
        self._listening = False
        self._revocations += 1
        self._keys.clear()
