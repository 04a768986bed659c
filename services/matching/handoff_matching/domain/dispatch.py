"""One referral's journey up the escalation ladder: the offer state machine.

Pure: every method takes `now` and the candidates the caller found, changes the
dispatch, and returns what must happen as a result — events to publish and
timers to set or cancel. The service layer loads a dispatch under a row lock,
calls one method, stores the dispatch, its events (outbox) and timers in one
transaction: so two acceptances at once are two calls in sequence, and exactly
one of them assigns.

The ladder: the site's on-call coaches, then the state pool (ReferralEscalated),
then the site's supervisors (ReferralEscalated), then ReferralUnassigned.
`sequential` offers one coach at a time; `broadcast` offers the next
`broadcast_size` at once, and the first acceptance wins.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID, uuid4

from handoff_schemas import EventPayload
from handoff_schemas.events import (
    CoachAssigned,
    OfferBriefing,
    OfferMade,
    OfferWithdrawn,
    ReferralEscalated,
    ReferralUnassigned,
)
from handoff_schemas.vocabulary import (
    GenderPreference,
    Substance,
    Tier,
    UnassignedReason,
    Urgency,
    WithdrawReason,
)

LADDER = (Tier.SITE, Tier.STATE_POOL, Tier.SUPERVISOR)


class DispatchMode(StrEnum):
    SEQUENTIAL = "sequential"
    BROADCAST = "broadcast"


@dataclass(frozen=True)
class DispatchSettings:
    """The site's own dispatch settings; matching owns them."""

    mode: DispatchMode = DispatchMode.SEQUENTIAL
    ack_timeout: timedelta = timedelta(minutes=5)
    arrival_target: timedelta = timedelta(minutes=60)
    broadcast_size: int = 3


@dataclass(frozen=True)
class ReferralFacts:
    """What matching keeps of a ReferralCreated: to make offers, and to rank again later."""

    referral_id: UUID
    correlation_id: str
    site_id: str
    site_short_name: str
    site_state: str
    site_time_zone: str
    urgency: Urgency
    briefing: OfferBriefing
    gender_preference: GenderPreference | None = None
    substances: frozenset[Substance] = frozenset()  # 42 CFR Part 2: kept here, never logged


class OfferState(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    UNREACHABLE = "unreachable"  # notify: every channel failed
    WITHDRAWN = "withdrawn"


@dataclass
class Offer:
    offer_id: UUID
    coach_id: UUID
    tier: Tier
    made_at: datetime
    expires_at: datetime
    state: OfferState = OfferState.OPEN
    why: str = ""  # how the coach ranked when offered, for whoever reviews the referral


class DispatchState(StrEnum):
    OFFERING = "offering"
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    CANCELLED = "cancelled"
    CLOSED = "closed"  # the coach arrived, or completed


class TimerKind(StrEnum):
    OFFER_EXPIRY = "offer_expiry"  # fires Dispatch.expire
    ARRIVAL_DEADLINE = "arrival_deadline"  # fires Dispatch.arrival_overdue


@dataclass(frozen=True)
class SetTimer:
    """Fire at `due`, for the offer; the timer row survives restarts."""

    offer_id: UUID
    due: datetime
    kind: TimerKind = TimerKind.OFFER_EXPIRY


@dataclass(frozen=True)
class CancelTimer:
    offer_id: UUID
    kind: TimerKind = TimerKind.OFFER_EXPIRY


Effect = EventPayload | SetTimer | CancelTimer


class Ranking(list[UUID]):
    """Coach ids best first, with the explanation of each one's place."""

    def __init__(self, ranked: Iterable[tuple[UUID, str]] = ()) -> None:
        pairs = list(ranked)
        super().__init__(coach_id for coach_id, _ in pairs)
        self.why = dict(pairs)


Candidates = Mapping[Tier, Sequence[UUID]]
"""Eligible coaches per tier, best first, as ranked now (a Ranking carries why); the
dispatch skips any already offered."""


@dataclass
class Dispatch:
    facts: ReferralFacts
    settings: DispatchSettings
    tier: Tier = Tier.SITE
    state: DispatchState = DispatchState.OFFERING
    offers: list[Offer] = field(default_factory=list)
    assigned_coach: UUID | None = None
    started_at: datetime | None = None

    def start(self, now: datetime, candidates: Candidates) -> list[Effect]:
        self.started_at = now
        return self._offer_next(now, candidates)

    def accept(self, offer_id: UUID, now: datetime) -> list[Effect]:
        offer = self._offer(offer_id)
        if offer is None or offer.state is not OfferState.OPEN:
            return []  # a late or repeated answer: nothing changes
        if self.state is not DispatchState.OFFERING:
            return self._withdraw([offer], WithdrawReason.FILLED, now)
        offer.state = OfferState.ACCEPTED
        self.state = DispatchState.ASSIGNED
        self.assigned_coach = offer.coach_id
        deadline = now + self.settings.arrival_target
        assigned = CoachAssigned(
            referral_id=self.facts.referral_id,
            offer_id=offer.offer_id,
            coach_id=offer.coach_id,
            assigned_at=now,
            arrival_deadline=deadline,
        )
        others = [o for o in self.offers if o.state is OfferState.OPEN]
        return [
            CancelTimer(offer.offer_id),
            SetTimer(offer.offer_id, deadline, TimerKind.ARRIVAL_DEADLINE),
            assigned,
            *self._withdraw(others, WithdrawReason.FILLED, now),
        ]

    def decline(self, offer_id: UUID, now: datetime, candidates: Candidates) -> list[Effect]:
        return self._close(offer_id, OfferState.DECLINED, now, candidates, [CancelTimer(offer_id)])

    def expire(self, offer_id: UUID, now: datetime, candidates: Candidates) -> list[Effect]:
        """The ack timeout passed: the coach is told the offer is gone, the next one is asked."""
        offer = self._offer(offer_id)
        if offer is None or offer.state is not OfferState.OPEN:
            return []
        withdrawn = self._withdrawal(offer, WithdrawReason.EXPIRED, now)
        return self._close(offer_id, OfferState.EXPIRED, now, candidates, [withdrawn])

    def unreachable(self, offer_id: UUID, now: datetime, candidates: Candidates) -> list[Effect]:
        """Notify could not reach the coach on any channel: move on without waiting."""
        return self._close(
            offer_id, OfferState.UNREACHABLE, now, candidates, [CancelTimer(offer_id)]
        )

    def cancel(self, now: datetime) -> list[Effect]:
        """The hospital withdrew the referral: every open offer is withdrawn at once."""
        if self.state in (DispatchState.CANCELLED, DispatchState.CLOSED):
            return []
        arrival = self._stop_arrival_clock()
        self.state = DispatchState.CANCELLED
        open_offers = [o for o in self.offers if o.state is OfferState.OPEN]
        return arrival + self._withdraw(open_offers, WithdrawReason.CANCELLED, now)

    def close(self) -> list[Effect]:
        """The coach arrived or completed: the assignment no longer holds the coach's capacity."""
        if self.state is not DispatchState.ASSIGNED:
            return []
        arrival = self._stop_arrival_clock()
        self.state = DispatchState.CLOSED
        return arrival

    def arrival_overdue(self, offer_id: UUID) -> bool:
        """True if the coach this offer assigned has still not arrived by the deadline."""
        accepted = self._accepted_offer()
        return (
            self.state is DispatchState.ASSIGNED
            and accepted is not None
            and (accepted.offer_id == offer_id)
        )

    def _stop_arrival_clock(self) -> list[Effect]:
        accepted = self._accepted_offer() if self.state is DispatchState.ASSIGNED else None
        return (
            [] if accepted is None else [CancelTimer(accepted.offer_id, TimerKind.ARRIVAL_DEADLINE)]
        )

    def _accepted_offer(self) -> Offer | None:
        return next((o for o in self.offers if o.state is OfferState.ACCEPTED), None)

    @property
    def offered_coaches(self) -> frozenset[UUID]:
        return frozenset(offer.coach_id for offer in self.offers)

    def _offer(self, offer_id: UUID) -> Offer | None:
        return next((offer for offer in self.offers if offer.offer_id == offer_id), None)

    def _close(
        self,
        offer_id: UUID,
        outcome: OfferState,
        now: datetime,
        candidates: Candidates,
        effects: list[Effect],
    ) -> list[Effect]:
        offer = self._offer(offer_id)
        if offer is None or offer.state is not OfferState.OPEN:
            return []
        offer.state = outcome
        if self.state is not DispatchState.OFFERING:
            return effects
        if any(o.state is OfferState.OPEN for o in self.offers):
            return effects  # a broadcast still has offers out: wait for them
        return [*effects, *self._offer_next(now, candidates)]

    def _offer_next(self, now: datetime, candidates: Candidates) -> list[Effect]:
        effects: list[Effect] = []
        while True:
            fresh = [c for c in candidates.get(self.tier, ()) if c not in self.offered_coaches]
            if fresh:
                sequential = self.settings.mode is DispatchMode.SEQUENTIAL
                why = getattr(candidates[self.tier], "why", {})
                for coach in fresh[: 1 if sequential else self.settings.broadcast_size]:
                    effects += self._make_offer(coach, now, why.get(coach, ""))
                return effects
            next_rung = LADDER.index(self.tier) + 1
            if next_rung == len(LADDER):
                self.state = DispatchState.UNASSIGNED
                reason = (
                    UnassignedReason.LADDER_EXHAUSTED
                    if self.offers
                    else UnassignedReason.NOBODY_ON_CALL
                )
                return [
                    *effects,
                    ReferralUnassigned(
                        referral_id=self.facts.referral_id, reason=reason, unassigned_at=now
                    ),
                ]
            effects.append(
                ReferralEscalated(
                    referral_id=self.facts.referral_id,
                    from_tier=self.tier,
                    to_tier=LADDER[next_rung],
                    escalated_at=now,
                )
            )
            self.tier = LADDER[next_rung]

    def _make_offer(self, coach_id: UUID, now: datetime, why: str) -> list[Effect]:
        offer = Offer(uuid4(), coach_id, self.tier, now, now + self.settings.ack_timeout, why=why)
        self.offers.append(offer)
        made = OfferMade(
            referral_id=self.facts.referral_id,
            offer_id=offer.offer_id,
            coach_id=coach_id,
            site_id=self.facts.site_id,
            site_short_name=self.facts.site_short_name,
            urgency=self.facts.urgency,
            tier=self.tier,
            expires_at=offer.expires_at,
            briefing=self.facts.briefing,
        )
        return [made, SetTimer(offer.offer_id, offer.expires_at)]

    def _withdraw(self, offers: list[Offer], reason: WithdrawReason, now: datetime) -> list[Effect]:
        effects: list[Effect] = []
        for offer in offers:
            offer.state = OfferState.WITHDRAWN
            effects += [CancelTimer(offer.offer_id), self._withdrawal(offer, reason, now)]
        return effects

    def _withdrawal(self, offer: Offer, reason: WithdrawReason, now: datetime) -> OfferWithdrawn:
        return OfferWithdrawn(
            referral_id=self.facts.referral_id,
            offer_id=offer.offer_id,
            coach_id=offer.coach_id,
            reason=reason,
            withdrawn_at=now,
        )
