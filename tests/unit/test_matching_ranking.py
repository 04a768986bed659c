"""Eligibility rules and every ranking term, with an explicit `now`."""

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from handoff_matching.domain.eligibility import (
    Certification,
    Coach,
    Ineligible,
    SiteProfile,
    why_ineligible,
)
from handoff_matching.domain.ranking import Candidate, Need, rank, score_terms
from handoff_schemas.vocabulary import GenderPreference, Substance

NOW = datetime(2026, 11, 27, 15, tzinfo=UTC)
MERCY = SiteProfile("md-mercy", "MD", ZoneInfo("America/New_York"), interpreter_available=False)
NEED = Need(
    "md-mercy",
    "es",
    GenderPreference.WOMAN,
    frozenset({Substance.OPIOIDS, Substance.ALCOHOL, Substance.STIMULANTS, Substance.CANNABIS}),
)


def coach(**changes: object) -> Coach:
    base = Coach(
        coach_id=uuid.UUID(int=1),
        display_name="Ana",
        languages=frozenset({"en"}),
        gender=GenderPreference.MAN,
        lived_experience=frozenset(),
        max_concurrent=2,
        certifications=(Certification("MD", "CPRS", date(2027, 1, 31)),),
        last_assigned_at=NOW - timedelta(hours=1),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def ineligible(
    candidate: Coach,
    now: datetime = NOW,
    load: int = 0,
    already_offered: bool = False,
    interpreter_needed: bool = False,
) -> Ineligible | None:
    return why_ineligible(candidate, MERCY, now, load, already_offered, "es", interpreter_needed)


def test_an_active_certified_coach_with_room_is_eligible() -> None:
    assert ineligible(coach()) is None


def test_each_hard_rule_names_its_reason() -> None:
    assert ineligible(coach(active=False)) is Ineligible.INACTIVE
    assert (
        ineligible(coach(certifications=(Certification("RI", "CPRS", date(2030, 1, 1)),)))
        is Ineligible.NOT_CERTIFIED_IN_STATE
    )
    assert ineligible(coach(), load=2) is Ineligible.AT_CAPACITY
    assert ineligible(coach(), already_offered=True) is Ineligible.ALREADY_OFFERED
    assert ineligible(coach(), interpreter_needed=True) is Ineligible.NO_SHARED_LANGUAGE
    assert ineligible(coach(languages=frozenset({"es-US"})), interpreter_needed=True) is None


def test_a_certification_counts_through_its_last_day_in_the_sites_time_zone() -> None:
    expiring = coach(certifications=(Certification("MD", "CPRS", date(2026, 11, 1)),))
    last_moment = datetime(2026, 11, 2, 4, 59, 59, tzinfo=UTC)  # 23:59:59 EST on Nov 1
    assert ineligible(expiring, now=last_moment) is None
    assert (
        ineligible(expiring, now=last_moment + timedelta(seconds=1))
        is Ineligible.CERTIFICATION_EXPIRED
    )
    renewed = replace(
        expiring,
        certifications=(*expiring.certifications, Certification("MD", "CPRS", date(2028, 11, 1))),
    )
    assert ineligible(renewed, now=last_moment + timedelta(days=30)) is None


def terms(candidate: Coach, on_call_for_site: bool = False) -> dict[str, float]:
    return score_terms(Candidate(candidate, on_call_for_site), NEED, NOW)


def test_same_site_term() -> None:
    assert terms(coach(), on_call_for_site=True)["same_site"] == 100
    assert terms(coach())["same_site"] == 0


def test_language_term_matches_the_primary_subtag() -> None:
    assert terms(coach(languages=frozenset({"ES-us"})))["language"] == 40
    assert terms(coach(languages=frozenset({"en", "pt"})))["language"] == 0


def test_gender_term_only_when_a_preference_is_met() -> None:
    assert terms(coach(gender=GenderPreference.WOMAN))["gender"] == 20
    assert terms(coach(gender=None))["gender"] == 0
    no_preference = Need("md-mercy", "es", None, frozenset())
    assert (
        score_terms(Candidate(coach(gender=GenderPreference.WOMAN), False), no_preference, NOW)[
            "gender"
        ]
        == 0
    )


def test_lived_experience_term_counts_shared_substances_up_to_a_cap() -> None:
    assert terms(coach(lived_experience=frozenset({Substance.OPIOIDS})))["lived_experience"] == 10
    everything = frozenset(Substance)
    assert terms(coach(lived_experience=everything))["lived_experience"] == 30


@pytest.mark.parametrize(
    ("idle", "points"),
    [(None, 15.0), (timedelta(hours=12), 7.5), (timedelta(hours=48), 15.0), (timedelta(0), 0.0)],
)
def test_fairness_term_favours_the_least_recently_assigned(
    idle: timedelta | None, points: float
) -> None:
    last = None if idle is None else NOW - idle
    assert terms(coach(last_assigned_at=last))["fairness"] == pytest.approx(points)


def test_ranking_orders_by_score_explains_itself_and_breaks_ties_by_id() -> None:
    site_coach = coach(coach_id=uuid.UUID(int=3))
    speaker = coach(coach_id=uuid.UUID(int=2), languages=frozenset({"es"}))
    twin_a = coach(coach_id=uuid.UUID(int=5))
    twin_b = coach(coach_id=uuid.UUID(int=4))
    ranked = rank(
        [
            Candidate(speaker, False),
            Candidate(twin_a, False),
            Candidate(site_coach, True),
            Candidate(twin_b, False),
        ],
        NEED,
        NOW,
    )
    assert [r.coach_id.int for r in ranked] == [3, 2, 4, 5]
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    assert ranked[0].explanation() == "#1 score 100.6: same_site +100, fairness +1"
    assert ranked[1].terms["language"] == 40
