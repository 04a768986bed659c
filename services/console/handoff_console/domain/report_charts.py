"""Charts of the program reports page: bar geometry, for inline SVG; pure, no I/O.

A few horizontal bars per chart, laid out here and drawn by the page's template (Jinja
escapes every label), rather than with a chart library: the page needs bars and labels
only, and renders without JavaScript like every console page, as the coverage timeline
does (docs/decisions/0028). A suppressed count (the small-cell rule) is drawn as a dashed
outline and the label `<11`, never as a guess; a withheld time (a percentile of fewer than
11 values) is drawn as no bar at all, with the note `fewer than 11, withheld`, so that it
cannot be read as a time, let alone the longest one.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BAR_HEIGHT = 18
GAP = 6
LABEL_WIDTH = 200
BAR_WIDTH = 340
VALUE_WIDTH = 70
NO_VALUE = "n/a"
SUPPRESSED_COUNT = "<11"
"""A withheld count, as the CSV writes it."""
SUPPRESSED_TIME = "n<11"
"""A withheld percentile, as the CSV writes it: not a time (it is the sample that is small)."""
WITHHELD_TIME_NOTE = "fewer than 11, withheld"
"""A withheld percentile's text in a chart."""


@dataclass(frozen=True)
class Bar:
    """One figure: its label, and its value (None: no value; `suppressed`: withheld)."""

    label: str
    value: float | None
    suppressed: bool = False


@dataclass(frozen=True)
class BarRow:
    """One bar as drawn: `y` its top, `text_y` its labels' baseline, `length` its width
    (0 for no value or a suppressed one), `shown` the text beside it, `outlined` whether
    a suppressed count's dashed outline is drawn (never for a withheld time)."""

    label: str
    y: int
    text_y: float
    length: float
    shown: str
    suppressed: bool
    outlined: bool = False


@dataclass(frozen=True)
class Chart:
    """A bar chart's size (SVG user units), its accessible title and its rows."""

    title: str
    width: int
    height: int
    label_width: int
    bar_width: int
    bar_height: int
    rows: list[BarRow]


def bars_from(
    figures: Mapping[str, Mapping[str, Any]], names: Sequence[tuple[str, str]]
) -> list[Bar]:
    """Bars for the report's figures (`{"value": …, "suppressed": …}` per name, as the
    reports API gives them), labelled by `names` ((figure, label) pairs)."""
    bars = []
    for name, label in names:
        cell = figures.get(name, {})
        value = cell.get("value")
        bars.append(
            Bar(label, float(value) if value is not None else None, bool(cell.get("suppressed")))
        )
    return bars


def bar_chart(title: str, bars: Sequence[Bar], unit: str = "") -> Chart:
    """Horizontal bars scaled to the largest value, each with its label and its value
    (`n/a` for none). Without `unit`, counts: whole numbers, a suppressed one `<11` in a
    dashed outline. With `unit` (e.g. " min"), times: one decimal then `unit` (`0.0 min`,
    as the CSV), a withheld one no bar and `fewer than 11, withheld`."""
    largest = max((bar.value for bar in bars if bar.value is not None), default=0.0)
    rows = []
    for index, bar in enumerate(bars):
        y = GAP + index * (BAR_HEIGHT + GAP)
        if bar.suppressed:
            length, shown = 0.0, WITHHELD_TIME_NOTE if unit else SUPPRESSED_COUNT
        elif bar.value is None:
            length, shown = 0.0, NO_VALUE
        else:
            length = round(BAR_WIDTH * bar.value / largest, 1) if largest else 0.0
            shown = f"{bar.value:.1f}{unit}" if unit else f"{bar.value:g}"
        outlined = bar.suppressed and not unit
        rows.append(
            BarRow(bar.label, y, y + BAR_HEIGHT * 0.7, length, shown, bar.suppressed, outlined)
        )
    return Chart(
        title,
        LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH,
        len(bars) * (BAR_HEIGHT + GAP) + GAP,
        LABEL_WIDTH,
        BAR_WIDTH,
        BAR_HEIGHT,
        rows,
    )
