"""The Reports page's bar charts: scaled to the largest figure, suppressed ones drawn as
outlines labelled <11, missing ones as n/a."""

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
        " min",
    )
    assert [row.length for row in chart.rows] == [BAR_WIDTH, BAR_WIDTH / 4, 0.0, 0.0]
    assert [row.shown for row in chart.rows] == ["40 min", "10 min", "<11", "n/a"]
    assert [row.suppressed for row in chart.rows] == [False, False, True, False]
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
