"""A referral's status and its timeline, as the hospital reads them.

Events reach the referral service from two topics (dispatch, pages) with no
order between them, so a step can arrive late: `arrived` before `accepted`.
Each step is recorded once, at the time it happened; the status is the furthest
step reached; a closed referral (cancelled, unassigned) takes no further steps.
"""

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    RECEIVED = "received"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    UNASSIGNED = "unassigned"


PROGRESS = (Status.RECEIVED, Status.OFFERED, Status.ACCEPTED, Status.ARRIVED, Status.COMPLETED)
CLOSED = frozenset({Status.CANCELLED, Status.UNASSIGNED})
FINAL = CLOSED | {Status.COMPLETED}
COACH_ENGAGED = frozenset({Status.ACCEPTED, Status.ARRIVED, Status.COMPLETED})


@dataclass(frozen=True)
class StepOutcome:
    record: bool
    new_status: Status


def observe(current: Status, recorded: frozenset[Status], step: Status) -> StepOutcome:
    """What seeing `step` does to a referral now at `current` with `recorded` steps."""
    unchanged = StepOutcome(record=False, new_status=current)
    if step in recorded or current in CLOSED:
        return unchanged
    if step is Status.UNASSIGNED and current in COACH_ENGAGED:
        return unchanged  # a coach is on the way: a late "nobody" changes nothing
    if step in CLOSED:
        return StepOutcome(record=True, new_status=step)
    furthest = max(current, step, key=PROGRESS.index)
    return StepOutcome(record=True, new_status=furthest)


class CancelRefused(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(f"a {status.value} referral cannot be cancelled")
        self.status = status


def check_cancellable(current: Status) -> bool:
    """True if cancelling changes the referral, False if it is already cancelled."""
    if current is Status.CANCELLED:
        return False
    if current in FINAL:
        raise CancelRefused(current)
    return True
