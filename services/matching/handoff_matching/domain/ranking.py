"""Ranking eligible coaches with named terms, so every offer can say why its coach came first.

The weights order the terms: being on call for the site itself outweighs
everything else; then a shared language; then the patient's gender preference;
then shared lived experience; fairness (the least recently assigned first)
breaks the remaining ties. Ties after all of that go by coach id, so a ranking
is the same every time it is computed.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from handoff_matching.domain.eligibility import Coach, speaks
from handoff_schemas.vocabulary import GenderPreference, Substance

SAME_SITE = 100.0
LANGUAGE = 40.0
GENDER = 20.0
LIVED_EXPERIENCE_EACH = 10.0
LIVED_EXPERIENCE_MAX = 30.0
FAIRNESS_MAX = 15.0
FAIRNESS_FULL_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class Need:
    """What the referral asks for, as matching sees it."""

    site_id: str
    language: str
    gender_preference: GenderPreference | None
    substances: frozenset[Substance]


@dataclass(frozen=True)
class Candidate:
    coach: Coach
    on_call_for_site: bool  # else through the state pool


@dataclass(frozen=True)
class Ranked:
    coach_id: UUID
    rank: int
    score: float
    terms: dict[str, float]

    def explanation(self) -> str:
        named = ", ".join(f"{name} {value:+.0f}" for name, value in self.terms.items() if value)
        return f"#{self.rank} score {self.score:.1f}: {named or 'no preference met'}"


def score_terms(candidate: Candidate, need: Need, now: datetime) -> dict[str, float]:
    coach = candidate.coach
    shared = coach.lived_experience & need.substances
    return {
        "same_site": SAME_SITE if candidate.on_call_for_site else 0.0,
        "language": LANGUAGE if speaks(coach, need.language) else 0.0,
        "gender": GENDER
        if need.gender_preference is not None and coach.gender is need.gender_preference
        else 0.0,
        "lived_experience": min(LIVED_EXPERIENCE_MAX, LIVED_EXPERIENCE_EACH * len(shared)),
        "fairness": _fairness(coach.last_assigned_at, now),
    }


def _fairness(last_assigned_at: datetime | None, now: datetime) -> float:
    if last_assigned_at is None:
        return FAIRNESS_MAX
    idle = max(timedelta(0), now - last_assigned_at)
    return FAIRNESS_MAX * min(1.0, idle / FAIRNESS_FULL_AFTER)


def rank(candidates: Iterable[Candidate], need: Need, now: datetime) -> list[Ranked]:
    scored = []
    for candidate in candidates:
        terms = score_terms(candidate, need, now)
        scored.append((sum(terms.values()), candidate.coach.coach_id, terms))
    scored.sort(key=lambda item: (-item[0], str(item[1])))
    return [
        Ranked(coach_id=coach_id, rank=position, score=score, terms=terms)
        for position, (score, coach_id, terms) in enumerate(scored, start=1)
    ]
