"""Status webhooks to the hospital (issue #14, decision 0022), with the referral service as its
own process on real Kafka and PostgreSQL, and a receiver on a local port that verifies each
call's signature with the `standardwebhooks` library."""

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from handoff_devenv.service_process import ServiceProcess, start_service
from handoff_platform.kafka import make_broker
from handoff_schemas import EventPayload
from handoff_schemas.events import CoachAssigned, CoachResponded, OfferMade
from handoff_schemas.vocabulary import CoachResponse, ResponseVia, Tier, Urgency
from tests.integration.conftest import create_database, handoff_command
from tests.support.events import BRIEFING
from tests.support.follow_ups import FOLLOW_UP_KEYS
from tests.support.kafka import send
from tests.support.patients import SERVICE_LOGS, record_page_body, referral_body
from tests.support.status_receiver import StatusCall, StatusReceiver
from tests.support.waiting import eventually

STEPS = ["received", "offered", "accepted", "arrived", "completed"]
RETRY_INITIAL_SECONDS = 5.0  # the 2nd retry waits 8-10 s: time to SIGKILL the service in it


@pytest.fixture
async def receiver() -> AsyncIterator[StatusReceiver]:
    receiver = StatusReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        for call in receiver.calls:
            record_page_body(call.body.decode(errors="replace"))  # for the PHI scan
        await receiver.stop()


@pytest.fixture
async def webhook_database(database_url: str) -> str:
    return await create_database(database_url)


@pytest.fixture
def service_env(webhook_database: str, kafka_topics: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": webhook_database,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_topics,
        "CONSUMER_GROUP": f"handoff-referral-webhooks-{uuid.uuid4().hex[:6]}",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "WEBHOOK_RETRY_INITIAL_SECONDS": str(RETRY_INITIAL_SECONDS),
        "WEBHOOK_POLL_SECONDS": "0.1",
        "FOLLOW_UP_KEYS": FOLLOW_UP_KEYS,  # required to serve referral
    }


@pytest.fixture
def referral_service(service_env: dict[str, str]) -> Iterator[list[ServiceProcess]]:
    """The referral service as a process; a test may kill it and append its successor."""
    log = SERVICE_LOGS / f"referral-webhooks-{uuid.uuid4().hex[:6]}.log"
    processes = [start_service("referral", service_env, log)]
    try:
        yield processes
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.stop()


@pytest.fixture
async def other_services(kafka_topics: str) -> AsyncIterator[KafkaBroker]:
    """A producer standing in for matching and notify."""
    broker = make_broker(kafka_topics, client_id="stand-in-for-matching-and-notify")
    async with broker:
        yield broker


def _site_with_callback(database_url: str, receiver: StatusReceiver) -> tuple[str, str]:
    """A site, its API key and its callback, made with the CLI as an operator would."""
    site_id = f"md-ed-{uuid.uuid4().hex[:8]}"
    handoff_command(
        *("referral", "site", "add", "--id", site_id, "--name", "Webhook Hospital"),
        *("--short-name", "Hook ED", "--state", "MD", "--time-zone", "America/New_York"),
        database_url=database_url,
    )
    token = handoff_command(
        "referral", "key", "create", "--site", site_id, "--label", "t", database_url=database_url
    ).strip()
    secret = _cli(
        database_url, "referral", "webhooks", "set", "--site", site_id, "--url", receiver.url
    ).strip()
    assert secret.startswith("whsec_")
    receiver.secret = secret
    return site_id, token


def _cli(database_url: str, *args: str) -> str:
    """`handoff …` as an operator runs it, allowed an http:// callback (the local receiver)."""
    return handoff_command(*args, database_url=database_url, env={"WEBHOOK_ALLOW_HTTP": "true"})


async def _post_referral(url: str, token: str) -> tuple[str, str]:
    external_id = f"ED-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient() as client:
        created = await client.post(
            f"{url}/v1/referrals",
            headers={"Authorization": f"Bearer {token}"},
            json=referral_body(external_id),
        )
    assert created.status_code == 201, created.text
    return created.json()["id"], external_id


async def _timeline(url: str, token: str, referral_id: str, steps: list[str]) -> None:
    async def probe() -> bool:
        async with httpx.AsyncClient() as client:
            body = (
                await client.get(
                    f"{url}/v1/referrals/{referral_id}",
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).json()
        return [s["status"] for s in body["timeline"]] == steps

    await eventually(probe, within=30, what=f"the timeline {steps}")


def _coach_steps(referral_id: uuid.UUID) -> list[EventPayload]:
    """An offer, its acceptance, the coach's arrival and completion, as matching and notify
    would send them."""
    offer_id, coach_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    return [
        OfferMade(
            referral_id=referral_id,
            offer_id=offer_id,
            coach_id=coach_id,
            site_id="md-test",
            site_short_name="Test ED",
            urgency=Urgency.URGENT,
            tier=Tier.SITE,
            expires_at=now + timedelta(minutes=5),
            briefing=BRIEFING,
        ),
        CoachAssigned(
            referral_id=referral_id,
            offer_id=offer_id,
            coach_id=coach_id,
            assigned_at=now + timedelta(seconds=1),
            arrival_deadline=now + timedelta(hours=1),
        ),
        *(
            CoachResponded(
                referral_id=referral_id,
                offer_id=offer_id,
                coach_id=coach_id,
                response=response,
                via=ResponseVia.LINK,
                responded_at=now + timedelta(seconds=second),
            )
            for response, second in ((CoachResponse.ARRIVED, 2), (CoachResponse.COMPLETED, 3))
        ),
    ]


async def _attempts(database_url: str, referral_id: str, step: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(
            await connection.fetchval(
                """SELECT attempts FROM referral.webhook_deliveries
                   WHERE referral_id = $1 AND step = $2 AND state = 'pending'""",
                uuid.UUID(referral_id),
                step,
            )
            or 0
        )
    finally:
        await connection.close()


async def test_every_step_arrives_signed_in_order_through_503s_and_a_sigkill(
    referral_service: list[ServiceProcess],
    service_env: dict[str, str],
    webhook_database: str,
    receiver: StatusReceiver,
    other_services: KafkaBroker,
) -> None:
    site_id, token = _site_with_callback(webhook_database, receiver)
    url = referral_service[0].url
    referral_id, external_id = await _post_referral(url, token)
    await eventually(lambda: _delivered(receiver, referral_id, 1), within=10, what="received")

    # The hospital's endpoint fails the `offered` step twice, then takes it.
    receiver.fail_next(referral_id, "offered", 503, 503)
    steps = _coach_steps(uuid.UUID(referral_id))
    await send(other_services, steps[0])
    await eventually(
        lambda: _answered(receiver, referral_id, "offered", 503, 1), within=10, what="first 503"
    )
    # Accepted, arrived and completed happen meanwhile: recorded, but not sent before
    # `offered` is acknowledged. (Sent together and awaited once: awaited one by one, they
    # took long enough on a loaded runner for `offered` to go through before the SIGKILL.)
    for event in steps[1:]:
        await send(other_services, event)
    await _timeline(url, token, referral_id, STEPS)

    # SIGKILL the service while the second retry waits; its successor carries on.
    await eventually(
        lambda: _attempts_are(webhook_database, referral_id, "offered", 2),
        within=30,
        what="the second 503 recorded",
    )
    referral_service[0].kill()
    killed_at = time.monotonic()
    assert [c.data["step"] for c in receiver.of(referral_id)] == ["received", "offered", "offered"]
    # In a thread: the receiver answers in this event loop meanwhile.
    log = SERVICE_LOGS / f"referral-webhooks-{uuid.uuid4().hex[:6]}.log"
    referral_service.append(await asyncio.to_thread(start_service, "referral", service_env, log))

    await eventually(lambda: _delivered(receiver, referral_id, 5), within=60, what="all steps")
    calls = receiver.of(referral_id)
    acknowledged = _acknowledged_once(receiver, referral_id)
    assert [c.data["step"] for c in acknowledged] == STEPS  # each message, in order
    assert [(c.data["step"], c.answered) for c in calls[:4]] == [
        ("received", 200),
        ("offered", 503),
        ("offered", 503),
        ("offered", 200),
    ]
    # At least once: a 200 the sender did not see in time (a loaded machine) is sent again
    # under the same webhook-id, never as a new message and never out of order.
    order = [STEPS.index(c.data["step"]) for c in calls if c.answered == 200]
    assert order == sorted(order)
    retried = [c for c in calls if c.data["step"] == "offered"]
    assert len({c.headers["webhook-id"] for c in retried}) == 1  # one message, three tries
    assert retried[-1].received_at > killed_at  # the delivery went after the restart
    assert len({c.headers["webhook-id"] for c in acknowledged}) == 5
    for call in acknowledged:
        assert set(call.data) == {"referral_id", "external_id", "step", "status", "at"}
        assert call.data["external_id"] == external_id
    assert [c.data["status"] for c in acknowledged] == STEPS
    assert [c for c in receiver.calls if not c.verified] == []

    # Nothing is pending or failing, and the CLI says so.
    failing = _cli(webhook_database, "referral", "webhooks", "list", "--failing", "--site", site_id)
    assert failing.strip() == ""


async def test_a_tampered_delivery_is_refused_by_the_receiver(
    referral_service: list[ServiceProcess], webhook_database: str, receiver: StatusReceiver
) -> None:
    """A real delivery, changed by one field on its way, fails the receiver's check."""
    _, token = _site_with_callback(webhook_database, receiver)
    referral_id, _ = await _post_referral(referral_service[0].url, token)
    await eventually(lambda: _delivered(receiver, referral_id, 1), within=10, what="received")
    [call] = receiver.of(referral_id)
    Webhook(receiver.secret).verify(call.body, call.headers)
    payload = json.loads(call.body)
    payload["data"]["status"] = "completed"
    with pytest.raises(WebhookVerificationError):
        Webhook(receiver.secret).verify(json.dumps(payload), call.headers)


async def _delivered(receiver: StatusReceiver, referral_id: str, count: int) -> bool:
    """At least `count` distinct webhook messages (by webhook-id) of the referral answered 200:
    delivery is at least once, so a message whose 200 the sender missed may come again."""
    return len(_acknowledged_once(receiver, referral_id)) >= count


def _acknowledged_once(receiver: StatusReceiver, referral_id: str) -> list[StatusCall]:
    """The referral's calls answered 200, the first of each webhook-id, in arrival order (what
    a receiver deduplicating by webhook-id, as Standard Webhooks asks, keeps)."""
    seen: set[str] = set()
    once = []
    for call in receiver.of(referral_id):
        if call.answered == 200 and call.headers["webhook-id"] not in seen:
            seen.add(call.headers["webhook-id"])
            once.append(call)
    return once


async def _answered(
    receiver: StatusReceiver, referral_id: str, step: str, status: int, count: int
) -> bool:
    calls = [c for c in receiver.of(referral_id) if c.data["step"] == step]
    return len([c for c in calls if c.answered == status]) >= count


async def _attempts_are(database_url: str, referral_id: str, step: str, attempts: int) -> bool:
    return await _attempts(database_url, referral_id, step) >= attempts
