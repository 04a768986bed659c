"""An append-only JSON-lines spool file: what a webhook keeps while PostgreSQL is away.

The delivery report spool and the SMS reply spool (decision 0021) share this machinery:
a record is appended as one line, flushed and fsynced before the provider is answered;
a replay moves the file aside (new records go to a fresh file), applies its lines oldest
first and removes it once all are applied. They differ only in what a line holds and in
whether applying is idempotent: if not (`forget_each_applied`), each applied line leaves
the moved-aside file (write, fsync, rename) before the next is taken, so a replay cut
short never applies it twice.
"""

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class JsonlSpool(Generic[T]):
    """The spool file at `path` (one per replica: each appends and replays its own).

    `write` turns a record into its line (ending in a newline); `read` turns a line back,
    raising ValueError, KeyError or TypeError for one it did not write (that line is
    logged as `what` and skipped). During a replay the file is kept at `path` plus
    `replay_suffix`.
    """

    def __init__(
        self,
        path: Path,
        *,
        write: Callable[[T], str],
        read: Callable[[str], T],
        replay_suffix: str,
        what: str,
        forget_each_applied: bool,
    ) -> None:
        self.path = path
        self._write = write
        self._read = read
        self._replaying = path.with_name(path.name + replay_suffix)
        self._what = what
        self._forget_each_applied = forget_each_applied

    async def keep(self, record: T) -> None:
        """Append `record` durably (fsynced) before the caller answers the provider.
        Raises OSError if the disk refuses it."""
        await asyncio.to_thread(self._append, self._write(record))

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as spool:
            spool.write(line)
            spool.flush()
            os.fsync(spool.fileno())

    def waiting(self) -> bool:
        """Whether any record waits to be applied."""
        return self._replaying.exists() or self.path.exists()

    async def replay(self, apply: Callable[[T], Awaitable[object]]) -> int:
        """Apply every spooled record, oldest first; returns how many. An error from
        `apply` (the database away again) propagates and leaves that record and the later
        ones spooled (and, unless `forget_each_applied`, the earlier ones too: the next
        replay starts from the first line)."""
        if not self._replaying.exists():
            try:
                os.replace(self.path, self._replaying)  # new records go to a fresh file
            except FileNotFoundError:
                return 0
        try:
            text = await asyncio.to_thread(self._replaying.read_text, "utf-8")
        except FileNotFoundError:  # another process sharing the file replayed it
            return 0
        lines = [line for line in text.splitlines() if line.strip()]
        applied = 0
        while lines:
            try:
                record = self._read(lines[0])
            except (ValueError, KeyError, TypeError):
                log.error("unreadable line in the %s spool skipped", self._what)
            else:
                await apply(record)
                applied += 1
            lines = lines[1:]
            if self._forget_each_applied:
                await asyncio.to_thread(self._rewrite, lines)
        self._replaying.unlink(missing_ok=True)
        return applied

    def _rewrite(self, lines: list[str]) -> None:
        partial = self._replaying.with_name(self._replaying.name + ".tmp")
        with partial.open("w", encoding="utf-8") as rest:
            rest.writelines(line + "\n" for line in lines)
            rest.flush()
            os.fsync(rest.fileno())
        os.replace(partial, self._replaying)
