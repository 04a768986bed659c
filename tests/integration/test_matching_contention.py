"""What one site's referrals no longer wait on each other for, against real PostgreSQL
(issue 17): the site's facts are written only when they change, so a referral from a
known site takes no lock on the site's row; and the waiting line, woken after nearly
every cancel or answer, looks for follow-ups whose coach left the roster only when the
roster changed or on its sweep, and tries waiting ones again when the roster changed."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from handoff_matching.adapters.roster_store import remember_site, tell_line
from handoff_matching.service import MatchingService, WaitingLine
from handoff_platform.outbox import Outbox
from handoff_platform.timers import Timer, Timers
from tests.support.waiting import eventually

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
async def connections(matching_database: str) -> AsyncIterator[list[asyncpg.Connection]]:
    opened = [await asyncpg.connect(matching_database) for _ in range(2)]
    try:
        yield opened
    finally:
        for connection in opened:
            await connection.close()


async def test_a_referral_from_a_known_site_does_not_wait_on_the_sites_row(
    connections: list[asyncpg.Connection],
) -> None:
    other_referral, this_referral = connections
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    await remember_site(this_referral, site_id, "Mercy ED", "MD", "America/New_York", T0)

    # Another referral of the site is mid-transaction and holds the site's row.
    async with other_referral.transaction():
        await other_referral.execute(
            "SELECT FROM matching.site_facts WHERE site_id = $1 FOR UPDATE", site_id
        )
        async with this_referral.transaction():
            await this_referral.execute("SET LOCAL lock_timeout = '1s'")
            # Before issue 17's change this waited for the other's commit (and here: failed
            # with LockNotAvailableError after 1 s).
            await remember_site(
                this_referral, site_id, "Mercy ED", "MD", "America/New_York", T0 + MINUTE
            )

    facts = await this_referral.fetchrow(
        "SELECT short_name, state, changed_at FROM matching.site_facts WHERE site_id = $1",
        site_id,
    )
    assert facts is not None
    assert facts["short_name"] == "Mercy ED"

    # Facts that changed are written, and when they changed is kept.
    await remember_site(
        this_referral, site_id, "Mercy West ED", "MD", "America/New_York", T0 + 2 * MINUTE
    )
    changed = await this_referral.fetchrow(
        "SELECT short_name, changed_at FROM matching.site_facts WHERE site_id = $1", site_id
    )
    assert changed is not None
    assert changed["short_name"] == "Mercy West ED"
    assert changed["changed_at"] > facts["changed_at"]


async def test_facts_stated_before_the_kept_ones_do_not_replace_them(
    connections: list[asyncpg.Connection],
) -> None:
    """Found testing `site update`: a referral received before the change and consumed after
    its SiteRegistered (another topic) put the old short name back."""
    connection, _ = connections
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    await remember_site(connection, site_id, "Old ED", "MD", "America/New_York", T0)
    await remember_site(connection, site_id, "New ED", "DE", "America/New_York", T0 + MINUTE)
    await remember_site(
        connection, site_id, "Old ED", "MD", "America/New_York", T0 + timedelta(seconds=1)
    )

    kept = await connection.fetchrow(
        "SELECT short_name, state, facts_at FROM matching.site_facts WHERE site_id = $1", site_id
    )
    assert kept is not None
    assert (kept["short_name"], kept["state"], kept["facts_at"]) == ("New ED", "DE", T0 + MINUTE)


class CountingService:
    """Counts the line's passes: serving the line, looking for orphaned follow-ups, and
    trying waiting follow-ups again."""

    def __init__(self) -> None:
        self.passes = 0
        self.orphan_searches = 0
        self.waiting_retries = 0

    async def serve_line(self, _pool: asyncpg.Pool) -> int:
        self.passes += 1
        return 0

    async def reassign_orphaned_follow_ups(self, _pool: asyncpg.Pool) -> int:
        self.orphan_searches += 1
        return 0

    async def retry_waiting_follow_ups(self, _pool: asyncpg.Pool) -> int:
        self.waiting_retries += 1
        return 0


@contextlib.asynccontextmanager
async def running_line(
    database_url: str, sweep_every: float
) -> AsyncIterator[tuple[CountingService, WaitingLine]]:
    """A waiting line, running, over a service that counts its passes."""
    service = CountingService()
    line = WaitingLine(
        cast(MatchingService, service), cast(asyncpg.Pool, None), database_url, sweep_every
    )
    running = asyncio.create_task(line.run())
    try:
        yield service, line
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_capacity_freed_serves_the_line_without_searching_for_orphans(
    matching_database: str, connections: list[asyncpg.Connection]
) -> None:
    async with running_line(matching_database, sweep_every=600.0) as (service, line):
        await eventually(
            lambda: _true(service.waiting_retries == 1), within=10, what="the first pass"
        )
        assert (service.passes, service.orphan_searches) == (1, 1)

        # Capacity freed in this process (a cancel, a decline): the line is served again,
        # but no follow-up can have lost its coach.
        for passes in (2, 3):
            line.wake()
            await eventually(
                lambda passes=passes: _true(service.passes == passes),  # type: ignore[misc]
                within=10,
                what=f"pass {passes}",
            )
        assert (service.orphan_searches, service.waiting_retries) == (1, 1)

        # The roster changed (any replica's import or admin API): all three, and the
        # follow-up attempts nobody could take are tried again (fresh28's finding 5).
        await tell_line(connections[0])
        await eventually(
            lambda: _true(service.waiting_retries == 2), within=10, what="the roster's NOTIFY"
        )
        assert (service.passes, service.orphan_searches) == (4, 2)


async def test_the_sweep_still_searches_for_orphans(matching_database: str) -> None:
    """A NOTIFY lost to a crash is caught by the sweep."""
    async with running_line(matching_database, sweep_every=0.2) as (service, _):
        await eventually(
            lambda: _true(service.orphan_searches >= 3), within=10, what="three sweeps"
        )
        # A sweep brings no waiting follow-up forward (the first pass did, at start-up):
        # their retries keep their 15 minutes.
        assert service.waiting_retries == 1


async def test_a_new_listener_acts_as_if_it_had_heard_a_notify(
    matching_database: str, connections: list[asyncpg.Connection]
) -> None:
    """A NOTIFY sent while the line's listening connection was down is lost: the line
    reconnects at its next pass and does what a NOTIFY would have made it do."""
    async with running_line(matching_database, sweep_every=600.0) as (service, line):
        await eventually(
            lambda: _true(service.waiting_retries == 1), within=10, what="the first pass"
        )
        listening = await connections[0].fetchval(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND query LIKE 'LISTEN %'"""
        )
        assert listening == 1

        async def noticed() -> bool:
            # Any pass after the client has read its connection's end (capacity freed,
            # here) finds the listener closed and opens another.
            line.wake()
            return service.waiting_retries == 2

        await eventually(noticed, within=10, what="a pass after the listener's end")
        assert service.orphan_searches == 2


async def _true(value: bool) -> bool:
    return value


async def test_timer_handlers_do_not_wait_for_a_row_another_transaction_holds(
    connections: list[asyncpg.Connection],
) -> None:
    """The chaos suite's deadlock (issue 17, stop 31): an offer's expiry timer firing while
    the coach's answer was being handled. The timer loop held the timer's row and waited
    for the dispatch's; the answer held the dispatch's and waited to cancel or move the
    timer. Each of matching's timer handlers now takes its row with NOWAIT, so the loop
    lets go at once and fires the timer again (handoff_platform.timers)."""
    answering, timer_loop = connections
    service = MatchingService(Outbox("matching"), Timers("matching"))
    referral_id, task_id = uuid.uuid4(), uuid.uuid4()
    await answering.execute(
        """INSERT INTO matching.dispatches (referral_id, state, document)
           VALUES ($1, 'offering', '{}')""",
        referral_id,
    )
    await answering.execute(
        """INSERT INTO matching.follow_ups (task_id, attempt, referral_id, correlation_id,
               site_id, window_days, visiting_coach, due_at, window_ends_at, state)
           VALUES ($1, 1, $2, 'c', 'md-x', 30, $3, now(), now() + interval '30 days', 'waiting')""",
        task_id,
        referral_id,
        uuid.uuid4(),
    )
    on_dispatch: dict[str, Any] = {"referral_id": str(referral_id), "offer_id": str(uuid.uuid4())}
    handlers: dict[Callable[[asyncpg.Connection, Timer], Awaitable[None]], dict[str, Any]] = {
        service.offer_expired: on_dispatch,
        service.give_up: on_dispatch,
        service.visit_limit_passed: on_dispatch,
        service.arrival_deadline_passed: on_dispatch,
        service.follow_up_retry: {"task_id": str(task_id), "attempt": 1},
    }
    async with answering.transaction():
        await answering.execute(
            "SELECT FROM matching.dispatches WHERE referral_id = $1 FOR UPDATE", referral_id
        )
        await answering.execute(
            "SELECT FROM matching.follow_ups WHERE task_id = $1 FOR UPDATE", task_id
        )
        for handler, payload in handlers.items():
            timer = Timer(uuid.uuid4(), "any", T0, payload, 0)
            with pytest.raises(asyncpg.LockNotAvailableError):  # not QueryCanceledError
                await _fire(timer_loop, handler, timer)


async def _fire(
    connection: asyncpg.Connection,
    handler: Callable[[asyncpg.Connection, Timer], Awaitable[None]],
    timer: Timer,
) -> None:
    """`handler` in a transaction of its own, as the timer loop runs it; a wait for a lock
    is cut off after 5 s (QueryCanceledError), where NOWAIT answers at once."""
    async with connection.transaction():
        await connection.execute("SET LOCAL statement_timeout = '5s'")
        await handler(connection, timer)
