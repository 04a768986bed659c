"""A referral's status and its timeline, as the hospital reads them.

The status is what is true now. The timeline is the story, one entry per occurrence:

- While Handoff looks for a coach, each offer made is an `offered` entry, and each change
  to `waiting` (every eligible coach at capacity) or `unassigned` (nobody took it) is an
  entry; a referral can go offered → waiting → offered → accepted, or unassigned →
  offered → accepted, and the status follows the latest. These come from matching on
  one ordered topic, so the latest is the last seen.
- Each offer that ends without a coach is an entry saying why (`coach_declined`,
  `coach_did_not_answer`, `coach_not_contacted`, `coach_unreachable`,
  `coach_at_capacity`); it does not change the status. "Not contacted" means no page
  reached the coach's phone in time, which is not the same as a coach who did not answer.
- Once a coach accepted, the coach's steps (accepted, arrived, completed) are recorded
  once each at the time they happened. They come from two topics with no order between
  them, so one can arrive late (`arrived` before `accepted`): the status is the furthest.
- `cancelled`, `expired` and `completed` are final: a cancelled or expired referral takes
  no further steps; a completed one only records a coach's step that arrived late.
"""

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    RECEIVED = "received"
    OFFERED = "offered"
    WAITING = "waiting"
    UNASSIGNED = "unassigned"
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Step(StrEnum):
    """What a timeline entry records: a status the referral entered, an offer that
    ended without a coach (the five `coach_…`, which change no status), or the patient's
    discharge after the coach arrived (`discharged`, no status change either)."""

    RECEIVED = "received"
    OFFERED = "offered"
    WAITING = "waiting"
    UNASSIGNED = "unassigned"
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    COACH_DECLINED = "coach_declined"
    COACH_DID_NOT_ANSWER = "coach_did_not_answer"
    COACH_NOT_CONTACTED = "coach_not_contacted"
    COACH_UNREACHABLE = "coach_unreachable"
    COACH_AT_CAPACITY = "coach_at_capacity"
    # The hospital discharged the patient after the coach arrived (HL7 ADT^A03): recorded,
    # no status change; a discharge before arrival cancels the referral instead.
    DISCHARGED = "discharged"


OFFER_ENDINGS = frozenset(
    {
        Step.COACH_DECLINED,
        Step.COACH_DID_NOT_ANSWER,
        Step.COACH_NOT_CONTACTED,
        Step.COACH_UNREACHABLE,
        Step.COACH_AT_CAPACITY,
    }
)
LOOKING = frozenset({Status.RECEIVED, Status.OFFERED, Status.WAITING, Status.UNASSIGNED})
COACH_ENGAGED = (Status.ACCEPTED, Status.ARRIVED, Status.COMPLETED)  # in order of progress
CLOSED = frozenset({Status.CANCELLED, Status.EXPIRED})
FINAL = CLOSED | {Status.COMPLETED}


@dataclass(frozen=True)
class StepOutcome:
    record: bool
    new_status: Status


def observe(current: Status, recorded: frozenset[Status], step: Status) -> StepOutcome:
    """What seeing status step `step` does to a referral now at `current`, whose timeline
    already holds the statuses in `recorded`: whether to add a timeline entry, and the
    status after it."""
    unchanged = StepOutcome(record=False, new_status=current)
    if current in CLOSED:
        return unchanged
    if step is Status.CANCELLED:
        return StepOutcome(record=True, new_status=step)
    if step in COACH_ENGAGED:
        if step in recorded:
            return unchanged
        if current in COACH_ENGAGED:
            return StepOutcome(record=True, new_status=max(current, step, key=COACH_ENGAGED.index))
        return StepOutcome(record=True, new_status=step)
    # matching's steps while it looks for a coach: offered, waiting, unassigned, expired
    if current in COACH_ENGAGED:
        # A coach is on the way: a late "nobody" changes nothing; an offer seen only after
        # its own acceptance still belongs on the timeline once.
        late_offer = step is Status.OFFERED and step not in recorded
        return StepOutcome(record=late_offer, new_status=current)
    if step is current and step is not Status.OFFERED:
        return unchanged  # waiting or unassigned said again: one entry per change
    return StepOutcome(record=True, new_status=step)


def record_offer_ending(current: Status) -> bool:
    """Whether an offer that ended without a coach goes on the timeline of a referral now
    at `current`: yes, unless the referral is over."""
    return current not in FINAL


class CancelRefused(Exception):
    """A cancel that must not change a referral at `status` (see check_cancellable).

    Its text is shown to callers (REST and FHIR 409 bodies, HL7 ERR-8), so it reads as
    English: "an arrived referral …", "a completed referral …".
    """

    def __init__(self, status: Status) -> None:
        article = "an" if status.value[:1] in "aeiou" else "a"
        super().__init__(f"{article} {status.value} referral cannot be cancelled")
        self.status = status


def check_cancellable(current: Status) -> bool:
    """True if cancelling changes the referral, False if it is already cancelled.

    Raises CancelRefused for a completed or expired referral: there is nothing to withdraw;
    and for an arrived one: the coach is at the bedside, and a late cancel from the hospital
    (orders cleaned up at discharge) must not end the visit (REST and FHIR answer 409, an
    HL7 ORC-1 CA is acknowledged AA and changes nothing). A waiting or unassigned referral
    can be cancelled: matching would offer it again.
    """
    if current is Status.CANCELLED:
        return False
    if current in FINAL or current is Status.ARRIVED:
        raise CancelRefused(current)
    return True
