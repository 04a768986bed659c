"""A month's program figures per site, from the read model's facts; no I/O.

Which month a figure falls in (docs/decisions/0028): the UTC calendar month of the moment
the figure is about. A referral counts as received in the month of `received_at`, an
acceptance in the month of `accepted_at`, a completed visit in the month of `completed_at`,
a follow-up as due in the month it first fell due, as attempted in the month of its first
attempt, as reached in the month it was reached. The times from request to first page, to
acceptance and to the bedside are over the referrals *received* in the month, in minutes.

Every figure is about many referrals; none is about one patient. Cells are published only
through `deidentified` (the small-cell rule, `handoff_reports.domain.suppression`).
"""

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from handoff_schemas.vocabulary import RecoveryOutcome, Tier

FOLLOW_UP_WINDOWS: tuple[int, ...] = (1, 30, 90)
"""The follow-up windows (days after the visit) reported on their own; a site whose
schedule has other windows has those counted under `other`."""

MONTH_PATTERN = r"^(2[0-9]{3})-(0[1-9]|1[0-2])$"
"""A month as `YYYY-MM`, 2000-01 to 2999-12, ASCII digits only: `[0-9]`, not `\\d`, which
matches any Unicode digit (a full-width digit two, U+FF12, must be refused, not read as 2)."""

_MONTH = re.compile(MONTH_PATTERN)


@dataclass(frozen=True, order=True)
class Month:
    """A UTC calendar month, written `YYYY-MM`."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Month":
        """`"2026-11"` → Month(2026, 11). Raises ValueError for anything else."""
        matched = _MONTH.fullmatch(text)
        if not matched or not 2000 <= int(matched.group(1)) <= 2999:
            raise ValueError("expected a month as YYYY-MM (2000-01 to 2999-12)")
        return cls(int(matched.group(1)), int(matched.group(2)))

    @property
    def start(self) -> datetime:
        """The month's first instant, UTC (inclusive)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The next month's first instant, UTC (exclusive)."""
        if self.month == 12:
            return datetime(self.year + 1, 1, 1, tzinfo=UTC)
        return datetime(self.year, self.month + 1, 1, tzinfo=UTC)

    def holds(self, moment: datetime | None) -> bool:
        """Whether `moment` (aware) falls in this month; None never does."""
        return moment is not None and self.start <= moment < self.end

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True)
class ReferralFacts:
    """What the read model knows of one referral: its site and the times of its story
    (aware datetimes; None: not happened, or not heard of yet). No patient data."""

    site_id: str
    state: str
    received_at: datetime | None = None
    first_page_at: datetime | None = None
    accepted_at: datetime | None = None
    accepted_tier: Tier | None = None
    arrived_at: datetime | None = None
    completed_at: datetime | None = None
    unassigned_at: datetime | None = None
    expired_at: datetime | None = None
    cancelled_at: datetime | None = None
    visit_recorded_at: datetime | None = None
    visit_outcomes: frozenset[RecoveryOutcome] = frozenset()


@dataclass(frozen=True)
class FollowUpFacts:
    """One follow-up task (one window of one referral): when it first fell due, when it
    was first attempted, when the patient was reached and what they reported then."""

    site_id: str
    state: str
    window_days: int
    due_at: datetime | None = None
    attempted_at: datetime | None = None
    reached_at: datetime | None = None
    reached_outcomes: frozenset[RecoveryOutcome] = frozenset()


def _window_label(days: int) -> str:
    return f"{days}d" if days in FOLLOW_UP_WINDOWS else "other"


PERCENTILE_COLUMNS: tuple[str, ...] = tuple(
    f"minutes_to_{what}_{p}"
    for what in ("first_page", "acceptance", "bedside")
    for p in ("p50", "p90")
)
"""Percentile cells: minutes, one decimal; None when no referral of the month got there."""

COUNT_COLUMNS: tuple[str, ...] = (
    "referrals_received",
    "referrals_cancelled",
    *(f"accepted_{tier.value}" for tier in Tier),
    "unassigned",
    "expired",
    "visits_completed",
    *(
        f"follow_ups_{what}_{label}"
        for label in (*(f"{d}d" for d in FOLLOW_UP_WINDOWS), "other")
        for what in ("due", "attempted", "reached")
    ),
    *(f"visit_outcome_{outcome.value}" for outcome in RecoveryOutcome),
    *(f"follow_up_outcome_{outcome.value}" for outcome in RecoveryOutcome),
)
"""Count cells, whole numbers."""

FIGURE_COLUMNS: tuple[str, ...] = (
    "referrals_received",
    "referrals_cancelled",
    *PERCENTILE_COLUMNS,
    *COUNT_COLUMNS[2:],
)
"""Every figure of a site's month, in the order the CSV and the page show them."""


@dataclass(frozen=True)
class SiteMonth:
    """A site's raw figures for a month: counts, and the samples (minutes) behind each
    percentile. Not for publication as is: `deidentified` first."""

    site_id: str
    state: str
    month: Month
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (`p` in (0, 100]) of a non-empty sample: the smallest
    value with at least p % of the sample at or below it. Raises ValueError if empty."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _minutes(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return (end - start).total_seconds() / 60


def site_months(
    month: Month, referrals: Iterable[ReferralFacts], follow_ups: Iterable[FollowUpFacts]
) -> list[SiteMonth]:
    """The month's raw figures of every site with anything in it, ordered by state, site."""
    sites: dict[tuple[str, str], SiteMonth] = {}

    def of(site_id: str, state: str) -> SiteMonth:
        key = (state, site_id)
        if key not in sites:
            sites[key] = SiteMonth(
                site_id,
                state,
                month,
                dict.fromkeys(COUNT_COLUMNS, 0),
                {
                    name: []
                    for name in (
                        "minutes_to_first_page",
                        "minutes_to_acceptance",
                        "minutes_to_bedside",
                    )
                },
            )
        return sites[key]

    for referral in referrals:
        moments = (
            referral.received_at,
            referral.accepted_at,
            referral.unassigned_at,
            referral.expired_at,
            referral.completed_at,
            referral.cancelled_at,
            referral.visit_recorded_at,
        )
        if not any(month.holds(moment) for moment in moments):
            continue
        site = of(referral.site_id, referral.state)
        counts = site.counts
        if month.holds(referral.received_at):
            counts["referrals_received"] += 1
            for name, end in (
                ("minutes_to_first_page", referral.first_page_at),
                ("minutes_to_acceptance", referral.accepted_at),
                ("minutes_to_bedside", referral.arrived_at),
            ):
                minutes = _minutes(referral.received_at, end)
                if minutes is not None:
                    site.samples[name].append(minutes)
        if month.holds(referral.cancelled_at):
            counts["referrals_cancelled"] += 1
        if month.holds(referral.accepted_at) and referral.accepted_tier is not None:
            counts[f"accepted_{referral.accepted_tier.value}"] += 1
        if month.holds(referral.unassigned_at):
            counts["unassigned"] += 1
        if month.holds(referral.expired_at):
            counts["expired"] += 1
        if month.holds(referral.completed_at):
            counts["visits_completed"] += 1
        if month.holds(referral.visit_recorded_at):
            for outcome in referral.visit_outcomes:
                counts[f"visit_outcome_{outcome.value}"] += 1

    for task in follow_ups:
        if not any(month.holds(m) for m in (task.due_at, task.attempted_at, task.reached_at)):
            continue
        counts = of(task.site_id, task.state).counts
        label = _window_label(task.window_days)
        for what, moment in (
            ("due", task.due_at),
            ("attempted", task.attempted_at),
            ("reached", task.reached_at),
        ):
            if month.holds(moment):
                counts[f"follow_ups_{what}_{label}"] += 1
        if month.holds(task.reached_at):
            for outcome in task.reached_outcomes:
                counts[f"follow_up_outcome_{outcome.value}"] += 1

    return [sites[key] for key in sorted(sites)]
