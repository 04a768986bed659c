"""The intake's floor for `bench/referral_intake.py`: the least an HTTP intake in Python can do
for one referral, to tell what FastAPI, validation, API keys and the timeline cost from what
any Python HTTP service on this machine would.

A bare ASGI app under uvicorn (uvloop, httptools, as the referral service runs): `POST /`
parses the JSON body and, in one statement and one durable commit, writes the referral, its
first timeline step and its outbox row (as the referral service's intake does), then
answers `201` with the new id. No authentication, no validation, no relay to Kafka.

    .venv/bin/python -m bench.intake_floor --port PORT --database-url URL [--pool-size 32]
"""

import argparse
import gc
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import uvicorn

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_referrals (
    referral_id uuid PRIMARY KEY, external_id text NOT NULL, body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS floor_timeline (
    referral_id uuid NOT NULL REFERENCES floor_referrals, status text NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS floor_outbox (
    position bigserial PRIMARY KEY, partition_key text NOT NULL, body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
"""

INTAKE = """
WITH referral AS (
    INSERT INTO floor_referrals (referral_id, external_id, body) VALUES ($1, $2, $3::jsonb)),
step AS (INSERT INTO floor_timeline (referral_id, status) VALUES ($1, 'received'))
INSERT INTO floor_outbox (partition_key, body) VALUES ($1::text, $4)"""


class IntakeFloor:
    """The ASGI app; `pool` is opened at the lifespan's start-up."""

    def __init__(self, database_url: str, pool_size: int) -> None:
        self.database_url, self.pool_size = database_url, pool_size
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] != "POST":
            await self.answer(send, 200, b"{}")
            return
        referral = json.loads(body)
        referral_id = uuid.uuid4()
        assert self.pool is not None
        await self.pool.execute(
            INTAKE,
            referral_id,
            str(referral.get("external_id", "")),
            body.decode(),
            json.dumps({"referral_id": str(referral_id)}).encode(),
        )
        await self.answer(send, 201, json.dumps({"referral_id": str(referral_id)}).encode())

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """ASGI lifespan: the pool and the tables at start-up, the pool closed at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = await asyncpg.create_pool(
                    self.database_url, min_size=self.pool_size, max_size=self.pool_size
                )
                await self.pool.execute(SCHEMA)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def answer(send: Send, status: int, body: bytes) -> None:
        """A JSON response of `status` with `body`."""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pool-size", type=int, default=32)
    arguments = parser.parse_args()
    # The collector as the services set it (handoff_platform.http.serve_http).
    gc.freeze()
    gc.set_threshold(7000, 10, 10)
    uvicorn.run(
        IntakeFloor(arguments.database_url, arguments.pool_size),
        host="127.0.0.1",
        port=arguments.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
