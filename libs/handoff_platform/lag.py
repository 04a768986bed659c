"""Consumer lag per group and partition: end offset minus committed offset.

FastStream's metrics do not include lag, and lag is what tells an SRE that a
service has stopped keeping up. It is read from the broker — the group's
committed offsets against the partitions' end offsets — not from the consumers
themselves, so a group whose every consumer has stopped still shows its lag
growing: by the other replicas of the service, or by `handoff ops lag-exporter`.
"""

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream.security import BaseSecurity
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from handoff_platform import metrics
from handoff_platform.kafka import client_options
from handoff_platform.settings import parse_bootstrap_servers
from handoff_platform.supervision import BackgroundTasks, beat

log = logging.getLogger(__name__)

SAMPLE_TIMEOUT_SECONDS = 60.0
"""The longest one lag sample may wait on Kafka before it is given up (seconds)."""

EXPECTED_INTERVAL_SECONDS = 90.0
"""The longest a healthy lag loop goes between beats, with the default 5 s interval: a
sample given up after `SAMPLE_TIMEOUT_SECONDS`, plus the interval, plus slack (seconds)."""


class LagSampler:
    """Reads each group's lag per partition from the broker into `handoff_consumer_lag_messages`,
    with an admin client and an offsets consumer of its own, reopened after a failure."""

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str],
        groups: Mapping[str, Iterable[str]],
        security: BaseSecurity | None = None,
    ) -> None:
        """`groups` maps each consumer group to the topics it consumes; `bootstrap_servers`
        is a `KAFKA_BOOTSTRAP_SERVERS` list (ValueError if malformed); `security` is TLS and
        SASL (`KafkaSettings.kafka_security`), None for plaintext."""
        self.bootstrap_servers = list(parse_bootstrap_servers(bootstrap_servers))
        self._connection = client_options(security)
        self.groups = {group: [str(t) for t in topics] for group, topics in groups.items()}
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def sample(self) -> dict[tuple[str, str, int], int]:
        """Set the lag gauge for every group and partition; the lags, by (group, topic, p)."""
        admin, offsets = await self._clients()
        every_topic = sorted({t for topics in self.groups.values() for t in topics})
        described = await admin.describe_topics(every_topic)
        partitions_of = {
            d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]]
            for d in described
        }
        offsets.assign([tp for tps in partitions_of.values() for tp in tps])
        lags = {}
        for group, topics in self.groups.items():
            partitions = [tp for topic in topics for tp in partitions_of.get(topic, [])]
            try:
                committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            except KafkaError as error:  # no coordinator yet, e.g. on a new cluster
                log.info(
                    "group offsets not read", extra={"group": group, "error": type(error).__name__}
                )
                continue
            end = await offsets.end_offsets(partitions)
            for partition in partitions:
                position = committed.get(partition)
                done = position.offset if position is not None and position.offset >= 0 else 0
                lag = max(0, end[partition] - done)
                lags[(group, partition.topic, partition.partition)] = lag
                metrics.CONSUMER_LAG.labels(group, partition.topic, str(partition.partition)).set(
                    lag
                )
        return lags

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._offsets is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers, **self._connection
            )
            offsets = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                **self._connection,
            )
            try:
                await admin.start()
                await offsets.start()
            except BaseException:
                # A consumer that failed to start is still open: left to the garbage
                # collector it logs `Unclosed AIOKafkaConsumer` at ERROR, once per sample
                # while Kafka is away (issue 13).
                await _close_quietly(admin, offsets)
                raise
            self._admin, self._offsets = admin, offsets
        return self._admin, self._offsets

    async def close(self) -> None:
        """Close the admin and offsets clients (idempotent); the next sample opens new ones.

        Errors while closing are logged, never raised: while brokers go away aiokafka's
        `stop()` can raise anything, even a `CancelledError` of its own fetcher task, which
        is not a cancellation of the caller. A real cancellation of the caller is raised."""
        admin, offsets = self._admin, self._offsets
        self._admin = self._offsets = None
        await _close_quietly(admin, offsets)

    async def run_forever(
        self, interval: float = 5.0, sample_timeout: float = SAMPLE_TIMEOUT_SECONDS
    ) -> None:
        """Sample every `interval` seconds, beating once per pass; a sample that fails or
        takes over `sample_timeout` seconds (Kafka away) is logged and its clients closed.
        Run it under `BackgroundTasks`: an error that still escapes (a cancellation leaked
        from aiokafka) restarts it, counted in `handoff_loop_restarts_total`."""
        try:
            while True:
                try:
                    async with asyncio.timeout(sample_timeout):
                        await self.sample()
                except Exception as error:  # Kafka away or rebalancing: sample next time
                    log.info("consumer lag not sampled", extra={"error": type(error).__name__})
                    await self.close()
                beat()
                await asyncio.sleep(interval)
        finally:
            await self.close()


async def _close_quietly(
    admin: AIOKafkaAdminClient | None, offsets: AIOKafkaConsumer | None
) -> None:
    """Close both clients whatever each raises; re-raise only a cancellation of this task."""
    cancelled = False
    for close in (
        admin.close if admin is not None else None,
        offsets.stop if offsets is not None else None,
    ):
        if close is None:
            continue
        try:
            await close()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                cancelled = True  # shutdown: finish closing, then stop
            else:
                log.info("Kafka client not closed cleanly", extra={"error": "CancelledError"})
        except Exception as error:
            log.info("Kafka client not closed cleanly", extra={"error": type(error).__name__})
    if cancelled:
        raise asyncio.CancelledError


def exporter_registry() -> CollectorRegistry:
    """What `handoff ops lag-exporter` serves: consumer lag, its loop's health, and the
    process; not the outbox's metrics, since the exporter has no outbox (issue 13)."""
    registry = CollectorRegistry()
    for collector in (
        metrics.CONSUMER_LAG,
        metrics.LOOP_RESTARTS,
        metrics.LOOP_LAST_CYCLE_AGE,
        metrics.LOOP_EXPECTED_INTERVAL,
    ):
        registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


async def export_lag_forever(sampler: LagSampler, interval: float = 5.0) -> None:
    """`handoff ops lag-exporter`'s work: the sampler as the supervised loop `consumer-lag`,
    restarted with capped backoff after any error but cancellation, until cancelled."""
    tasks = BackgroundTasks()
    tasks.start(
        "consumer-lag",
        lambda: sampler.run_forever(interval),
        expected_interval=EXPECTED_INTERVAL_SECONDS - 5.0 + interval,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await tasks.stop()
