"""Supervised loops: restarted after any error, never dead silently, and seen by the health checks.

The asyncpg classes are enumerated from `asyncpg.exceptions`, not listed by hand, so a class a
new asyncpg adds to a connection-level family is tested (and classified) without a change here.
"""

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from asyncpg import exceptions
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from prometheus_client import REGISTRY

from handoff_platform import supervision
from handoff_platform.http import service_app
from handoff_platform.supervision import BackgroundTasks, beat, wait_until_set
from handoff_platform.transient import is_transient_database_error

# SQLSTATE classes 08 (connection exception) and 57 (operator intervention: "cannot connect
# now" while the server starts up, admin and crash shutdown).
CONNECTION_SQLSTATE_CLASSES = ("08", "57")
NOT_TRANSIENT_INTERFACE_ERRORS = {
    exceptions.ClientConfigurationError,
    exceptions.UnsupportedClientFeatureError,
    exceptions.UnsupportedServerFeatureError,
}


def _connection_error_classes() -> list[type[Exception]]:
    """Every asyncpg class for a lost or refused connection, read from asyncpg itself: by its
    SQLSTATE, and the client-side `InterfaceError` family; then the few that have neither."""
    asyncpg_classes = [
        cls
        for _, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, Exception)
    ]
    by_sqlstate = [
        cls
        for cls in asyncpg_classes
        if (getattr(cls, "sqlstate", None) or "")[:2] in CONNECTION_SQLSTATE_CLASSES
    ]
    client_side = [
        cls
        for cls in asyncpg_classes
        if issubclass(cls, exceptions.InterfaceError) and cls not in NOT_TRANSIENT_INTERFACE_ERRORS
    ]
    others = [
        exceptions.TooManyConnectionsError,  # 53300: refused for now
        exceptions.TargetServerAttributeNotMatched,  # a failover's new primary not there yet
        ConnectionRefusedError,
        ConnectionResetError,
        TimeoutError,
        OSError,
    ]
    return sorted({*by_sqlstate, *client_side, *others}, key=lambda cls: cls.__name__)


CONNECTION_ERRORS = _connection_error_classes()


def test_the_enumeration_covers_the_startup_and_shutdown_errors_of_a_restart() -> None:
    names = {cls.__name__ for cls in CONNECTION_ERRORS}
    assert len(names) >= 20  # asyncpg 0.31: fifteen by SQLSTATE, one client-side, six others
    assert {
        "CannotConnectNowError",
        "AdminShutdownError",
        "CrashShutdownError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "InterfaceError",
    } <= names


@pytest.mark.parametrize("error_class", CONNECTION_ERRORS, ids=lambda cls: cls.__name__)
def test_every_connection_error_is_transient(error_class: type[Exception]) -> None:
    assert is_transient_database_error(error_class("lost"))


@pytest.mark.parametrize(
    "error",
    [
        KeyError("offer_id"),
        exceptions.UndefinedTableError("relation does not exist"),
        exceptions.UniqueViolationError("duplicate key"),
        exceptions.ClientConfigurationError("bad dsn"),
        exceptions.ProtocolError("bad message"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_bugs_and_bad_queries_are_not_transient(error: Exception) -> None:
    assert not is_transient_database_error(error)


def restarts(loop: str, error: str) -> float:
    value = REGISTRY.get_sample_value("handoff_loop_restarts_total", {"loop": loop, "error": error})
    return value or 0.0


class FlakyLoop:
    """A loop that raises `errors` one per run, then cycles every `every` seconds."""

    def __init__(self, *errors: BaseException, every: float = 0.01) -> None:
        self.errors = list(errors)
        self.every = every
        self.starts: list[float] = []

    async def run(self) -> None:
        self.starts.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        while True:
            beat()
            await asyncio.sleep(self.every)


@pytest.fixture
async def tasks() -> AsyncIterator[BackgroundTasks]:
    supervisor = BackgroundTasks(initial_backoff=0.02, max_backoff=0.16)
    yield supervisor
    await supervisor.stop()


async def started_times(loop: FlakyLoop, count: int) -> list[float]:
    async def enough() -> bool:
        return len(loop.starts) >= count

    deadline = time.monotonic() + 5.0
    while not await enough():
        assert time.monotonic() < deadline, f"loop started {len(loop.starts)}, not {count}, times"
        await asyncio.sleep(0.01)
    return loop.starts


@pytest.mark.parametrize("error_class", CONNECTION_ERRORS, ids=lambda cls: cls.__name__)
async def test_a_connection_error_restarts_the_loop_and_is_counted(
    tasks: BackgroundTasks, error_class: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    name = f"conn-{error_class.__name__}"
    loop = FlakyLoop(error_class("the database went away"))
    before = restarts(name, error_class.__name__)
    with caplog.at_level(logging.WARNING, logger="handoff_platform.supervision"):
        tasks.start(name, loop.run, expected_interval=1.0)
        await started_times(loop, 2)
    assert restarts(name, error_class.__name__) == before + 1
    [record] = [r for r in caplog.records if getattr(r, "loop", None) == name]
    assert record.levelno == logging.WARNING
    assert record.__dict__["error"] == error_class.__name__


async def test_a_bug_is_logged_with_its_class_counted_and_restarted_with_growing_backoff(
    tasks: BackgroundTasks, caplog: pytest.LogCaptureFixture
) -> None:
    loop = FlakyLoop(KeyError("a"), KeyError("b"), KeyError("c"), KeyError("d"))
    before = restarts("buggy", "KeyError")
    with caplog.at_level(logging.ERROR, logger="handoff_platform.supervision"):
        tasks.start("buggy", loop.run, expected_interval=1.0)
        starts = await started_times(loop, 5)
    assert restarts("buggy", "KeyError") == before + 4
    errors = [r for r in caplog.records if getattr(r, "loop", None) == "buggy"]
    assert [r.__dict__["error"] for r in errors] == ["KeyError"] * 4
    assert all(r.levelno == logging.ERROR and r.exc_info for r in errors)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # jittered into [½, 1] of 0.02, 0.04, 0.08, 0.16 s: the third gap is past the first's bound
    # (the first's own bound has room for a stall of a loaded runner)
    assert gaps[0] < 0.5
    assert gaps[2] >= 0.04
    assert gaps[3] >= 0.08


async def test_backoff_is_capped(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = BackgroundTasks(initial_backoff=0.01, max_backoff=0.02)
    loop = FlakyLoop(*(KeyError(str(n)) for n in range(8)))
    before = restarts("capped", "KeyError")
    try:
        with caplog.at_level(logging.CRITICAL):
            supervisor.start("capped", loop.run, expected_interval=1.0)
            starts = await started_times(loop, 9)
    finally:
        await supervisor.stop()
    assert restarts("capped", "KeyError") == before + 8
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert max(gaps) < 0.2  # 0.01 doubling eight times, uncapped, would be 1.28 s


async def test_a_loop_that_returns_is_restarted_but_a_one_shot_task_is_done(
    tasks: BackgroundTasks, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[str] = []

    async def returns(tag: str) -> None:
        runs.append(tag)

    with caplog.at_level(logging.CRITICAL):
        tasks.start("returns", lambda: returns("loop"), expected_interval=1.0)
        tasks.start("once", lambda: returns("once"), expected_interval=None)

        async def restarted() -> bool:
            return runs.count("loop") >= 2

        deadline = time.monotonic() + 5.0
        while not await restarted():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    assert runs.count("once") == 1
    assert restarts("returns", "RuntimeError") >= 1


async def test_cancellation_stops_the_loop_cleanly_without_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = BackgroundTasks(initial_backoff=0.01)
    loop = FlakyLoop()
    with caplog.at_level(logging.WARNING, logger="handoff_platform.supervision"):
        supervisor.start("cancelled", loop.run, expected_interval=1.0)
        await started_times(loop, 1)
        await asyncio.sleep(0.05)
        await supervisor.stop()
    assert len(loop.starts) == 1
    assert restarts("cancelled", "CancelledError") == 0
    assert not [r for r in caplog.records if getattr(r, "loop", None) == "cancelled"]


async def test_a_stop_arriving_as_the_loop_is_woken_still_stops_it() -> None:
    """A CI run hung in matching's stop: its waiting line waited with asyncio.wait_for, which
    in Python 3.11 swallows a cancellation that arrives as the event is set (bpo-42130)."""
    wake = asyncio.Event()
    waiting = asyncio.create_task(wait_until_set(wake, 60))
    await asyncio.sleep(0)  # one turn of the event loop: the task is now waiting
    wake.set()
    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_wait_ends_with_the_event_or_the_time() -> None:
    wake = asyncio.Event()
    wake.set()
    assert await wait_until_set(wake, 60) is True
    assert await wait_until_set(asyncio.Event(), 0.01) is False


class Stubborn:
    """A loop that swallows its first `ignore` cancellations, as library code may."""

    def __init__(self, ignore: int) -> None:
        self.ignore = ignore
        self.cancellations = 0

    async def run(self) -> None:
        while True:
            beat()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancellations += 1
                if self.cancellations > self.ignore:
                    raise


async def test_stop_cancels_again_a_loop_that_swallowed_its_cancellation(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervision, "STOP_GRACE_SECONDS", 0.2)
    supervisor = BackgroundTasks()
    stubborn = Stubborn(ignore=1)
    supervisor.start("stubborn", stubborn.run, expected_interval=1.0)
    await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="handoff_platform.supervision"):
        await supervisor.stop()

    assert stubborn.cancellations == 2
    [warning] = [r for r in caplog.records if r.getMessage().startswith("loops ignored")]
    assert getattr(warning, "loops", None) == ["stubborn"]


async def test_stop_ends_even_if_a_loop_never_stops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervision, "STOP_GRACE_SECONDS", 0.1)
    supervisor = BackgroundTasks()
    stubborn = Stubborn(ignore=2)
    supervisor.start("deaf", stubborn.run, expected_interval=1.0)
    task = supervisor._loops["deaf"].task
    assert task is not None
    await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="handoff_platform.supervision"):
        await supervisor.stop()

    assert not task.done()
    [error] = [r for r in caplog.records if r.getMessage() == "loops did not stop; abandoned"]
    assert getattr(error, "loops", None) == ["deaf"]
    task.cancel()  # its third cancellation ends it
    with pytest.raises(asyncio.CancelledError):
        await task


def health_app(tasks: BackgroundTasks) -> FastAPI:
    return service_app(
        "supervised", {"loops": tasks.cycling}, liveness_checks={"loops": tasks.alive}
    )


async def status_of(app: FastAPI, path: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return (await client.get(path)).status_code


async def wait_for_status(app: FastAPI, path: str, status: int) -> None:
    deadline = time.monotonic() + 10.0
    while (found := await status_of(app, path)) != status:
        assert time.monotonic() < deadline, f"{path} stayed {found}, never {status}"
        await asyncio.sleep(0.02)


class Stoppable:
    """A loop that cycles until `hang` is set, then waits forever without cycling."""

    def __init__(self) -> None:
        self.hang = asyncio.Event()

    async def run(self) -> None:
        while not self.hang.is_set():
            beat()
            await asyncio.sleep(0.01)
        await asyncio.Event().wait()


async def test_a_loop_that_stops_cycling_makes_readyz_then_healthz_503() -> None:
    # Seconds apart, not tenths: a stalled runner must not skip from 200 to 503 on both.
    supervisor = BackgroundTasks(stuck_factor=2.0, min_stuck_seconds=3.0)
    loop = Stoppable()
    supervisor.start("hangs", loop.run, expected_interval=0.5)
    app = health_app(supervisor)
    try:
        await wait_for_status(app, "/readyz", 200)
        assert await status_of(app, "/healthz") == 200
        loop.hang.set()
        await wait_for_status(app, "/readyz", 503)
        assert await status_of(app, "/healthz") == 200  # not yet stuck long enough
        await wait_for_status(app, "/healthz", 503)
        age = REGISTRY.get_sample_value("handoff_loop_last_cycle_age_seconds", {"loop": "hangs"})
        assert age is not None
        assert age > 3.0
    finally:
        await supervisor.stop()


async def test_a_loop_failing_on_the_database_is_not_ready_but_alive_and_recovers() -> None:
    supervisor = BackgroundTasks(
        initial_backoff=0.02, max_backoff=0.05, stuck_factor=2.0, min_stuck_seconds=0.4
    )
    database_up = asyncio.Event()

    async def needs_the_database() -> None:
        while True:
            if not database_up.is_set():
                raise exceptions.CannotConnectNowError("the database system is starting up")
            beat()
            await asyncio.sleep(0.01)

    supervisor.start("db-loop", needs_the_database, expected_interval=0.2)
    app = health_app(supervisor)
    try:
        await wait_for_status(app, "/readyz", 503)
        await asyncio.sleep(0.6)  # past the stuck limit: restarts keep it alive
        assert await status_of(app, "/healthz") == 200
        database_up.set()
        await wait_for_status(app, "/readyz", 200)
    finally:
        await supervisor.stop()


def _raise(error: Exception) -> Callable[[], None]:
    def route() -> None:
        raise error

    return route


@pytest.mark.parametrize("error_class", CONNECTION_ERRORS, ids=lambda cls: cls.__name__)
async def test_a_transient_database_error_in_a_request_is_503_with_retry_after(
    error_class: type[Exception],
) -> None:
    app = service_app("errors", {})
    app.add_api_route("/json", _raise(error_class("down")))
    app.add_api_route("/page", _raise(error_class("down")), response_class=HTMLResponse)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        json_answer = await client.get("/json")
        page = await client.get("/page")
    assert json_answer.status_code == 503
    assert json_answer.headers["retry-after"].isdigit()
    assert json_answer.json()["error"]["code"] == "service_unavailable"
    assert page.status_code == 503
    assert page.headers["retry-after"].isdigit()
    assert page.headers["content-type"].startswith("text/html")
    assert "try again" in page.text.lower()


async def test_a_bug_that_looks_like_a_database_error_is_still_500() -> None:
    app = service_app("errors", {})
    app.add_api_route("/bug", _raise(exceptions.ClientConfigurationError("bad dsn")))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/bug")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"


class AlwaysFailing:
    """A loop that raises `error()` on every pass until `fixed` is set, then cycles; it
    records when each pass failed."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error = error
        self.fixed = asyncio.Event()
        self.failures: list[float] = []

    async def run(self) -> None:
        if not self.fixed.is_set():
            self.failures.append(time.monotonic())
            raise self.error()
        while True:
            beat()
            await asyncio.sleep(0.01)


async def failed_after(loop: AlwaysFailing, moment: float) -> None:
    """Wait until the loop has failed again after `moment` (time.monotonic())."""
    deadline = time.monotonic() + 5.0
    while not (loop.failures and loop.failures[-1] > moment):
        assert time.monotonic() < deadline, "the loop was not restarted"
        await asyncio.sleep(0.01)


async def test_a_loop_failing_every_pass_with_a_bug_makes_healthz_503_until_it_cycles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A long expected interval: not stale, so only the run of failures can make it stuck.
    supervisor = BackgroundTasks(initial_backoff=0.01, max_backoff=0.02, failing_stuck_seconds=2.0)
    loop = AlwaysFailing(lambda: KeyError("coach"))
    app = health_app(supervisor)
    try:
        with caplog.at_level(logging.CRITICAL):
            started = time.monotonic()
            supervisor.start("bug", loop.run, expected_interval=60.0)
            await failed_after(loop, started)
            assert await status_of(app, "/healthz") == 200  # failing, not yet for long
            await wait_for_status(app, "/healthz", 503)
            assert time.monotonic() - loop.failures[0] > 2.0
            assert await status_of(app, "/readyz") == 200  # it still restarts: not stale
            loop.fixed.set()
            await wait_for_status(app, "/healthz", 200)
    finally:
        await supervisor.stop()


@pytest.mark.parametrize(
    "error",
    [
        lambda: exceptions.CannotConnectNowError("the database system is starting up"),
        lambda: exceptions.ConnectionDoesNotExistError("connection was closed"),
        lambda: ConnectionRefusedError(111, "Connection refused"),
        lambda: KafkaConnectionError("no broker answers"),
        lambda: KafkaTimeoutError(),
    ],
    ids=["cannot-connect-now", "connection-gone", "refused", "kafka-connection", "kafka-timeout"],
)
async def test_a_loop_failing_through_an_outage_never_makes_healthz_503(
    error: Callable[[], Exception], caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = BackgroundTasks(initial_backoff=0.01, max_backoff=0.02, failing_stuck_seconds=0.2)
    loop = AlwaysFailing(error)
    app = health_app(supervisor)
    try:
        with caplog.at_level(logging.CRITICAL):
            started = time.monotonic()
            supervisor.start("outage", loop.run, expected_interval=60.0)
            await failed_after(loop, started + 0.5)  # failing for over twice the limit
            assert await status_of(app, "/healthz") == 200
            assert supervisor.stuck_loops() == []
    finally:
        await supervisor.stop()


async def test_an_outage_between_bugs_starts_the_count_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = BackgroundTasks(initial_backoff=0.01, max_backoff=0.02, failing_stuck_seconds=2.0)
    errors: list[Exception] = []

    def next_error() -> Exception:
        return errors.pop(0) if errors else KeyError("coach")

    loop = AlwaysFailing(next_error)
    try:
        with caplog.at_level(logging.CRITICAL):
            supervisor.start("mixed", loop.run, expected_interval=60.0)
            deadline = time.monotonic() + 10.0
            while supervisor.stuck_loops() != ["mixed"]:
                assert time.monotonic() < deadline, "a loop failing with a bug never got stuck"
                await asyncio.sleep(0.01)
            errors.append(exceptions.CannotConnectNowError("starting up"))
            await failed_after(loop, time.monotonic())
            await failed_after(loop, loop.failures[-1])  # a bug again, counted from here
            assert supervisor.stuck_loops() == []
    finally:
        await supervisor.stop()
