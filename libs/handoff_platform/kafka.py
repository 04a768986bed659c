"""The Kafka side every service shares: a correctly configured broker, and the topics."""

import asyncio
import contextlib
import ssl
import struct
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
    try:
        await admin.start()  # inside: a client that failed to start is closed too
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


_CORRELATION_ID = 0x4A6F
_CLIENT_ID = b"handoff-probe"
_API_VERSIONS_V0 = struct.pack(">hhih", 18, 0, _CORRELATION_ID, len(_CLIENT_ID)) + _CLIENT_ID
"""ApiVersions v0 (api key 18), correlation id 0x4A6F, client id `handoff-probe`: the one
request every broker answers before authentication, whatever its version."""


async def broker_answers(address: str, ssl_context: ssl.SSLContext | None = None) -> bool:
    """True if the broker at `address` (host:port) answers an ApiVersions request with its
    correlation id; raises OSError (and subclasses) if it cannot be reached or hangs up."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(
        host.strip("[]"), int(port), ssl=ssl_context, server_hostname=host if ssl_context else None
    )
    try:
        writer.write(struct.pack(">i", len(_API_VERSIONS_V0)) + _API_VERSIONS_V0)
        await writer.drain()
        size: int = struct.unpack(">i", await reader.readexactly(4))[0]
        if size < 4:
            return False
        correlation: int = struct.unpack(">i", await reader.readexactly(4))[0]
        return correlation == _CORRELATION_ID
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def any_broker_answers(
    bootstrap_servers: str | Iterable[str],
    within: float,
    security: BaseSecurity | None = None,
) -> bool:
    """True as soon as any broker of the bootstrap list answers (`broker_answers`), False
    if none does within `within` seconds.

    All are asked at once: a client's own ping asks one broker, and when that one is paused
    or partitioned away it times out while the other two serve, so readiness flapped with
    one broker of three down. The cluster is usable while any broker answers, since clients
    follow the metadata to the partitions' leaders. `security` gives the TLS context of a
    TLS listener; SASL is not needed (ApiVersions precedes authentication).
    """
    ssl_context = client_options(security).get("ssl_context")
    asks = [
        asyncio.create_task(broker_answers(address, ssl_context))
        for address in parse_bootstrap_servers(bootstrap_servers)
    ]
    try:
        for finished in asyncio.as_completed(asks, timeout=within):
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
                if await finished:
                    return True
    except TimeoutError:
        return False
    finally:
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
    return False
