"""Who may be offered a referral: the hard rules, each with the reason it excludes."""

from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo

from handoff_matching.domain.schedules import wall_time_to_utc
from handoff_schemas.vocabulary import GenderPreference, Substance


@dataclass(frozen=True)
class Certification:
    state: str
    credential: str  # e.g. CPRS
    expires_on: date  # valid through this day, in the time zone of the site served


@dataclass(frozen=True)
class Coach:
    coach_id: UUID
    display_name: str
    languages: frozenset[str]  # BCP 47 tags
    gender: GenderPreference | None
    lived_experience: frozenset[Substance]
    max_concurrent: int
    certifications: tuple[Certification, ...]
    active: bool = True
    home_sites: frozenset[str] = field(default_factory=frozenset)
    last_assigned_at: datetime | None = None


@dataclass(frozen=True)
class SiteProfile:
    """What matching knows of a site: its facts from the referral, its own dispatch settings."""

    site_id: str
    state: str
    zone: ZoneInfo
    interpreter_available: bool = True


class Ineligible(StrEnum):
    INACTIVE = "inactive"
    NOT_CERTIFIED_IN_STATE = "not_certified_in_state"
    CERTIFICATION_EXPIRED = "certification_expired"
    AT_CAPACITY = "at_capacity"
    ALREADY_OFFERED = "already_offered"
    UNREACHABLE = "unreachable"  # every contact method opted out or never deliverable
    NO_SHARED_LANGUAGE = "no_shared_language"


def certification_expiry(certification: Certification, zone: ZoneInfo) -> datetime:
    """The instant a certification stops counting: the end of its last day, locally."""
    return wall_time_to_utc(certification.expires_on + timedelta(days=1), time(0), zone)


def why_ineligible(
    coach: Coach,
    site: SiteProfile,
    now: datetime,
    load: int,
    already_offered: bool,
    language: str,
    interpreter_needed: bool,
    reachable: bool = True,
) -> Ineligible | None:
    """None if the coach may be offered this referral now, else the first rule that forbids it.

    `load`: the referrals whose capacity the coach holds (open offers + assignments, every
    site). `reachable`: False when notify can reach none of the coach's contact methods
    (decision 0019): an offer would only bounce, and a referral must not wait for them.
    AT_CAPACITY is the last rule, so it names exactly the coaches who are merely full.
    """
    if not coach.active:
        return Ineligible.INACTIVE
    in_state = [c for c in coach.certifications if c.state == site.state]
    if not in_state:
        return Ineligible.NOT_CERTIFIED_IN_STATE
    if all(now >= certification_expiry(c, site.zone) for c in in_state):
        return Ineligible.CERTIFICATION_EXPIRED
    if already_offered:
        return Ineligible.ALREADY_OFFERED
    if interpreter_needed and not site.interpreter_available and not speaks(coach, language):
        return Ineligible.NO_SHARED_LANGUAGE
    if not reachable:
        return Ineligible.UNREACHABLE
    if load >= coach.max_concurrent:
        return Ineligible.AT_CAPACITY
    return None


def may_supervise(coach: Coach, site: SiteProfile, now: datetime) -> bool:
    """Whether a supervisor on the site's escalation list may be offered a referral at
    `now` (UTC): active, and certified in the site's state, unexpired (fresh34c: one made
    inactive, or whose certification had lapsed, was paged and held referrals)."""
    why = why_ineligible(coach, site, now, 0, False, "", False)
    return why not in _NOT_A_COACH_HERE


_NOT_A_COACH_HERE = (
    Ineligible.INACTIVE,
    Ineligible.NOT_CERTIFIED_IN_STATE,
    Ineligible.CERTIFICATION_EXPIRED,
)


def speaks(coach: Coach, language: str) -> bool:
    """Same primary language ("es" matches "es-US"), case-insensitively."""
    wanted = language.split("-")[0].lower()
    return any(tag.split("-")[0].lower() == wanted for tag in coach.languages)


def supervisors_told(supervisors: Sequence[UUID], off: Set[UUID]) -> list[UUID]:
    """Which of a site's supervisors (its escalation list, in order) are texted that a
    referral is unassigned, given those with an OFF of their own in force (`off`): all but
    those, unless every one is off, when all are told; a referral nobody hears of is worse
    than a text to a supervisor who asked for none (fresh33c)."""
    told = [s for s in supervisors if s not in off]
    return told or list(supervisors)
