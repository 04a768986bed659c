"""Benchmark: the Python cost of one `POST /v1/referrals` in the referral service's own app,
with the database and the network taken out, against the intake floor's app measured the
same way in the same run.

`bench/referral_intake.py` measures the whole intake (uvicorn, PostgreSQL, Kafka, the load
generator on the same two cores), whose rates move by 2x between days on this machine
kind. This script isolates the part that is Handoff's own Python: the referral service's
ASGI app as `make run` builds it (every router, the middleware, the API key, validation,
fingerprint, envelope, outbox row, response), called in-process with an ASGI scope, its
one statement answered by a stub. The reference is `bench/intake_floor.py`'s bare ASGI app,
called the same way with the same bodies and its statement stubbed too. Both run in
alternating chunks, and each prints the least and the median CPU microseconds a request
(`time.process_time`). A busy machine moves both, but not by the same factor (the ratio
read 14x to 31x while a CI run shared the cores): compare runs on a quiet machine, and
read the load average printed first. Logging is left unconfigured, as at `LOG_LEVEL=WARNING`;
the services run at INFO in production, where a POST writes two JSON lines more. Not
included: uvicorn, asyncpg's pool and its encoding of the statement's arguments. With
`--profile`, cProfile's busiest functions of the referral app follow.

    .venv/bin/python -m bench.intake_path [--requests 16000] [--profile]
"""

import argparse
import contextlib
import cProfile
import gc
import json
import os
import pstats
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvloop
from pydantic import SecretStr

from bench.common import at_least
from bench.intake_floor import IntakeFloor
from handoff_cli.demo import demo_referral
from handoff_platform.outbox import Outbox
from handoff_referral.adapters.key_cache import CachedKey
from handoff_referral.app import _http_app
from handoff_referral.domain.api_keys import issue_key
from handoff_referral.domain.referral import Site
from handoff_referral.follow_ups import FollowUpService
from handoff_referral.service import ReferralService
from handoff_referral.settings import ReferralSettings

App = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any
]
CHUNKS = 16
MAX_REQUESTS = 1_000_000
"""Their bodies are built before the run: a million is about a gigabyte."""
SITE = Site(
    site_id="md-bench",
    name="Bench",
    short_name="Bench ED",
    state="MD",
    time_zone="America/New_York",
)


class StubConnection:
    """Answers every statement as a first insert would: the row was new."""

    async def fetchval(self, *_: Any) -> bool:
        return True

    async def execute(self, *_: Any) -> str:
        return "INSERT 0 1"


class StubPool:
    """A pool whose connection is `StubConnection`."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[StubConnection]:
        yield StubConnection()

    async def execute(self, *_: Any) -> str:
        return "INSERT 0 1"


class StubKeys:
    """The API key cache holding one key, as it does once a site's first request is in."""

    def __init__(self, key_id: str, secret_sha256: bytes) -> None:
        self.cached = CachedKey(SITE, secret_sha256, float("inf"))
        self.key_id = key_id

    def get(self, key_id: str) -> CachedKey | None:
        return self.cached if key_id == self.key_id else None


class StubPipeline:
    """What the app's composition asks of the event pipeline: checks and a pool."""

    pool = StubPool()

    def readiness_checks(self) -> dict[str, Any]:
        return {}

    def liveness_checks(self) -> dict[str, Any]:
        return {}


def referral_app() -> tuple[App, str]:
    """The referral service's ASGI app over stubs, and a valid API key for it."""
    issued = issue_key()
    keys = StubKeys(issued.key_id, issued.secret_sha256)
    pool: Any = StubPool()
    service = ReferralService(pool, Outbox("referral"), keys)  # type: ignore[arg-type]
    settings = ReferralSettings(
        database_url="postgresql://bench/none",
        kafka_bootstrap_servers="localhost:9092",
        referral_admin_token=SecretStr("bench"),
    )
    follow_ups: Any = FollowUpService.__new__(FollowUpService)
    pipeline: Any = StubPipeline()
    return _http_app(settings, service, pipeline, follow_ups), issued.token


def floor_app() -> App:
    """`bench/intake_floor.py`'s app with its pool stubbed."""
    floor = IntakeFloor("postgresql://bench/none", 1)
    floor.pool = StubPool()  # type: ignore[assignment]
    return floor


async def post(app: App, path: str, body: bytes, token: str) -> int:
    """One POST through `app` as uvicorn would call it; the response's status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8001),
        "state": {},
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def chunk(app: App, path: str, bodies: list[bytes], token: str) -> float:
    """CPU microseconds a request over `bodies`; raises if any answer is not 201."""
    started = time.process_time()
    for body in bodies:
        status = await post(app, path, body, token)
        if status != 201:
            raise SystemExit(f"{path} answered {status}, not 201: the figures would be void")
    return (time.process_time() - started) / len(bodies) * 1e6


async def measure(requests: int, profile: bool) -> None:
    """Warm both apps, then alternate `CHUNKS` chunks of each, `requests` in all (both apps
    take the same bodies); print least and median per request. The collector is set as the
    services set it for the run, and put back after."""
    referral, token = referral_app()
    floor = floor_app()
    size = requests // (2 * CHUNKS)
    bodies = [json.dumps(demo_referral(f"path-{n}")).encode() for n in range(size * (CHUNKS + 1))]
    warm = bodies[:size]
    await chunk(referral, "/v1/referrals", warm, token)
    await chunk(floor, "/", warm, token)
    threshold = gc.get_threshold()
    gc.freeze()  # as the services do once started (handoff_platform.http.serve_http)
    gc.set_threshold(7000, 10, 10)
    results: dict[str, list[float]] = {"floor": [], "referral": []}
    try:
        for number in range(1, CHUNKS + 1):
            part = bodies[size * number : size * (number + 1)]
            results["floor"].append(await chunk(floor, "/", part, token))
            results["referral"].append(await chunk(referral, "/v1/referrals", part, token))
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {CHUNKS} chunks "
        f"of {size} requests each, alternating; CPU µs a request, database and network stubbed"
    )
    for name, label in (
        ("floor", "reference: intake floor's app"),
        ("referral", "POST /v1/referrals, the service's app"),
    ):
        figures = results[name]
        print(f"{label:<40} least {min(figures):6.0f}  median {statistics.median(figures):6.0f}")
    ratio = statistics.median(results["referral"]) / statistics.median(results["floor"])
    print(f"the service's app costs {ratio:.1f}x the floor's app (medians)")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await chunk(referral, "/v1/referrals", bodies[:size], token)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests",
        type=at_least(2 * CHUNKS, int, MAX_REQUESTS),
        default=16000,
        help=f"requests to each app, {2 * CHUNKS} to {MAX_REQUESTS:,} (default 16000)",
    )
    parser.add_argument("--profile", action="store_true", help="then cProfile the service's app")
    arguments = parser.parse_args()
    uvloop.run(measure(int(arguments.requests), arguments.profile))
