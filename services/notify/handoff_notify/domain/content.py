"""What a page says. Nothing here may identify the patient: a lock screen is public.

A body carries only the product name, the site's short name, the urgency, a reply
code and the link; what the coach needs beyond that is behind the signed link. An
offer SMS is one segment: GSM-7 characters only and at most 160 of them, the
site's short name shortened if the link leaves it no room.
"""

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from math import ceil

from handoff_notify.domain.offer import OfferState
from handoff_schemas.vocabulary import Urgency, WithdrawReason

SMS_SEGMENT = 160  # GSM-7 characters in one SMS segment
# GSM 03.38's basic character set (the extension table's characters cost two).
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_MIN_SITE = 6  # below this a shortened site name no longer tells EDs apart


class MessageKind(StrEnum):
    """Why a message is sent: an offer pages; the others tell a coach what became of it."""

    OFFER = "offer"
    WITHDRAWN = "withdrawn"
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"  # to supervisors: a referral nobody took (a notice, no offer)


@dataclass(frozen=True)
class Content:
    subject: str  # email subject and webhook title
    text: str  # SMS, email and webhook body
    spoken: str  # what a voice call says


@dataclass(frozen=True)
class OpenOffer:
    """One of a phone's open offers, as a reply asking "which one?" names it."""

    code: str
    site_short_name: str
    paged_at: datetime


def gsm7(text: str) -> str:
    """`text` in GSM-7's basic set: accents kept where GSM has them, else dropped
    ("Señora Ōtā" → "Señora Ota"), other characters left out."""
    kept = []
    for character in text:
        if character in GSM7:
            kept.append(character)
            continue
        base = unicodedata.normalize("NFKD", character)
        kept.extend(c for c in base if c in GSM7)
    return "".join(kept)


def offer(site_short_name: str, urgency: Urgency, link: str, code: str | None = None) -> Content:
    """An offer's page. `code` is the offer's reply code when the phone has other open
    offers (the SMS then says "Reply 1B …"); None says plain "Reply 1 …"."""
    answer = "1" if code is None else f"1{code}"
    decline = "2" if code is None else f"2{code}"
    replies = f" Reply {answer} to accept, {decline} to decline, or open {link}"
    head = f"Handoff: {urgency.value} ED request at "
    site = gsm7(site_short_name)
    room = SMS_SEGMENT - len(head) - len(replies) - 1
    if len(site) > room:
        site = site[: max(room, _MIN_SITE)].rstrip()
    headline = f"{head}{site}."
    return Content(
        subject=f"Handoff: {urgency.value} ED request at {site_short_name}.",
        text=f"{headline}{replies}",
        spoken=(
            f"This is Handoff. An {urgency.value} request for a peer recovery coach at "
            f"{site_short_name}. Press 1 to accept, or 2 to decline."
        ),
    )


def withdrawn(site_short_name: str, reason: WithdrawReason) -> Content:
    """The notice that an offer the coach was paged for was taken away."""
    text = closed(site_short_name, OfferState.WITHDRAWN, reason)
    return Content(subject=text, text=text, spoken=text)


def assigned(site_short_name: str, arrival_deadline: datetime, now: datetime, link: str) -> Content:
    minutes = max(0, ceil((arrival_deadline - now).total_seconds() / 60))
    text = (
        f"Handoff: confirmed, you have the request at {site_short_name}. "
        f"Please arrive within {minutes} min. Details: {link}"
    )
    return Content(subject=f"Handoff: confirmed at {site_short_name}", text=text, spoken=text)


def unassigned(site_short_name: str | None, unassigned_at: datetime) -> Content:
    """The supervisors' notice that a referral went unassigned: the site and the time
    (UTC), nothing of the patient. Matching keeps offering it as coaches free up."""
    where = f"at {site_short_name} " if site_short_name else ""
    text = (
        f"Handoff: a request {where}has no coach: nobody on call accepted it "
        f"({unassigned_at:%H:%M} UTC). Please arrange cover."
    )
    subject = f"Handoff: unassigned request {where}".rstrip()
    return Content(subject=subject, text=text, spoken=text)


def reply_acknowledgement(accepted: bool, site_short_name: str, link: str) -> str:
    """The answer to an accept or decline just recorded. An accept is a request: matching
    confirms it (CoachAssigned) or passes it on (at capacity), and a text follows."""
    if accepted:
        return (
            f"Handoff: thank you, we are confirming you for the request at {site_short_name}. "
            f"A text follows. Details: {link}"
        )
    return "Handoff: thank you, your decline is recorded."


def closed(site_short_name: str, state: OfferState, reason: WithdrawReason | None) -> str:
    """What became of an offer the coach can no longer accept or decline."""
    site = site_short_name
    match state, reason:
        case OfferState.WITHDRAWN, WithdrawReason.FILLED:
            return f"Handoff: the request at {site} was filled by another coach. No action needed."
        case OfferState.WITHDRAWN, WithdrawReason.CANCELLED:
            return f"Handoff: the request at {site} was cancelled. No action needed."
        case OfferState.WITHDRAWN, WithdrawReason.AT_CAPACITY:
            return (
                f"Handoff: you are at your limit of open requests, so the request at {site} "
                "was passed to another coach. No action needed."
            )
        case OfferState.ACCEPTED, _:
            return f"Handoff: you accepted the request at {site}; we are confirming it."
        case OfferState.DECLINED, _:
            return f"Handoff: you declined the request at {site}. No action needed."
        case OfferState.ASSIGNED | OfferState.ARRIVED | OfferState.COMPLETED, _:
            return f"Handoff: the request at {site} is yours; see the link in its confirmation."
        case _:
            return f"Handoff: the request at {site} has expired. No action needed."


def which_offer(offers: Sequence[OpenOffer], now: datetime) -> str:
    """The question to a bare answer when the phone has several open offers: each named
    by its code, site and how many minutes ago it was paged, oldest first."""
    named = ", ".join(
        f"{o.code} {o.site_short_name} ({_minutes_ago(o.paged_at, now)} min ago)" for o in offers
    )
    first = offers[0].code
    return f"Handoff: which request? {named}. Reply 1{first} to accept or 2{first} to decline."


def unknown_code(code: str) -> str:
    return f"Handoff: you have no request with code {code}. Reply HELP for help."


OFF_FOR = timedelta(hours=24)
"""How long a coach's OFF lasts unless they text ON sooner: a forgotten ON must not
take a coach off every rota for good."""


def availability_changed(program_name: str, available: bool, passed_on: int = 0) -> str:
    """The answer to OFF and ON: what it changed (one GSM-7 segment); `passed_on`: the
    open requests OFF passed to other coaches."""
    if available:
        return f"{program_name}: you are available again; requests come on your shifts."
    off = f"{program_name}: you are off for 24 h or until you text ON; no requests meanwhile."
    if passed_on:
        return f"{off} {passed_on} open request(s) passed on."
    return off


def help_text(program_name: str, supervisor_phone: str | None) -> str:
    """The answer to HELP, INFO and any reply not understood."""
    supervisor = f" Supervisor: {supervisor_phone}." if supervisor_phone else ""
    return (
        f"{program_name}: reply 1 or YES to accept, 2 or NO to decline; with several "
        f"requests add the code (1B).{supervisor} STOP to opt out."
    )


def _minutes_ago(then: datetime, now: datetime) -> int:
    return max(0, int((now - then).total_seconds() // 60))
