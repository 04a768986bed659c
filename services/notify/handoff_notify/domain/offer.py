"""An offer's life as the coach sees it, and which answers it takes at each step.

Matching decides assignments; notify only records what the coach said and what
matching told it since (withdrawn, assigned). The coach's page and SMS replies
both ask this module whether an answer is allowed now.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from handoff_schemas.vocabulary import CoachResponse, WithdrawReason


class OfferState(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"  # the coach said yes; matching has not confirmed yet
    DECLINED = "declined"
    ASSIGNED = "assigned"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    WITHDRAWN = "withdrawn"


_NEXT_ANSWERS: dict[OfferState, tuple[CoachResponse, ...]] = {
    OfferState.OPEN: (CoachResponse.ACCEPTED, CoachResponse.DECLINED),
    OfferState.ASSIGNED: (CoachResponse.ARRIVED,),
    OfferState.ARRIVED: (CoachResponse.COMPLETED,),
}

_STATE_AFTER: dict[CoachResponse, OfferState] = {
    CoachResponse.ACCEPTED: OfferState.ACCEPTED,
    CoachResponse.DECLINED: OfferState.DECLINED,
    CoachResponse.ARRIVED: OfferState.ARRIVED,
    CoachResponse.COMPLETED: OfferState.COMPLETED,
}


@dataclass
class CoachOffer:
    state: OfferState
    expires_at: datetime
    withdraw_reason: WithdrawReason | None = None
    arrival_deadline: datetime | None = None
    page_deadline: datetime | None = None  # no first page after it (OfferMade.page_deadline)
    paged_at: datetime | None = None  # the first page reached a provider (PageSent.sent_at)

    def answer_deadline(self) -> datetime:
        """When the offer ends unanswered, as notify can know it: matching's ack clock runs
        from the first page (`paged_at`) for the site's ack timeout, which is `expires_at -
        page_deadline`; `expires_at` (the page deadline plus that) is the bound before a
        page left, and for offers made before the ack clock ran from the page."""
        if self.paged_at is None or self.page_deadline is None:
            return self.expires_at
        return min(self.expires_at, self.paged_at + (self.expires_at - self.page_deadline))

    def expired(self, now: datetime) -> bool:
        return self.state is OfferState.OPEN and now >= self.answer_deadline()

    def answers(self, now: datetime) -> tuple[CoachResponse, ...]:
        """What the coach may answer now, in the order the page offers them."""
        if self.expired(now):
            return ()
        return _NEXT_ANSWERS.get(self.state, ())

    def answer(self, response: CoachResponse, now: datetime) -> bool:
        """Record the coach's answer if it is allowed now; False (and no change) otherwise."""
        if response not in self.answers(now):
            return False
        self.state = _STATE_AFTER[response]
        return True

    def withdraw(self, reason: WithdrawReason) -> None:
        if self.state in (OfferState.OPEN, OfferState.ACCEPTED):
            self.state = OfferState.WITHDRAWN
            self.withdraw_reason = reason

    def cancel_held(self) -> bool:
        """The ED cancelled the referral while this coach held it (assigned, or arrived at
        the bedside): the offer ends withdrawn (cancelled), so the page says so and takes no
        more answers. True if it changed, and the coach must be told; open and accepted
        offers are left to matching's withdrawal, which tells the coach itself."""
        if self.state not in (OfferState.ASSIGNED, OfferState.ARRIVED):
            return False
        self.state = OfferState.WITHDRAWN
        self.withdraw_reason = WithdrawReason.CANCELLED
        return True

    def assign(self, arrival_deadline: datetime) -> None:
        if self.state in (OfferState.OPEN, OfferState.ACCEPTED):
            self.state = OfferState.ASSIGNED
        self.arrival_deadline = arrival_deadline

    def still_wanted(self, now: datetime) -> bool:
        """True while paging the coach about this offer is still of use: open, not expired."""
        return self.state is OfferState.OPEN and not self.expired(now)

    def may_page(self, now: datetime, *, first_page_out: bool) -> bool:
        """Whether a page of this offer may leave now. The first page may not leave after
        the page deadline (matching withdraws the offer as not_contacted then); pages to
        the coach's next methods after a first one went out may, until the offer expires."""
        if not self.still_wanted(now):
            return False
        return first_page_out or self.page_deadline is None or now <= self.page_deadline
