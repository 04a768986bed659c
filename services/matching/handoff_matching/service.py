"""The matching service's use cases: each one transaction, with its outbox events and timers.

A dispatch is loaded under its row lock, one domain method decides, and the
dispatch, the events it produced and its timer changes are stored together.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

import asyncpg

from handoff_matching import SOURCE, metrics
from handoff_matching.adapters import dispatch_store, roster_store
from handoff_matching.domain.coverage import coverage_gaps
from handoff_matching.domain.dispatch import (
    CancelTimer,
    Candidates,
    Dispatch,
    Effect,
    Ranking,
    ReferralFacts,
    SetTimer,
    TimerKind,
)
from handoff_matching.domain.eligibility import SiteProfile, why_ineligible
from handoff_matching.domain.ranking import Candidate, Need, rank
from handoff_matching.domain.schedules import Interval, Pool, on_call
from handoff_platform.database import Connection
from handoff_platform.outbox import Outbox
from handoff_platform.supervision import beat
from handoff_platform.timers import Timer, Timers
from handoff_schemas import Envelope, EventPayload
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferBriefing,
    OfferMade,
    OfferWithdrawn,
    PageFailed,
    ReferralCancelled,
    ReferralCreated,
    ReferralEscalated,
    ReferralUnassigned,
)
from handoff_schemas.vocabulary import CoachResponse, Tier

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class MatchingService:
    def __init__(self, outbox: Outbox, timers: Timers, clock: Clock = utc_now) -> None:
        self.outbox = outbox
        self.timers = timers
        self.clock = clock

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
        )
        if not await dispatch_store.insert(connection, dispatch):
            return  # already dispatching this referral
        now = self.clock()
        candidates = await self._candidates(connection, dispatch, now)
        await self._apply(connection, dispatch, dispatch.start(now, candidates), event.id)

    async def coach_responded(self, connection: Connection, event: Envelope[Any]) -> None:
        data: CoachResponded = event.data
        dispatch = await dispatch_store.lock(connection, data.referral_id)
        if dispatch is None:
            return
        now = self.clock()
        if data.response is CoachResponse.ACCEPTED:
            effects = dispatch.accept(data.offer_id, now)
        elif data.response is CoachResponse.DECLINED:
            metrics.OFFERS.labels(dispatch.facts.site_id, "declined").inc()
            effects = dispatch.decline(
                data.offer_id, now, await self._candidates(connection, dispatch, now)
            )
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
        effects = dispatch.unreachable(
            data.offer_id, now, await self._candidates(connection, dispatch, now)
        )
        await self._apply(connection, dispatch, effects, event.id)

    async def site_registered(self, connection: Connection, event: Envelope[Any]) -> None:
        """Keep the site's facts, so its shifts resolve and its coverage is reported from now."""
        site = event.data.site
        await roster_store.remember_site(
            connection, site.site_id, site.short_name, site.state, site.time_zone
        )

    async def referral_cancelled(self, connection: Connection, event: Envelope[Any]) -> None:
        data: ReferralCancelled = event.data
        dispatch = await dispatch_store.lock(connection, data.referral_id)
        if dispatch is None:
            return
        await self._apply(connection, dispatch, dispatch.cancel(self.clock()), event.id)

    async def offer_expired(self, connection: Connection, timer: Timer) -> None:
        dispatch = await dispatch_store.lock(connection, UUID(timer.payload["referral_id"]))
        if dispatch is None:
            return
        now = self.clock()
        effects = dispatch.expire(
            UUID(timer.payload["offer_id"]),
            now,
            await self._candidates(connection, dispatch, now),
        )
        await self._apply(connection, dispatch, effects, cause=None)

    async def arrival_deadline_passed(self, connection: Connection, timer: Timer) -> None:
        """The assigned coach has not reported arriving in time: count it, for the program."""
        dispatch = await dispatch_store.lock(connection, UUID(timer.payload["referral_id"]))
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

    async def _candidates(
        self, connection: Connection, dispatch: Dispatch, now: datetime
    ) -> Candidates:
        """Every rung's eligible coaches, best first, as the roster stands at `now`."""
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
        shifts = await roster_store.shifts_for(connection, [site_pool, state_pool])
        overrides = await roster_store.overrides_for(
            connection, [site_pool, state_pool], Interval(now, now + timedelta(microseconds=1))
        )
        at_site = on_call(site_pool, now, shifts, overrides)
        in_state = on_call(state_pool, now, shifts, overrides) - at_site
        coaches = await roster_store.coaches_by_id(connection, [*at_site, *in_state])
        holding = await dispatch_store.open_assignments(connection, list(coaches))

        def eligible(ids: frozenset[UUID], on_call_for_site: bool) -> Ranking:
            fit = [
                Candidate(coaches[coach_id], on_call_for_site)
                for coach_id in ids
                if coach_id in coaches
                and why_ineligible(
                    coaches[coach_id],
                    site,
                    now,
                    holding.get(coach_id, 0),
                    coach_id in dispatch.offered_coaches,
                    need.language,
                    facts.briefing.interpreter_needed,
                )
                is None
            ]
            return Ranking((r.coach_id, r.explanation()) for r in rank(fit, need, now))

        return {
            Tier.SITE: eligible(at_site, True),
            Tier.STATE_POOL: eligible(in_state, False),
            Tier.SUPERVISOR: Ranking((s, "on the site's escalation list") for s in supervisors),
        }

    async def _apply(
        self, connection: Connection, dispatch: Dispatch, effects: list[Effect], cause: UUID | None
    ) -> None:
        events: list[Envelope[Any]] = []
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
        await dispatch_store.save(connection, dispatch)
        for envelope in events:
            _count(dispatch, envelope.data)
            log.info(
                "dispatch event",
                extra={"referral_id": str(dispatch.facts.referral_id), "event_type": envelope.type},
            )


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
    elif isinstance(event, ReferralEscalated):
        metrics.ESCALATIONS.labels(site, event.to_tier.value).inc()
    elif isinstance(event, ReferralUnassigned):
        metrics.UNASSIGNED.labels(site, event.reason.value).inc()


async def coverage_gaps_ahead(
    connection: Connection,
    site_id: str,
    state: str,
    time_zone: str,
    window: Interval,
    interpreter_available: bool = True,
) -> list[Interval]:
    """The windows in which no eligible coach is on call for the site (or its state pool)."""
    pools = [Pool.site(site_id), Pool.state(state)]
    shifts = await roster_store.shifts_for(connection, pools)
    overrides = await roster_store.overrides_for(connection, pools, window)
    coaches = await roster_store.coaches_by_id(
        connection, await roster_store.all_coaches(connection, pools)
    )
    site = SiteProfile(site_id, state, ZoneInfo(time_zone), interpreter_available)
    return coverage_gaps(site, window, shifts, overrides, coaches)


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
    """Export, per site, the referrals no coach has accepted yet and the oldest one's wait.

    Every `every` seconds; a database error ends it, for its supervisor to restart it."""
    while True:
        async with pool.acquire() as connection:
            waiting = await dispatch_store.awaiting_acceptance(connection)
            for site_id, _, _ in await roster_store.known_sites(connection):
                count, oldest = waiting.get(site_id, (0, 0.0))
                metrics.AWAITING_ACCEPTANCE.labels(site_id).set(count)
                metrics.OLDEST_AWAITING_SECONDS.labels(site_id).set(oldest)
        beat()
        await asyncio.sleep(every)
