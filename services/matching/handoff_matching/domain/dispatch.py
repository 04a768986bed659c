"""One referral's journey up the escalation ladder: the offer state machine.

Pure: every method takes `now` and the candidates the caller found, changes the
dispatch, and returns what must happen as a result — events to publish and
timers to set or cancel. The service layer loads a dispatch under a row lock,
calls one method, stores the dispatch, its events (outbox) and timers in one
transaction: so two acceptances at once are two calls in sequence, and exactly
one of them assigns.

The ladder: the site's on-call coaches, then the state pool (ReferralEscalated),
then the site's supervisors (ReferralEscalated). `sequential` offers one coach at
a time; `broadcast` offers the next `broadcast_size` at once, and the first
acceptance wins. Candidates come with room only (load below max_concurrent,
domain/load.py): a full rung is passed over, so a burst spreads over every coach
on call. When no rung has a coach with room but some coach on call is merely
full, the referral waits in line (ReferralWaiting) and is offered again the
moment one frees up; when nobody is left to ask at all, ReferralUnassigned.

Rounds: a referral's first pass up the ladder is round 0. Within a round nobody is
asked twice. An unassigned referral is offered again (a new round) when a coach
not yet asked in this round has room, at once if no coach of the round was ever
reached (every offer ended not_contacted: a paging outage, not an answer), and
otherwise every `reoffer_every`. A new round asks everyone on call again except
the coaches who declined this referral: a decline is an answer about this
patient; an expiry, an unreachable phone or a full caseload is not. Two offers never
count as asked at all: a yes refused at capacity (the coach wanted it; the referral
waits for her slot) and one not contacted (no page went out). Their coaches are asked
again after every coach not yet tried: at once if they have room, and for
not_contacted only once a page of the round reached someone (paging works); in a
total outage the round ends unassigned and restarts at once. An offer that bounced
unreachable does not count as asked once its coach is reachable again after it
(START, a coordinator's fix; decision 0019).

Unassigned spells: the supervisors are texted when a referral goes unassigned, and
not again until a page has reached a coach since (an outage cycling the ladder is one
spell, one notice). A new referral of a state where an older one, as urgent or more,
waits in line for capacity joins the line behind it (`join_line`).

The ack clock runs from the page: an offer first waits up to `page_deadline` for
notify to hand a page to a provider (`paged`), then `ack_timeout` for an answer.
An offer never paged in time ends not_contacted and the ladder moves on.
"""

from collections import Counter
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
    ReferralExpired,
    ReferralUnassigned,
    ReferralWaiting,
)
from handoff_schemas.vocabulary import (
    GenderPreference,
    Substance,
    Tier,
    UnassignedReason,
    Urgency,
    WaitingReason,
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
    page_deadline: timedelta = timedelta(seconds=60)  # for the first page to reach a provider
    reoffer_every: timedelta = timedelta(minutes=5)  # an unassigned referral is asked again
    give_up_after: timedelta = timedelta(hours=4)  # from arrival, then ReferralExpired
    # A coach at the bedside holds their slot until they report completed; one who never
    # does is released after this long, so a forgotten tap cannot shut them out for good.
    visit_limit: timedelta = timedelta(hours=4)


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
    NOT_CONTACTED = "not_contacted"  # no page reached a provider by the page deadline
    AT_CAPACITY = "at_capacity"  # accepted while holding max_concurrent assignments
    WITHDRAWN = "withdrawn"


@dataclass
class Offer:
    offer_id: UUID
    coach_id: UUID
    tier: Tier
    made_at: datetime
    expires_at: datetime  # page deadline + ack timeout; once paged, paged_at + ack timeout
    state: OfferState = OfferState.OPEN
    why: str = ""  # how the coach ranked when offered, for whoever reviews the referral
    page_deadline: datetime | None = None  # None: made before the ack clock ran from the page
    paged_at: datetime | None = None  # the first PageSent: the ack clock starts here
    round: int = 0


class DispatchState(StrEnum):
    OFFERING = "offering"
    WAITING = "waiting"  # in line: every coach on call is at capacity
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"  # nobody left to ask for now; offered again later
    CANCELLED = "cancelled"
    CLOSED = "closed"  # the coach completed, or the visit limit passed
    EXPIRED = "expired"  # the site's give-up time passed unassigned


GIVE_UP_RECHECK = timedelta(seconds=5)
"""How long after an open offer's expiry a deferred give-up looks again: time for the
offer's own expiry timer, due at the same moment, to close it first."""

BOUNCED = (OfferState.UNREACHABLE, OfferState.NOT_CONTACTED)
"""Offers that reached nobody: no answer about the referral."""

NOT_AN_ANSWER = (OfferState.AT_CAPACITY, OfferState.NOT_CONTACTED)
"""Offers that never make their coach count as asked: a yes refused for want of a slot,
and a page that never went out."""

IN_LINE = (DispatchState.WAITING, DispatchState.UNASSIGNED)
NOT_YET_ASSIGNED = (DispatchState.OFFERING, *IN_LINE)


class TimerKind(StrEnum):
    OFFER_EXPIRY = "offer_expiry"  # fires Dispatch.expire (page deadline, then ack timeout)
    ARRIVAL_DEADLINE = "arrival_deadline"  # fires Dispatch.arrival_overdue
    GIVE_UP = "give_up"  # fires Dispatch.give_up; keyed by the referral id
    VISIT_LIMIT = "visit_limit"  # fires Dispatch.close: a visit never reported completed


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


@dataclass(frozen=True)
class TellSupervisors:
    """Goes with a ReferralUnassigned that opens an unassigned spell: the site's supervisors
    are told (the service fills in their contacts). A ReferralUnassigned without it is the
    same spell again (nobody was reached since): the timeline hears it, nobody is texted."""


Effect = EventPayload | SetTimer | CancelTimer | TellSupervisors


class Ranking(list[UUID]):
    """Coach ids with room best first, with the explanation of each one's place; `full`:
    the rung's other eligible coaches on call, each at max_concurrent; `reachable_again`:
    for coaches of the rung, when (UTC) one of their contact methods last came back into
    good standing, so offers that bounced before it do not count as asked."""

    def __init__(
        self,
        ranked: Iterable[tuple[UUID, str]] = (),
        full: Iterable[UUID] = (),
        reachable_again: Mapping[UUID, datetime] | None = None,
    ) -> None:
        pairs = list(ranked)
        super().__init__(coach_id for coach_id, _ in pairs)
        self.why = dict(pairs)
        self.full = frozenset(full)
        self.reachable_again = dict(reachable_again or {})


Candidates = Mapping[Tier, Sequence[UUID]]
"""Eligible coaches with room per tier, best first, as ranked now (a Ranking carries why
and who is full); the dispatch skips any it may not ask in this round."""


def _reachable_again(candidates: Candidates) -> dict[UUID, datetime]:
    """When each coach of any rung was last reachable again (UTC), from the Rankings."""
    again: dict[UUID, datetime] = {}
    for tier in LADDER:
        again.update(getattr(candidates.get(tier, ()), "reachable_again", {}))
    return again


@dataclass
class Dispatch:
    facts: ReferralFacts
    settings: DispatchSettings
    tier: Tier = Tier.SITE
    state: DispatchState = DispatchState.OFFERING
    offers: list[Offer] = field(default_factory=list)
    assigned_coach: UUID | None = None
    started_at: datetime | None = None
    round: int = 0
    in_line_since: datetime | None = None  # entered the waiting line, or went unassigned
    arrived_at: datetime | None = None  # the assigned coach reported arriving
    # The supervisors were told of the current unassigned spell: not again until a page
    # reaches a coach (or the referral is assigned), so an outage that cycles the ladder
    # is one notice, not one per cycle.
    supervisors_told: bool = False

    def start(self, now: datetime, candidates: Candidates) -> list[Effect]:
        """Make the first offers (or wait, or go unassigned) and set the give-up timer."""
        self.started_at = now
        give_up = SetTimer(self.facts.referral_id, now + self.settings.give_up_after)
        return [
            SetTimer(give_up.offer_id, give_up.due, TimerKind.GIVE_UP),
            *self._offer_next(now, candidates),
        ]

    def join_line(self, now: datetime) -> list[Effect]:
        """Start in the waiting line instead of offering: an older referral, as urgent or
        more, already waits there for coaches this one would ask (the service finds it). The
        line offers them in order, so this one never takes a slot ahead of it."""
        self.started_at = now
        self.state = DispatchState.WAITING
        self.in_line_since = now
        return [
            SetTimer(self.facts.referral_id, now + self.settings.give_up_after, TimerKind.GIVE_UP),
            ReferralWaiting(
                referral_id=self.facts.referral_id,
                reason=WaitingReason.ALL_AT_CAPACITY,
                waiting_since=now,
            ),
        ]

    @property
    def holding(self) -> frozenset[UUID]:
        """The coaches whose capacity this referral holds: open offers and the assignment."""
        held = {o.coach_id for o in self.offers if o.state is OfferState.OPEN}
        if self.state is DispatchState.ASSIGNED and self.assigned_coach is not None:
            held.add(self.assigned_coach)
        return frozenset(held)

    def accepting_coach(self, offer_id: UUID) -> UUID | None:
        """The coach an acceptance of this offer would assign (so their capacity matters),
        or None if it would assign nobody (late, repeated, or filled)."""
        offer = self._offer(offer_id)
        if offer is None or offer.state is not OfferState.OPEN:
            return None
        return offer.coach_id if self.state is DispatchState.OFFERING else None

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
            CancelTimer(self.facts.referral_id, TimerKind.GIVE_UP),
            SetTimer(offer.offer_id, deadline, TimerKind.ARRIVAL_DEADLINE),
            assigned,
            *self._withdraw(others, WithdrawReason.FILLED, now),
        ]

    def refuse_at_capacity(
        self, offer_id: UUID, now: datetime, candidates: Candidates
    ) -> list[Effect]:
        """The coach accepted while holding max_concurrent assignments: the offer is
        withdrawn (at_capacity, so notify tells them it was passed on) and the referral
        moves on at once."""
        return self._end_open_offer(
            offer_id, OfferState.AT_CAPACITY, WithdrawReason.AT_CAPACITY, now, candidates
        )

    def decline(self, offer_id: UUID, now: datetime, candidates: Candidates) -> list[Effect]:
        return self._close(offer_id, OfferState.DECLINED, now, candidates, [CancelTimer(offer_id)])

    def paged(self, offer_id: UUID, sent_at: datetime) -> list[Effect]:
        """The offer's first page reached a provider: its ack clock starts at `sent_at`."""
        offer = self._offer(offer_id)
        if offer is None or offer.state is not OfferState.OPEN or offer.paged_at is not None:
            return []
        offer.paged_at = sent_at
        offer.expires_at = sent_at + self.settings.ack_timeout
        self.supervisors_told = False  # a coach was reached: a later unassigned is news
        return [SetTimer(offer.offer_id, offer.expires_at)]

    def expire(self, offer_id: UUID, now: datetime, candidates: Candidates) -> list[Effect]:
        """The offer's timer fired. Never paged by its page deadline: not_contacted (not an
        answer). Paged, and the ack timeout passed: expired; the coach is told, the next asked."""
        offer = self._offer(offer_id)
        if offer is None or offer.state is not OfferState.OPEN:
            return []
        if offer.page_deadline is not None and offer.paged_at is None:
            withdrawn = self._withdrawal(offer, WithdrawReason.NOT_CONTACTED, now)
            return self._close(offer_id, OfferState.NOT_CONTACTED, now, candidates, [withdrawn])
        if now < offer.expires_at:
            return [SetTimer(offer.offer_id, offer.expires_at)]  # paged after the timer was due
        withdrawn = self._withdrawal(offer, WithdrawReason.EXPIRED, now)
        return self._close(offer_id, OfferState.EXPIRED, now, candidates, [withdrawn])

    def unreachable(self, offer_id: UUID, now: datetime, candidates: Candidates) -> list[Effect]:
        """Notify could not reach the coach on any channel: say so, and move on without waiting."""
        return self._end_open_offer(
            offer_id, OfferState.UNREACHABLE, WithdrawReason.UNREACHABLE, now, candidates
        )

    def not_contacted(self, offer_id: UUID, now: datetime, candidates: Candidates) -> list[Effect]:
        """Notify could page the coach on none of their methods for a reason of its own (its
        flood ceiling): the coach was not contacted, which is no answer; move on without
        waiting for the page deadline (decision 0032)."""
        return self._end_open_offer(
            offer_id, OfferState.NOT_CONTACTED, WithdrawReason.NOT_CONTACTED, now, candidates
        )

    def _end_open_offer(
        self,
        offer_id: UUID,
        state: OfferState,
        reason: WithdrawReason,
        now: datetime,
        candidates: Candidates,
    ) -> list[Effect]:
        """End an open offer as `state` before its timer, the coach told `reason`, and move
        on; nothing if the offer is unknown or already ended."""
        offer = self._offer(offer_id)
        if offer is None or offer.state is not OfferState.OPEN:
            return []
        withdrawn = self._withdrawal(offer, reason, now)
        return self._close(offer_id, state, now, candidates, [CancelTimer(offer_id), withdrawn])

    def retry(self, now: datetime, candidates: Candidates) -> list[Effect]:
        """Offer a referral in line again if someone may now be asked (capacity freed, a shift
        started, an override added a coach), from the site's rung up. Unassigned: a new round
        once `reoffer_every` has passed, or at once if no coach of its round was ever reached
        by a page. Nobody to ask yet: nothing changes and nothing is said."""
        if self.state not in IN_LINE:
            return []
        before = (self.state, self.round, self.tier, self.in_line_since, self.supervisors_told)
        if self.state is DispatchState.UNASSIGNED and self._round_may_restart(now):
            self.round += 1
        self.state = DispatchState.OFFERING
        effects = self._offer_next(now, candidates, from_tier=Tier.SITE)
        if self.state is before[0]:
            (self.state, self.round, self.tier, self.in_line_since, self.supervisors_told) = before
            return []
        if self.state is DispatchState.OFFERING:
            self.in_line_since = None
        return effects

    def due_for_retry(self, now: datetime) -> datetime | None:
        """When an unassigned referral starts its next round on its own (None: not in line)."""
        if self.state is not DispatchState.UNASSIGNED or self.in_line_since is None:
            return None
        return self.in_line_since + self.settings.reoffer_every

    def _round_may_restart(self, now: datetime) -> bool:
        this_round = self._offers_this_round()
        outage = bool(this_round) and all(o.state is OfferState.NOT_CONTACTED for o in this_round)
        due = self.due_for_retry(now)
        return outage or (due is not None and now >= due)

    def give_up(self, now: datetime) -> list[Effect]:
        """The give-up time passed with nobody assigned: ReferralExpired. It ends only a
        referral in line (waiting, unassigned): an offer still open runs its course, since
        its coach may be on the way to say yes (issue #12 F4). Once the last open offer ends
        without an acceptance the referral expires then (`_close`); the give-up is also
        looked at again `GIVE_UP_RECHECK` after that offer's expiry."""
        if self.state not in NOT_YET_ASSIGNED:
            return []
        open_offers = [o for o in self.offers if o.state is OfferState.OPEN]
        if open_offers:
            latest = max(o.expires_at for o in open_offers)
            due = max(latest, now) + GIVE_UP_RECHECK
            return [SetTimer(self.facts.referral_id, due, TimerKind.GIVE_UP)]
        self.state = DispatchState.EXPIRED
        return [ReferralExpired(referral_id=self.facts.referral_id, expired_at=now)]

    def cancel(self, now: datetime) -> list[Effect]:
        """The hospital withdrew the referral: every open offer is withdrawn at once."""
        if self.state in (DispatchState.CANCELLED, DispatchState.CLOSED, DispatchState.EXPIRED):
            return []
        arrival = self._stop_arrival_clock()
        self.state = DispatchState.CANCELLED
        open_offers = [o for o in self.offers if o.state is OfferState.OPEN]
        return [
            *arrival,
            CancelTimer(self.facts.referral_id, TimerKind.GIVE_UP),
            *self._withdraw(open_offers, WithdrawReason.CANCELLED, now),
        ]

    def arrived(self, now: datetime) -> list[Effect]:
        """The coach reached the patient: the arrival clock stops, but the coach still holds
        the slot (they are with the patient) until completed, or `visit_limit` passes."""
        accepted = self._accepted_offer()
        if self.state is not DispatchState.ASSIGNED or accepted is None or self.arrived_at:
            return []
        self.arrived_at = now
        return [
            *self._stop_arrival_clock(),
            SetTimer(accepted.offer_id, now + self.settings.visit_limit, TimerKind.VISIT_LIMIT),
        ]

    def close(self) -> list[Effect]:
        """The coach completed (or the visit limit passed): the assignment no longer holds
        the coach's capacity."""
        accepted = self._accepted_offer()
        if self.state is not DispatchState.ASSIGNED or accepted is None:
            return []
        effects = [
            *self._stop_arrival_clock(),
            CancelTimer(accepted.offer_id, TimerKind.VISIT_LIMIT),
        ]
        self.state = DispatchState.CLOSED
        return effects

    def arrival_overdue(self, offer_id: UUID) -> bool:
        """True if the coach this offer assigned has still not arrived by the deadline."""
        accepted = self._accepted_offer()
        return (
            self.state is DispatchState.ASSIGNED
            and self.arrived_at is None
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

    def asked(self, candidates: Candidates) -> frozenset[UUID]:
        """Who may not be asked now: everyone asked in this round, and whoever declined.
        An offer that was no answer about the referral never counts: one refused at
        capacity (the coach said yes, and is offered the referral again when a slot of
        theirs frees; issue #12 F8), one not contacted (no page went out), and one that
        bounced unreachable before its coach became reachable again (a Ranking's
        `reachable_again`)."""
        again = _reachable_again(candidates)

        def counts(offer: Offer) -> bool:
            if offer.state in NOT_AN_ANSWER:
                return False
            at = again.get(offer.coach_id)
            if offer.state in BOUNCED and at is not None and at > offer.made_at:
                return False
            return offer.round == self.round or offer.state is OfferState.DECLINED

        return frozenset(offer.coach_id for offer in self.offers if counts(offer))

    def _no_answer_this_round(self, states: tuple[OfferState, ...]) -> frozenset[UUID]:
        """Coaches of this round whose offer ended in one of `states` (NOT_AN_ANSWER): asked
        again, but after every coach not yet tried (the ladder moves on first)."""
        return frozenset(o.coach_id for o in self._offers_this_round() if o.state in states)

    def _not_contacted_twice(self, candidates: Candidates) -> frozenset[UUID]:
        """Coaches of this round whose page failed to go out twice since they were last
        reachable again (a Ranking's `reachable_again`: a spent phone's slot freed, START):
        not asked again this round, nor waited for. Paging works for others, but not for
        them (their method's provider is down): asked again at every page deadline, they
        kept the referral `offered` to the give-up time with the supervisors never told
        (fresh32)."""
        again = _reachable_again(candidates)
        failed = Counter(
            o.coach_id
            for o in self._offers_this_round()
            if o.state is OfferState.NOT_CONTACTED
            and not (o.coach_id in again and again[o.coach_id] > o.made_at)
        )
        return frozenset(coach for coach, times in failed.items() if times >= 2)

    def _paging_works(self) -> bool:
        """True if a page of this round reached a provider: a coach whose offer ended
        not_contacted is then asked again at once (a mixed round) rather than the round
        ending unassigned and waiting `reoffer_every`."""
        return any(o.paged_at is not None for o in self._offers_this_round())

    def _offers_this_round(self) -> list[Offer]:
        return [o for o in self.offers if o.round == self.round]

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
        if self.started_at is not None and now >= self.started_at + self.settings.give_up_after:
            # The give-up time passed while the offer ran its course (give_up deferred).
            self.state = DispatchState.EXPIRED
            return [
                *effects,
                CancelTimer(self.facts.referral_id, TimerKind.GIVE_UP),
                ReferralExpired(referral_id=self.facts.referral_id, expired_at=now),
            ]
        return [*effects, *self._offer_next(now, candidates)]

    def _offer_next(
        self, now: datetime, candidates: Candidates, from_tier: Tier | None = None
    ) -> list[Effect]:
        """Offer the first rung from `from_tier` (default: the current one) that has coaches
        with room; else wait in line if a coach on any rung not yet asked is merely full;
        else unassigned.
        Climbing above the current rung is a ReferralEscalated."""
        used = self.asked(candidates)
        capped = self._not_contacted_twice(candidates)
        # Any rung counts, the ones below the current one too: a referral that climbed to the
        # supervisors past full site coaches has not been seen by them yet, so when the
        # supervisors are done it waits for those coaches rather than going unassigned.
        full = any(
            getattr(candidates.get(t, ()), "full", frozenset()) - used - capped for t in LADDER
        )
        # First everyone not yet tried; then, from the site's rung, coaches who said yes at
        # capacity (they have room again) and, if paging works, those whose page never went
        # out this round: asked again at once, not after reoffer_every.
        later = self._no_answer_this_round(NOT_AN_ANSWER)
        not_yet = frozenset() if self._paging_works() else self._no_answer_this_round(BOUNCED)
        passes = [
            (used | later, from_tier or self.tier),
            (used | not_yet | capped, Tier.SITE),
        ]
        for excluded, first_tier in passes:
            if offers := self._offer_rung(now, candidates, excluded, first_tier):
                return offers
        if full:
            self.state = DispatchState.WAITING
            self.in_line_since = now
            return [
                ReferralWaiting(
                    referral_id=self.facts.referral_id,
                    reason=WaitingReason.ALL_AT_CAPACITY,
                    waiting_since=now,
                )
            ]
        self.state = DispatchState.UNASSIGNED
        self.in_line_since = now
        reason = (
            UnassignedReason.LADDER_EXHAUSTED if self.offers else UnassignedReason.NOBODY_ON_CALL
        )
        this_round = self._offers_this_round()
        unassigned: list[Effect] = [
            ReferralUnassigned(
                referral_id=self.facts.referral_id,
                reason=reason,
                unassigned_at=now,
                site_id=self.facts.site_id,
                site_short_name=self.facts.site_short_name,
                site_time_zone=self.facts.site_time_zone,
                urgency=self.facts.urgency,
                nobody_reached=bool(this_round) and all(o.state in BOUNCED for o in this_round),
            )
        ]
        if not self.supervisors_told:
            self.supervisors_told = True
            unassigned.append(TellSupervisors())
        return unassigned

    def _offer_rung(
        self, now: datetime, candidates: Candidates, excluded: frozenset[UUID], first_tier: Tier
    ) -> list[Effect]:
        """Offer the first rung from `first_tier` with coaches with room not in `excluded`
        (one, or a broadcast's batch); [] if there is none. Climbing above the current
        rung is a ReferralEscalated."""
        for tier in LADDER[LADDER.index(first_tier) :]:
            ranked = candidates.get(tier, ())
            fresh = [c for c in ranked if c not in excluded]
            if not fresh:
                continue
            effects: list[Effect] = []
            if LADDER.index(tier) > LADDER.index(self.tier):
                effects.append(
                    ReferralEscalated(
                        referral_id=self.facts.referral_id,
                        from_tier=self.tier,
                        to_tier=tier,
                        escalated_at=now,
                    )
                )
            self.tier = tier
            sequential = self.settings.mode is DispatchMode.SEQUENTIAL
            why = getattr(ranked, "why", {})
            batch = fresh[: 1 if sequential else self.settings.broadcast_size]
            batch_id = uuid4()  # the referral's timeline shows the batch as one step
            for coach in batch:
                effects += self._make_offer(coach, now, why.get(coach, ""), batch_id, len(batch))
            return effects
        return []

    def _make_offer(
        self, coach_id: UUID, now: datetime, why: str, batch_id: UUID, batch_size: int
    ) -> list[Effect]:
        page_deadline = now + self.settings.page_deadline
        offer = Offer(
            uuid4(),
            coach_id,
            self.tier,
            now,
            page_deadline + self.settings.ack_timeout,
            why=why,
            page_deadline=page_deadline,
            round=self.round,
        )
        self.offers.append(offer)
        made = OfferMade(
            referral_id=self.facts.referral_id,
            offer_id=offer.offer_id,
            coach_id=coach_id,
            site_id=self.facts.site_id,
            site_short_name=self.facts.site_short_name,
            urgency=self.facts.urgency,
            tier=self.tier,
            site_time_zone=self.facts.site_time_zone,
            expires_at=offer.expires_at,
            page_deadline=page_deadline,
            briefing=self.facts.briefing,
            batch_id=batch_id,
            batch_size=batch_size,
        )
        return [made, SetTimer(offer.offer_id, page_deadline)]

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
