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

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from handoff_notify.adapters.jsonl_spool import JsonlSpool
from handoff_notify.domain.replies import ReplyReading


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


class ReplySpool(JsonlSpool[SpooledReply]):
    """The reply spool file at `path` (one per replica: each appends and applies its own).
    Each applied reply leaves the file before the next is applied (not idempotent)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            write=SpooledReply.to_line,
            read=SpooledReply.from_line,
            replay_suffix=".applying",
            what="SMS reply",
            forget_each_applied=True,
        )
