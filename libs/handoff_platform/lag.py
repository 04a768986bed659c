"""Consumer lag per group and partition: end offset minus committed offset.

FastStream's metrics do not include lag, and lag is what tells an SRE that a
service has stopped keeping up. It is read from the broker — the group's
committed offsets against the partitions' end offsets — not from the consumers
themselves, so a group whose every consumer has stopped still shows its lag
growing: by the other replicas of the service, or by `handoff ops lag-exporter`.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream.security import BaseSecurity

from handoff_platform import metrics
from handoff_platform.kafka import client_options
from handoff_platform.settings import parse_bootstrap_servers
from handoff_platform.supervision import beat

log = logging.getLogger(__name__)


class LagSampler:
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
            await admin.start()
            await offsets.start()
            self._admin, self._offsets = admin, offsets
        return self._admin, self._offsets

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
        if self._offsets is not None:
            await self._offsets.stop()
        self._admin = self._offsets = None

    async def run_forever(self, interval: float = 5.0) -> None:
        try:
            while True:
                try:
                    await self.sample()
                except Exception as error:  # Kafka away or rebalancing: sample next time
                    log.info("consumer lag not sampled", extra={"error": type(error).__name__})
                    with contextlib.suppress(Exception):
                        await self.close()
                beat()
                await asyncio.sleep(interval)
        finally:
            await self.close()
