"""An offer's timer outlives the service: stopped before the ack timeout, started after it."""

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from handoff_devenv import KafkaCluster
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations, import_roster
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_platform.kafka import ensure_topics, make_broker
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import OfferMade, OfferWithdrawn
from tests.integration.conftest import create_database
from tests.support.kafka import read_topic, send
from tests.support.matching import SPANISH_SPEAKER, STATE_COACH, demo_roster, referral_created
from tests.support.waiting import eventually


async def _start(database: str, kafka: KafkaCluster) -> MatchingRuntime:
    runtime = await MatchingRuntime.start(
        MatchingSettings(database_url=database, kafka_bootstrap_servers=kafka.bootstrap_servers)
    )

    async def connected() -> bool:
        return runtime.kafka_connected.is_set()

    await eventually(connected, within=60, what="matching on Kafka")
    return runtime


async def test_an_offer_that_expired_while_matching_was_down_escalates_once_on_restart(
    database_url: str, own_kafka: KafkaCluster
) -> None:
    database = await create_database(database_url)
    await apply_migrations(database)
    await ensure_topics(own_kafka.bootstrap_servers)
    site_id = f"md-{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(database)
    try:
        await import_roster(connection, demo_roster(site_id))
        await dispatch_store.put_site_settings(
            connection,
            site_id,
            # Nobody pages here: the offer's timer is its page deadline (not_contacted), long
            # enough that matching is surely stopped before it falls due on a loaded runner.
            DispatchSettings(ack_timeout=timedelta(seconds=2), page_deadline=timedelta(seconds=10)),
            False,
            (),
        )
    finally:
        await connection.close()

    referral = referral_created(site_id)
    key = str(referral.referral_id).encode()

    async def dispatched() -> list[object]:
        """The referral's events, each once: a relay stopped between publishing a batch and
        deleting it publishes it again on restart, under the same event ids, which every
        consumer skips."""
        records = await read_topic(own_kafka.bootstrap_servers, Topic.DISPATCH)
        events = [decode_event(r.value) for r in records if r.key == key]
        return [e.data for e in {e.id: e for e in events}.values()]

    runtime = await _start(database, own_kafka)
    broker = make_broker(own_kafka.bootstrap_servers, client_id="stand-in-for-referral")
    async with broker:
        await send(broker, referral)
        [offer] = await eventually(dispatched, within=30, what="the first offer")
    assert isinstance(offer, OfferMade)
    assert offer.coach_id == SPANISH_SPEAKER
    await runtime.stop()

    async def past_due() -> bool:
        return datetime.now(UTC) > offer.expires_at + timedelta(seconds=1)

    await eventually(past_due, within=30, what="the ack timeout to pass with matching down")
    assert len(await dispatched()) == 1  # nothing happened while it was down

    restarted = await _start(database, own_kafka)
    try:

        async def escalated() -> list[object] | None:
            events = await dispatched()
            return events if len(events) >= 4 else None

        events = await eventually(escalated, within=30, what="the escalation after restart")
    finally:
        await restarted.stop()
    # The restarted service may publish the state coach's offer expiring too (the ack
    # timeout is 2 s); what matters is the order, and that the first offer ended once.
    assert [type(e).__name__ for e in events[:4]] == [
        "OfferMade",
        "OfferWithdrawn",
        "ReferralEscalated",
        "OfferMade",
    ]
    withdrawn, next_offer = events[1], events[3]
    assert isinstance(withdrawn, OfferWithdrawn)
    assert withdrawn.offer_id == offer.offer_id
    ended = [e for e in events if isinstance(e, OfferWithdrawn) and e.offer_id == offer.offer_id]
    assert len(ended) == 1
    assert isinstance(next_offer, OfferMade)
    assert next_offer.coach_id == STATE_COACH
