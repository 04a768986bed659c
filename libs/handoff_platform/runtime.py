"""Process lifecycle shared by the services: background tasks, and a broker that may be late.

A service must start, and keep serving what it can, while Kafka is down: the
referral API keeps taking referrals into the outbox. So the broker connects in
the background and retries until Kafka answers.
"""

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity

from handoff_platform.consumer import Handler, IdempotentConsumer
from handoff_platform.database import DatabaseProbe, create_pool
from handoff_platform.http import ReadinessCheck, report_readiness_forever
from handoff_platform.kafka import any_broker_answers, ensure_topics, make_broker
from handoff_platform.lag import EXPECTED_INTERVAL_SECONDS, LagSampler
from handoff_platform.logs import LogFormat, configure_logging
from handoff_platform.outbox import Outbox, OutboxRelay
from handoff_platform.settings import PlatformSettings
from handoff_platform.supervision import BackgroundTasks
from handoff_platform.tracing import configure_tracing
from handoff_schemas import Topic, dead_letter_topic

log = logging.getLogger(__name__)


@contextlib.contextmanager
def instrumented(
    service: str, log_level: str, log_format: LogFormat = LogFormat.AUTO
) -> Iterator[None]:
    """Logs (JSON, or console lines on a terminal), and traces if an OTLP endpoint is
    configured, for one service process. A database or role that does not exist ends the
    process with one line naming DATABASE_URL and exit status 2, like any setting."""
    configure_logging(service, log_level, log_format)
    provider = configure_tracing(service)
    try:
        yield
    except (
        asyncpg.InvalidCatalogNameError,
        asyncpg.InvalidAuthorizationSpecificationError,
    ) as error:
        # The database named, or the role, does not exist: a setting to correct, not an
        # outage to wait out (class 3D, 28: PostgreSQL's SQLSTATE appendix).
        print(f"configuration error: DATABASE_URL: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if provider is not None:
            provider.shutdown()  # sends the spans still buffered


POOL_CLOSE_SECONDS = 10.0
"""The longest a service's stop waits for its pool's connections in use (seconds)."""


async def stop_broker(broker: KafkaBroker, within: float = 10.0) -> None:
    """Stop the broker; a producer still holding undeliverable batches is abandoned."""
    try:
        async with asyncio.timeout(within):  # not wait_for: see supervision.wait_until_set
            await broker.stop()
    except TimeoutError:
        log.warning("Kafka producer did not flush before shutdown; its batches stay in the outbox")


async def connect_when_reachable(
    broker: KafkaBroker,
    bootstrap_servers: Iterable[str],
    topics: Iterable[str],
    connected: asyncio.Event,
    max_backoff: float = 10.0,
    security: BaseSecurity | None = None,
) -> None:
    """Create the topics and start the broker (producer and subscribers) once Kafka answers;
    `security` is the broker's own TLS and SASL, for the admin client that creates topics."""
    topics, bootstrap_servers = list(topics), list(bootstrap_servers)
    backoff = 0.5
    while True:
        try:
            await ensure_topics(bootstrap_servers, topics, security=security)
            await broker.start()
        except Exception as error:
            log.warning(
                "Kafka not reachable yet; retrying",
                extra={
                    "error": type(error).__name__,
                    "bootstrap_servers": ",".join(bootstrap_servers),
                    "retry_in_s": backoff,
                },
            )
            with contextlib.suppress(Exception):
                await broker.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
            continue
        connected.set()
        log.info("connected to Kafka")
        return


@dataclass
class EventPipeline:
    """The parts every service's composition root wires the same way: its database pool,
    its Kafka broker, its outbox and relay, and whether Kafka has been reached yet."""

    group: str
    bootstrap_servers: tuple[str, ...]
    pool: asyncpg.Pool
    broker: KafkaBroker
    outbox: Outbox
    relay: OutboxRelay
    kafka_connected: asyncio.Event
    database_probe: DatabaseProbe  # readiness asks on a connection of its own, not the pool's
    kafka_security: BaseSecurity | None = None
    consumers: list[IdempotentConsumer] = field(default_factory=list)
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)

    @classmethod
    async def open(
        cls,
        settings: PlatformSettings,
        schema: str,
        group: str,
        pool_size: int,
    ) -> "EventPipeline":
        """The service's pool (`pool_size` connections), broker, outbox and relay, for
        consumer group `group` and database schema `schema`; the loops start in `start`."""
        pool = await create_pool(settings.database_url, max_size=pool_size)
        security = settings.kafka_security
        broker = make_broker(settings.kafka_bootstrap_servers, client_id=group, security=security)
        outbox = Outbox(schema)
        relay = OutboxRelay(settings.database_url, outbox, broker)
        return cls(
            group,
            settings.kafka_bootstrap_servers,
            pool,
            broker,
            outbox,
            relay,
            asyncio.Event(),
            DatabaseProbe(settings.database_url),
            security,
            tasks=BackgroundTasks(failing_stuck_seconds=settings.loop_stuck_seconds),
        )

    def consumer(
        self, handlers: dict[str, Handler], after_commit: Callable[[], None] | None = None
    ) -> IdempotentConsumer:
        """The service's consumer; its offsets are committed by a task `start` runs."""
        consumer = IdempotentConsumer(
            group_id=self.group,
            schema=self.outbox.schema,
            pool=self.pool,
            broker=self.broker,
            handlers=handlers,
            after_commit=after_commit,
        )
        self.consumers.append(consumer)
        return consumer

    def start(self, consumed_topics: Iterable[str]) -> None:
        """What every service runs beside its own work, each under supervision (with the
        longest a healthy cycle takes, seconds): Kafka once it answers (topics and the
        group's dead-letter topic created), the outbox relay and its wake-ups, consumer
        lag, readiness, offset commits."""
        topics = [*Topic, dead_letter_topic(self.group)]
        tasks = self.tasks
        tasks.start(
            "kafka-connect",
            lambda: connect_when_reachable(
                self.broker,
                self.bootstrap_servers,
                topics,
                self.kafka_connected,
                security=self.kafka_security,
            ),
            expected_interval=None,
        )
        # Waits up to its ack timeout per round while Kafka is away, and still cycles.
        tasks.start("outbox-relay", self.relay.run, expected_interval=15.0)
        tasks.start("outbox-announcer", lambda: self.outbox.announce_forever(self.pool), 15.0)
        lag = LagSampler(
            self.bootstrap_servers, {self.group: list(consumed_topics)}, self.kafka_security
        )
        # A sample waits on Kafka's request timeouts while Kafka is away.
        tasks.start("consumer-lag", lag.run_forever, expected_interval=EXPECTED_INTERVAL_SECONDS)
        checks = self.readiness_checks()
        tasks.start("readiness", lambda: report_readiness_forever(checks), 15.0)
        for number, consumer in enumerate(self.consumers):
            name = "offset-commits" if number == 0 else f"offset-commits-{number}"
            tasks.start(name, consumer.commit_forever, expected_interval=15.0)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        """/readyz: the database, Kafka, and every loop cycling."""
        return {
            **readiness_checks(
                self.database_probe,
                self.bootstrap_servers,
                self.kafka_connected,
                self.kafka_security,
            ),
            "loops": self.tasks.cycling,
        }

    def liveness_checks(self) -> dict[str, ReadinessCheck]:
        """/healthz: no loop dead or stuck, no partition held at one record for long."""

        async def consumers_moving() -> bool:
            return all(consumer.moving() for consumer in self.consumers)

        return {"loops": self.tasks.alive, "consumer": consumers_moving}

    async def close(self) -> None:
        """Stop the loops, then the broker and the pool. The pool waits for its connections
        in use for at most POOL_CLOSE_SECONDS, then closes them anyway: a shutdown must end
        (what a transaction cut short did not commit is done again by its redelivery)."""
        await self.tasks.stop()
        await stop_broker(self.broker)
        await self.database_probe.close()
        try:
            async with asyncio.timeout(POOL_CLOSE_SECONDS):
                await self.pool.close()
        except TimeoutError:
            log.warning("database connections still in use at shutdown; closed anyway")
            self.pool.terminate()


KAFKA_PING_SECONDS = 0.6
"""The longest readiness waits for Kafka's answer to a ping (seconds)."""


def readiness_checks(
    database: DatabaseProbe,
    bootstrap_servers: Iterable[str],
    kafka_connected: asyncio.Event,
    kafka_security: BaseSecurity | None = None,
) -> dict[str, ReadinessCheck]:
    """Ready: the database answers, and Kafka answers (`database`, `kafka`).

    Kafka answers once the service has connected to it (`kafka_connected`) and while any
    broker of the bootstrap list answers a ping within `KAFKA_PING_SECONDS`
    (`any_broker_answers`): one paused broker of three is not an outage, so readiness does
    not flap with it. Every service is judged alike (issue 13): an earlier fallback kept
    referral, notify and MLLP ready while their outbox's oldest event was under 60 s old,
    but an empty outbox is always young, so an idle notify stayed ready against a dead
    cluster. Each check answers within `handoff_platform.http.READY_CHECK_SECONDS`: the
    database is asked on the probe's own connection, so a saturated pool does not slow it.
    """
    servers = tuple(bootstrap_servers)

    async def kafka_answers() -> bool:
        return kafka_connected.is_set() and await any_broker_answers(
            servers, KAFKA_PING_SECONDS, kafka_security
        )

    return {"database": database.answers, "kafka": kafka_answers}
