"""Throttles per contact method, so that a bug cannot flood a coach's phone.

A new offer is let through: it is why the coach carries the phone. Notices
(filled, cancelled, confirmed) wait until a minute after the previous message to
the same destination, and only a handful go out per quarter hour. Past a high
ceiling even offers stop: at that point something is looping. A refused message
is recorded and counted, never dropped silently.
"""

from collections.abc import Sequence
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
class Sent:
    kind: MessageKind
    at: datetime


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
    kind: MessageKind, earlier: Sequence[Sent], now: datetime, rules: ThrottleRules
) -> ThrottleDecision:
    """May a message of `kind` go to a destination that was sent `earlier` messages?"""
    recent = [s for s in earlier if now - s.at < rules.window]
    offers = sum(1 for s in recent if s.kind is MessageKind.OFFER)
    if kind is MessageKind.OFFER:
        return Allow() if offers < rules.offers_per_window else Refuse()
    if len(recent) - offers >= rules.notices_per_window:
        return Refuse()
    latest = max((s.at for s in recent), default=None)
    if latest is not None and now - latest < rules.notice_spacing:
        return Defer(latest + rules.notice_spacing)
    return Allow()
