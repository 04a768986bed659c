"""The coverage timeline's layout: lanes per coach, gaps, overlaps, now, local-day ticks."""

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from handoff_console.domain.roster import certification_warning
from handoff_console.domain.timeline import Segment, lay_out

NEW_YORK = ZoneInfo("America/New_York")
START = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)  # midnight in New York
END = START + timedelta(days=2)
ANA, BEN = uuid.uuid4(), uuid.uuid4()
NAMES = {ANA: "Ana", BEN: "Ben"}


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def test_lanes_gaps_and_overlaps() -> None:
    segments = [
        Segment(at(0), at(8), frozenset({ANA})),
        Segment(at(8), at(10), frozenset({ANA, BEN})),
        Segment(at(10), at(20), frozenset({BEN})),
        Segment(at(20), at(30), frozenset()),
        Segment(at(30), at(48), frozenset({ANA})),
    ]
    picture = lay_out(segments, START, END, NAMES, NEW_YORK, at(12))

    assert [lane.name for lane in picture.lanes] == ["Ana", "Ben"]
    ana, ben = picture.lanes
    assert [(b.start, b.end) for b in ana.bars] == [(at(0), at(10)), (at(30), at(48))]
    assert [(b.start, b.end) for b in ben.bars] == [(at(8), at(20))]
    assert [(g.start, g.end) for g in picture.gaps] == [(at(20), at(30))]
    assert picture.gaps[0].label == "nobody on call: Tue 01 Dec 20:00 to Wed 02 Dec 06:00"
    assert [(o.start, o.end) for o in picture.overlaps] == [(at(8), at(10))]
    assert picture.now == pytest.approx(12 / 48)
    assert ana.bars[0].left == 0
    assert ana.bars[0].width == pytest.approx(10 / 48)


def test_a_window_with_nobody_is_one_gap_and_no_lanes() -> None:
    picture = lay_out([], START, END, NAMES, NEW_YORK, START)
    assert picture.lanes == ()
    assert [(g.start, g.end) for g in picture.gaps] == [(START, END)]
    assert picture.now == 0


def test_segments_outside_the_window_are_clipped_and_now_outside_is_not_drawn() -> None:
    segments = [Segment(at(-5), at(50), frozenset({ANA}))]
    picture = lay_out(segments, START, END, NAMES, NEW_YORK, at(60))
    (bar,) = picture.lanes[0].bars
    assert (bar.start, bar.end, bar.left, bar.width) == (START, END, 0, 1)
    assert picture.gaps == ()
    assert picture.now is None


def test_a_coach_no_longer_on_the_roster_is_shown_by_id() -> None:
    stranger = uuid.uuid4()
    picture = lay_out([Segment(START, END, frozenset({stranger}))], START, END, {}, NEW_YORK, START)
    assert picture.lanes[0].name == str(stranger)


def test_day_ticks_fall_on_local_midnights_across_the_dst_change() -> None:
    start = datetime(2026, 10, 31, 4, 0, tzinfo=UTC)  # midnight EDT, Saturday
    picture = lay_out([], start, start + timedelta(days=3), NAMES, NEW_YORK, start)
    # 72 h from Saturday's midnight ends at 23:00 on Monday: the night of the change has 25 h.
    assert [t.label for t in picture.ticks] == ["Sun 01 Nov", "Mon 02 Nov"]
    assert [round(t.left * 72) for t in picture.ticks] == [24, 49]


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        lay_out([], START, START, NAMES, NEW_YORK, START)


@pytest.mark.parametrize(
    ("expires_on", "warning"),
    [
        ("2026-11-30", "expired"),
        ("2026-12-01", "expired"),
        ("2026-12-31", "expires soon"),
        ("2027-01-01", None),
    ],
)
def test_certification_warnings(expires_on: str, warning: str | None) -> None:
    from datetime import date

    assert certification_warning(date.fromisoformat(expires_on), date(2026, 12, 1)) == warning


def test_a_coach_who_does_not_count_as_cover_is_a_hatched_bar_and_a_gap() -> None:
    """Ana on call from 8 to 20, her certification expired from 10: her bar is cut there,
    the rest is marked not covering with the reason, and the gaps row is red from 10."""
    expired = {ANA: "certification expired"}
    segments = [
        Segment(at(0), at(8), frozenset({BEN})),
        Segment(at(8), at(10), frozenset({ANA, BEN})),
        Segment(at(10), at(12), frozenset({ANA, BEN}), expired),
        Segment(at(12), at(20), frozenset({ANA}), expired),
        Segment(at(20), at(48), frozenset({BEN})),
    ]
    picture = lay_out(segments, START, END, NAMES, NEW_YORK, at(1))

    ana = next(lane for lane in picture.lanes if lane.name == "Ana")
    assert [(b.start, b.end, b.not_covering) for b in ana.bars] == [
        (at(8), at(10), None),
        (at(10), at(20), "certification expired"),
    ]
    assert ana.bars[1].label == (
        "Ana on call: Tue 01 Dec 10:00 to Tue 01 Dec 20:00 (not covering: certification expired)"
    )
    assert [(g.start, g.end) for g in picture.gaps] == [(at(12), at(20))]
    assert [(o.start, o.end) for o in picture.overlaps] == [(at(8), at(10))]
