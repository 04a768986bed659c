"""What a page says. Nothing here may identify the patient: a lock screen is public.

A body carries only the product name, the site's short name, the urgency, a reply
code and the link; what the coach needs beyond that is behind the signed link. An
offer SMS is one segment: GSM-7 characters only and at most 160 of them, the
site's short name shortened if the link leaves it no room. Every SMS about an
offer names it by its reply code ("request B at Mercy ED"), and times are the
site's wall clock with its zone's abbreviation ("20:03 EST"), decision 0020.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from math import ceil
from zoneinfo import ZoneInfo

from handoff_notify.domain.offer import OfferState
from handoff_notify.domain.replies import CODES
from handoff_platform.sms_text import gsm7
from handoff_schemas.vocabulary import CoachResponse, UnassignedReason, Urgency, WithdrawReason

SMS_SEGMENT = 160  # GSM-7 characters in one SMS segment
_MIN_SITE = 6  # below this a shortened site name no longer tells EDs apart


class MessageKind(StrEnum):
    """Why a message is sent: an offer pages; the others tell a coach what became of it."""

    OFFER = "offer"
    WITHDRAWN = "withdrawn"
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"  # to supervisors: a referral nobody took (a notice, no offer)
    REMINDER = "reminder"  # to a coach: a follow-up attempt is theirs (issue #16)


@dataclass(frozen=True)
class Content:
    subject: str  # email subject and webhook title
    text: str  # SMS, email and webhook body
    spoken: str  # what a voice call says


@dataclass(frozen=True)
class OpenOffer:
    """One of a phone's open offers, as a reply asking "which one?" names it; `time_zone`
    is the site's IANA zone (None: UTC)."""

    code: str
    site_short_name: str
    paged_at: datetime
    urgency: Urgency
    time_zone: str | None = None


def local_time(moment: datetime, time_zone: str | None) -> str:
    """`moment` (aware) on the site's wall clock with its zone's abbreviation, "20:03 EST";
    in UTC when the site's zone is not known (offers made before sites carried one)."""
    zone = ZoneInfo(time_zone) if time_zone else ZoneInfo("UTC")
    return moment.astimezone(zone).strftime("%H:%M %Z")


def request(site_short_name: str, code: str | None) -> str:
    """How a text names one request: "request B at Mercy ED", or without a code (a page
    that went by email or voice only) "request at Mercy ED"."""
    return f"request {code} at {site_short_name}" if code else f"request at {site_short_name}"


def offer(
    site_short_name: str,
    urgency: Urgency,
    link: str,
    code: str | None = None,
    *,
    replies_read: bool = True,
) -> Content:
    """An offer's page. `code` is the offer's reply code on an SMS ("Reply 1B …"); None
    says plain "Reply 1 …" (a page read aloud). `replies_read` False (email, webhook:
    nothing reads an answer there) asks for the link instead of a reply."""
    answer = "1" if code is None else f"1{code}"
    decline = "2" if code is None else f"2{code}"
    replies = f" Reply {answer} to accept, {decline} to decline, or open {link}"
    if not replies_read:
        replies = f" Open this link to accept or decline: {link}"
    # No "ED" before "request": the site's short name says it ("Mercy ED"), and the
    # characters pay for two-letter reply codes (issue #12).
    head = f"Handoff: {urgency.value} request at "
    site = gsm7(site_short_name)
    room = SMS_SEGMENT - len(head) - len(replies) - 1
    if len(site) > room:
        site = site[: max(room, _MIN_SITE)].rstrip()
    headline = f"{head}{site}."
    return Content(
        subject=f"Handoff: {urgency.value} request at {site_short_name}.",
        text=f"{headline}{replies}",
        spoken=(
            f"This is Handoff. An {urgency.value} request for a peer recovery coach at "
            f"{site_short_name}. Press 1 to accept, or 2 to decline."
        ),
    )


def link_room() -> int:
    """The longest link (characters) an offer SMS carries within one segment: with the
    longest urgency, the longest reply code, and the site's short name cut to its shortest."""
    urgency = max(Urgency, key=lambda u: len(u.value))
    code = max(CODES, key=len)
    return SMS_SEGMENT - len(offer("x" * _MIN_SITE, urgency, "", code).text)


def withdrawn(site_short_name: str, reason: WithdrawReason, code: str | None = None) -> Content:
    """The notice that an offer the coach was paged for was taken away, naming it by
    `code` (its reply code on the coach's phone, if it had one)."""
    text = closed(site_short_name, OfferState.WITHDRAWN, reason, code)
    return Content(subject=text, text=text, spoken=text)


def assigned(
    site_short_name: str,
    arrival_deadline: datetime,
    now: datetime,
    link: str,
    code: str | None = None,
    time_zone: str | None = None,
) -> Content:
    """The confirmation of an accepted offer: the latest arrival on the site's clock
    (`time_zone`, IANA) and the minutes left until then. One SMS segment (issue #12: it
    was 171-173 characters): the wording tightens step by step to fit the link, and last
    the site's short name is shortened (never below 6 characters), as on the offer."""
    minutes = max(0, ceil((arrival_deadline - now).total_seconds() / 60))
    by = local_time(arrival_deadline, time_zone)
    site = gsm7(site_short_name)
    wordings = (
        "Handoff: confirmed, the {it} is yours. Arrive by {by} ({minutes} min): {link}",
        "Handoff: the {it} is yours. Arrive by {by} ({minutes} min): {link}",
    )
    for wording in wordings:
        text = wording.format(it=request(site, code), by=by, minutes=minutes, link=link)
        if len(text) <= SMS_SEGMENT:
            break
    else:
        room = max(_MIN_SITE, len(site) - (len(text) - SMS_SEGMENT))
        short = site[:room].rstrip()
        text = wordings[-1].format(it=request(short, code), by=by, minutes=minutes, link=link)
    return Content(subject=f"Handoff: confirmed at {site_short_name}", text=text, spoken=text)


@dataclass(frozen=True)
class Unassigned:
    """One referral gone unassigned, as a supervisor's notice names it: `reference` is a
    short id of the referral (no patient data), `time_zone` the site's IANA zone, `reason`
    why (None reads as `ladder_exhausted`), `nobody_reached` whether no page of the last
    round reached its coach."""

    site_short_name: str | None
    unassigned_at: datetime
    reference: str
    urgency: Urgency | None = None
    time_zone: str | None = None
    reason: UnassignedReason | None = None
    nobody_reached: bool = False


def short_reference(referral_id: str) -> str:
    """A referral's short id for texts: the first six hex digits of its UUID, upper case.
    Enough to tell a night's requests apart and to find one on the referral's timeline."""
    return referral_id.replace("-", "")[:6].upper()


def unassigned(notice: Unassigned) -> Content:
    """The supervisors' notice that a referral went unassigned: urgency, site, reference,
    why (nobody on call to ask, no page got through, or nobody asked took it) and local
    time, nothing of the patient. Matching keeps offering it as coaches free up or come
    on call."""
    where = f" at {notice.site_short_name}" if notice.site_short_name else ""
    urgency = f"{notice.urgency.value} " if notice.urgency else ""
    text = (
        f"Handoff: {urgency}request {notice.reference}{where} has no coach: "
        f"{_NOTICE_WHY[_why(notice)]} "
        f"({local_time(notice.unassigned_at, notice.time_zone)}). Please arrange cover."
    )
    subject = f"Handoff: unassigned request {notice.reference}{where}"
    return Content(subject=subject, text=text, spoken=text)


def unassigned_digest(notices: Sequence[Unassigned]) -> Content:
    """One notice for several unassigned referrals, once a supervisor's notice limit for
    the quarter hour is reached: how many, at which sites, why when they share one, their
    references and the latest time. Nothing is dropped: every held notice is counted in one
    of these. One SMS segment: the sites' names are shortened while they stay distinct
    (never below 6 characters), else counted ("at 12 sites"), and references that do not
    fit are counted ("+N"), at least three named where any way of naming the sites allows;
    the email's subject names the sites whole. A referral that went unassigned again is
    counted once, as its latest notice (fresh34a: "33 more" were 19 referrals)."""
    latest_of = {n.reference: n for n in sorted(notices, key=lambda n: n.unassigned_at)}
    notices = sorted(latest_of.values(), key=lambda n: n.unassigned_at)
    named = sorted({n.site_short_name for n in notices if n.site_short_name})
    sites = [gsm7(name) for name in named]
    latest = max(notices, key=lambda n: n.unassigned_at)
    at = local_time(latest.unassigned_at, latest.time_zone)
    # The why only when every notice shares one that is not the usual (nobody accepted).
    whys = {_DIGEST_WHY[_why(n)] for n in notices}
    shared = whys.pop() if len(whys) == 1 else ""
    why = f", {shared}" if shared else ""
    requests = "1 more request" if len(notices) == 1 else f"{len(notices)} more requests"
    verb = "has" if len(notices) == 1 else "have"

    def text(where: str, shown: int) -> str:
        references = " ".join(n.reference for n in notices[:shown])
        more = f" +{len(notices) - shown}" if len(notices) > shown else ""
        return (
            f"Handoff: {requests}{where} {verb} no coach{why} (latest {at}): "
            f"{references}{more}. Please arrange cover."
        )

    def listed(names: list[str]) -> str:
        return f" at {', '.join(names)}" if names else ""

    ways = [listed(sites)]
    for room in (16, 10, _MIN_SITE):
        cut = [site[:room].rstrip() for site in sites]
        if len(set(cut)) == len(cut):  # shortened names that read the same tell nothing
            ways.append(listed(cut))
    if len(sites) > 1:
        ways.append(f" at {len(sites)} sites")
    body = text(ways[-1], 1)
    for wanted in (min(len(notices), 3), 1):
        fits = [
            (shown, where)
            for where in ways
            for shown in range(min(len(notices), 8), wanted - 1, -1)
            if len(text(where, shown)) <= SMS_SEGMENT
        ]
        if fits:
            shown, where = fits[0]
            body = text(where, shown)
            break
    plural = "" if len(notices) == 1 else "s"
    subject = f"Handoff: {len(notices)} unassigned request{plural}{listed(named)}"
    return Content(subject=subject, text=body, spoken=body)


def _why(notice: Unassigned) -> str:
    """Why the notice's referral has no coach, as `_NOTICE_WHY` and `_DIGEST_WHY` key it."""
    if notice.reason is UnassignedReason.NOBODY_ON_CALL:
        return "nobody_on_call"
    return "nobody_reached" if notice.nobody_reached else "nobody_accepted"


_NOTICE_WHY = {
    "nobody_on_call": "nobody is on call for it",
    "nobody_reached": "no page got through to a coach",
    "nobody_accepted": "nobody on call accepted it",
}

_DIGEST_WHY = {
    "nobody_on_call": "nobody on call",
    "nobody_reached": "no page got through",
    "nobody_accepted": "",
}


def reply_acknowledgement(
    accepted: bool, site_short_name: str, link: str, code: str | None = None
) -> str:
    """The answer to an accept or decline just recorded. An accept is a request: matching
    confirms it (CoachAssigned) or passes it on (at capacity), and a text follows."""
    if accepted:
        return (
            f"Handoff: thank you, we are confirming you for the "
            f"{request(site_short_name, code)}. A text follows. Details: {link}"
        )
    return f"Handoff: thank you, your decline of the {request(site_short_name, code)} is recorded."


def closed(
    site_short_name: str,
    state: OfferState,
    reason: WithdrawReason | None,
    code: str | None = None,
    *,
    still_unassigned: bool = False,
) -> str:
    """What became of an offer the coach can no longer accept or decline, naming it by its
    reply `code` when it has one. `still_unassigned`: the one replying is a supervisor
    told this request has no coach, and nothing since says otherwise, so an expired offer
    is not "no action needed" (issue #12)."""
    it = request(site_short_name, code)
    match state, reason:
        case OfferState.WITHDRAWN, WithdrawReason.FILLED:
            return f"Handoff: the {it} was filled by another coach. No action needed."
        case OfferState.WITHDRAWN, WithdrawReason.CANCELLED:
            return f"Handoff: the {it} was cancelled. No action needed."
        case OfferState.WITHDRAWN, WithdrawReason.AT_CAPACITY:
            return (
                f"Handoff: you are at your limit of open requests, so the {it} "
                "was passed on to another coach. No action needed."
            )
        case OfferState.ACCEPTED, _:
            return f"Handoff: you accepted the {it}; we are confirming it."
        case OfferState.DECLINED, _:
            return f"Handoff: you declined the {it}. No action needed."
        case OfferState.ASSIGNED | OfferState.ARRIVED | OfferState.COMPLETED, _:
            return f"Handoff: the {it} is yours; see the link in its confirmation."
        case OfferState.WITHDRAWN, WithdrawReason.UNREACHABLE:
            # Mostly a STOP (decision 0013): the offer was passed on, it did not expire.
            return (
                f"Handoff: the {it} was passed on to another coach because texts to this "
                "number were stopped or could not be delivered."
            )
        case _ if still_unassigned:
            return (
                f"Handoff: the {it} has expired, and it still has no coach. Please arrange cover."
            )
        case _:
            return f"Handoff: the {it} has expired; your answer was not recorded."


def which_offer(offers: Sequence[OpenOffer], now: datetime) -> str:
    """The question to a bare answer when the phone has several open offers, oldest first:
    each named by its code, urgency, site and age ("just now" under a minute, else "N min
    ago"), so two requests at one site still read apart by code and age. One segment
    (160 GSM-7 characters) when it fits: the urgency goes first, then the sites are
    shortened; with more offers than fit, the text runs to a second segment rather than
    leave one out."""
    first = offers[0].code
    ask = f" Reply 1{first} to accept or 2{first} to decline; use the code you mean."
    for urgency, site_length in ((True, None), (False, None), (False, 12), (False, _MIN_SITE)):
        named = "; ".join(
            f"{o.code} = "
            + (f"{o.urgency.value}, " if urgency else "")
            + f"{gsm7(o.site_short_name)[:site_length].rstrip()}, {age(o.paged_at, now)}"
            for o in offers
        )
        text = f"Handoff: which request? {named}.{ask}"
        if len(text) <= SMS_SEGMENT:
            return text
    return text


def age(then: datetime, now: datetime) -> str:
    """How long ago `then` was, as a text says it: "just now" under a minute, else "N min
    ago" (whole minutes), "N h ago" from two hours on."""
    minutes = int((now - then).total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago"


def unclear(codes: Sequence[str]) -> str:
    """The question to a reply holding both a yes and a no ("no ok", "not declining"):
    nothing was changed. `codes`: the phone's open offers' codes, oldest first."""
    if not codes:
        return "Handoff: was that a yes or a no? Nothing was changed."
    first = codes[0]
    return (
        f"Handoff: was that a yes or a no? Nothing was changed. Reply 1{first} to accept "
        f"or 2{first} to decline."
    )


def one_request_a_text(answers: Sequence[tuple[str, CoachResponse]]) -> str:
    """The answer to answers naming several requests at once ("1E 1F", "1S 2R"): nothing
    was changed; the same answers, one request a text. `answers`: (code, answer) as the
    coach wrote them."""
    replies = ", then ".join(
        f"{'1' if response is CoachResponse.ACCEPTED else '2'}{code}" for code, response in answers
    )
    return f"Handoff: one request a text, please. Nothing was changed. Reply {replies}."


def unknown_code(code: str) -> str:
    """The answer to a reply naming a code the phone was never given: nothing changed, even
    of the other codes it named (fresh34c: "1B 1Z" read as if 1B went through)."""
    return (
        f"Handoff: you have no request with code {code}; nothing was changed. Reply HELP for help."
    )


OFF_FOR = timedelta(hours=24)
"""How long a coach's OFF lasts unless they text ON sooner: a forgotten ON must not
take a coach off every rota for good."""


def off_until_text(until: datetime, time_zone: str | None, now: datetime) -> str:
    """When an OFF ends, as a coach reads it on the site's wall clock: "18:00 EST" today,
    "Wed 08:00 EST" on another day (UTC when no site's zone is known)."""
    zone = ZoneInfo(time_zone) if time_zone else ZoneInfo("UTC")
    local, today = until.astimezone(zone), now.astimezone(zone)
    if local.date() == today.date():
        return local.strftime("%H:%M %Z")
    return local.strftime("%a %H:%M %Z")


def next_wall_time(now: datetime, hour: int, minute: int, time_zone: str | None) -> datetime:
    """The next `hour`:`minute` after `now` on the site's clock (UTC when unknown), at
    most OFF_FOR on: "off until 6pm" texted at 19:00 means 18:00 tomorrow."""
    zone = ZoneInfo(time_zone) if time_zone else ZoneInfo("UTC")
    local_now = now.astimezone(zone)
    candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local_now:
        candidate = (candidate.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone)
    # A time the clock skips (02:30 on spring-forward day) is read with the offset before
    # the gap, so it ends an hour later on the clock (03:30), never before the coach asked.
    until = candidate.astimezone(UTC)
    return min(until, now + OFF_FOR)


def went_off(
    program_name: str, until: datetime, time_zone: str | None, now: datetime, passed_on: int = 0
) -> str:
    """The answer to OFF (SMS or the coach's page): until when, on the site's clock, and
    how many open requests it passed to other coaches. One GSM-7 segment. Notify does
    not know the coach's shifts (matching does, decision 0017), so it says what is true
    whatever they are: no shift of theirs pages them until then."""
    ends = off_until_text(until, time_zone, now)
    text = (
        f"{program_name}: you are off call until {ends}; no requests meanwhile. "
        "Text ON to come back."
    )
    if passed_on:
        return f"{text} {passed_on} open request(s) passed on."
    return text


def came_on(program_name: str, was_off: bool) -> str:
    """The answer to ON: back on call when they were off, else the truth that nothing
    changed (issue #15: ON used to claim a change every time). One GSM-7 segment."""
    if was_off:
        return f"{program_name}: you are back on call; requests come on your shifts."
    return (
        f"{program_name}: you were not marked off, so nothing changed; you are on call as "
        "scheduled."
    )


def no_open_request(program_name: str) -> str:
    """The answer to an accept or decline from a coach's phone with nothing paged to it
    in the last day: nothing was changed, and what they may text instead."""
    return (
        f"{program_name}: you have no open request, so nothing was changed. Text OFF to go "
        "off call, ON to come back, HELP for help."
    )


def not_registered(program_name: str) -> str:
    """The answer to any text but STOP / START / HELP from a number on no coach's roster."""
    return (
        f"{program_name}: this number is not registered with {program_name}, so nothing was "
        "changed. A coordinator can add it to the roster."
    )


def help_text(program_name: str, supervisor_phone: str | None) -> str:
    """The answer to HELP, INFO and any reply not understood; names OFF / ON when the
    segment has room for them."""
    supervisor = f" Supervisor: {supervisor_phone}." if supervisor_phone else ""
    text = (
        f"{program_name}: reply 1 or YES to accept, 2 or NO to decline; with several "
        f"requests add the code (1B).{supervisor} STOP to opt out."
    )
    with_off = f"{text} OFF: go off call."
    return with_off if len(with_off) <= SMS_SEGMENT else text


def reminder(site_short_name: str, window_days: int, link: str) -> Content:
    """A coach's reminder that a follow-up attempt is theirs to make (issue #16): the
    window and the site, nothing of the patient; the number to call is behind `link` (the
    referral service's /f/ page). One GSM-7 segment: the site's short name is shortened
    (never below 6 characters) to fit the link. No reply codes: a reminder is not an offer."""
    head = f"Handoff: a {window_days}-day follow-up call for "
    tail = f" is due. Open: {link}"
    site = gsm7(site_short_name)
    room = SMS_SEGMENT - len(head) - len(tail)
    if len(site) > room:
        site = site[: max(room, _MIN_SITE)].rstrip()
    text = f"{head}{site}{tail}"
    return Content(
        subject=f"Handoff: {window_days}-day follow-up call due for {site_short_name}",
        text=text,
        spoken=(
            f"This is Handoff. A {window_days}-day follow-up call for {site_short_name} is "
            "due. Open the link in your text or email."
        ),
    )


def reminder_link_room() -> int:
    """The longest link (characters) a reminder SMS carries within one segment: with the
    longest window (365 days) and the site's short name cut to its shortest."""
    return SMS_SEGMENT - len(reminder("x" * _MIN_SITE, 365, "").text)


def reminder_reply(link: str | None) -> str:
    """The answer to a text from a coach whose phone was last sent a follow-up reminder and
    no offer: a reminder takes no reply; the link records the attempt."""
    if link is None:
        return "Handoff: reminders take no reply. Record the call at the link in the reminder."
    return f"Handoff: reminders take no reply. Record the call at {link}"
