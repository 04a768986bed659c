"""Event parts the tests build again and again."""

from handoff_schemas.events import OfferBriefing
from handoff_schemas.vocabulary import Consent

BRIEFING = OfferBriefing(
    location="ED bay 4",
    callback_phone="+14105550100",
    preferred_language="es",
    interpreter_needed=True,
    consent=Consent.OBTAINED,
)
