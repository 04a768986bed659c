"""A coach's load, and the order of the waiting line. Pure: the callers read the numbers.

A coach's load is every referral whose capacity they hold, across every site, tier
and mode: their open offers plus their assignments. An offer goes only to a coach
whose load is below max_concurrent, so one phone never queues a burst. An
acceptance counts assignments alone (the offer accepted was already part of the
load): it is refused only when the coach already holds max_concurrent assignments,
which happens when max_concurrent was lowered, or when two of their offers are
accepted at once for the last slot.

The waiting line is ordered by urgency (emergent, urgent, routine), then by the
time the referral entered it.
"""

from handoff_schemas.vocabulary import Urgency

PRIORITY = {Urgency.EMERGENT: 0, Urgency.URGENT: 1, Urgency.ROUTINE: 2}
"""An urgency's place in the waiting line, lowest served first; stored beside the dispatch,
which the line orders by (priority, time in line)."""


def has_room(load: int, max_concurrent: int | None) -> bool:
    """True if a coach with `load` (open offers + assignments) may be offered one more
    referral; `max_concurrent` None: not on the roster (a supervisor only), never full."""
    return max_concurrent is None or load < max_concurrent


def may_take_assignment(assignments: int, max_concurrent: int | None) -> bool:
    """True if a coach holding `assignments` other referrals may be assigned one more."""
    return max_concurrent is None or assignments < max_concurrent
