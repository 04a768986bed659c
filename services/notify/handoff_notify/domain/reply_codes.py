"""Which reply code a new offer SMS gets on one phone."""

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from handoff_notify.domain.replies import CODE_LETTERS

REUSE_AFTER = timedelta(hours=24)


def choose_code(last_used: Mapping[str, datetime], held: Collection[str], now: datetime) -> str:
    """A code for a new offer on a phone. `last_used`: each code's latest assignment on the
    phone; `held`: codes of the phone's offers still open. A code never used, or not used
    for 24 hours, comes first, in alphabetical order; with all used within the day (more
    than 17 offers), the longest-unused code no open offer holds. With all 17 held by open
    offers at once (past anything a coach's capacity allows; the offer throttle stops a
    loop at 20), the longest-unused code is shared rather than the page refused: a reply
    with it then names the newest offer holding it."""
    for code in CODE_LETTERS:
        used = last_used.get(code)
        if code not in held and (used is None or now - used >= REUSE_AFTER):
            return code
    free = [code for code in CODE_LETTERS if code not in held] or list(CODE_LETTERS)
    return min(free, key=lambda code: last_used[code])
