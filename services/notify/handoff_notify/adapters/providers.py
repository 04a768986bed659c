"""The one interface every channel's provider speaks, and the choice of providers by config."""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from handoff_notify.domain.content import Content
from handoff_notify.domain.delivery import LookupOutcome, SendOutcome
from handoff_schemas.vocabulary import Channel


@dataclass(frozen=True)
class Outgoing:
    message_id: UUID
    channel: Channel
    destination: str
    content: Content
    answer_url: str  # where a voice call's keypad answer is posted
    correlation_id: str  # the referral's, for the logs of this send


class Provider(Protocol):
    async def send(self, message: Outgoing) -> SendOutcome:
        """Hand the message over; never raises for the provider's own failures."""
        ...

    async def lookup(self, message: Outgoing, since: datetime) -> LookupOutcome:
        """Whether a send begun at `since`, whose outcome was lost, reached the provider."""
        ...

    async def close(self) -> None: ...
