"""Delivery reports taken while PostgreSQL is away, kept in an append-only file.

Twilio does not reliably retry a status callback, so one answered 503 during a database
outage is lost, and its page stays `sent` (or `sending`) for good. Instead the webhook
appends the report, once its signature checked, as one JSON line to this replica's spool
file, flushed and fsynced before the 204; a supervised loop applies the spooled reports,
oldest first, once the database answers again. Applying a report is idempotent (a report
for a final message is ignored; an id already stored is not stored again), so a replay cut
short by another outage starts over from its first line without harm.

A line holds the provider's id, the status read as delivered/failed/neither, Twilio's
error code and notify's message id: no phone number, no text (see decision 0021).
"""

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import UUID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpooledReport:
    """A provider's report: `delivered` True/False for a final status, None for another."""

    provider_ref: str
    delivered: bool | None
    error_code: str | None
    message_id: str | None  # notify's id from the callback URL, if it named one

    @property
    def message_uuid(self) -> UUID | None:
        return None if self.message_id is None else UUID(self.message_id)


class ReportSpool:
    """The spool file at `path` (one per replica: each appends and replays its own)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._replaying = path.with_name(path.name + ".replaying")

    async def keep(self, report: SpooledReport) -> None:
        """Append `report` durably (fsynced) before the caller answers the provider.
        Raises OSError if the disk refuses it."""
        await asyncio.to_thread(self._append, json.dumps(asdict(report)) + "\n")

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as spool:
            spool.write(line)
            spool.flush()
            os.fsync(spool.fileno())

    def waiting(self) -> bool:
        """Whether any report waits to be applied."""
        return self._replaying.exists() or self.path.exists()

    async def replay(self, apply: Callable[[SpooledReport], Awaitable[object]]) -> int:
        """Apply every spooled report in order; returns how many. An error from `apply`
        (the database away again) propagates and leaves the rest spooled, for the next
        replay to apply from the start."""
        if not self._replaying.exists():
            try:
                os.replace(self.path, self._replaying)  # new reports go to a fresh file
            except FileNotFoundError:
                return 0
        try:
            text = await asyncio.to_thread(self._replaying.read_text, "utf-8")
        except FileNotFoundError:  # another process sharing the file replayed it
            return 0
        lines = text.splitlines()
        applied = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                report = SpooledReport(**json.loads(line))
            except (ValueError, TypeError):
                log.error("unreadable line in the delivery report spool skipped")
                continue
            await apply(report)
            applied += 1
        self._replaying.unlink(missing_ok=True)
        return applied
