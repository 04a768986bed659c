"""What a page says. Nothing here may identify the patient: a lock screen is public.

A body carries only the product name, the site's short name, the urgency, a reply
code and the link; what the coach needs beyond that is behind the signed link.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from math import ceil

from handoff_schemas.vocabulary import Urgency, WithdrawReason


class MessageKind(StrEnum):
    """Why a message is sent: an offer pages; the others tell a coach what became of it."""

    OFFER = "offer"
    WITHDRAWN = "withdrawn"
    ASSIGNED = "assigned"


@dataclass(frozen=True)
class Content:
    subject: str  # email subject and webhook title
    text: str  # SMS, email and webhook body
    spoken: str  # what a voice call says


def offer(site_short_name: str, urgency: Urgency, link: str) -> Content:
    headline = f"Handoff: {urgency.value} ED request at {site_short_name}."
    return Content(
        subject=headline,
        text=f"{headline} Reply 1 to accept, 2 to decline, or open {link}",
        spoken=(
            f"This is Handoff. An {urgency.value} request for a peer recovery coach at "
            f"{site_short_name}. Press 1 to accept, or 2 to decline."
        ),
    )


def withdrawn(site_short_name: str, reason: WithdrawReason) -> Content:
    outcome = "filled by another coach" if reason is WithdrawReason.FILLED else "cancelled"
    text = f"Handoff: the request at {site_short_name} was {outcome}. No action needed."
    return Content(subject=text, text=text, spoken=text)


def assigned(site_short_name: str, arrival_deadline: datetime, now: datetime, link: str) -> Content:
    minutes = max(0, ceil((arrival_deadline - now).total_seconds() / 60))
    text = (
        f"Handoff: confirmed, you have the request at {site_short_name}. "
        f"Please arrive within {minutes} min. Details: {link}"
    )
    return Content(subject=f"Handoff: confirmed at {site_short_name}", text=text, spoken=text)


def reply_acknowledgement(accepted: bool, link: str) -> str:
    if accepted:
        return f"Handoff: thank you, your acceptance is recorded. Details: {link}"
    return "Handoff: thank you, your decline is recorded."
