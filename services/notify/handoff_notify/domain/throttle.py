"""Throttles per contact method, so that a bug cannot flood a phone, and so that a
night of unassigned referrals reaches a supervisor as a handful of texts.

A coach's messages are never paced: a new offer is why the coach carries the phone,
and a confirmation, cancellation or passed-on notice answers an offer the coach may
be acting on this minute (a cancelled request reaching the coach a minute late can
send them out for nothing). Only a high ceiling stops either kind, at which point
something is looping or a burst has spent the phone's quarter hour: an offer's page then
moves on to the coach's next method at once, or with none left ends the offer
not_contacted (never unreachable: decision 0019's addendum) so that matching asks the next
coach at once, and matching is told the method is out of good standing until a slot frees
(decision 0032); a notice about an offer is refused, unless the coach said yes to that
offer. Either is recorded and counted, never dropped silently.
The provider's own rate limits (429, Retry-After) are honoured by the delivery
retries, not here (decision 0020).

Supervisors' notices are counted per destination and quarter hour: until the last
slot of the window they go one by one; the last slot always carries a digest of
every notice then due, and what arrives after waits for the window to free a slot,
then leaves in the next digest. Nothing is dropped.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from handoff_notify.domain.content import MessageKind


@dataclass(frozen=True)
class ThrottleRules:
    """`window`: the counting period; `offers_per_window` the ceiling of offers, and
    separately of notices about offers, per coach destination; `notices_per_window` the
    supervisors' notices (sends, a digest counting once) per destination."""

    window: timedelta = timedelta(minutes=15)
    notices_per_window: int = 5
    offers_per_window: int = 20


@dataclass(frozen=True)
class RecentSends:
    """What went, or is going, to one destination within the last `ThrottleRules.window`:
    a summary, so that deciding costs the same however busy the destination was."""

    offers: int = 0
    notices: int = 0
    oldest_offer: datetime | None = None  # UTC; the first to leave the window


def slot_frees_at(recent: RecentSends, now: datetime, rules: ThrottleRules) -> datetime:
    """When an offer ceiling reached with `recent` sends has a slot again (UTC): as the
    oldest offer sent in the window leaves it."""
    return (recent.oldest_offer or now) + rules.window


@dataclass(frozen=True)
class Allow:
    pass


@dataclass(frozen=True)
class Refuse:
    pass


ThrottleDecision = Allow | Refuse


def throttle(
    kind: MessageKind,
    recent: RecentSends,
    now: datetime,
    rules: ThrottleRules,
    *,
    coach_said_yes: bool = False,
) -> ThrottleDecision:
    """May a coach's message of `kind` go to a destination that was sent `recent` ones?
    Offers and notices about offers each have their own flood ceiling; neither waits. A
    notice about an offer the coach said yes to (`coach_said_yes`: its confirmation, its
    cancellation, its being passed on) always goes: it sends the coach out or calls them
    off, and the coach's own answers bound how many there are (fresh33c: a held
    referral's cancellation was refused on a phone that had had a busy quarter hour)."""
    if coach_said_yes and kind is not MessageKind.OFFER:
        return Allow()
    sent = recent.offers if kind is MessageKind.OFFER else recent.notices
    return Allow() if sent < rules.offers_per_window else Refuse()


@dataclass(frozen=True)
class NoticePlan:
    """What to do with a destination's due supervisor notices, oldest first: send the
    first `singles` one by one, then (if `digest`) all the rest in one digest; with
    neither, hold them all until `hold_until` (UTC)."""

    singles: int
    digest: bool
    hold_until: datetime | None = None


def plan_notices(
    due: int, sends: int, oldest_send: datetime | None, rules: ThrottleRules
) -> NoticePlan:
    """A plan for `due` (> 0) notices to a destination that had `sends` sends in the
    current window, the oldest at `oldest_send` (UTC, None with no sends)."""
    room = rules.notices_per_window - sends
    if room <= 0:
        assert oldest_send is not None  # a full window holds at least one send
        return NoticePlan(0, False, oldest_send + rules.window)
    singles = min(due, room - 1)  # the window's last slot is always a digest
    return NoticePlan(singles, due > singles)
