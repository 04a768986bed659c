"""The throttle's view of one destination, as PostgreSQL sums it up for notify."""

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest

from handoff_notify.adapters import pages_store
from handoff_notify.domain.throttle import RecentSends
from handoff_schemas.vocabulary import Channel
from tests.integration.conftest import create_database

PHONE = "+14105550101"


@pytest.fixture
async def notify_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    database = await create_database(database_url)
    await pages_store.apply_migrations(database)
    connection = await asyncpg.connect(database)
    try:
        yield connection
    finally:
        await connection.close()


async def _offer(connection: asyncpg.Connection) -> UUID:
    offer_id = uuid4()
    await connection.execute(
        """INSERT INTO notify.offers (offer_id, referral_id, coach_id, correlation_id, site_id,
               site_short_name, urgency, tier, briefing, contacts, offered_at, expires_at,
               state)
           VALUES ($1, $2, $3, 'tests', 'md-test', 'Test ED', 'urgent', 'site', '{}', $4,
                   now(), now() + interval '5 minutes', 'open')""",
        offer_id,
        uuid4(),
        uuid4(),
        json.dumps([]),
    )
    return offer_id


async def _message(
    connection: asyncpg.Connection,
    kind: str,
    state: str,
    created_at: datetime,
    sent_at: datetime | None = None,
    sending_since: datetime | None = None,
    destination: str = PHONE,
    channel: str = "sms",
) -> None:
    await connection.execute(
        """INSERT INTO notify.messages (message_id, offer_id, kind, contact_index, channel,
               destination, state, created_at, sent_at, sending_since)
           VALUES ($1, $2, $3, 0, $9, $4, $5, $6, $7, $8)""",
        uuid4(),
        await _offer(connection),
        kind,
        destination,
        state,
        created_at,
        sent_at,
        sending_since,
        channel,
    )


async def test_recent_sends_count_what_went_and_what_is_going_within_the_window(
    notify_db: asyncpg.Connection,
) -> None:
    now: datetime = await notify_db.fetchval("SELECT now()")

    def ago(minutes: float) -> datetime:
        return now - timedelta(minutes=minutes)

    await _message(notify_db, "offer", "delivered", ago(6), sent_at=ago(5))
    # Sent, then failed by the coach's STOP: it went all the same (fresh29).
    await _message(notify_db, "offer", "failed", ago(5), sent_at=ago(4))
    await _message(notify_db, "assigned", "sent", ago(3), sent_at=ago(2))
    # In flight: claimed earlier in the same batch, not yet answered by the provider.
    await _message(notify_db, "withdrawn", "sending", ago(0), sending_since=now)
    # None of these count: too old, failed, not yet sent, or to someone else.
    await _message(notify_db, "offer", "delivered", ago(21), sent_at=ago(20))
    await _message(notify_db, "withdrawn", "failed", ago(1))
    await _message(notify_db, "offer", "pending", ago(0))
    await _message(notify_db, "offer", "sent", ago(1), sent_at=ago(1), destination="+14105550199")

    recent = await pages_store.recent_sends(notify_db, Channel.SMS, PHONE, ago(15))

    # The offer's slot frees when it leaves the window: 15 minutes after it went.
    assert recent == RecentSends(offers=2, notices=2, oldest_offer=ago(5))
    nobody = await pages_store.recent_sends(notify_db, Channel.EMAIL, PHONE, ago(15))
    assert nobody == RecentSends(offers=0, notices=0)


async def test_a_phones_texts_and_calls_count_together(notify_db: asyncpg.Connection) -> None:
    """fresh29b: with a ceiling of 3, a coach whose SMS and voice methods share a number got
    three texts, then three calls, in 11 s: the count was per channel."""
    now: datetime = await notify_db.fetchval("SELECT now()")
    for seconds_ago, channel in ((12, "sms"), (11, "sms"), (10, "voice")):
        await _message(
            notify_db,
            "offer",
            "delivered",
            now - timedelta(seconds=seconds_ago),
            sent_at=now - timedelta(seconds=seconds_ago),
            channel=channel,
        )

    window = now - timedelta(minutes=15)
    for channel in (Channel.SMS, Channel.VOICE):
        assert (await pages_store.recent_sends(notify_db, channel, PHONE, window)).offers == 3
