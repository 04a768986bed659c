"""One message's delivery, as GoAlert runs it: pending → sending → sent → delivered | failed.

`sending` is committed, with a deadline, before the provider is called. If the
process dies during the call, the row is found still `sending` after its
deadline and is reconciled: the provider is asked whether the message exists. A
send whose outcome is unknown is never repeated on the same channel; the page
moves to the coach's next contact method instead.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from handoff_schemas.vocabulary import PageFailure


class MessageState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    THROTTLED = "throttled"
    CANCELLED = "cancelled"  # the offer ended before the message left


# What a provider says of one send attempt.


@dataclass(frozen=True)
class Accepted:
    provider_ref: str | None
    delivered: bool = False  # the provider confirms delivery at once (webhook 2xx, sandbox)


@dataclass(frozen=True)
class Transient:
    code: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Permanent:
    failure: PageFailure
    code: str
    never_deliverable: bool = False  # the destination itself is bad: block it, don't retry


@dataclass(frozen=True)
class Ambiguous:
    """The request may have reached the provider: only a lookup can tell."""

    code: str


SendOutcome = Accepted | Transient | Permanent | Ambiguous


# What a provider says when asked about a send whose outcome was lost.


@dataclass(frozen=True)
class Found:
    provider_ref: str
    delivered: bool = False


@dataclass(frozen=True)
class NotFound:
    pass


@dataclass(frozen=True)
class Unknowable:
    """The channel keeps no record to ask (SMTP, webhooks)."""


LookupOutcome = Found | NotFound | Unknowable


# What to do next with the message.


@dataclass(frozen=True)
class MarkSent:
    provider_ref: str | None
    delivered: bool


@dataclass(frozen=True)
class RetryIn:
    seconds: float


@dataclass(frozen=True)
class Fail:
    failure: PageFailure


@dataclass(frozen=True)
class Reconcile:
    pass


Decision = MarkSent | RetryIn | Fail | Reconcile


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempts: int, jitter: float) -> float:
        """Exponential backoff with `jitter` in [0.5, 1] so replicas don't retry in step."""
        backoff: float = self.first_delay * 2.0 ** (attempts - 1)
        return min(backoff, self.max_delay) * jitter


def after_send(
    outcome: SendOutcome,
    attempts: int,
    policy: RetryPolicy,
    jitter: float,
    retry_for: float | None = None,
) -> Decision:
    """The next step for a message whose `attempts`-th send ended in `outcome`.

    A transient failure (5xx, 429, a connection that never opened) is the provider's
    trouble, not the destination's: with `retry_for` (seconds until the message is of no
    more use, e.g. an offer's page deadline) it is retried with backoff for as long as the
    next try still lands before then, however many attempts that takes, so a provider
    outage shorter than the deadline costs nothing (decision 0019's addendum);
    and in any case up to `policy.max_attempts`."""
    match outcome:
        case Accepted(provider_ref, delivered):
            return MarkSent(provider_ref, delivered)
        case Permanent(failure, _, _):
            return Fail(failure)
        case Ambiguous():
            return Reconcile()
        case Transient(_, retry_after):
            delay = (
                min(retry_after, policy.max_delay)
                if retry_after is not None
                else policy.delay(attempts, jitter)
            )
            if attempts < policy.max_attempts or (retry_for is not None and delay < retry_for):
                return RetryIn(delay)
            return Fail(PageFailure.PROVIDER_ERROR)


def after_lookup(outcome: LookupOutcome, held_elsewhere: bool = False) -> MarkSent | Fail:
    """A lost send, once the provider was asked. Not found is not resent on this channel
    either: the message may yet surface, and the coach's next method is a safer bet.

    `held_elsewhere`: the provider's message found is already another message's (an
    earlier text of the same words to the same phone, such as two "cancelled" notices), so
    this send was not found: what was found proves nothing about it."""
    match outcome:
        case Found(provider_ref, delivered):
            if held_elsewhere:
                return Fail(PageFailure.PROVIDER_ERROR)
            return MarkSent(provider_ref, delivered)
        case NotFound():
            return Fail(PageFailure.PROVIDER_ERROR)
        case Unknowable():
            return Fail(PageFailure.NOT_DELIVERED)


def next_contact(contact_index: int, contact_count: int) -> int | None:
    """The coach's next contact method after this one, or None when every one was tried."""
    following = contact_index + 1
    return following if following < contact_count else None


NOT_THE_COACH = (PageFailure.PROVIDER_ERROR,)
"""Failures that say nothing of the coach's contact method: the provider's outage. An
offer they end is not_contacted (matching's page deadline), never unreachable (decision
0019's addendum)."""


def coach_unreachable(
    following: int | None, page_states: Iterable[MessageState], failure: PageFailure
) -> bool:
    """Whether a failed page leaves the coach unreached (PageFailed.all_channels_failed): no
    contact method is left to try AND none of the offer's pages (`page_states`, every
    channel's) reached a provider AND the last `failure` was not the provider's
    (NOT_THE_COACH), whose pages are retried until the page deadline instead. A `throttled`
    last failure counts: matching then ends the offer not_contacted at once, never
    unreachable (decision 0032).

    An SMS that went out keeps the offer open until its ack timeout even when the email
    sent after the channel fallback then fails: the coach may be reading the SMS."""
    reached = {MessageState.SENT, MessageState.DELIVERED}
    if failure in NOT_THE_COACH:
        return False
    return following is None and not any(state in reached for state in page_states)


class ReportOutcome(StrEnum):
    """What became of a provider's final delivery report (the metric's `outcome` label)."""

    APPLIED = "applied"  # a `sent` message is now delivered, or failed
    IGNORED = "ignored"  # the message was already final: a duplicate, or out of order
    KEPT = "kept"  # no message has the provider's id yet: the send's answer is in flight
    APPLIED_LATE = "applied_late"  # a kept report, once its message's id was stored
    EXPIRED = "expired"  # kept, and no message ever took it


def after_report(state: MessageState, delivered: bool) -> MessageState | None:
    """The state a provider's final delivery report (delivered, or not) moves a message to;
    None to leave it as it is.

    Only a `sent` message moves. `delivered`, `failed` and the other end states are
    final: a duplicate, or a report arriving out of order (`failed` after `delivered`),
    never moves a message back.
    """
    if state is not MessageState.SENT:
        return None
    return MessageState.DELIVERED if delivered else MessageState.FAILED
