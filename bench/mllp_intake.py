"""Benchmark: HL7 v2 consult orders over MLLP, against POST /v1/referrals in the same run.

Runs `handoff referral mllp serve` and `handoff referral serve` as their own processes on
a real PostgreSQL and Kafka (the ones in DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, or its own
local ones with PostgreSQL's durable defaults), and prints, each back to back for a fixed
time (a sender waits for each ACK before the next message, as engines do in original mode):

- ORM^O01 orders over 1 MLLP connection, then over 8: messages/s and ACK latency p50/p99
  (from the message written to its ACK read back), and how many ACKs were not AA;
- the reference, measured in the same run on the same database: POST /v1/referrals from
  1 and 8 HTTP clients, the same referral through the REST API.

    .venv/bin/python -m bench.mllp_intake [--seconds 20]
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from bench.common import fresh_database, handoff, infrastructure
from bench.referral_intake import drive, referral_posts, report
from handoff_devenv.ports import free_ports
from handoff_devenv.service_process import running_service
from tests.support.hl7_messages import interface, order

SITE = "md-bench"
FACILITY = "BENCH"
END_BLOCK = b"\x1c\x0d"


@contextlib.contextmanager
def mllp_listener(env: dict[str, str]) -> Iterator[int]:
    """`handoff referral mllp serve` until the block ends; yields its MLLP port once ready."""
    port, http_port = free_ports(2)
    command = ["referral", "mllp", "serve", "--port", str(port), "--http-port", str(http_port)]
    process = subprocess.Popen([sys.executable, "-m", "handoff_cli", *command], env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz").status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the MLLP listener did not get ready")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


async def mllp_orders(
    port: int, connections: int, seconds: float
) -> tuple[list[float], int, float]:
    """Back-to-back orders over `connections` MLLP connections; ACK latencies in ms, orders
    not accepted (AA), and the seconds until the last ACK."""
    run = uuid.uuid4().hex[:6].upper()
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    free = asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]()
    for stream in streams:
        free.put_nowait(stream)

    async def one(number: int) -> bool:
        reader, writer = await free.get()
        try:
            message = order(FACILITY, f"B{run}{number}", f"B-{run}-{number}", visit=f"V{number}")
            writer.write(b"\x0b" + message + END_BLOCK)
            await writer.drain()
            ack = await reader.readuntil(END_BLOCK)
        finally:
            free.put_nowait((reader, writer))
        return b"\rMSA|AA|" in ack

    try:
        return await drive(connections, seconds, one)
    finally:
        for _, writer in streams:
            writer.close()


async def measure(mllp_port: int, url: str, token: str, database_url: str, seconds: float) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {seconds:.0f} s each, back to back"
    )
    rates = {}
    for clients in (1, 8):
        posts, errors, took, _ = await referral_posts(url, token, database_url, clients, seconds)
        rates[f"rest-{clients}"] = report(
            f"reference: POST /v1/referrals x{clients}", posts, errors, took
        )
        acks, not_aa, took = await mllp_orders(mllp_port, clients, seconds)
        rates[f"mllp-{clients}"] = report(
            f"MLLP ORM^O01, {clients} connection{'s' if clients > 1 else ''}",
            acks,
            not_aa,
            took,
        )
    for clients in (1, 8):
        ratio = rates[f"mllp-{clients}"] / rates[f"rest-{clients}"]
        print(f"MLLP / REST at {clients}: {ratio:.2f}x")


def main(seconds: float) -> None:
    with infrastructure() as servers:
        database_url = asyncio.run(fresh_database(servers.database_url))
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
            "LOG_LEVEL": "WARNING",
            "FOLLOW_UP_KEYS": Fernet.generate_key().decode(),  # referral serves only with a key
        }
        site = ["--id", SITE, "--name", "Bench", "--short-name", "Bench ED", "--state", "MD"]
        handoff("referral", "site", "add", *site, "--time-zone", "America/New_York", env=env)
        token = handoff("referral", "key", "create", "--site", SITE, "--label", "bench", env=env)
        with tempfile.TemporaryDirectory() as directory:
            mapping = Path(directory) / "interface.json"
            mapping.write_text(json.dumps(interface(SITE, FACILITY)))
            handoff("referral", "interface", "add", str(mapping), env=env)
        with running_service("referral", env) as url, mllp_listener(env) as port:
            asyncio.run(measure(port, url, token, database_url, seconds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    arguments = parser.parse_args()
    main(arguments.seconds)
