"""The delivery worker: due messages out to their providers, outcomes back in the database.

Every replica runs one. A message is claimed and committed as `sending` before
its provider is called, so a crash mid-call leaves a row the reconciler finds
after its deadline, instead of a message sent twice. Sends run concurrently; the
worker sleeps until the next message is due, or until a new one is queued here.
"""

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import asyncpg

from handoff_notify import metrics
from handoff_notify.adapters import notices_store, pages_store, reminders_store
from handoff_notify.adapters.providers import Outgoing, Provider
from handoff_notify.service import NotifyService
from handoff_platform.database import Connection
from handoff_platform.logs import correlation
from handoff_platform.supervision import beat, wait_until_set
from handoff_platform.transient import TRANSIENT_DATABASE_ERRORS
from handoff_schemas.vocabulary import Channel

log = logging.getLogger(__name__)

LOOKUP_RETRY_SECONDS = 15.0
_UNRECORDED: tuple[type[Exception], ...] = (asyncpg.PostgresError, *TRANSIENT_DATABASE_ERRORS)
"""Errors that leave a send's outcome unrecorded, for the reconciler to settle."""


class DeliveryWorker:
    def __init__(
        self,
        service: NotifyService,
        providers: Mapping[Channel, Provider],
        batch_size: int = 50,
        max_sleep: float = 1.0,
    ) -> None:
        self.service = service
        self.pool = service.pool
        self.providers = providers
        self.batch_size = batch_size
        self.max_sleep = max_sleep
        self._wake = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Send due messages until cancelled; a cycle ends at least every `max_sleep` s.

        Raises the database's error when it cannot be reached, for the supervisor
        (`handoff_platform.supervision`) to restart the loop; sends in flight carry on.
        """
        self.service.wake_delivery = self.wake
        try:
            while True:
                self._wake.clear()
                await self._reconcile_lost_sends()
                while batch := await self.service.claim_due(self.batch_size):
                    for outgoing in batch:
                        self._start(self._deliver(outgoing))
                    beat()
                while batch := await self.service.claim_due_notices(self.batch_size):
                    for outgoing in batch:
                        self._start(self._deliver_notice(outgoing))
                    beat()
                while batch := await self.service.claim_due_reminders(self.batch_size):
                    for outgoing in batch:
                        self._start(self._deliver_reminder(outgoing))
                    beat()
                await self._sleep_until_next_due()
                beat()
        except asyncio.CancelledError:  # stopping; on an error, sends in flight finish
            for task in list(self._sends):
                task.cancel()
            raise

    def _start(self, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(send)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _deliver_notice(self, outgoing: Outgoing) -> None:
        with correlation(outgoing.correlation_id):
            outcome = await self.providers[outgoing.channel].send(outgoing)
            try:
                await self.service.record_notice(outgoing, outcome)
            except (asyncpg.PostgresError, OSError) as error:
                # The row stays `sending` and is failed after its deadline, never resent.
                log.error(
                    "outcome of a notice not recorded",
                    extra={"message_id": str(outgoing.message_id), "error": type(error).__name__},
                )

    async def _deliver_reminder(self, outgoing: Outgoing) -> None:
        with correlation(outgoing.correlation_id):
            outcome = await self.providers[outgoing.channel].send(outgoing)
            try:
                await self.service.record_reminder(outgoing, outcome)
            except (asyncpg.PostgresError, OSError) as error:
                # The row stays `sending` and is failed after its deadline, never resent.
                log.error(
                    "outcome of a reminder not recorded",
                    extra={"message_id": str(outgoing.message_id), "error": type(error).__name__},
                )

    async def _deliver(self, outgoing: Outgoing) -> None:
        with correlation(outgoing.correlation_id):
            await self._deliver_in_context(outgoing)

    async def _deliver_in_context(self, outgoing: Outgoing) -> None:
        provider = self.providers[outgoing.channel]
        started = time.perf_counter()
        outcome = await provider.send(outgoing)
        metrics.SEND_SECONDS.labels(outgoing.channel).observe(time.perf_counter() - started)
        try:
            lost = await self.service.record_send(outgoing, outcome)
            if lost:
                async with self.pool.acquire() as connection, connection.transaction():
                    await self._look_up(connection, outgoing)
        except _UNRECORDED as error:
            # The row stays `sending`; the reconciler settles it after its deadline.
            log.error(
                "outcome of a send not recorded",
                extra={"message_id": str(outgoing.message_id), "error": type(error).__name__},
            )

    async def _reconcile_lost_sends(self) -> None:
        async with self.service.outbox.transaction(self.pool) as connection:
            for outgoing in await self.service.claim_lost_sends(connection, self.batch_size):
                with correlation(outgoing.correlation_id):
                    try:
                        async with connection.transaction():  # a savepoint per send
                            await self._look_up(connection, outgoing)
                    except asyncpg.IntegrityConstraintViolationError as error:
                        # One send the data refuses must not hold up every send behind it
                        # (the loop would restart on the same row for ever): set it aside.
                        log.error(
                            "a lost send could not be settled; set aside",
                            extra={
                                "message_id": str(outgoing.message_id),
                                "error": type(error).__name__,
                            },
                        )
                        await pages_store.postpone_deadline(
                            connection, outgoing.message_id, LOOKUP_RETRY_SECONDS
                        )

    async def _look_up(self, connection: Connection, outgoing: Outgoing) -> None:
        message = await pages_store.message(connection, outgoing.message_id)
        since = message.sending_since if message and message.sending_since else None
        if since is None:
            return
        try:
            finding = await self.providers[outgoing.channel].lookup(outgoing, since)
        except Exception as error:  # the provider could not say; ask again later
            log.warning(
                "could not look up a lost send; will ask again",
                extra={"message_id": str(outgoing.message_id), "error": type(error).__name__},
            )
            await pages_store.postpone_deadline(
                connection, outgoing.message_id, LOOKUP_RETRY_SECONDS
            )
            return
        await self.service.record_lookup(connection, outgoing, finding)

    async def _sleep_until_next_due(self) -> None:
        async with self.pool.acquire() as connection:
            due = [
                seconds
                for seconds in (
                    await pages_store.next_due(connection),
                    await notices_store.next_due(connection),
                    await reminders_store.next_due(connection),
                )
                if seconds is not None
            ]
        seconds = min(due) if due else None
        delay = self.max_sleep if seconds is None else min(max(seconds, 0.0), self.max_sleep)
        if delay > 0:
            await wait_until_set(self._wake, delay)

    async def stop(self) -> None:
        for task in list(self._sends):
            task.cancel()
        for provider in set(self.providers.values()):
            await provider.close()
