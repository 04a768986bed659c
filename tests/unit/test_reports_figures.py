"""Program report figures (issue #16), computed by hand: months, percentiles, counts per
site, the small-cell rule and the CSV a funder opens."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from handoff_reports.domain.figures import (
    FIGURE_COLUMNS,
    FollowUpFacts,
    Month,
    ReferralFacts,
    percentile,
    site_months,
)
from handoff_reports.domain.suppression import (
    CSV_COLUMNS,
    Cell,
    SiteRow,
    count_cell,
    deidentified,
    percentile_cell,
    report_csv,
    report_document,
)
from handoff_schemas.vocabulary import RecoveryOutcome, Tier

NOVEMBER = Month(2026, 11)
NOV_2 = datetime(2026, 11, 2, 12, tzinfo=UTC)


def test_a_month_is_parsed_and_spans_its_utc_days() -> None:
    assert Month.parse("2026-11") == NOVEMBER
    assert NOVEMBER.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert NOVEMBER.end == datetime(2026, 12, 1, tzinfo=UTC)
    assert Month.parse("2026-12").end == datetime(2027, 1, 1, tzinfo=UTC)
    assert str(Month(2027, 3)) == "2027-03"
    assert NOVEMBER.holds(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    assert not NOVEMBER.holds(datetime(2026, 12, 1, tzinfo=UTC))
    assert not NOVEMBER.holds(None)


@pytest.mark.parametrize(
    "text",
    [
        "2026-13",
        "2026-1",
        "26-11",
        "2026-11-01",
        "",
        "1999-12",
        "\uff12026-12",  # a full-width 2: a Unicode digit, not an ASCII one
        "2026-\u0661\u0661",  # Arabic-Indic digits
    ],
)
def test_a_month_that_is_not_yyyy_mm_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        Month.parse(text)


def test_percentiles_are_nearest_rank() -> None:
    twenty = [float(n) for n in range(20, 0, -1)]  # order does not matter
    assert percentile(twenty, 50) == 10.0  # rank ceil(0.5 * 20) = 10
    assert percentile(twenty, 90) == 18.0  # rank ceil(0.9 * 20) = 18
    eleven = [float(n) for n in range(1, 12)]
    assert percentile(eleven, 50) == 6.0  # rank ceil(5.5) = 6
    assert percentile(eleven, 90) == 10.0  # rank ceil(9.9) = 10
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def _busy_site() -> list[ReferralFacts]:
    """12 referrals at ri-busy in November: referral k (1..12) paged after k minutes,
    accepted after 2k minutes (1-9 at the site tier, 10-11 by the state pool, 12 by a
    supervisor), at the bedside after 10k minutes, completed an hour after that; visits
    recorded with naloxone for all and MOUD for the even ones."""
    referrals = []
    for k in range(1, 13):
        received = NOV_2 + timedelta(hours=k)
        tier = Tier.SITE if k <= 9 else Tier.STATE_POOL if k <= 11 else Tier.SUPERVISOR
        outcomes = {RecoveryOutcome.NALOXONE_KIT} | (
            {RecoveryOutcome.MOUD} if k % 2 == 0 else set()
        )
        referrals.append(
            ReferralFacts(
                site_id="ri-busy",
                state="RI",
                received_at=received,
                first_page_at=received + timedelta(minutes=k),
                accepted_at=received + timedelta(minutes=2 * k),
                accepted_tier=tier,
                arrived_at=received + timedelta(minutes=10 * k),
                completed_at=received + timedelta(minutes=10 * k + 60),
                visit_recorded_at=received + timedelta(minutes=10 * k + 60),
                visit_outcomes=frozenset(outcomes),
            )
        )
    return referrals


def test_a_sites_month_counts_and_times_by_hand() -> None:
    quiet = [
        ReferralFacts(
            "ri-quiet", "RI", received_at=NOV_2, unassigned_at=NOV_2 + timedelta(minutes=30)
        ),
        ReferralFacts(
            "ri-quiet",
            "RI",
            received_at=NOV_2,
            unassigned_at=NOV_2 + timedelta(minutes=20),
            expired_at=NOV_2 + timedelta(hours=4),
        ),
        # Received in October, accepted in November: an acceptance of November only.
        ReferralFacts(
            "ri-quiet",
            "RI",
            received_at=datetime(2026, 10, 31, 23, 50, tzinfo=UTC),
            first_page_at=datetime(2026, 10, 31, 23, 51, tzinfo=UTC),
            accepted_at=datetime(2026, 11, 1, 0, 5, tzinfo=UTC),
            accepted_tier=Tier.SITE,
        ),
        # Nothing in November at all: no figure.
        ReferralFacts("ma-old", "MA", received_at=datetime(2026, 10, 3, tzinfo=UTC)),
    ]
    [busy, calm] = site_months(NOVEMBER, [*_busy_site(), *quiet], [])

    assert (busy.site_id, busy.state, calm.site_id) == ("ri-busy", "RI", "ri-quiet")
    assert busy.counts["referrals_received"] == 12
    assert busy.counts["accepted_site"] == 9
    assert busy.counts["accepted_state_pool"] == 2
    assert busy.counts["accepted_supervisor"] == 1
    assert busy.counts["visits_completed"] == 12
    assert busy.counts["visit_outcome_naloxone_kit"] == 12
    assert busy.counts["visit_outcome_moud"] == 6
    assert busy.counts["unassigned"] == busy.counts["expired"] == 0
    row = deidentified(busy).cells
    # Pages after 1..12 minutes: p50 rank ceil(6) = 6 min, p90 rank ceil(10.8) = 11 min.
    assert row["minutes_to_first_page_p50"] == Cell(6.0)
    assert row["minutes_to_first_page_p90"] == Cell(11.0)
    assert row["minutes_to_acceptance_p50"] == Cell(12.0)
    assert row["minutes_to_acceptance_p90"] == Cell(22.0)
    assert row["minutes_to_bedside_p50"] == Cell(60.0)
    assert row["minutes_to_bedside_p90"] == Cell(110.0)
    assert row["referrals_received"] == Cell(12)
    assert row["accepted_state_pool"] == Cell(None, suppressed=True)
    assert row["visit_outcome_moud"] == Cell(None, suppressed=True)
    assert row["unassigned"] == Cell(0)

    assert calm.counts["referrals_received"] == 2
    assert calm.counts["unassigned"] == 2
    assert calm.counts["expired"] == 1
    assert calm.counts["accepted_site"] == 1
    quiet_row = deidentified(calm).cells
    assert quiet_row["referrals_received"] == Cell(None, suppressed=True)
    # No November referral of ri-quiet was paged: no value, nothing to suppress.
    assert quiet_row["minutes_to_first_page_p50"] == Cell(None)


def test_follow_ups_count_in_the_month_they_fell_due_were_tried_and_reached() -> None:
    before = datetime(2026, 10, 20, tzinfo=UTC)
    tasks = [
        *(
            FollowUpFacts(
                "ri-busy",
                "RI",
                30,
                due_at=NOV_2,
                attempted_at=NOV_2 + timedelta(hours=1) if n < 12 else None,
                reached_at=NOV_2 + timedelta(hours=2) if n < 11 else None,
                reached_outcomes=frozenset({RecoveryOutcome.RECOVERY_SUPPORT})
                if n < 11
                else frozenset(),
            )
            for n in range(13)
        ),
        # Due in October, reached in November: reached only.
        FollowUpFacts(
            "ri-busy",
            "RI",
            1,
            due_at=before,
            attempted_at=before,
            reached_at=NOV_2,
            reached_outcomes=frozenset({RecoveryOutcome.HOUSING}),
        ),
        FollowUpFacts("ri-busy", "RI", 7, due_at=NOV_2),
    ]
    [site] = site_months(NOVEMBER, [], tasks)
    counts = site.counts
    assert (counts["follow_ups_due_30d"], counts["follow_ups_attempted_30d"]) == (13, 12)
    assert counts["follow_ups_reached_30d"] == 11
    assert counts["follow_up_outcome_recovery_support"] == 11
    assert (counts["follow_ups_due_1d"], counts["follow_ups_reached_1d"]) == (0, 1)
    assert counts["follow_up_outcome_housing"] == 1
    assert counts["follow_ups_due_other"] == 1
    assert counts["follow_ups_due_90d"] == 0


@pytest.mark.parametrize(
    ("count", "cell"),
    [(0, Cell(0)), (1, Cell(None, True)), (10, Cell(None, True)), (11, Cell(11)), (250, Cell(250))],
)
def test_counts_from_1_to_10_are_suppressed(count: int, cell: Cell) -> None:
    assert count_cell(count) == cell


def test_a_percentile_of_fewer_than_11_values_is_suppressed() -> None:
    assert percentile_cell([], 50) == Cell(None)
    assert percentile_cell([1.0] * 10, 50) == Cell(None, suppressed=True)
    assert percentile_cell([1.25] * 11, 50) == Cell(1.2)  # minutes, one decimal


def test_the_csv_has_the_documented_columns_and_reads_back() -> None:
    rows = [deidentified(site) for site in site_months(NOVEMBER, _busy_site(), [])]
    text = report_csv(rows)
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    [record] = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(record) == list(CSV_COLUMNS)
    assert (record["month"], record["state"], record["site_id"]) == ("2026-11", "RI", "ri-busy")
    assert record["referrals_received"] == "12"
    assert record["accepted_supervisor"] == "<11"
    assert record["minutes_to_bedside_p90"] == "110.0"
    assert record["expired"] == "0"


def test_a_withheld_percentile_reads_n_under_11_in_csv_never_a_time() -> None:
    """A spreadsheet must not take a withheld time for "under 11 minutes": counts read
    `<11`, percentiles `n<11` (it is the sample that is under 11)."""
    withheld = {column: Cell(None, suppressed=True) for column in FIGURE_COLUMNS}
    [record] = csv.DictReader(
        io.StringIO(report_csv([SiteRow("ri-x", "RI", NOVEMBER, withheld)]), newline="")
    )
    assert record["minutes_to_acceptance_p50"] == "n<11"
    assert record["minutes_to_first_page_p90"] == "n<11"
    assert record["referrals_received"] == "<11"
    assert {record[c] for c in FIGURE_COLUMNS if c.startswith("minutes_")} == {"n<11"}


def test_the_json_document_flags_suppressed_cells() -> None:
    rows = [deidentified(site) for site in site_months(NOVEMBER, _busy_site(), [])]
    document = report_document(NOVEMBER, rows, NOV_2, {"state": "RI"})
    assert document["month"] == "2026-11"
    assert document["columns"] == list(FIGURE_COLUMNS)
    [site] = document["sites"]
    assert site["figures"]["referrals_received"] == {"value": 12, "suppressed": False}
    assert site["figures"]["accepted_supervisor"] == {"value": None, "suppressed": True}
