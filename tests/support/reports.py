"""A month of events as the referral, matching and notify services publish them, for the
program reports' tests (issue #16): what they hold is written out in `seeded_month`, so
each test can compute its figures by hand."""

import uuid
from datetime import UTC, datetime, timedelta

from handoff_schemas.envelope import Payload
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    FollowUpAttempted,
    FollowUpDue,
    OfferMade,
    PageSent,
    ReferralCreated,
    ReferralExpired,
    ReferralUnassigned,
    SiteFacts,
    VisitRecorded,
)
from handoff_schemas.vocabulary import (
    Channel,
    CoachResponse,
    Consent,
    FollowUpResult,
    RecoveryOutcome,
    ResponseVia,
    Tier,
    UnassignedReason,
    Urgency,
)
from tests.support.events import BRIEFING


def referral_created(referral_id: uuid.UUID, site: SiteFacts, at: datetime) -> ReferralCreated:
    """The referral service's event: an urgent referral of `site`, received at `at`."""
    return ReferralCreated(
        referral_id=referral_id,
        site=site,
        urgency=Urgency.URGENT,
        location="ED bay 2",
        callback_phone="+14015550123",
        preferred_language="en",
        interpreter_needed=False,
        substances=frozenset(),
        consent=Consent.OBTAINED,
        received_at=at,
    )


def _offer(referral_id: uuid.UUID, site: SiteFacts, tier: Tier, coach: uuid.UUID) -> OfferMade:
    return OfferMade(
        referral_id=referral_id,
        offer_id=uuid.uuid4(),
        coach_id=coach,
        site_id=site.site_id,
        site_short_name=site.short_name,
        urgency=Urgency.URGENT,
        tier=tier,
        expires_at=datetime(2099, 1, 1, tzinfo=UTC),  # the reports ignore it
        briefing=BRIEFING,
    )


def _page(referral_id: uuid.UUID, offer: OfferMade, at: datetime) -> PageSent:
    return PageSent(
        referral_id=referral_id,
        page_id=uuid.uuid4(),
        offer_id=offer.offer_id,
        coach_id=offer.coach_id,
        channel=Channel.SMS,
        sent_at=at,
    )


def seeded_month(
    big: SiteFacts, small: SiteFacts, other: SiteFacts, base: datetime
) -> list[Payload]:
    """`big`: 13 referrals, k hours after `base` (k 1..13; all in its month). Referral k
    (1..12) is first paged k minutes after it came in (a second page later), accepted after
    2k minutes (k 1-9 at the site tier, 10-11 by the state pool, 12 by a supervisor), at the
    bedside after 10k, completed an hour later; visits give naloxone (all) and MOUD (even
    k); consent to follow up, the 1-day follow-up due a day later, reached for k 1-11
    (recovery support), no answer for 12. Referral 13 is paged after 13 minutes, nobody
    accepts, unassigned then expired.
    `small`: 3 referrals two days later, all unassigned. `other`: 1 referral a minute
    before `base`'s month (no figure in it)."""
    events: list[Payload] = []
    for k in range(1, 14):
        referral, coach = uuid.uuid4(), uuid.uuid4()
        received = base + timedelta(hours=k)
        tier = Tier.SITE if k <= 9 else Tier.STATE_POOL if k <= 11 else Tier.SUPERVISOR
        offer = _offer(referral, big, tier, coach)
        events += [
            referral_created(referral, big, received),
            offer,
            _page(referral, offer, received + timedelta(minutes=k)),
            _page(referral, offer, received + timedelta(minutes=k + 5)),
        ]
        if k == 13:
            events += [
                ReferralUnassigned(
                    referral_id=referral,
                    reason=UnassignedReason.LADDER_EXHAUSTED,
                    unassigned_at=received + timedelta(minutes=30),
                ),
                ReferralExpired(referral_id=referral, expired_at=received + timedelta(hours=6)),
            ]
            continue
        arrived = received + timedelta(minutes=10 * k)
        done = arrived + timedelta(hours=1)
        task = uuid.uuid4()
        outcomes = {RecoveryOutcome.NALOXONE_KIT} | (
            {RecoveryOutcome.MOUD} if k % 2 == 0 else set()
        )
        reached = k <= 11
        events += [
            CoachAssigned(
                referral_id=referral,
                offer_id=offer.offer_id,
                coach_id=coach,
                assigned_at=received + timedelta(minutes=2 * k),
                arrival_deadline=received + timedelta(hours=2),
            ),
            *(
                CoachResponded(
                    referral_id=referral,
                    offer_id=offer.offer_id,
                    coach_id=coach,
                    response=response,
                    via=ResponseVia.LINK,
                    responded_at=at,
                )
                for response, at in (
                    (CoachResponse.ARRIVED, arrived),
                    (CoachResponse.COMPLETED, done),
                )
            ),
            VisitRecorded(
                referral_id=referral,
                site_id=big.site_id,
                coach_id=coach,
                follow_up_consent=True,
                outcomes=frozenset(outcomes),
                recorded_at=done,
            ),
            FollowUpDue(
                referral_id=referral,
                task_id=task,
                site_id=big.site_id,
                window_days=1,
                attempt=1,
                coach_id=coach,
                due_at=done + timedelta(days=1),
                window_ends_at=done + timedelta(days=2),
            ),
            FollowUpAttempted(
                referral_id=referral,
                task_id=task,
                site_id=big.site_id,
                window_days=1,
                attempt=1,
                coach_id=coach,
                result=FollowUpResult.REACHED if reached else FollowUpResult.NO_ANSWER,
                outcomes=frozenset({RecoveryOutcome.RECOVERY_SUPPORT}) if reached else frozenset(),
                attempted_at=done + timedelta(days=1, hours=2),
            ),
        ]
    for n in range(3):
        referral = uuid.uuid4()
        received = base + timedelta(days=2, hours=n)
        events += [
            referral_created(referral, small, received),
            ReferralUnassigned(
                referral_id=referral,
                reason=UnassignedReason.NOBODY_ON_CALL,
                unassigned_at=received + timedelta(minutes=1),
            ),
        ]
    month_start = base.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    events.append(referral_created(uuid.uuid4(), other, month_start - timedelta(minutes=1)))
    return events
