"""Consumer lag per group and partition: end offset minus committed offset.

FastStream's metrics do not include lag, and lag is what tells an SRE that a
service has stopped keeping up. Each service samples its own consumers.
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from handoff_platform import metrics

log = logging.getLogger(__name__)


async def sample_lag(group_id: str, consumer: Any) -> dict[tuple[str, int], int]:
    partitions = list(consumer.assignment())
    if not partitions:
        return {}
    end_offsets = await consumer.end_offsets(partitions)
    lags = {}
    for partition in partitions:
        committed = await consumer.committed(partition) or 0
        lag = max(0, end_offsets[partition] - committed)
        lags[(partition.topic, partition.partition)] = lag
        metrics.CONSUMER_LAG.labels(group_id, partition.topic, str(partition.partition)).set(lag)
    return lags


async def report_lag_forever(
    group_id: str, subscribers: Sequence[Any], interval: float = 5.0
) -> None:
    while True:
        for subscriber in subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            with contextlib.suppress(Exception):  # a rebalance or an outage: sample next time
                await sample_lag(group_id, consumer)
        await asyncio.sleep(interval)
