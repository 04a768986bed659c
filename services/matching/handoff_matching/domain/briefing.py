"""The ED changes what a coach is told about a referral (ReferralUpdated: an HL7 ADT^A08 or
A02 bed move, a new call-back number, consent given): the dispatch's briefing follows, so
every offer made from then on carries it."""

from dataclasses import replace

from handoff_matching.domain.dispatch import Dispatch, DispatchState
from handoff_schemas.events import ReferralUpdated

OVER = (DispatchState.CANCELLED, DispatchState.CLOSED, DispatchState.EXPIRED)
BRIEFING_FIELDS = ("location", "callback_phone", "consent")


def apply_update(dispatch: Dispatch, update: ReferralUpdated) -> list[str]:
    """Sets the briefing fields `update` carries (location, callback_phone, consent) on
    `dispatch`; returns the names of those that changed (none once the dispatch is over).

    An urgency change is not applied: the ladder and the waiting line were ordered by the
    urgency at intake, and the HL7 intake, the only sender today, never changes it.
    """
    if dispatch.state in OVER:
        return []
    briefing = dispatch.facts.briefing
    changes = {
        name: value
        for name in BRIEFING_FIELDS
        if (value := getattr(update, name)) is not None and value != getattr(briefing, name)
    }
    if changes:
        dispatch.facts = replace(dispatch.facts, briefing=briefing.model_copy(update=changes))
    return sorted(changes)
