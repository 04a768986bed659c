"""Throttles per contact method, so that a bug cannot flood a coach's phone.

A new offer is let through: it is why the coach carries the phone. Notices
(filled, cancelled, confirmed) wait until a minute after the previous message to
the same destination, and only a handful go out per quarter hour. Past a high
ceiling even offers stop: at that point something is looping. A refused message
is recorded and counted, never dropped silently.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from handoff_notify.domain.content import MessageKind


@dataclass(frozen=True)
class ThrottleRules:
    notice_spacing: timedelta = timedelta(minutes=1)
    window: timedelta = timedelta(minutes=15)
    notices_per_window: int = 5
    offers_per_window: int = 20


@dataclass(frozen=True)
class RecentSends:
    """What went, or is going, to one destination within the last `ThrottleRules.window`:
    a summary, so that deciding costs the same however busy the destination was."""

    offers: int = 0
    notices: int = 0
    latest: datetime | None = None


@dataclass(frozen=True)
class Allow:
    pass


@dataclass(frozen=True)
class Defer:
    until: datetime


@dataclass(frozen=True)
class Refuse:
    pass


ThrottleDecision = Allow | Defer | Refuse


def throttle(
    kind: MessageKind, recent: RecentSends, now: datetime, rules: ThrottleRules
) -> ThrottleDecision:
    """May a message of `kind` go to a destination that was sent `recent` messages?"""
    if kind is MessageKind.OFFER:
        return Allow() if recent.offers < rules.offers_per_window else Refuse()
    if recent.notices >= rules.notices_per_window:
        return Refuse()
    if recent.latest is not None and now - recent.latest < rules.notice_spacing:
        return Defer(recent.latest + rules.notice_spacing)
    return Allow()
