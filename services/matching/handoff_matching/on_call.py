"""Who is on call: the one way matching reads the computed schedule.

Per pool, the schedule (layers, rotations, overrides, temporary schedules) is computed
once into a `Timeline` over the next `horizon` and kept in this process; a lookup is
then one small query (the schedule version) and a bisection. Any change to a schedule
table bumps the version (triggers, migration 0007), so the next lookup in any replica
recomputes; so does a lookup past the timeline's end.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from handoff_matching import metrics
from handoff_matching.adapters import schedule_store
from handoff_matching.domain.layers import Timeline
from handoff_matching.domain.schedules import Interval, Pool
from handoff_platform.database import Connection

# A lookup may ask a little before the moment the timeline was computed at (another
# replica's clock, an admin's `at=`) without recomputing.
_LOOKBACK = timedelta(minutes=5)


@dataclass
class OnCall:
    """Cached per pool, invalidated by any schedule change; safe to share in one process."""

    horizon: timedelta = timedelta(hours=24)
    _timelines: dict[Pool, tuple[tuple[UUID, int], Timeline]] = field(default_factory=dict)

    async def __call__(
        self, connection: Connection, pools: Sequence[Pool], instant: datetime
    ) -> dict[Pool, frozenset[UUID]]:
        """Who is on call in each pool at the instant (UTC), overrides applied, before
        eligibility. Reads the version first, so a change committed meanwhile is never
        cached under an older version."""
        version = await schedule_store.schedule_version(connection)
        stale = [
            pool
            for pool in dict.fromkeys(pools)
            if (cached := self._timelines.get(pool)) is None
            or cached[0] != version
            or instant not in cached[1].window
        ]
        if stale:
            window = Interval(instant - _LOOKBACK, instant + self.horizon)
            schedules = await schedule_store.pool_schedules(connection, stale, window)
            for pool, schedule in schedules.items():
                self._timelines[pool] = (version, schedule.timeline(window))
            metrics.ON_CALL_RECOMPUTED.inc(len(stale))
        return {pool: self._timelines[pool][1].at(instant) for pool in pools}
