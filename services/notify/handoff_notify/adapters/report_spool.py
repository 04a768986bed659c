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

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import UUID

from handoff_notify.adapters.jsonl_spool import JsonlSpool


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

    def to_line(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def from_line(cls, line: str) -> "SpooledReport":
        """Raises ValueError or TypeError for a line it did not write."""
        return cls(**json.loads(line))


class ReportSpool(JsonlSpool[SpooledReport]):
    """The spool file at `path` (one per replica: each appends and replays its own).
    Applying is idempotent, so a replay cut short starts over from its first line."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            write=SpooledReport.to_line,
            read=SpooledReport.from_line,
            replay_suffix=".replaying",
            what="delivery report",
            forget_each_applied=False,
        )
