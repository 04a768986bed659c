"""Coaches' SMS replies taken while PostgreSQL is away, kept in an append-only file.

Twilio does not retry an inbound-message webhook answered 5xx, so a reply met by a
database outage was lost: the coach's "1" never accepted anything. Now the webhook keeps
what the reply was read as (`ReplyReading`: an answer and its code, a keyword, unclear or
not understood), never its text, with the sender's number (the coach's own, needed to find
their offers), as one JSON line of this replica's spool, fsynced before Twilio is answered.
A supervised loop applies them in order once the database answers, and texts each coach
the answer they would have had at once (decision 0021 §6).

Applying a reply is not idempotent the way a delivery report is (an accept applied twice
is answered twice), so each line leaves the file as soon as it is applied: the file is
rewritten without it (write, fsync, rename) before the next one is taken.
"""

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from handoff_notify.domain.replies import ReplyReading

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpooledReply:
    """A reply from `phone` (E.164), read as `reading`, received at `received_at` (UTC)."""

    phone: str
    reading: ReplyReading
    received_at: datetime

    def to_line(self) -> str:
        return (
            json.dumps(
                {
                    "phone": self.phone,
                    "reading": self.reading.to_json(),
                    "received_at": self.received_at.isoformat(),
                }
            )
            + "\n"
        )

    @classmethod
    def from_line(cls, line: str) -> "SpooledReply":
        """Raises ValueError, KeyError or TypeError for a line it did not write."""
        data: dict[str, Any] = json.loads(line)
        return cls(
            str(data["phone"]),
            ReplyReading.from_json(data["reading"]),
            datetime.fromisoformat(str(data["received_at"])),
        )


class ReplySpool:
    """The reply spool file at `path` (one per replica: each appends and applies its own)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._applying = path.with_name(path.name + ".applying")

    async def keep(self, reply: SpooledReply) -> None:
        """Append `reply` durably (fsynced) before the caller answers the provider.
        Raises OSError if the disk refuses it."""
        await asyncio.to_thread(self._append, reply.to_line())

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as spool:
            spool.write(line)
            spool.flush()
            os.fsync(spool.fileno())

    def waiting(self) -> bool:
        """Whether any reply waits to be applied."""
        return self._applying.exists() or self.path.exists()

    async def replay(self, apply: Callable[[SpooledReply], Awaitable[object]]) -> int:
        """Apply every spooled reply, oldest first; returns how many. Each applied line is
        removed before the next is applied; an error from `apply` (the database away again)
        propagates and leaves that reply and the later ones spooled."""
        if not self._applying.exists():
            try:
                os.replace(self.path, self._applying)  # new replies go to a fresh file
            except FileNotFoundError:
                return 0
        try:
            text = await asyncio.to_thread(self._applying.read_text, "utf-8")
        except FileNotFoundError:
            return 0
        lines = [line for line in text.splitlines() if line.strip()]
        applied = 0
        while lines:
            try:
                reply = SpooledReply.from_line(lines[0])
            except (ValueError, KeyError, TypeError):
                log.error("unreadable line in the SMS reply spool skipped")
            else:
                await apply(reply)
                applied += 1
            lines = lines[1:]
            await asyncio.to_thread(self._rewrite, lines)
        self._applying.unlink(missing_ok=True)
        return applied

    def _rewrite(self, lines: list[str]) -> None:
        partial = self._applying.with_name(self._applying.name + ".tmp")
        with partial.open("w", encoding="utf-8") as rest:
            rest.writelines(line + "\n" for line in lines)
            rest.flush()
            os.fsync(rest.fileno())
        os.replace(partial, self._applying)
