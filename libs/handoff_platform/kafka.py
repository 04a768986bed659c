"""The Kafka side every service shares: a correctly configured broker, and the topics."""

import contextlib
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity

from handoff_platform.settings import parse_bootstrap_servers
from handoff_schemas.topics import Topic

DEFAULT_PARTITIONS = 6

# handoff.sites is compacted: each key's latest event (a site's full facts) is kept past
# retention, so a consumer starting from scratch - a new matching database, a new
# group - still learns every site ever registered (decision 0009).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {Topic.SITES: {"cleanup.policy": "compact"}}


def client_options(security: BaseSecurity | None) -> dict[str, Any]:
    """aiokafka's connection arguments (`security_protocol`, `ssl_context`, `sasl_*`) for a
    client built by hand, the same FastStream gives the broker's own clients; {} for None."""
    return parse_security(security)


def make_broker(
    bootstrap_servers: str | Iterable[str],
    client_id: str,
    security: BaseSecurity | None = None,
) -> KafkaBroker:
    """A broker whose producer is idempotent with acks=all: a retried send is never doubled.

    Without FastStream's dependency injection (`apply_types=False`): a handler gets the
    message itself (see IdempotentConsumer.subscribe). With it, FastStream resolved the
    handler's `KafkaMessage` parameter through a synchronous context lookup that
    FastDepends runs in a worker thread, a thread round trip for every message.
    `security`: TLS and SASL (`KafkaSettings.kafka_security`); None for plaintext.
    """
    return KafkaBroker(
        list(parse_bootstrap_servers(bootstrap_servers)),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=10_000,
        logger=None,
        apply_types=False,
        security=security,
    )


async def ensure_topics(
    bootstrap_servers: str | Iterable[str],
    names: Iterable[str] = tuple(Topic),
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int | None = None,
    security: BaseSecurity | None = None,
) -> None:
    """Create the topics if missing; replication follows the cluster (1 on one node, 3 on three)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=list(parse_bootstrap_servers(bootstrap_servers)),
        **client_options(security),
    )
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        factor = replication_factor or min(3, brokers)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=factor,
                topic_configs=TOPIC_CONFIGS.get(name, {}),
            )
            for name in names
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica was first
                await admin.create_topics(missing)
    finally:
        await admin.close()
