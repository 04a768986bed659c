"""Notify's transactions take an offer's lock before its messages' (issue 13, decision 0021).

The operator saw DeadlockDetectedError in notify: the delivery worker claimed a due page
(locking its message row), then wrote its reply code, whose foreign key waits for the
offer's row; meanwhile the offer's withdrawal held that row and waited to cancel the page
still pending. Here that interleaving is forced on a real PostgreSQL: the withdrawal's
transaction holds the offer while the worker claims, then cancels the page. Before the fix
PostgreSQL broke the cycle by killing one of them; now the claim leaves that page for the
next cycle and neither waits for the other."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest
from pydantic import SecretStr

from handoff_notify import SCHEMA
from handoff_notify.adapters import pages_store as store
from handoff_notify.service import NotifyService
from handoff_notify.settings import Delivery, NotifySettings
from handoff_platform.outbox import Outbox
from handoff_platform.timers import Timers
from handoff_schemas.envelope import Envelope
from tests.integration.conftest import create_database
from tests.support.fake_twilio import new_phone
from tests.support.notify import offer_made, sms
from tests.support.waiting import eventually


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[NotifyService]:
    url = await create_database(database_url)
    await store.apply_migrations(url)
    settings = NotifySettings(
        database_url=url,
        notify_delivery=Delivery.SANDBOX,
        notify_link_secret=SecretStr("lock-order-test-secret"),
    )
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield NotifyService(pool, Outbox(SCHEMA), Timers(SCHEMA), settings)
    finally:
        await pool.close()


async def _waiting_for_a_lock(connection: asyncpg.Connection) -> bool:
    """Whether another backend of this database waits for a row or advisory lock."""
    return bool(
        await connection.fetchval(
            """SELECT count(*) > 0 FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'
                 AND pid <> pg_backend_pid()"""
        )
    )


async def test_a_claim_and_a_withdrawal_of_the_same_offer_do_not_deadlock(
    service: NotifyService,
) -> None:
    made = offer_made(sms(new_phone()))
    async with service.pool.acquire() as connection, connection.transaction():
        await service.offer_made(
            connection, Envelope.wrap(made, source="/handoff/matching", correlation_id=str(uuid4()))
        )
    withdrawal = await asyncpg.connect(service.settings.database_url)
    observer = await asyncpg.connect(service.settings.database_url)
    claim: asyncio.Task[object] | None = None
    try:
        async with withdrawal.transaction():
            # The withdrawal's first step: the offer's row, as `offer_withdrawn` locks it.
            assert await store.offer(withdrawal, made.offer_id, lock=True) is not None
            claim = asyncio.create_task(service.claim_due(10))

            async def claimed_or_stuck() -> bool:
                return claim.done() or await _waiting_for_a_lock(observer)

            await eventually(claimed_or_stuck, within=10, what="the claim to finish or wait")
            # Its next step: drop the page still pending. Before the fix this waited for the
            # claim's message lock while the claim waited for the offer: a deadlock.
            await asyncio.wait_for(store.cancel_pending(withdrawal, made.offer_id), 10)
        claimed = await asyncio.wait_for(claim, 10)
    finally:
        if claim is not None and not claim.done():
            claim.cancel()
            with contextlib.suppress(BaseException):
                await claim
        await withdrawal.close()
        await observer.close()

    assert claimed == []  # its offer was held: left for the next cycle, not waited for
    [message] = await _messages(service, made.offer_id)
    assert message == "cancelled"
    assert await service.claim_due(10) == []


async def test_a_page_whose_offer_nobody_holds_is_claimed_at_once(service: NotifyService) -> None:
    made = offer_made(sms(new_phone()))
    async with service.pool.acquire() as connection, connection.transaction():
        await service.offer_made(
            connection, Envelope.wrap(made, source="/handoff/matching", correlation_id=str(uuid4()))
        )

    [outgoing] = await service.claim_due(10)

    assert outgoing.destination == made.contacts[0].destination
    assert await _messages(service, made.offer_id) == ["sending"]


async def _messages(service: NotifyService, offer_id: object) -> list[str]:
    async with service.pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT state FROM notify.messages WHERE offer_id = $1 ORDER BY created_at", offer_id
        )
    return [row["state"] for row in rows]
