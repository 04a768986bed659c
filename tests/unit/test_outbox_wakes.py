"""The relay is woken by commits that queued events, and only by them (issue 17: notify's
relay ran a query for each of the three events a referral brings it, finding nothing in
two of three). Which transaction queued is known per asyncio task."""

import asyncio
from typing import Any, cast
from unittest.mock import AsyncMock, MagicMock

from handoff_platform.database import Connection
from handoff_platform.outbox import Outbox
from handoff_schemas import Envelope


def outbox_counting_wakes() -> tuple[Outbox, list[None]]:
    outbox = Outbox("unit")
    wakes: list[None] = []
    outbox.wake_local_relay = lambda: wakes.append(None)
    return outbox, wakes


def an_event() -> Envelope[Any]:
    """Anything `Outbox.row` can read: put's INSERT goes to a mock connection."""
    event = MagicMock()
    event.topic.value, event.subject, event.type = "handoff.dispatch", "ref-1", "OfferMade"
    event.model_dump_json.return_value = "{}"
    return cast(Envelope[Any], event)


async def test_a_commit_that_queued_nothing_does_not_wake_the_relay() -> None:
    outbox, wakes = outbox_counting_wakes()
    outbox.committed()
    assert wakes == []


async def test_a_commit_that_queued_events_wakes_the_relay_once() -> None:
    outbox, wakes = outbox_counting_wakes()
    connection = cast(Connection, AsyncMock())
    await outbox.put(connection, an_event())
    outbox.committed()
    outbox.committed()  # the task's next transaction queued nothing
    assert len(wakes) == 1


async def test_a_commit_that_queued_in_a_statement_wakes_the_relay() -> None:
    outbox, wakes = outbox_counting_wakes()
    outbox.queue_for_each("new_rows", first_parameter=3)
    outbox.committed()
    assert len(wakes) == 1


async def test_another_tasks_queued_events_do_not_count_as_this_ones() -> None:
    """Two handlers side by side: the one that queued wakes the relay after its own commit;
    the other's commit, which queued nothing, does not (nor does it use up the wake-up)."""
    outbox, wakes = outbox_counting_wakes()
    queued, other_committed = asyncio.Event(), asyncio.Event()

    async def queuing() -> None:
        await outbox.put(cast(Connection, AsyncMock()), an_event())
        queued.set()
        await other_committed.wait()
        outbox.committed()

    async def not_queuing() -> None:
        await queued.wait()
        outbox.committed()
        other_committed.set()

    await asyncio.gather(queuing(), not_queuing())
    assert len(wakes) == 1


async def test_without_a_local_relay_the_commit_is_announced() -> None:
    outbox = Outbox("unit")
    outbox.committed()
    assert not outbox._announcement_due.is_set()
    await outbox.put(cast(Connection, AsyncMock()), an_event())
    outbox.committed()
    assert outbox._announcement_due.is_set()
