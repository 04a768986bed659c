"""A service on a Kafka listener that takes only SCRAM-SHA-512 logins, as Strimzi's does.

The broker is started here from the jars with a SASL_PLAINTEXT listener and its users
created at format time; the referral service is configured from the settings an operator
sets (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*), and its outbox relay, consumers, topic check
and lag sampler all log in with them.
"""

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from handoff_devenv.kafka import KafkaCluster
from handoff_platform.kafka import client_options, ensure_topics, make_broker
from handoff_platform.settings import KafkaSettings
from handoff_referral.app import ReferralRuntime
from handoff_referral.settings import ReferralSettings
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import ReferralCreated
from tests.integration.conftest import HospitalFactory, create_database
from tests.support.events import offer_made
from tests.support.kafka import read_topic, send
from tests.support.patients import referral_body
from tests.support.waiting import eventually

SERVICE_USER = "handoff-referral"
STAND_IN_USER = "handoff-tests"
PASSWORDS = {SERVICE_USER: uuid.uuid4().hex, STAND_IN_USER: uuid.uuid4().hex}


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(Path(tmp_path_factory.mktemp("scram-kafka")), scram_users=PASSWORDS)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _settings(cluster: KafkaCluster, user: str, password: str) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=cluster.bootstrap_servers,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username=user,
        kafka_sasl_password=password,
    )


@pytest.fixture(scope="module")
async def referral_on_scram(
    scram_kafka: KafkaCluster, database_url: str
) -> AsyncIterator[ReferralRuntime]:
    settings = ReferralSettings(
        database_url=await create_database(database_url),
        **_settings(scram_kafka, SERVICE_USER, PASSWORDS[SERVICE_USER]).model_dump(),
    )
    runtime = await ReferralRuntime.start(settings)
    try:
        await eventually(
            lambda: _connected(runtime), within=60, what="the referral service on SCRAM Kafka"
        )
        yield runtime
    finally:
        await runtime.stop()


async def _connected(runtime: ReferralRuntime) -> bool:
    return runtime.kafka_connected.is_set()


async def test_the_service_publishes_and_consumes_over_a_scram_listener(
    scram_kafka: KafkaCluster, referral_on_scram: ReferralRuntime, hospital: HospitalFactory
) -> None:
    ed = await hospital(referral_on_scram)
    created = await ed.client.post(
        "/v1/referrals", json=referral_body(f"ED-{uuid.uuid4().hex[:8]}")
    )
    assert created.status_code == 201, created.text
    referral_id = uuid.UUID(created.json()["id"])
    stand_in = scram_kafka.client_options(STAND_IN_USER)

    async def published() -> bool:
        records = await read_topic(
            scram_kafka.bootstrap_servers, Topic.REFERRALS, connection=stand_in
        )
        events = [decode_event(record.value) for record in records if record.value]
        return any(
            event.subject == referral_id and event.type == ReferralCreated.event_type
            for event in events
        )

    await eventually(published, within=30, what="the ReferralCreated on handoff.referrals")

    security = _settings(scram_kafka, STAND_IN_USER, PASSWORDS[STAND_IN_USER]).kafka_security
    async with make_broker(scram_kafka.bootstrap_servers, "stand-in", security) as matching:
        await send(matching, offer_made(referral_id))

    async def offered() -> bool:
        body = (await ed.client.get(f"/v1/referrals/{referral_id}")).json()
        return bool(body["status"] == "offered")

    await eventually(offered, within=30, what="the referral offered, from handoff.dispatch")


@pytest.mark.parametrize(
    ("user", "password"),
    [
        pytest.param(SERVICE_USER, "not-the-password", id="wrong password"),
        pytest.param("nobody", PASSWORDS[SERVICE_USER], id="unknown user"),
    ],
)
async def test_a_bad_login_is_refused_by_the_broker(
    scram_kafka: KafkaCluster, user: str, password: str
) -> None:
    settings = _settings(scram_kafka, SERVICE_USER, PASSWORDS[SERVICE_USER])
    refused = _settings(scram_kafka, user, password)
    with pytest.raises(KafkaError):
        await ensure_topics(refused.kafka_bootstrap_servers, security=refused.kafka_security)
    # the same call with the right login goes through
    await ensure_topics(settings.kafka_bootstrap_servers, security=settings.kafka_security)


async def test_a_client_without_a_login_is_refused(scram_kafka: KafkaCluster) -> None:
    assert client_options(None) == {}
    with pytest.raises(KafkaError):
        await ensure_topics(scram_kafka.bootstrap_servers)
