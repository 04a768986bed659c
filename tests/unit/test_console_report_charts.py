"""The Reports page's bar charts: scaled to the largest figure, suppressed counts drawn as
outlines labelled <11, withheld times as no bar with a note, missing ones as n/a."""

from handoff_console.domain.report_charts import BAR_WIDTH, Bar, bar_chart, bars_from


def test_bars_are_scaled_to_the_largest_figure_and_withheld_ones_have_no_length() -> None:
    chart = bar_chart(
        "Big ED",
        [
            Bar("received", 40.0),
            Bar("completed", 10.0),
            Bar("expired", None, True),
            Bar("p50", None),
        ],
    )
    assert [row.length for row in chart.rows] == [BAR_WIDTH, BAR_WIDTH / 4, 0.0, 0.0]
    assert [row.shown for row in chart.rows] == ["40", "10", "<11", "n/a"]
    assert [row.suppressed for row in chart.rows] == [False, False, True, False]
    assert [row.outlined for row in chart.rows] == [False, False, True, False]
    assert chart.rows[1].y > chart.rows[0].y
    assert chart.height > chart.rows[-1].y + chart.bar_height


def test_bars_read_the_reports_api_cells() -> None:
    figures: dict[str, dict[str, object]] = {
        "referrals_received": {"value": 13, "suppressed": False},
        "expired": {"value": None, "suppressed": True},
    }
    bars = bars_from(
        figures, [("referrals_received", "Received"), ("expired", "Expired"), ("x", "X")]
    )
    assert bars == [Bar("Received", 13.0), Bar("Expired", None, True), Bar("X", None, False)]
    assert bar_chart("nothing", [Bar("a", 0.0)]).rows[0].length == 0.0


def test_a_withheld_time_is_no_bar_and_a_note_never_a_time() -> None:
    """A percentile of fewer than 11 values: no bar, no outline (a full-width one read as
    the longest time), and a note that cannot be taken for minutes; times read like the
    CSV, one decimal (0.0 min, not 0 min)."""
    chart = bar_chart(
        "minutes",
        [Bar("p50", 0.0), Bar("p90", 2.5), Bar("acceptance p50", None, True)],
        " min",
    )
    assert [row.shown for row in chart.rows] == ["0.0 min", "2.5 min", "fewer than 11, withheld"]
    withheld = chart.rows[2]
    assert (withheld.length, withheld.suppressed, withheld.outlined) == (0.0, True, False)
    assert "<11" not in withheld.shown
