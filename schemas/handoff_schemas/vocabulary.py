"""Coded values shared by the API and the events. Codes, never free text."""

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENT = "emergent"


class Substance(StrEnum):
    """Protected by 42 CFR Part 2: travels only to matching, never into logs."""

    OPIOIDS = "opioids"
    ALCOHOL = "alcohol"
    STIMULANTS = "stimulants"
    CANNABIS = "cannabis"
    OTHER = "other"


class Consent(StrEnum):
    OBTAINED = "obtained"
    PENDING = "pending"


class GenderPreference(StrEnum):
    WOMAN = "woman"
    MAN = "man"
    NONBINARY = "nonbinary"


class CancelReason(StrEnum):
    PATIENT_LEFT = "patient_left"
    PATIENT_DECLINED = "patient_declined"
    NO_LONGER_NEEDED = "no_longer_needed"
    ENTERED_IN_ERROR = "entered_in_error"


class WithdrawReason(StrEnum):
    EXPIRED = "expired"  # the ack timeout passed after the first page went out
    FILLED = "filled"  # another coach accepted
    CANCELLED = "cancelled"  # the ED cancelled the referral
    AT_CAPACITY = "at_capacity"  # the coach accepted while at max_concurrent: passed on
    NOT_CONTACTED = "not_contacted"  # no page reached a provider within the page deadline
    UNREACHABLE = "unreachable"  # every contact method failed, opted out or is unreachable


class WaitingReason(StrEnum):
    """Why a referral waits in line instead of being offered."""

    ALL_AT_CAPACITY = "all_at_capacity"  # coaches are on call, each at max_concurrent


class Tier(StrEnum):
    """The rungs of the escalation ladder, in order."""

    SITE = "site"
    STATE_POOL = "state_pool"
    SUPERVISOR = "supervisor"


class UnassignedReason(StrEnum):
    LADDER_EXHAUSTED = "ladder_exhausted"
    NOBODY_ON_CALL = "nobody_on_call"


class FollowUpResult(StrEnum):
    """What came of one follow-up attempt (issue #16). `no_answer` is the only failure that
    is tried again within the same window; every other result ends the attempt's task, and
    `wrong_number`, `declined_further_contact` and `deceased` end every later task too."""

    REACHED = "reached"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"
    DECLINED_FURTHER_CONTACT = "declined_further_contact"
    DECEASED = "deceased"
    READMITTED = "readmitted"


class RecoveryOutcome(StrEnum):
    """What a coach records at the bedside or at a follow-up contact: a fixed vocabulary, so
    program reports can count it. Treatment and MOUD are substance use disorder treatment
    information (42 CFR Part 2): they travel only to the reports read model, never into logs.
    `none` stands alone."""

    TREATMENT_OUTPATIENT = "treatment_outpatient"
    TREATMENT_INTENSIVE_OUTPATIENT = "treatment_intensive_outpatient"
    TREATMENT_RESIDENTIAL = "treatment_residential"
    TREATMENT_WITHDRAWAL_MANAGEMENT = "treatment_withdrawal_management"
    MOUD = "moud"  # medication for opioid use disorder, started or continued
    NALOXONE_KIT = "naloxone_kit"
    RECOVERY_SUPPORT = "recovery_support"  # mutual support, recovery community centre
    HOUSING = "housing"  # recovery housing or other housing support
    NONE = "none"


class FollowUpAssignee(StrEnum):
    """Who matching gave a follow-up attempt to: the coach who saw the patient while they are
    on the roster and available, else whoever is on call for the site, else a supervisor."""

    VISITING_COACH = "visiting_coach"
    SITE_POOL = "site_pool"
    SUPERVISOR = "supervisor"


FollowUpDays = Annotated[
    int, Field(ge=1, le=365, description="Days after the visit a follow-up window opens.")
]


class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"
    EMAIL = "email"
    WEBHOOK = "webhook"


class PageFailure(StrEnum):
    INVALID_DESTINATION = "invalid_destination"
    UNSUBSCRIBED = "unsubscribed"
    PROVIDER_ERROR = "provider_error"
    NOT_DELIVERED = "not_delivered"
    NOT_ANSWERED = "not_answered"
    THROTTLED = "throttled"


class CoachResponse(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"
    ARRIVED = "arrived"
    COMPLETED = "completed"


class ResponseVia(StrEnum):
    LINK = "link"
    SMS_REPLY = "sms_reply"
    VOICE_KEYPAD = "voice_keypad"


SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,39}$"
"""A site's stable slug, in paths and queries as in events: anything else (a NUL byte, a
10 kB id) is refused naming the field before a query is made."""
SiteId = Annotated[str, Field(pattern=SITE_ID_PATTERN, description="A site's stable slug.")]
UsState = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="USPS state code.")]

# fmt: off
US_STATES: frozenset[str] = frozenset({
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN",
    "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV",
    "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN",
    "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "DC", "AS", "GU", "MP", "PR", "VI",
})
# fmt: on
"""The USPS codes of the 50 states, the District of Columbia and the five inhabited
territories (American Samoa, Guam, the Northern Mariana Islands, Puerto Rico, the US Virgin
Islands): where a site or a console account may be. No package in the environment carries
the list; military "states" (AA, AE, AP) and the freely associated states (FM, MH, PW) run
no emergency departments Handoff serves. `UsState` checks only the shape, so that events
already written stay valid."""
OFFER_CEILING_REACHED = "throttled"
OFFER_CEILING_FREED = "throttle_freed"
"""ContactMethodReachabilityChanged's reasons when notify's offer ceiling per phone
(OFFERS_PER_15_MINUTES) takes a method out of good standing, and when a slot frees: notify
says them, matching reads the first (decision 0032)."""
TimeZoneName = Annotated[str, Field(max_length=64, description="IANA time zone name.")]
ShortLabel = Annotated[str, Field(min_length=1, max_length=40)]
E164Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{7,14}$")]


def _bcp47_case(tag: str) -> str:
    """A language tag in the case RFC 5646 section 2.1.1 recommends (`EN-us` → `en-US`,
    `zh-hant` → `zh-Hant`): tags are case-insensitive, so `EN` and `en` are one language
    and a replayed referral compares equal."""
    language, *rest = tag.split("-")
    subtags = [language.lower()]
    for subtag in rest:
        if len(subtag) == 4 and subtag.isalpha():
            subtags.append(subtag.title())
        elif len(subtag) == 2 and subtag.isalpha():
            subtags.append(subtag.upper())
        else:
            subtags.append(subtag.lower())
    return "-".join(subtags)


LanguageTag = Annotated[
    str,
    Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$", description="BCP 47 tag."),
    AfterValidator(_bcp47_case),
]
