"""Matching follows ReferralUpdated (the HL7 intake's bed moves, ADT^A08/A02) on real Kafka and
PostgreSQL: the offers made after the move carry the new location."""

from datetime import UTC, datetime

from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY

from handoff_devenv import KafkaCluster
from handoff_matching import CONSUMER_GROUP
from handoff_matching.app import MatchingRuntime
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_schemas.events import OfferMade, ReferralUpdated
from handoff_schemas.vocabulary import CoachResponse
from tests.integration.test_matching_flow import (  # the same matching and broker fixtures
    Dispatched,
    _answer,
    _site,
    hospital_and_notify,
    matching,
)
from tests.support.kafka import send
from tests.support.matching import referral_created
from tests.support.waiting import eventually

FIXTURES = (hospital_and_notify, matching)


async def test_a_bed_move_reaches_the_next_coach_offered(
    matching: MatchingRuntime,
    matching_database: str,
    own_kafka: KafkaCluster,
    hospital_and_notify: KafkaBroker,
) -> None:
    site_id = await _site(matching_database, DispatchSettings())
    created = await send(
        hospital_and_notify, referral_created(site_id, language="en", interpreter_needed=False)
    )
    referral_id = created.data.referral_id
    dispatched = Dispatched(own_kafka.bootstrap_servers, referral_id)
    [first] = await dispatched.until(1, "the first offer")
    assert isinstance(first, OfferMade)
    assert first.briefing.location == "ED bay 4"

    await send(
        hospital_and_notify,
        ReferralUpdated(referral_id=referral_id, location="ED 12 B", updated_at=datetime.now(UTC)),
    )

    async def briefing_location() -> str | None:
        location: str | None = await matching.pipeline.pool.fetchval(
            """SELECT document -> 'facts' -> 'briefing' ->> 'location'
               FROM matching.dispatches WHERE referral_id = $1""",
            referral_id,
        )
        return location if location == "ED 12 B" else None

    await eventually(briefing_location, within=30, what="the dispatch's new location")
    await _answer(hospital_and_notify, first, CoachResponse.DECLINED)

    async def second_offer() -> OfferMade | None:
        offers = [e for e in await dispatched.events() if isinstance(e, OfferMade)]
        return offers[1] if len(offers) > 1 else None

    second = await eventually(second_offer, within=30, what="the next offer")
    assert second.coach_id != first.coach_id
    assert second.briefing.location == "ED 12 B"
    assert second.briefing.callback_phone == first.briefing.callback_phone

    def consumed(outcome: str) -> float:
        labels = {"group": CONSUMER_GROUP, "event_type": ReferralUpdated.event_type}
        value = REGISTRY.get_sample_value(
            "handoff_events_consumed_total", labels | {"outcome": outcome}
        )
        return value or 0.0

    assert consumed("processed") >= 1  # by its handler, no longer dropped as unknown
    assert consumed("ignored") == 0
