"""The referral service follows matching's and notify's events into the hospital's timeline."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from handoff_platform.kafka import make_broker
from handoff_platform.outbox import EVENT_TYPE_HEADER
from handoff_referral.app import ReferralRuntime
from handoff_schemas import dead_letter_topic
from handoff_schemas.events import (
    CoachAssigned,
    OfferWithdrawn,
    ReferralEscalated,
    ReferralExpired,
    ReferralUnassigned,
    ReferralWaiting,
)
from handoff_schemas.vocabulary import (
    CoachResponse,
    ResponseVia,
    UnassignedReason,
    WaitingReason,
    WithdrawReason,
)
from tests.integration.conftest import Hospital, HospitalFactory
from tests.support.events import coach_assigned, coach_responded, offer_made
from tests.support.kafka import read_topic, send
from tests.support.patients import referral_body
from tests.support.waiting import eventually


@pytest.fixture
async def other_services(kafka_topics: str) -> AsyncIterator[KafkaBroker]:
    """A producer standing in for matching and notify, which publish these events."""
    broker = make_broker(kafka_topics, client_id="stand-in-for-matching-and-notify")
    async with broker:
        yield broker


async def _new_referral(ed: Hospital) -> uuid.UUID:
    response = await ed.client.post(
        "/v1/referrals", json=referral_body(f"ED-{uuid.uuid4().hex[:8]}")
    )
    return uuid.UUID(response.json()["id"])


async def _timeline_is(
    ed: Hospital, referral_id: uuid.UUID, statuses: list[str], status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = (await ed.client.get(f"/v1/referrals/{referral_id}")).json()
        steps = [step["status"] for step in body["timeline"]]
        return body if steps == statuses and body["status"] == status else None

    return await eventually(probe, within=30, what=f"timeline {statuses} and status {status}")


async def test_offer_acceptance_arrival_and_completion_fill_the_timeline(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    coach_id, offer_id = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    offer = await send(
        other_services, offer_made(referral_id, coach_id=coach_id, offer_id=offer_id)
    )
    await _timeline_is(ed, referral_id, ["received", "offered"], "offered")

    assigned = coach_assigned(referral_id, offer_id, coach_id, now + timedelta(seconds=1))
    await send(other_services, assigned)
    await _timeline_is(ed, referral_id, ["received", "offered", "accepted"], "accepted")

    for response, second in ((CoachResponse.ARRIVED, 2), (CoachResponse.COMPLETED, 3)):
        at = now + timedelta(seconds=second)
        await send(other_services, coach_responded(referral_id, offer_id, coach_id, response, at))
    body = await _timeline_is(
        ed, referral_id, ["received", "offered", "accepted", "arrived", "completed"], "completed"
    )
    assert body["timeline"][2]["at"].startswith(
        (now + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    )

    # The same OfferMade again (same event id) and a second offer change nothing now.
    await send(other_services, offer.data, event_id=offer.id)
    await send(other_services, offer_made(referral_id))
    cancel = await ed.client.post(
        f"/v1/referrals/{referral_id}/cancel", json={"reason": "patient_left"}
    )
    assert cancel.status_code == 409
    assert cancel.json()["error"]["code"] == "referral_closed"


async def test_a_broadcast_is_one_offered_step_and_the_acceptance_names_coach_and_time(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    coaches = [uuid.uuid4() for _ in range(3)]
    batch = uuid.uuid4()
    offers = [
        offer_made(referral_id, coach_id=coach).model_copy(
            update={"batch_id": batch, "batch_size": 3}
        )
        for coach in coaches
    ]
    for offer in offers:
        await send(other_services, offer)
    # A second batch (the first one all declined) is a step of its own.
    await send(
        other_services,
        offer_made(referral_id).model_copy(update={"batch_id": uuid.uuid4(), "batch_size": 1}),
    )
    await _timeline_is(ed, referral_id, ["received", "offered", "offered"], "offered")
    at = datetime.now(UTC) + timedelta(seconds=1)
    assigned = coach_assigned(referral_id, offers[1].offer_id, coaches[1], at)
    await send(other_services, assigned)

    body = await _timeline_is(
        ed, referral_id, ["received", "offered", "offered", "accepted"], "accepted"
    )
    received, broadcast, single, accepted = body["timeline"]
    assert (broadcast["coaches"], single["coaches"]) == (3, 1)
    assert accepted["coach_id"] == str(coaches[1])
    assert datetime.fromisoformat(accepted["arrive_by"]) == assigned.arrival_deadline
    assert received["coaches"] is None
    assert accepted["coaches"] is None
    schema = (await ed.client.get("/openapi.json")).json()["components"]["schemas"]
    assert {"coaches", "coach_id", "arrive_by"} <= set(schema["TimelineStepOut"]["properties"])


async def test_once_the_coach_arrived_a_cancel_is_refused_and_the_visit_goes_on(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    coach_id, offer_id = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    await send(other_services, coach_assigned(referral_id, offer_id, coach_id, now))
    at = now + timedelta(seconds=1)
    await send(
        other_services,
        coach_responded(referral_id, offer_id, coach_id, CoachResponse.ARRIVED, at),
    )
    await _timeline_is(ed, referral_id, ["received", "accepted", "arrived"], "arrived")
    cancel = await ed.client.post(
        f"/v1/referrals/{referral_id}/cancel", json={"reason": "no_longer_needed"}
    )
    assert cancel.status_code == 409
    assert "arrived" in cancel.json()["error"]["message"]
    body = (await ed.client.get(f"/v1/referrals/{referral_id}")).json()
    assert body["status"] == "arrived"


async def test_nobody_accepting_shows_unassigned(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    await send(other_services, offer_made(referral_id))
    await send(
        other_services,
        ReferralUnassigned(
            referral_id=referral_id,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=datetime.now(UTC) + timedelta(seconds=1),
        ),
    )
    await _timeline_is(ed, referral_id, ["received", "offered", "unassigned"], "unassigned")


async def _listed(ed: Hospital, status: str) -> set[str]:
    response = await ed.client.get("/v1/referrals", params={"status": status, "limit": 200})
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def _assigned(referral_id: uuid.UUID, offer_id: uuid.UUID, at: datetime) -> CoachAssigned:
    return coach_assigned(referral_id, offer_id, uuid.uuid4(), at)


async def test_a_referral_waits_in_line_then_is_offered_again_and_accepted(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    waiting_since = datetime.now(UTC)
    await send(
        other_services,
        ReferralWaiting(
            referral_id=referral_id,
            reason=WaitingReason.ALL_AT_CAPACITY,
            waiting_since=waiting_since,
        ),
    )
    body = await _timeline_is(ed, referral_id, ["received", "waiting"], "waiting")
    assert body["timeline"][1]["at"].startswith(waiting_since.strftime("%Y-%m-%dT%H:%M:%S"))
    assert str(referral_id) in await _listed(ed, "waiting")
    assert str(referral_id) not in await _listed(ed, "offered")

    first_offer, second_offer = uuid.uuid4(), uuid.uuid4()
    await send(other_services, offer_made(referral_id, offer_id=first_offer))
    await send(
        other_services,
        OfferWithdrawn(
            referral_id=referral_id,
            offer_id=first_offer,
            coach_id=uuid.uuid4(),
            reason=WithdrawReason.AT_CAPACITY,
            withdrawn_at=datetime.now(UTC),
        ),
    )
    await send(
        other_services,
        ReferralWaiting(
            referral_id=referral_id,
            reason=WaitingReason.ALL_AT_CAPACITY,
            waiting_since=datetime.now(UTC),
        ),
    )
    await send(other_services, offer_made(referral_id, offer_id=second_offer))
    await send(other_services, _assigned(referral_id, second_offer, datetime.now(UTC)))
    await _timeline_is(
        ed,
        referral_id,
        ["received", "waiting", "offered", "coach_at_capacity", "waiting", "offered", "accepted"],
        "accepted",
    )
    assert str(referral_id) not in await _listed(ed, "waiting")
    assert str(referral_id) in await _listed(ed, "accepted")

    metrics = (await ed.client.get("/metrics")).text
    site = ed.site.site_id
    assert f'handoff_referral_steps_total{{site="{site}",step="waiting"}} 2.0' in metrics
    assert f'handoff_referral_steps_total{{site="{site}",step="coach_at_capacity"}} 1.0' in metrics


async def test_offers_that_never_reached_the_coach_are_not_shown_as_no_answer(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    endings = [
        (WithdrawReason.NOT_CONTACTED, "coach_not_contacted"),
        (WithdrawReason.EXPIRED, "coach_did_not_answer"),
        (WithdrawReason.UNREACHABLE, "coach_unreachable"),
    ]
    for reason, _ in endings:
        offer_id, coach_id = uuid.uuid4(), uuid.uuid4()
        await send(other_services, offer_made(referral_id, coach_id=coach_id, offer_id=offer_id))
        await send(
            other_services,
            OfferWithdrawn(
                referral_id=referral_id,
                offer_id=offer_id,
                coach_id=coach_id,
                reason=reason,
                withdrawn_at=datetime.now(UTC),
            ),
        )
    declined = uuid.uuid4()
    await send(other_services, offer_made(referral_id, offer_id=declined))
    no = CoachResponse.DECLINED
    await send(
        other_services,
        coach_responded(
            referral_id, declined, uuid.uuid4(), no, datetime.now(UTC), ResponseVia.SMS_REPLY
        ),
    )
    await send(
        other_services,
        ReferralUnassigned(
            referral_id=referral_id,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=datetime.now(UTC),
        ),
    )
    steps = ["received"]
    for _, shown in endings:
        steps += ["offered", shown]
    steps += ["offered", "coach_declined", "unassigned"]
    await _timeline_is(ed, referral_id, steps, "unassigned")

    # Unassigned is not final: the hospital can still withdraw the request.
    cancel = await ed.client.post(
        f"/v1/referrals/{referral_id}/cancel", json={"reason": "patient_left"}
    )
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    assert [s["status"] for s in cancel.json()["timeline"]] == [*steps, "cancelled"]


async def test_an_unassigned_referral_offered_again_can_be_accepted(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    await send(
        other_services,
        ReferralUnassigned(
            referral_id=referral_id,
            reason=UnassignedReason.LADDER_EXHAUSTED,
            unassigned_at=datetime.now(UTC),
        ),
    )
    await _timeline_is(ed, referral_id, ["received", "unassigned"], "unassigned")
    assert str(referral_id) in await _listed(ed, "unassigned")

    offer_id = uuid.uuid4()
    await send(other_services, offer_made(referral_id, offer_id=offer_id))
    await _timeline_is(ed, referral_id, ["received", "unassigned", "offered"], "offered")
    await send(other_services, _assigned(referral_id, offer_id, datetime.now(UTC)))
    await _timeline_is(
        ed, referral_id, ["received", "unassigned", "offered", "accepted"], "accepted"
    )


async def test_an_expired_referral_is_final_and_cannot_be_cancelled(
    hospital: HospitalFactory, other_services: KafkaBroker, referral: ReferralRuntime
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    await send(
        other_services,
        ReferralWaiting(
            referral_id=referral_id,
            reason=WaitingReason.ALL_AT_CAPACITY,
            waiting_since=datetime.now(UTC),
        ),
    )
    await send(
        other_services,
        ReferralExpired(referral_id=referral_id, expired_at=datetime.now(UTC)),
    )
    # Nothing after expiry moves it: the last event is applied before the check below.
    late_offer = await send(other_services, offer_made(referral_id))
    await _timeline_is(ed, referral_id, ["received", "waiting", "expired"], "expired")
    await _consumed(referral, late_offer.id)
    await _timeline_is(ed, referral_id, ["received", "waiting", "expired"], "expired")
    assert str(referral_id) in await _listed(ed, "expired")

    cancel = await ed.client.post(
        f"/v1/referrals/{referral_id}/cancel", json={"reason": "no_longer_needed"}
    )
    assert cancel.status_code == 409
    assert cancel.json()["error"]["code"] == "referral_closed"
    assert "expired" in cancel.json()["error"]["message"]


async def _consumed(referral: ReferralRuntime, event_id: Any) -> None:
    """Wait until the referral service has processed the event `event_id`."""

    async def processed() -> bool:
        async with referral.pool.acquire() as connection:
            return bool(
                await connection.fetchval(
                    "SELECT true FROM referral.processed_events WHERE event_id = $1", event_id
                )
            )

    await eventually(processed, within=30, what=f"event {event_id} processed")


async def test_a_poison_message_goes_to_the_dead_letter_topic_and_the_consumer_carries_on(
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    referral: ReferralRuntime,
    kafka_topics: str,
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    marker = uuid.uuid4().hex
    poison = [
        f'{{"garbage": "{marker}"'.encode(),  # not JSON
        f'{{"type": "org.handoff.dispatch.offer_made", "id": "{marker}"}}'.encode(),  # bad shape
    ]
    for value in poison:
        await other_services.publish(value, "handoff.dispatch", key=str(referral_id).encode())
    # A well-formed event for a referral this service never received is a bug elsewhere.
    stray = await send(other_services, offer_made(uuid.uuid4()))
    await send(other_services, offer_made(referral_id))

    await _timeline_is(ed, referral_id, ["received", "offered"], "offered")

    async def dead_letters() -> list[Any]:
        records = await read_topic(kafka_topics, dead_letter_topic("handoff-referral"))
        mine = [r for r in records if marker.encode() in r.value or r.value == stray_bytes]
        return mine if len(mine) == 3 else []

    stray_bytes = stray.model_dump_json().encode()
    letters = await eventually(dead_letters, within=30, what="three dead letters")
    reasons = [dict(r.headers)["x-dead-letter-reason"] for r in letters]
    assert sorted(reasons) == [b"handler_error", b"undecodable", b"undecodable"]
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["x-original-topic"] == b"handoff.dispatch"
        assert headers["x-consumer-group"] == b"handoff-referral"
        assert int(headers["x-original-offset"]) >= 0
    handler_error = next(
        r for r in letters if dict(r.headers)["x-dead-letter-reason"] == b"handler_error"
    )
    assert dict(handler_error.headers)["x-dead-letter-detail"] == b"UnknownReferral"
    metrics = (await ed.client.get("/metrics")).text
    assert 'handoff_dead_letters_total{group="handoff-referral",reason="undecodable"}' in metrics


@pytest.mark.parametrize(
    "header",
    [
        ("x-sender", b"\xff\xfe not UTF-8"),
        # Kafka allows a header without a value; the helper's report (issue 17) found it
        # held its partition for good, fetched again and again.
        ("x-sender", None),
    ],
    ids=["not-utf8", "no-value"],
)
async def test_a_record_whose_header_is_odd_is_dead_lettered_and_the_batch_goes_on(
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    referral: ReferralRuntime,
    kafka_topics: str,
    header: tuple[str, bytes | None],
) -> None:
    """FastStream's batch parser decodes every header as UTF-8 and, on one that is not,
    drops the whole fetch unhandled; the events fetched with such a record must not be lost."""
    ed = await hospital()
    referral_id = await _new_referral(ed)
    marker = uuid.uuid4().hex
    producer = AIOKafkaProducer(bootstrap_servers=kafka_topics)
    await producer.start()
    try:
        await producer.send_and_wait(
            "handoff.dispatch",
            f'{{"garbage": "{marker}"}}'.encode(),
            key=str(referral_id).encode(),  # the offer below follows it on the same partition
            headers=[header],
        )
    finally:
        await producer.stop()
    await send(other_services, offer_made(referral_id))

    await _timeline_is(ed, referral_id, ["received", "offered"], "offered")

    async def dead_lettered() -> list[Any]:
        records = await read_topic(kafka_topics, dead_letter_topic("handoff-referral"))
        return [r for r in records if marker.encode() in r.value]

    letter = (await eventually(dead_lettered, within=30, what="the dead letter"))[0]
    assert dict(letter.headers)["x-dead-letter-reason"] == b"undecodable"


async def test_another_groups_event_is_skipped_by_its_type_header_even_if_malformed(
    hospital: HospitalFactory,
    other_services: KafkaBroker,
    kafka_topics: str,
) -> None:
    """Escalations on handoff.dispatch are for SREs' dashboards, not for the timeline."""
    ed = await hospital()
    referral_id = await _new_referral(ed)
    marker = uuid.uuid4().hex
    await other_services.publish(
        f'{{"not an escalation": "{marker}"}}'.encode(),
        "handoff.dispatch",
        key=str(referral_id).encode(),  # the offer below follows it on the same partition
        headers={EVENT_TYPE_HEADER: ReferralEscalated.event_type},
    )
    await send(other_services, offer_made(referral_id))

    await _timeline_is(ed, referral_id, ["received", "offered"], "offered")
    letters = await read_topic(kafka_topics, dead_letter_topic("handoff-referral"))
    assert not [r for r in letters if marker.encode() in r.value]
    ignored = (
        "handoff_events_consumed_total{event_type="
        f'"{ReferralEscalated.event_type}",group="handoff-referral",outcome="ignored"}}'
    )
    assert ignored in (await ed.client.get("/metrics")).text


async def test_consumer_lag_is_exported_per_partition_and_drains_to_zero(
    hospital: HospitalFactory, other_services: KafkaBroker
) -> None:
    ed = await hospital()
    referral_id = await _new_referral(ed)
    await send(other_services, offer_made(referral_id))
    await _timeline_is(ed, referral_id, ["received", "offered"], "offered")

    async def all_partitions_caught_up() -> bool:
        lines = [
            line
            for line in (await ed.client.get("/metrics")).text.splitlines()
            if line.startswith('handoff_consumer_lag_messages{group="handoff-referral"')
        ]
        topics = {line.split('topic="')[1].split('"')[0] for line in lines}
        return topics == {"handoff.dispatch", "handoff.pages"} and all(
            line.endswith(" 0.0") for line in lines
        )

    await eventually(all_partitions_caught_up, within=20, what="lag 0 on every partition")
