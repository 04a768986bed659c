"""The coverage timeline's picture, laid out: one lane per coach, bars where they are on
call, red where nobody is, amber where two or more overlap, and the current moment.
A coach on the rota who does not count as cover (matching's rule: inactive, certification
expired, reachable on no contact method) is drawn as a hatched red bar with the reason, and
is not cover: where only such coaches are on call, the gaps row is red too.
Pure: segments in, lanes of bars (in fractions of the window) out; the template draws them.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from uuid import UUID


@dataclass(frozen=True)
class Segment:
    """From `start` to `end` (aware datetimes), these coaches are on call; those in
    `not_covering` (a subset) do not count as cover, for the reason given."""

    start: datetime
    end: datetime
    coaches: frozenset[UUID]
    not_covering: Mapping[UUID, str] = field(default_factory=dict)

    @property
    def cover(self) -> frozenset[UUID]:
        """The coaches who count as cover."""
        return self.coaches - self.not_covering.keys()


@dataclass(frozen=True)
class Bar:
    """A stretch of the window: `left` and `width` are fractions of it (0..1)."""

    left: float
    width: float
    start: datetime
    end: datetime
    label: str  # what a reader sees on hover or in the text listing
    not_covering: str | None = None  # why this bar is not cover (None: it is)


@dataclass(frozen=True)
class Lane:
    name: str
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Tick:
    left: float
    label: str


@dataclass(frozen=True)
class Picture:
    """What the template draws: coach lanes, gaps (nobody), overlaps (two or more), the
    day ticks, and where now is (a fraction, None if outside the window)."""

    start: datetime
    end: datetime
    lanes: tuple[Lane, ...]
    gaps: tuple[Bar, ...]
    overlaps: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    now: float | None


def _joined(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Adjacent or overlapping spans joined, in start order."""
    joined: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


def lay_out(
    segments: Sequence[Segment],
    start: datetime,
    end: datetime,
    names: Mapping[UUID, str],
    zone: tzinfo,
    now: datetime,
) -> Picture:
    """Lay the segments out over [start, end). Times in labels are wall clock in `zone`.
    A coach missing from `names` is shown by id (a coach removed from the roster).
    Raises ValueError if `end` is not after `start`."""
    if end <= start:
        raise ValueError("the window must end after it starts")
    total = (end - start).total_seconds()

    def bar(span_start: datetime, span_end: datetime, what: str, why: str | None = None) -> Bar:
        left = max(span_start, start)
        right = min(span_end, end)
        return Bar(
            left=(left - start).total_seconds() / total,
            width=(right - left).total_seconds() / total,
            start=left,
            end=right,
            label=f"{what}: {_when(left, zone)} to {_when(right, zone)}"
            + (f" (not covering: {why})" if why else ""),
            not_covering=why,
        )

    inside = [s for s in segments if s.end > start and s.start < end]
    # Per coach and reason (None: cover), so a bar changes where the coach stops covering.
    per_coach: dict[UUID, dict[str | None, list[tuple[datetime, datetime]]]] = {}
    for segment in inside:
        for coach in segment.coaches:
            why = segment.not_covering.get(coach)
            per_coach.setdefault(coach, {}).setdefault(why, []).append((segment.start, segment.end))
    lanes = sorted(
        (
            Lane(
                name=(name := names.get(coach, str(coach))),
                bars=tuple(
                    sorted(
                        (
                            bar(a, b, f"{name} on call", why)
                            for why, spans in by_reason.items()
                            for a, b in _joined(spans)
                        ),
                        key=lambda b: b.start,
                    )
                ),
            )
            for coach, by_reason in per_coach.items()
        ),
        key=lambda lane: (lane.bars[0].start, lane.name),
    )
    covered = [(s.start, s.end) for s in inside if s.cover]
    gaps = [
        bar(a, b, "nobody on call") for a, b in _uncovered(_joined(covered), start, end) if b > a
    ]
    overlaps = [
        bar(a, b, "overlap")
        for a, b in _joined((s.start, s.end) for s in inside if len(s.cover) > 1)
    ]
    return Picture(
        start=start,
        end=end,
        lanes=tuple(lanes),
        gaps=tuple(gaps),
        overlaps=tuple(overlaps),
        ticks=tuple(_ticks(start, end, zone, total)),
        now=(now - start).total_seconds() / total if start <= now < end else None,
    )


def _uncovered(
    covered: list[tuple[datetime, datetime]], start: datetime, end: datetime
) -> Iterable[tuple[datetime, datetime]]:
    cursor = start
    for a, b in covered:
        if a > cursor:
            yield cursor, min(a, end)
        cursor = max(cursor, b)
    if cursor < end:
        yield cursor, end


def _ticks(start: datetime, end: datetime, zone: tzinfo, total: float) -> Iterable[Tick]:
    """One tick at each local midnight inside the window."""
    local = start.astimezone(zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    while True:
        day = (day + timedelta(days=1, hours=3)).replace(hour=0)  # DST-safe next midnight
        if day >= end:
            return
        yield Tick((day - start).total_seconds() / total, day.strftime("%a %d %b"))


def _when(instant: datetime, zone: tzinfo) -> str:
    return instant.astimezone(zone).strftime("%a %d %b %H:%M")
