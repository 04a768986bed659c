"""Supervised background loops: restarted after any error, and watched for cycling.

Every long-running task of a service (outbox relay, consumer commits, delivery,
timers, reporters...) runs under `BackgroundTasks`. A loop that raises anything
but cancellation is logged with its error's class, counted in
`handoff_loop_restarts_total{loop, error}`, and started again after a capped,
jittered exponential backoff; it never dies silently. A transient database error
(`handoff_platform.transient`) is a warning; anything else is a bug and logged as an
error with its traceback.

Each loop calls `beat()`, a heartbeat, once per completed cycle and within a long
cycle at each step of it (each referral of a long waiting-line pass), and declares the
longest a healthy loop goes between two beats (`expected_interval`, seconds). A beat
says "alive and making progress", not "finished a pass": a loaded replica whose pass
runs long is still serving. From those:

- `cycling()` (readiness) is false while any loop has not beaten within its
  interval: the service cannot do its work, so send it no traffic;
- `alive()` (liveness) is false when a loop's task has ended, or when it has
  neither beaten nor been restarted for `stuck_factor` intervals (at least
  `min_stuck_seconds`): it hangs, and only restarting the process helps; or when it
  has failed on every pass with a bug (any error but a transient one), without a beat
  in between, for `failing_stuck_seconds` (`LOOP_STUCK_SECONDS`, 120 s): a restart of
  the process may clear a state the bug feeds on, and the orchestrator should know.
  A loop failing on an unreachable database (or Kafka: an `OSError`) keeps restarting
  and stays alive however long the outage lasts: a new process would not reach the
  database either, and restarting every replica at once only adds to the outage.
  Likewise a loop blocked in a call that waits out an outage by itself (aiokafka's offset
  commit waits for a group coordinator as long as Kafka has none) declares it with
  `waiting_on_dependency()`: however long it waits it is late for readiness, never
  stuck for liveness (issue 13: matching's `/healthz` went 503 with 2 brokers of 3 dead).
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError, KafkaTimeoutError

from handoff_platform import metrics
from handoff_platform.transient import is_transient_database_error

log = logging.getLogger(__name__)

LoopFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class LoopState:
    """What the supervisor knows of one loop; times are `time.monotonic()` seconds."""

    name: str
    expected_interval: float | None
    last_beat: float = field(default_factory=time.monotonic)
    last_restart: float = field(default_factory=time.monotonic)
    restarts: int = 0
    task: asyncio.Task[None] | None = None
    failing_since: float | None = None
    """When the current run of non-transient failures began (no beat since); None: none."""
    waiting: bool = False
    """Inside `waiting_on_dependency()`: blocked on Kafka or the database, not hanging."""

    def cycle_age(self) -> float:
        return time.monotonic() - self.last_beat


_current_loop: ContextVar[LoopState | None] = ContextVar("handoff_current_loop", default=None)


def beat() -> None:
    """Record that the calling supervised loop completed a cycle; outside one, nothing."""
    state = _current_loop.get()
    if state is not None:
        state.last_beat = time.monotonic()


def jittered(seconds: float) -> float:
    """`seconds` scaled down by a random factor between 0.5 and 1: the retries of many
    replicas, failing together, spread out instead of arriving together."""
    return seconds * random.uniform(0.5, 1.0)


STOP_GRACE_SECONDS = 6.0
"""How long `BackgroundTasks.stop` waits for a cancelled loop to end (seconds): longer than
the longest cleanup a loop does (the consumer's last offset commit, 5 s at most)."""


async def _ended_within(tasks: set[asyncio.Task[None]], seconds: float) -> set[asyncio.Task[None]]:
    """Wait up to `seconds` for `tasks` to end; those still running."""
    if not tasks:
        return set()
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    return pending


def _names(tasks: set[asyncio.Task[None]]) -> list[str]:
    return sorted(task.get_name() for task in tasks)


async def wait_until_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set. A cancellation of the
    calling task always propagates.

    Loops wait this way, never with `asyncio.wait_for(event.wait(), seconds)`: in Python
    3.11 that waits on a task of its own, and a cancellation arriving just as the event is
    set is swallowed (CPython bpo-42130, fixed in 3.12), so a loop being stopped carries on
    and the service's stop waits for it for ever (a CI run hung in matching's stop).
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


@contextlib.contextmanager
def waiting_on_dependency() -> Iterator[None]:
    """Mark the calling supervised loop as waiting on Kafka or the database, in a call that
    retries by itself for as long as an outage lasts, until the block ends: it is then
    never judged stuck by `alive()`, only late by `cycling()`. For calls that cannot hang
    on a bug of ours; outside a supervised loop, nothing."""
    state = _current_loop.get()
    if state is None:
        yield
        return
    state.waiting = True
    try:
        yield
    finally:
        state.waiting = False


def is_outage(error: BaseException) -> bool:
    """True for an error that says a dependency is away for now (the database, or Kafka: a
    retriable Kafka error or a timeout), not that the loop's code is wrong."""
    if is_transient_database_error(error):
        return True
    return isinstance(error, KafkaTimeoutError) or (
        isinstance(error, KafkaError) and bool(error.retriable)
    )


class BackgroundTasks:
    """The service's supervised loops.

    `initial_backoff` and `max_backoff` (seconds) bound the wait before a restart; it
    doubles per failure without a cycle in between and is jittered down to half.
    `failing_stuck_seconds`: how long a loop may fail every pass with a bug before
    `alive()` says it is stuck (seconds).
    """

    def __init__(
        self,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        stuck_factor: float = 4.0,
        min_stuck_seconds: float = 120.0,
        failing_stuck_seconds: float = 120.0,
    ) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stuck_factor = stuck_factor
        self.min_stuck_seconds = min_stuck_seconds
        self.failing_stuck_seconds = failing_stuck_seconds
        self._loops: dict[str, LoopState] = {}

    def start(self, name: str, run: LoopFactory, expected_interval: float | None) -> None:
        """Run `run()` under supervision as loop `name` (unique per service).

        `expected_interval` is the most seconds between two `beat()`s of a healthy loop;
        None for a task that does its job once and returns (e.g. connecting to Kafka),
        which is restarted only if it fails.
        """
        if name in self._loops:
            raise ValueError(f"a loop named {name!r} is already running")
        state = LoopState(name, expected_interval)
        self._loops[name] = state
        state.task = asyncio.create_task(self._supervise(state, run), name=name)
        if expected_interval is not None:
            metrics.LOOP_EXPECTED_INTERVAL.labels(name).set(expected_interval)
            metrics.LOOP_LAST_CYCLE_AGE.labels(name).set_function(state.cycle_age)

    async def _supervise(self, state: LoopState, run: LoopFactory) -> None:
        _current_loop.set(state)  # this task's own context: `beat()` in the loop finds it
        backoff = self.initial_backoff
        while True:
            started = time.monotonic()
            try:
                await run()
            except asyncio.CancelledError as cancelled:
                current = asyncio.current_task()
                if current is None or current.cancelling():
                    raise  # stopped by `stop()` or the event loop: end quietly
                error: BaseException = cancelled  # a cancellation leaked from inside the loop
            except Exception as failure:
                error = failure
            else:
                if state.expected_interval is None:
                    return
                error = RuntimeError("loop returned")
            self._report(state, error)
            self._track_failing(state, error)
            if state.last_beat >= started:
                backoff = self.initial_backoff  # it cycled since its last start: a new failure
            await asyncio.sleep(jittered(backoff))
            backoff = min(backoff * 2, self.max_backoff)
            state.restarts += 1
            state.last_restart = time.monotonic()

    @staticmethod
    def _track_failing(state: LoopState, error: BaseException) -> None:
        """Start or continue a run of bug failures; a transient error ends it (an outage is
        never "stuck"), and so does a beat since it began."""
        if is_outage(error):
            state.failing_since = None
        elif state.failing_since is None or state.last_beat > state.failing_since:
            state.failing_since = time.monotonic()

    @staticmethod
    def _report(state: LoopState, error: BaseException) -> None:
        error_class = type(error).__name__
        metrics.LOOP_RESTARTS.labels(state.name, error_class).inc()
        details = {"loop": state.name, "error": error_class, "restarts": state.restarts}
        if is_transient_database_error(error):
            log.warning("background loop lost the database; restarting", extra=details)
        else:
            log.error(
                "background loop failed; restarting",
                extra=details,
                exc_info=(type(error), error, error.__traceback__),
            )

    def stale_loops(self) -> list[str]:
        """Names of the loops that have not completed a cycle within their interval."""
        return [
            state.name
            for state in self._loops.values()
            if state.expected_interval is not None and state.cycle_age() > state.expected_interval
        ]

    def stuck_loops(self) -> list[str]:
        """Names of the loops whose task ended, that neither cycle nor restart (unless
        `waiting_on_dependency()`), or that have failed every pass with a bug (not a
        transient error) for `failing_stuck_seconds`."""
        now = time.monotonic()
        stuck = []
        for state in self._loops.values():
            failing = (
                state.failing_since is not None
                and state.last_beat <= state.failing_since
                and now - state.failing_since > self.failing_stuck_seconds
            )
            if state.expected_interval is None:
                if failing:
                    stuck.append(state.name)
                continue  # done once it returns; restarted if it fails
            ended = state.task is not None and state.task.done()
            limit = max(self.stuck_factor * state.expected_interval, self.min_stuck_seconds)
            silent = now - max(state.last_beat, state.last_restart) > limit
            if ended or failing or (silent and not state.waiting):
                stuck.append(state.name)
        return stuck

    async def cycling(self) -> bool:
        """Readiness check: every loop completed a cycle within its expected interval."""
        stale = self.stale_loops()
        if stale:
            log.warning("loops not cycling", extra={"loops": stale})
        return not stale

    async def alive(self) -> bool:
        """Liveness check: no loop has ended or hangs."""
        stuck = self.stuck_loops()
        if stuck:
            log.error("loops dead or stuck", extra={"loops": stuck})
        return not stuck

    async def stop(self) -> None:
        """Cancel every loop and wait for each to finish its cleanup, for at most two grace
        periods (STOP_GRACE_SECONDS): a loop still running after the first swallowed its
        cancellation (library code may: see `wait_until_set`) and is cancelled again; one
        still running after the second is logged and abandoned, so a service's shutdown
        never hangs on it."""
        tasks = {state.task for state in self._loops.values() if state.task is not None}
        for task in tasks:
            task.cancel()
        pending = await _ended_within(tasks, STOP_GRACE_SECONDS)
        if pending:
            log.warning(
                "loops ignored their cancellation; cancelled again",
                extra={"loops": _names(pending)},
            )
            for task in pending:
                task.cancel()
            pending = await _ended_within(pending, STOP_GRACE_SECONDS)
        if pending:
            log.error("loops did not stop; abandoned", extra={"loops": _names(pending)})
        for task in tasks - pending:
            if not task.cancelled():
                task.exception()  # retrieved: a loop's last error was reported when it ended
        for name in self._loops:
            with contextlib.suppress(KeyError):
                metrics.LOOP_LAST_CYCLE_AGE.remove(name)
        self._loops.clear()
