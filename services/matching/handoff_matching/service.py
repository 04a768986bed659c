"""The matching service's use cases: each one transaction, with its outbox events and timers.

A dispatch is loaded under its row lock, the coaches it may ask are locked (advisory
locks, one global order: loads are exact however many consumers and replicas run),
one domain method decides, and the dispatch, the events it produced and its timer
changes are stored together. A transaction that freed a coach's capacity wakes the
waiting line once it commits; the line also sweeps every few seconds, which is how
shift starts and roster imports from other processes are found.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

import asyncpg

from handoff_matching import SOURCE, metrics
from handoff_matching.adapters import (
    dispatch_store,
    follow_up_store,
    reachability_store,
    roster_store,
    schedule_store,
)
from handoff_matching.domain.briefing import apply_update
from handoff_matching.domain.coverage import NotCover, coverage_gaps
from handoff_matching.domain.dispatch import (
    CancelTimer,
    Candidates,
    Dispatch,
    Effect,
    Ranking,
    ReferralFacts,
    SetTimer,
    TellSupervisors,
    TimerKind,
)
from handoff_matching.domain.eligibility import (
    Coach,
    Ineligible,
    SiteProfile,
    may_supervise,
    supervisors_told,
    why_ineligible,
)
from handoff_matching.domain.follow_ups import (
    FOLLOW_UP_RETRY,
    FollowUpFacts,
    choose,
    retry_at,
)
from handoff_matching.domain.load import PRIORITY, has_room, may_take_assignment
from handoff_matching.domain.ranking import Candidate, Need, rank
from handoff_matching.domain.schedules import Interval, Pool
from handoff_matching.on_call import OnCall
from handoff_platform.database import Connection, connect
from handoff_platform.outbox import Outbox
from handoff_platform.supervision import beat, wait_until_set
from handoff_platform.timers import Timer, Timers
from handoff_schemas import Envelope, EventPayload
from handoff_schemas.events import (
    CoachAssigned,
    CoachAvailabilityChanged,
    CoachResponded,
    ContactMethodReachabilityChanged,
    ContactPoint,
    FollowUpAssigned,
    FollowUpAttempted,
    FollowUpConsentRevoked,
    FollowUpDue,
    OfferBriefing,
    OfferMade,
    OfferWithdrawn,
    PageFailed,
    PageSent,
    ReferralCancelled,
    ReferralCreated,
    ReferralEscalated,
    ReferralExpired,
    ReferralUnassigned,
    ReferralUpdated,
    ReferralWaiting,
)
from handoff_schemas.vocabulary import CoachResponse, PageFailure, Tier, WithdrawReason

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


HELD_BACK_FAILURES = (
    PageFailure.UNSUBSCRIBED,
    PageFailure.INVALID_DESTINATION,
    PageFailure.THROTTLED,
)
"""Page failures that mean the coach's method is blocked or at notify's offer ceiling,
not that paging is down."""

MAX_SUPERVISOR_CONTACTS = 16  # ReferralUnassigned.supervisor_contacts' limit
MAX_CONTACTS = 16  # FollowUpAssigned.contacts' limit

# Set in the handler's task when its transaction freed a coach's capacity, read by the
# after-commit hook in the same task: the line is woken only once the change is visible.
_FREED: ContextVar[bool] = ContextVar("capacity_freed", default=False)


def utc_now() -> datetime:
    return datetime.now(UTC)


class MatchingService:
    def __init__(self, outbox: Outbox, timers: Timers, clock: Clock = utc_now) -> None:
        self.outbox = outbox
        self.timers = timers
        self.clock = clock
        self.on_call = OnCall()

    async def referral_created(self, connection: Connection, event: Envelope[Any]) -> None:
        data: ReferralCreated = event.data
        settings, _, _ = await dispatch_store.site_settings(connection, data.site.site_id)
        facts = ReferralFacts(
            referral_id=data.referral_id,
            correlation_id=event.correlationid,
            site_id=data.site.site_id,
            site_short_name=data.site.short_name,
            site_state=data.site.state,
            site_time_zone=data.site.time_zone,
            urgency=data.urgency,
            briefing=OfferBriefing(
                location=data.location,
                callback_phone=data.callback_phone,
                preferred_language=data.preferred_language,
                interpreter_needed=data.interpreter_needed,
                consent=data.consent,
            ),
            gender_preference=data.coach_gender_preference,
            substances=data.substances,
        )
        dispatch = Dispatch(facts, settings)
        await roster_store.remember_site(
            connection,
            data.site.site_id,
            data.site.short_name,
            data.site.state,
            data.site.time_zone,
            data.received_at,
        )
        if not await dispatch_store.insert(connection, dispatch):
            return  # already dispatching this referral
        now = self.clock()
        if await dispatch_store.waiting_ahead(
            connection, facts.site_state, PRIORITY[facts.urgency], facts.referral_id
        ):
            # An older referral, as urgent or more, waits for the coaches of this state: this
            # one queues behind it and the line, woken after the commit, offers them in order.
            await self._apply(connection, dispatch, dispatch.join_line(now), event.id)
            _FREED.set(True)
            return
        candidates = await self._candidates(connection, dispatch, now)
        await self._apply(connection, dispatch, dispatch.start(now, candidates), event.id)

    async def coach_responded(self, connection: Connection, event: Envelope[Any]) -> None:
        data: CoachResponded = event.data
        dispatch = await dispatch_store.lock(connection, data.referral_id)
        if dispatch is None:
            return
        now = self.clock()
        coach_id = dispatch.accepting_coach(data.offer_id)
        if data.response is CoachResponse.ACCEPTED and coach_id is not None:
            candidates = await self._candidates(connection, dispatch, now, also_lock=[coach_id])
            held = await dispatch_store.assignments(connection, coach_id)
            coach = (await roster_store.coaches_by_id(connection, [coach_id])).get(coach_id)
            if may_take_assignment(held, coach.max_concurrent if coach else None):
                effects = dispatch.accept(data.offer_id, now)
            else:
                log.info(
                    "acceptance refused: coach at capacity",
                    extra={"referral_id": str(data.referral_id), "coach_id": str(coach_id)},
                )
                effects = dispatch.refuse_at_capacity(data.offer_id, now, candidates)
        elif data.response is CoachResponse.ACCEPTED:
            effects = dispatch.accept(data.offer_id, now)  # late, repeated, or already filled
        elif data.response is CoachResponse.DECLINED:
            metrics.OFFERS.labels(dispatch.facts.site_id, "declined").inc()
            effects = dispatch.decline(
                data.offer_id, now, await self._candidates(connection, dispatch, now)
            )
        elif data.response is CoachResponse.ARRIVED:
            effects = dispatch.arrived(now)
        else:
            effects = dispatch.close()
        await self._apply(connection, dispatch, effects, event.id)

    async def page_failed(self, connection: Connection, event: Envelope[Any]) -> None:
        data: PageFailed = event.data
        if not data.all_channels_failed:
            return
        dispatch = await dispatch_store.lock(connection, data.referral_id)
        if dispatch is None:
            return
        now = self.clock()
        candidates = await self._candidates(connection, dispatch, now)
        if data.failure is PageFailure.THROTTLED:
            # Notify's own flood ceiling: not the coach's doing (decision 0032).
            effects = dispatch.not_contacted(data.offer_id, now, candidates)
        else:
            effects = dispatch.unreachable(data.offer_id, now, candidates)
        await self._apply(connection, dispatch, effects, event.id)
        if data.failure in HELD_BACK_FAILURES:
            # The slot freed is a blocked or throttled coach's: waking the line for it would
            # offer the next referral to the same coach if notify's
            # ContactMethodReachabilityChanged (another partition) is not in yet; that was
            # the storm (decision 0019).
            _FREED.set(False)

    async def page_sent(self, connection: Connection, event: Envelope[Any]) -> None:
        """A page reached a provider: the offer's ack clock starts; paging works again, so
        the line looks at referrals left unassigned by an outage."""
        data: PageSent = event.data
        _FREED.set(True)
        dispatch = await dispatch_store.lock(connection, data.referral_id)
        if dispatch is None:
            return
        effects = dispatch.paged(data.offer_id, min(data.sent_at, self.clock()))
        if effects:
            await self._apply(connection, dispatch, effects, event.id)

    async def site_registered(self, connection: Connection, event: Envelope[Any]) -> None:
        """Keep the site's facts, so its shifts resolve and its coverage is reported from now."""
        site = event.data.site
        await roster_store.remember_site(
            connection,
            site.site_id,
            site.short_name,
            site.state,
            site.time_zone,
            event.data.registered_at,
        )

    async def coach_availability_changed(
        self, connection: Connection, event: Envelope[Any]
    ) -> None:
        """A coach texted OFF or ON: an override removing them from every pool until ON (or
        its end), or the end of that override. A number on no coach's roster entry changes
        nothing."""
        data: CoachAvailabilityChanged = event.data
        for coach_id in await schedule_store.coaches_with_phone(connection, data.phone):
            if data.available:
                await schedule_store.mark_available(connection, coach_id, data.changed_at)
            else:
                until = data.until or data.changed_at + timedelta(hours=24)
                await schedule_store.mark_unavailable(connection, coach_id, data.changed_at, until)
            metrics.SCHEDULE_CHANGES.labels("coach_on" if data.available else "coach_off").inc()
            log.info(
                "coach availability changed",
                extra={"coach_id": str(coach_id), "available": data.available},
            )
        await roster_changed(connection)  # heard after the commit: an ON may take a waiting one

    async def contact_method_reachability_changed(
        self, connection: Connection, event: Envelope[Any]
    ) -> None:
        """A contact method went out of good standing (STOP, never deliverable) or back into
        it (START, a coordinator cleared it). A coach none of whose methods is reachable is
        asked nothing; one reachable again frees a slot: the line is served at once
        (decision 0019). A method on no coach's roster entry is kept all the same, for a
        roster that adds it later."""
        data: ContactMethodReachabilityChanged = event.data
        kept = await reachability_store.record(
            connection, data.channel, data.destination, data.reachable, data.reason, data.changed_at
        )
        if not kept:
            return  # an older change, heard after a newer one
        coaches = await reachability_store.coaches_with_method(
            connection, data.channel, data.destination
        )
        metrics.REACHABILITY_CHANGES.labels("reachable" if data.reachable else "blocked").inc()
        log.info(
            "contact method reachability changed",
            extra={
                "coach_ids": [str(c) for c in coaches],
                "reachable": data.reachable,
                "reason": data.reason,
            },
        )
        if data.reachable and coaches:
            await roster_changed(connection)  # heard after the commit: serve the line

    async def referral_cancelled(self, connection: Connection, event: Envelope[Any]) -> None:
        data: ReferralCancelled = event.data
        dispatch = await dispatch_store.lock(connection, data.referral_id)
        if dispatch is None:
            return
        await self._apply(connection, dispatch, dispatch.cancel(self.clock()), event.id)

    async def referral_updated(self, connection: Connection, event: Envelope[Any]) -> None:
        """The ED changed the referral (a bed move from HL7 ADT^A08/A02): offers made from
        now on carry the new location, call-back number or consent (domain/briefing.py)."""
        data: ReferralUpdated = event.data
        dispatch = await dispatch_store.lock(connection, data.referral_id)
        if dispatch is None:
            return
        if changed := apply_update(dispatch, data):
            await dispatch_store.save(connection, dispatch)
            log.info(
                "referral briefing updated",
                extra={"referral_id": str(data.referral_id), "fields": changed},
            )

    async def offer_expired(self, connection: Connection, timer: Timer) -> None:
        dispatch = await dispatch_store.lock(
            connection, UUID(timer.payload["referral_id"]), wait=False
        )
        if dispatch is None:
            return
        now = self.clock()
        effects = dispatch.expire(
            UUID(timer.payload["offer_id"]),
            now,
            await self._candidates(connection, dispatch, now),
        )
        await self._apply(connection, dispatch, effects, cause=None)

    async def give_up(self, connection: Connection, timer: Timer) -> None:
        """The site's give-up time passed: a referral still without a coach expires."""
        dispatch = await dispatch_store.lock(
            connection, UUID(timer.payload["referral_id"]), wait=False
        )
        if dispatch is None:
            return
        await self._apply(connection, dispatch, dispatch.give_up(self.clock()), cause=None)

    async def serve_line(self, pool: asyncpg.Pool) -> int:
        """Offer every referral in line that someone may now be asked, most urgent and
        longest first, one transaction each; returns how many moved. A site none of whose
        coaches on call has room is passed over for the rest of the pass (nobody there can
        be offered anything until a slot frees, which wakes the line again). Replicas may
        serve the line at once: each skips the referrals another has locked."""
        async with pool.acquire() as connection:
            # Nearly every pass finds the line empty: one query instead of a transaction.
            if not await dispatch_store.anyone_in_line(connection):
                return 0
        after: dispatch_store.LinePlace | None = None
        full_sites: set[str] = set()
        moved = 0
        while True:
            async with pool.acquire() as connection, connection.transaction():
                claimed = await dispatch_store.claim_next_in_line(connection, after, full_sites)
                if claimed is None:
                    return moved
                after, dispatch = claimed
                now = self.clock()
                candidates, room = await self._candidates_and_room(connection, dispatch, now)
                effects = dispatch.retry(now, candidates)
                if effects:
                    await self._apply(connection, dispatch, effects, cause=None)
            if effects:
                moved += 1
                self.outbox.committed()
            if not room:
                full_sites.add(dispatch.facts.site_id)
            beat()  # a pass over hundreds waiting is long: it heartbeats, it is not stale

    async def visit_limit_passed(self, connection: Connection, timer: Timer) -> None:
        """A coach at the bedside never reported completed: release their slot."""
        dispatch = await dispatch_store.lock(
            connection, UUID(timer.payload["referral_id"]), wait=False
        )
        if dispatch is None:
            return
        effects = dispatch.close()
        if effects:
            log.warning(
                "visit never reported completed; the coach's slot is released",
                extra={"referral_id": str(dispatch.facts.referral_id)},
            )
        await self._apply(connection, dispatch, effects, cause=None)

    async def arrival_deadline_passed(self, connection: Connection, timer: Timer) -> None:
        """The assigned coach has not reported arriving in time: count it, for the program."""
        dispatch = await dispatch_store.lock(
            connection, UUID(timer.payload["referral_id"]), wait=False
        )
        if dispatch is None or not dispatch.arrival_overdue(UUID(timer.payload["offer_id"])):
            return
        metrics.ARRIVALS_OVERDUE.labels(dispatch.facts.site_id).inc()
        log.warning(
            "assigned coach past the arrival deadline",
            extra={
                "referral_id": str(dispatch.facts.referral_id),
                "coach_id": str(dispatch.assigned_coach),
            },
        )

    # Follow-ups (issue #16): who makes each attempt

    async def follow_up_due(self, connection: Connection, event: Envelope[Any]) -> None:
        """A follow-up attempt is due: give it to someone now (FollowUpAssigned), or keep
        it waiting on a timer. A (task, attempt) heard before is given nothing more."""
        data: FollowUpDue = event.data
        if not await follow_up_store.insert(connection, data, event.correlationid):
            return
        await self._give_follow_up(connection, data.task_id, data.attempt, event.id)

    async def follow_up_retry(self, connection: Connection, timer: Timer) -> None:
        """A waiting attempt's timer: try again to give it to someone."""
        task_id, attempt = UUID(timer.payload["task_id"]), int(timer.payload["attempt"])
        await self._give_follow_up(connection, task_id, attempt, None, wait=False)

    async def follow_up_attempted(self, connection: Connection, event: Envelope[Any]) -> None:
        """The attempt was recorded: it is no longer anyone's to make, nor waiting."""
        data: FollowUpAttempted = event.data
        follow_up = await follow_up_store.lock(connection, data.task_id, data.attempt)
        if follow_up is None or follow_up.state not in ("waiting", "assigned"):
            return
        await follow_up_store.finish(connection, data.task_id, data.attempt, "attempted")
        await self.timers.cancel(connection, follow_up_timer(data.task_id, data.attempt))

    async def follow_up_consent_revoked(self, connection: Connection, event: Envelope[Any]) -> None:
        """The patient withdrew their consent: no attempt of the referral waits any more."""
        data: FollowUpConsentRevoked = event.data
        for task_id, attempt in await follow_up_store.open_of_referral(
            connection, data.referral_id
        ):
            await follow_up_store.finish(connection, task_id, attempt, "cancelled")
            await self.timers.cancel(connection, follow_up_timer(task_id, attempt))

    async def _give_follow_up(
        self,
        connection: Connection,
        task_id: UUID,
        attempt: int,
        cause: UUID | None,
        excluding: Sequence[UUID] = (),
        wait: bool = True,
    ) -> bool:
        """Give a waiting (or, with `excluding`, an assigned) attempt to whoever the rule
        picks now, publishing FollowUpAssigned; nobody: wait for the retry timer, or lapse
        once the window ends. True if it was given to someone. `wait` False for the retry
        timer's handler: see `follow_up_store.lock`."""
        follow_up = await follow_up_store.lock(connection, task_id, attempt, wait)
        wanted = ("waiting", "assigned") if excluding else ("waiting",)
        if follow_up is None or follow_up.state not in wanted:
            return False
        now = self.clock()
        site_id = follow_up.site_id
        timer_id = follow_up_timer(task_id, attempt)
        if now >= follow_up.window_ends_at:
            await self._lapse(connection, follow_up)
            return False
        site = await follow_up_store.site(connection, site_id)
        choice = None
        if site is not None:
            short_name, state, time_zone = site
            facts = await self._follow_up_facts(
                connection, site_id, state, time_zone, follow_up.visiting_coach, now
            )
            choice = choose(follow_up.visiting_coach, facts, excluding)
        if choice is None or site is None:
            metrics.FOLLOW_UPS.labels(site_id, "nobody").inc()
            due = retry_at(now, follow_up.window_ends_at)
            if due is None:
                await self._lapse(connection, follow_up)
                return False
            if follow_up.state != "waiting":
                await follow_up_store.finish(connection, task_id, attempt, "waiting")
            await self.timers.set(
                connection,
                timer_id,
                FOLLOW_UP_RETRY,
                due,
                {"task_id": str(task_id), "attempt": attempt},
            )
            log.warning(
                "nobody may make a follow-up attempt now; trying again",
                extra={"task_id": str(task_id), "attempt": attempt, "site_id": site_id},
            )
            return False
        assignment_id = uuid4()
        await follow_up_store.assign(
            connection, task_id, attempt, assignment_id, choice.coach_id, choice.assignee, now
        )
        await self.timers.cancel(connection, timer_id)
        contacts = await roster_store.contact_points(connection, choice.coach_id)
        assigned = FollowUpAssigned(
            referral_id=follow_up.referral_id,
            assignment_id=assignment_id,
            task_id=task_id,
            attempt=attempt,
            coach_id=choice.coach_id,
            assignee=choice.assignee,
            site_id=site_id,
            site_short_name=short_name,
            site_time_zone=time_zone,
            window_days=follow_up.window_days,
            due_at=follow_up.due_at,
            window_ends_at=follow_up.window_ends_at,
            contacts=contacts[:MAX_CONTACTS],
            assigned_at=now,
        )
        await self.outbox.put(
            connection,
            Envelope.wrap(
                assigned,
                source=SOURCE,
                correlation_id=follow_up.correlation_id,
                causation_id=cause,
            ),
        )
        metrics.FOLLOW_UPS.labels(site_id, choice.assignee.value).inc()
        log.info(
            "follow-up attempt assigned",
            extra={
                "task_id": str(task_id),
                "attempt": attempt,
                "coach_id": str(choice.coach_id),
                "assignee": choice.assignee.value,
            },
        )
        return True

    async def reassign_orphaned_follow_ups(self, pool: asyncpg.Pool) -> int:
        """Give again, with a new assignment id, every attempt whose coach left the roster
        (deleted or made inactive) before it was recorded; one transaction each. Returns
        how many were looked at. Replicas may run it at once: each skips the others'."""
        moved = 0
        while True:
            async with pool.acquire() as connection, connection.transaction():
                orphaned = await follow_up_store.claim_orphaned(connection)
                if orphaned is None:
                    return moved
                task_id, attempt, gone, site_id = orphaned
                log.info(
                    "a follow-up's coach left the roster; giving it again",
                    extra={"task_id": str(task_id), "attempt": attempt, "coach_id": str(gone)},
                )
                if await self._give_follow_up(connection, task_id, attempt, None, [gone]):
                    metrics.FOLLOW_UPS.labels(site_id, "reassigned").inc()
            self.outbox.committed()
            moved += 1
            beat()

    async def retry_waiting_follow_ups(self, pool: asyncpg.Pool) -> int:
        """Try every attempt that nobody could take again now, not at its next retry (up to
        15 minutes away): call when the roster or the on-call changed, which may have
        brought someone. Returns how many retries were brought forward; the timer loop
        gives each attempt, or sets its next retry."""
        async with pool.acquire() as connection:
            async with connection.transaction():
                moved = await self.timers.bring_forward(connection, FOLLOW_UP_RETRY)
            if moved:
                await self.timers.changed(connection)
        return moved

    async def _lapse(self, connection: Connection, follow_up: follow_up_store.FollowUp) -> None:
        """The attempt's window ended before anyone could be given it."""
        await follow_up_store.finish(connection, follow_up.task_id, follow_up.attempt, "lapsed")
        await self.timers.cancel(connection, follow_up_timer(follow_up.task_id, follow_up.attempt))
        metrics.FOLLOW_UPS.labels(follow_up.site_id, "lapsed").inc()
        log.warning(
            "a follow-up attempt's window ended with nobody to make it",
            extra={"task_id": str(follow_up.task_id), "attempt": follow_up.attempt},
        )

    async def _follow_up_facts(
        self,
        connection: Connection,
        site_id: str,
        state: str,
        time_zone: str,
        visiting_coach: UUID,
        now: datetime,
    ) -> FollowUpFacts:
        """What `domain.follow_ups.choose` reads, as the roster stands at `now`."""
        _, interpreter_available, _ = await dispatch_store.site_settings(connection, site_id)
        site = SiteProfile(site_id, state, ZoneInfo(time_zone), interpreter_available)
        site_pool, state_pool = Pool.site(site_id), Pool.state(state)
        on_call = await self.on_call(connection, [site_pool, state_pool], now)
        at_site = on_call[site_pool]
        in_state = on_call[state_pool] - at_site
        supervisors = await follow_up_store.state_supervisors(connection, site_id, state)
        everyone = list(dict.fromkeys([visiting_coach, *at_site, *in_state, *supervisors]))
        reach = await reachability_store.of_coaches(connection, everyone)
        loads = await dispatch_store.loads(connection, everyone)
        follow_ups = await follow_up_store.open_counts(connection, everyone)
        return FollowUpFacts(
            site=site,
            now=now,
            coaches=await roster_store.coaches_by_id(connection, everyone),
            off=await schedule_store.off_now(connection, everyone, now),
            # A phone at its offer ceiling still takes a reminder (decision 0032).
            unreachable=frozenset(c for c, r in reach.items() if not r.reachable and not r.spent),
            on_call_site=at_site,
            on_call_state=in_state,
            loads={c: loads.get(c, 0) + follow_ups.get(c, 0) for c in everyone},
            supervisors=supervisors,
            has_contacts=await follow_up_store.with_contacts(connection, everyone),
        )

    async def _candidates(
        self,
        connection: Connection,
        dispatch: Dispatch,
        now: datetime,
        also_lock: Iterable[UUID] = (),
    ) -> Candidates:
        """Every rung's eligible coaches with room, best first, and those merely full, as the
        roster and loads stand at `now`. Locks every coach it considers (and `also_lock`)
        until the transaction ends: call it once per transaction."""
        candidates, _ = await self._candidates_and_room(connection, dispatch, now, also_lock)
        return candidates

    async def _candidates_and_room(
        self,
        connection: Connection,
        dispatch: Dispatch,
        now: datetime,
        also_lock: Iterable[UUID] = (),
    ) -> tuple[Candidates, bool]:
        """`_candidates`, and whether any coach it considered (eligible for this referral
        or not, reachable or not) has a free slot at all."""
        facts = dispatch.facts
        _, interpreter_available, supervisors = await dispatch_store.site_settings(
            connection, facts.site_id
        )
        site = SiteProfile(
            facts.site_id, facts.site_state, ZoneInfo(facts.site_time_zone), interpreter_available
        )
        need = Need(
            facts.site_id,
            facts.briefing.preferred_language,
            facts.gender_preference,
            facts.substances,
        )
        site_pool, state_pool = Pool.site(site.site_id), Pool.state(site.state)
        on_call = await self.on_call(connection, [site_pool, state_pool], now)
        at_site = on_call[site_pool]
        in_state = on_call[state_pool] - at_site
        considered = [*at_site, *in_state, *supervisors]
        # The roster and reachability are read before the coaches are locked: the locks
        # guard loads, and every round trip made under them is one that every other
        # referral of the site waits for (issue 17).
        coaches = await roster_store.coaches_by_id(connection, considered)
        reach = await reachability_store.of_coaches(connection, considered)
        # A supervisor's own OFF takes them off the site's escalation list too (fresh33: one
        # kept being paged, and a referral waited for her slots, after "no requests meanwhile").
        off = await schedule_store.off_now(connection, supervisors, now) if supervisors else set()
        await dispatch_store.lock_coaches(connection, [*considered, *also_lock])
        load = await dispatch_store.loads(connection, considered)
        unreachable = {c for c, r in reach.items() if not r.reachable}
        again = {c: r.again_at for c, r in reach.items() if r.again_at is not None}

        def eligible(ids: frozenset[UUID], on_call_for_site: bool) -> Ranking:
            fit, full = [], []
            for coach_id in ids:
                if coach_id not in coaches:
                    continue
                why = why_ineligible(
                    coaches[coach_id],
                    site,
                    now,
                    load.get(coach_id, 0),
                    False,  # who was asked already is the dispatch's to judge: it may start a round
                    need.language,
                    facts.briefing.interpreter_needed,
                    coach_id not in unreachable,
                )
                if why is None:
                    fit.append(Candidate(coaches[coach_id], on_call_for_site))
                elif why is Ineligible.AT_CAPACITY:
                    full.append(coach_id)
            ranked = ((r.coach_id, r.explanation()) for r in rank(fit, need, now))
            return Ranking(ranked, full, {c: again[c] for c in ids if c in again})

        def free_slot(coach_id: UUID) -> bool:
            coach = coaches.get(coach_id)
            limit = coach.max_concurrent if coach is not None else None
            return has_room(load.get(coach_id, 0), limit)

        def room(coach_id: UUID) -> bool:
            return coach_id not in unreachable and free_slot(coach_id)

        def supervising() -> Ranking:
            reachable = [
                s
                for s in supervisors
                if s not in unreachable
                and s not in off
                and s in coaches
                and may_supervise(coaches[s], site, now)
            ]
            return Ranking(
                ((s, "on the site's escalation list") for s in reachable if room(s)),
                (s for s in reachable if not room(s)),
                {s: again[s] for s in supervisors if s in again},
            )

        # A free slot whose coach cannot be paged counts: the referrals waiting at that site
        # are to go unassigned (supervisors told), not be passed over (fresh29b).
        any_room = any(free_slot(c) for c in considered)
        candidates = {
            Tier.SITE: eligible(at_site, True),
            Tier.STATE_POOL: eligible(in_state, False),
            Tier.SUPERVISOR: supervising(),
        }
        return candidates, any_room

    async def _apply(
        self, connection: Connection, dispatch: Dispatch, effects: list[Effect], cause: UUID | None
    ) -> None:
        events: list[Envelope[Any]] = []
        tell_supervisors = any(isinstance(effect, TellSupervisors) for effect in effects)
        for effect in effects:
            if isinstance(effect, SetTimer):
                await self.timers.set(
                    connection,
                    _timer_id(effect.offer_id, effect.kind),
                    effect.kind.value,
                    effect.due,
                    {
                        "referral_id": str(dispatch.facts.referral_id),
                        "offer_id": str(effect.offer_id),
                    },
                )
            elif isinstance(effect, CancelTimer):
                await self.timers.cancel(connection, _timer_id(effect.offer_id, effect.kind))
            elif isinstance(effect, EventPayload):
                if isinstance(effect, OfferMade):
                    contacts = await roster_store.contact_points(connection, effect.coach_id)
                    effect = effect.model_copy(update={"contacts": contacts})
                elif isinstance(effect, ReferralUnassigned) and tell_supervisors:
                    # Only a new unassigned spell is texted; the same one again (nobody
                    # reached since) goes out with no contacts, so notify tells nobody.
                    effect = effect.model_copy(
                        update={
                            "supervisor_contacts": await _supervisor_contacts(
                                connection, dispatch, self.clock()
                            )
                        }
                    )
                events.append(
                    Envelope.wrap(
                        effect,
                        source=SOURCE,
                        correlation_id=dispatch.facts.correlation_id,
                        causation_id=cause,
                    )
                )
        if events:
            await self.outbox.put(connection, *events)
        held_before = await dispatch_store.save(connection, dispatch)
        if held_before - dispatch.holding:
            _FREED.set(True)
        for envelope in events:
            _count(dispatch, envelope.data)
            log.info(
                "dispatch event",
                extra={"referral_id": str(dispatch.facts.referral_id), "event_type": envelope.type},
            )


async def _supervisor_contacts(
    connection: Connection, dispatch: Dispatch, now: datetime
) -> tuple[ContactPoint, ...]:
    """Where the site's supervisors are told a referral is unassigned: each one's first
    contact method (staff data from the roster), as many as the event carries; inactive
    ones are left out, and those with an OFF in force at `now` (UTC) unless all are
    (`supervisors_told`)."""
    _, _, supervisors = await dispatch_store.site_settings(connection, dispatch.facts.site_id)
    # One inactive on the roster is no longer the site's to tell (fresh34e).
    active = await roster_store.coaches_by_id(connection, supervisors)
    supervisors = tuple(s for s in supervisors if s in active and active[s].active)
    off = await schedule_store.off_now(connection, supervisors, now) if supervisors else set()
    firsts = [
        contacts[0]
        for supervisor in supervisors_told(supervisors, off)
        if (contacts := await roster_store.contact_points(connection, supervisor))
    ]
    return tuple(firsts[:MAX_SUPERVISOR_CONTACTS])


_FOLLOW_UP_TIMERS = UUID("3b0c1f9e-7a51-4b0e-9f27-0d1c6a4e8f52")


def follow_up_timer(task_id: UUID, attempt: int) -> UUID:
    """The retry timer of one waiting follow-up attempt."""
    return uuid5(_FOLLOW_UP_TIMERS, f"{task_id}:{attempt}")


def _timer_id(offer_id: UUID, kind: TimerKind) -> UUID:
    """An offer's expiry timer has the offer's id; its other timers derive theirs from it."""
    return offer_id if kind is TimerKind.OFFER_EXPIRY else uuid5(offer_id, kind.value)


def _count(dispatch: Dispatch, event: EventPayload) -> None:
    site = dispatch.facts.site_id
    if isinstance(event, OfferMade):
        metrics.OFFERS.labels(site, "made").inc()
    elif isinstance(event, CoachAssigned):
        metrics.OFFERS.labels(site, "accepted").inc()
        if dispatch.started_at is not None:
            metrics.TIME_TO_ACCEPTANCE.labels(site).observe(
                (event.assigned_at - dispatch.started_at).total_seconds()
            )
    elif isinstance(event, OfferWithdrawn):
        metrics.OFFERS.labels(site, event.reason.value).inc()
        if event.reason is WithdrawReason.AT_CAPACITY:
            metrics.ACCEPTANCES_REFUSED_AT_CAPACITY.labels(site).inc()
        elif event.reason is WithdrawReason.NOT_CONTACTED:
            metrics.NOT_CONTACTED.labels(site).inc()
    elif isinstance(event, ReferralWaiting):
        metrics.WAITED.labels(site).inc()
    elif isinstance(event, ReferralExpired):
        metrics.EXPIRED.labels(site).inc()
    elif isinstance(event, ReferralEscalated):
        metrics.ESCALATIONS.labels(site, event.to_tier.value).inc()
    elif isinstance(event, ReferralUnassigned):
        metrics.UNASSIGNED.labels(site, event.reason.value).inc()


async def cover_facts(
    connection: Connection, pools: Sequence[Pool], now_only: bool = False
) -> tuple[dict[UUID, Coach], dict[UUID, NotCover]]:
    """What `domain.coverage.why_not_cover` needs of the coaches the pools' schedules name:
    their roster entries, and those notify can page on no contact method, with why.
    `now_only`: the facts are read for this moment alone (who is on call now), so a coach
    whose methods are all at notify's offer ceiling counts out; otherwise, for a window
    ahead (gaps, timelines, feeds), they count in, the ceiling lasting minutes (fresh29b:
    a quarter hour's spell showed as gaps for two weeks)."""
    coach_ids = await schedule_store.scheduled_coaches(connection, pools)
    coaches = await roster_store.coaches_by_id(connection, coach_ids)
    reach = await reachability_store.of_coaches(connection, coach_ids)
    return coaches, out_of_reach(reach, now_only)


def out_of_reach(
    reach: Mapping[UUID, reachability_store.Reach], now_only: bool = False
) -> dict[UUID, NotCover]:
    """The coaches notify can page on no method, and why: spent (its offer ceiling, for a
    few minutes: only when `now_only`) or unreachable (opted out, never deliverable)."""
    return {
        coach_id: NotCover.SPENT if r.spent else NotCover.UNREACHABLE
        for coach_id, r in reach.items()
        if not r.reachable and (now_only or not r.spent)
    }


async def coverage_gaps_ahead(
    connection: Connection,
    site_id: str,
    state: str,
    time_zone: str,
    window: Interval,
    interpreter_available: bool = True,
) -> list[Interval]:
    """The windows in which nobody on call for the site (or its state pool) counts as cover."""
    pools = [Pool.site(site_id), Pool.state(state)]
    schedules = await schedule_store.pool_schedules(connection, pools, window)
    coaches, unreachable = await cover_facts(connection, pools)
    site = SiteProfile(site_id, state, ZoneInfo(time_zone), interpreter_available)
    return coverage_gaps(site, window, list(schedules.values()), coaches, unreachable)


async def report_coverage_forever(pool: asyncpg.Pool, every: float = 60.0) -> None:
    """Export the next 24 h of coverage gaps per known site, so SREs see them before patients.

    Every `every` seconds; a database error ends it, for its supervisor to restart it."""
    while True:
        async with pool.acquire() as connection:
            now = utc_now()
            window = Interval(now, now + timedelta(hours=24))
            for site_id, state, time_zone in await roster_store.known_sites(connection):
                _, interpreter, _ = await dispatch_store.site_settings(connection, site_id)
                gaps = await coverage_gaps_ahead(
                    connection, site_id, state, time_zone, window, interpreter
                )
                minutes = sum((g.end - g.start).total_seconds() for g in gaps) / 60
                metrics.COVERAGE_GAP_MINUTES.labels(site_id).set(minutes)
                metrics.UNCOVERED_NOW.labels(site_id).set(
                    1 if any(now in gap for gap in gaps) else 0
                )
                if gaps:
                    next_gap = max(0.0, (gaps[0].start - now).total_seconds())
                    metrics.NEXT_GAP_SECONDS.labels(site_id).set(next_gap)
                else:
                    with contextlib.suppress(KeyError):
                        metrics.NEXT_GAP_SECONDS.remove(site_id)
        beat()
        await asyncio.sleep(every)


async def report_waiting_referrals_forever(pool: asyncpg.Pool, every: float = 5.0) -> None:
    """Export, per site, the referrals no coach has accepted yet, the oldest one's wait and
    those in line; and the coaches' load against their capacity, summed (no coach labels).

    Every `every` seconds; a database error ends it, for its supervisor to restart it."""
    while True:
        async with pool.acquire() as connection:
            waiting = await dispatch_store.awaiting_acceptance(connection)
            in_line = await dispatch_store.in_line(connection)
            for site_id, _, _ in await roster_store.known_sites(connection):
                count, oldest = waiting.get(site_id, (0, 0.0))
                metrics.AWAITING_ACCEPTANCE.labels(site_id).set(count)
                metrics.OLDEST_AWAITING_SECONDS.labels(site_id).set(oldest)
                for state in ("waiting", "unassigned"):
                    metrics.IN_LINE.labels(site_id, state).set(in_line.get((site_id, state), 0))
            used, slots, full = await dispatch_store.load_against_capacity(connection)
            metrics.COACH_SLOTS_HELD.set(used)
            metrics.COACH_SLOTS.set(slots)
            metrics.COACHES_AT_CAPACITY.set(full)
        beat()
        await asyncio.sleep(every)


def wake_line_if_freed(line: "WaitingLine") -> None:
    """After-commit hook: wake the line if the transaction just committed freed capacity
    (or saw a page go out). Runs in the task that ran the handler, so it reads its flag."""
    if _FREED.get():
        _FREED.set(False)
        line.wake()


async def roster_changed(connection: Connection) -> None:
    """Tell every replica's line that the roster or the on-call changed (after the commit)."""
    await roster_store.tell_line(connection)


class WaitingLine:
    """Serves the waiting line: at once when woken (capacity freed in this process, or a
    NOTIFY on roster_store.LINE_CHANNEL), and every `sweep_every` seconds regardless (shift starts,
    re-offers every `reoffer_every`, and any wake-up lost to a crash). After a NOTIFY it also
    tries again the follow-up attempts nobody could take: the change may have brought someone."""

    def __init__(
        self, service: MatchingService, pool: asyncpg.Pool, database_url: str, sweep_every: float
    ) -> None:
        self.service = service
        self.pool = pool
        self.database_url = database_url
        self.sweep_every = sweep_every
        self._wake = asyncio.Event()
        # Whether the next pass also looks for follow-ups whose coach left the roster:
        # only a roster change (NOTIFY) or a sweep can have made one. Capacity freed here,
        # which wakes the line after nearly every cancel or answer, cannot (issue 17).
        self._roster_may_have_changed = True
        # Whether a roster or on-call change was heard (a NOTIFY, or a new listener that
        # may have missed one; not a sweep): attempts nobody could take are tried again.
        self._roster_changed = True

    def wake(self) -> None:
        """Serve the line as soon as the current pass ends (call after the commit)."""
        self._wake.set()

    async def run(self) -> None:
        """Serve the line until cancelled; a database error ends it, for its supervisor to
        restart it (with a new listener)."""
        listener: asyncpg.Connection | None = None
        try:
            while True:
                self._wake.clear()
                if listener is None or listener.is_closed():
                    listener = await connect(self.database_url)
                    await listener.add_listener(roster_store.LINE_CHANNEL, self._on_notify)
                    # Whatever NOTIFY came while nobody listened is lost: act as if heard.
                    self._roster_may_have_changed = self._roster_changed = True
                await self.service.serve_line(self.pool)
                if self._roster_may_have_changed:
                    self._roster_may_have_changed = False
                    # An attempt whose coach left the roster goes to someone else (issue #16).
                    await self.service.reassign_orphaned_follow_ups(self.pool)
                if self._roster_changed:
                    self._roster_changed = False
                    await self.service.retry_waiting_follow_ups(self.pool)
                beat()
                if not await wait_until_set(self._wake, self.sweep_every):
                    self._roster_may_have_changed = True  # a sweep catches a lost NOTIFY
        finally:
            if listener is not None:
                listener.terminate()

    def _on_notify(self, _conn: Connection, _pid: int, _channel: str, _payload: object) -> None:
        self._roster_may_have_changed = self._roster_changed = True
        self._wake.set()
