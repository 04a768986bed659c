"""Which reply code a new offer SMS gets on one phone."""

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from handoff_notify.domain.replies import CODES

REUSE_AFTER = timedelta(hours=24)


def choose_code(last_used: Mapping[str, datetime], held: Collection[str], now: datetime) -> str:
    """A code for a new offer on a phone. `last_used`: each code's latest assignment on the
    phone; `held`: codes of the phone's offers still open. A code never used, or not used
    for 24 hours, comes first, in `CODES` order (the 17 letters, then two-letter codes),
    so no code comes back within the day before the phone has had 304 offers in it (the
    offer throttle stops a loop long before). Past that, the longest-unused code no open
    offer holds; with every code held by an open offer, the longest-unused one is shared
    rather than the page refused: a reply with it then names the newest offer holding it."""
    for code in CODES:
        used = last_used.get(code)
        if code not in held and (used is None or now - used >= REUSE_AFTER):
            return code
    free = [code for code in CODES if code not in held] or list(CODES)
    return min(free, key=lambda code: last_used[code])
