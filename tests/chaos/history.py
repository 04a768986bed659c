"""What the clients of a chaos run saw, recorded as it happened (Jepsen's method), and the
invariants checked on that history afterwards: no I/O here, so each rule is testable alone."""

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from handoff_schemas.envelope import Envelope
from handoff_schemas.events import (
    CoachAssigned,
    CoachResponded,
    OfferMade,
    OfferWithdrawn,
    PageDelivered,
    PageFailed,
    PageSent,
    ReferralCancelled,
    ReferralCreated,
    ReferralExpired,
)

RESOLVED = frozenset({"accepted", "arrived", "completed", "unassigned"})
"""A referral's statuses that end a chaos run's wait: a bot coach took it (and may have
finished the visit since), or the ladder ran out. Anything else after the wait is stuck."""


@dataclass
class Post:
    """One referral as the hospital saw it: each attempt's answer (status code, or the
    transport error's name) and, once a 201 or 200 came, the referral's id."""

    external_id: str
    asked_at: float
    answers: list[str] = field(default_factory=list)
    referral_id: str | None = None
    acknowledged_at: float | None = None


@dataclass
class Fault:
    """One fault of the script: when it began and ended (monotonic seconds) and what it hit."""

    name: str
    target: str
    began_at: float
    ended_at: float = 0.0


@dataclass
class History:
    posts: dict[str, Post] = field(default_factory=dict)  # by external id
    pages: list[tuple[float, str, str]] = field(default_factory=list)  # (seen at, offer, kind)
    accepted: dict[str, float] = field(default_factory=dict)  # offer id → when the bot's 200
    faults: list[Fault] = field(default_factory=list)

    def acknowledged(self) -> dict[str, Post]:
        """Posts answered 201/200, by referral id."""
        return {p.referral_id: p for p in self.posts.values() if p.referral_id is not None}

    @staticmethod
    def now() -> float:
        return time.monotonic()


def lost(acknowledged: Iterable[str], found: Mapping[str, str]) -> list[str]:
    """Referral ids a hospital was given (201/200) that the service does not know now."""
    return sorted(set(acknowledged) - set(found))


def stuck(statuses: Mapping[str, str]) -> dict[str, str]:
    """The referrals (id → status) in no RESOLVED status."""
    return {r: s for r, s in statuses.items() if s not in RESOLVED}


def pages_sent_twice(pages: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(offer id, channel) pairs the provider took more than once, with their counts."""
    counts = Counter(pages)
    return {key: count for key, count in counts.items() if count > 1}


def natural_key(envelope: Envelope[Any]) -> tuple[Any, ...]:
    """What makes an event the same fact whatever its envelope id: its type, its subject,
    and the payload's own key (an offer's id and the answer, a page's id...). Events with
    no key of their own are keyed by their whole payload, time stamps included: two of
    them differ in their times when they are two facts."""
    data = envelope.data
    head: tuple[Any, ...] = (type(data).__name__, str(envelope.subject))
    match data:
        case ReferralCreated() | ReferralCancelled() | ReferralExpired():
            return head
        case OfferMade() | CoachAssigned():
            return (*head, data.offer_id)
        case OfferWithdrawn():
            return (*head, data.offer_id, data.reason)
        case PageSent() | PageDelivered():
            return (*head, data.page_id)
        case PageFailed():
            return (*head, data.page_id, data.failure)
        case CoachResponded():
            return (*head, data.offer_id, data.response)
    return (*head, data.model_dump_json())


def published_twice(envelopes: Iterable[Envelope[Any]]) -> dict[tuple[Any, ...], int]:
    """Natural keys published under more than one envelope id, with how many ids. The same
    id twice is at-least-once delivery, which consumers skip; two ids is a second fact."""
    ids: dict[tuple[Any, ...], set[Any]] = {}
    for envelope in envelopes:
        ids.setdefault(natural_key(envelope), set()).add(envelope.id)
    return {key: len(found) for key, found in ids.items() if len(found) > 1}


def recovery_seconds(
    fault: Fault, posts: Iterable[Post], accepted_at: Mapping[str, float]
) -> float | None:
    """Seconds from the fault's end until the first referral asked for after it was accepted
    by a coach (by the bot's clock), or None if none was. `accepted_at`: referral id → when."""
    after = [
        accepted_at[p.referral_id]
        for p in posts
        if p.asked_at >= fault.ended_at
        and p.referral_id is not None
        and p.referral_id in accepted_at
    ]
    return min(after) - fault.ended_at if after else None
