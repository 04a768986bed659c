"""MLLP (the Minimal Lower Layer Protocol) over TCP: HL7 v2 messages framed by a start block
(0x0B) and an end block (0x1C 0x0D), one ACK back per message, in order, on the connection
it came in on. Many connections at once; each is read one message at a time, as engines
send in original mode.

asyncio streams rather than python-hl7's `hl7.mllp`: those classes subclass asyncio's
internals and decode as ASCII by default; reading up to the end block is all the framing
needs, and the bytes go to the intake undecoded.
"""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from handoff_referral.metrics import MLLP_CONNECTIONS, MLLP_FRAMING_ERRORS, MLLP_TIMEOUTS

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_MESSAGE_BYTES = 1024 * 1024
"""A larger frame closes the connection: no consult order comes near it."""

_FRAME_END = b"\x1c"
_FILLER = (b"\r", b"\n")  # the end block's 0x0D, and newlines some engines put between frames

Handler = Callable[[bytes], Awaitable[bytes]]


IDLE_SECONDS = 300.0
FRAME_SECONDS = 30.0


class MllpServer:
    """Listens for MLLP on a TCP port and answers each message with `handle(message)`, which
    returns the ACK's bytes and never raises.

    A connection on which no message begins within `idle_seconds`, or whose begun frame does
    not end within `frame_seconds`, is closed (counted in MLLP_TIMEOUTS): half-sent frames
    and silent peers would otherwise hold a socket each until the listener runs out of
    file descriptors and refuses every hospital."""

    def __init__(
        self,
        handle: Handler,
        *,
        idle_seconds: float = IDLE_SECONDS,
        frame_seconds: float = FRAME_SECONDS,
    ) -> None:
        self.handle = handle
        self.idle_seconds = idle_seconds
        self.frame_seconds = frame_seconds
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on `host`:`port` (0: any free port); returns the port. Replicas on one host
        may share the port (SO_REUSEPORT), as the HTTP services do."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        self._server = await asyncio.start_server(
            self._connection, sock=sock, limit=MAX_MESSAGE_BYTES
        )
        bound: int = sock.getsockname()[1]
        log.info("MLLP listening", extra={"host": host, "port": bound})
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):  # not wait_for: see supervision.wait_until_set
                    await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        MLLP_CONNECTIONS.inc()
        try:
            while (
                message := await _next_message(reader, self.idle_seconds, self.frame_seconds)
            ) is not None:
                ack = await self.handle(message)
                writer.write(START_BLOCK + ack + END_BLOCK)
                await writer.drain()
        except ConnectionError:
            return  # reset by the peer: it resends what it has no ACK for
        finally:
            MLLP_CONNECTIONS.dec()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _next_message(
    reader: asyncio.StreamReader, idle_seconds: float, frame_seconds: float
) -> bytes | None:
    """The bytes of the next framed message; None when the connection is to end (closed by the
    engine, a frame over MAX_MESSAGE_BYTES, no start block within `idle_seconds`, or no end
    of the frame within `frame_seconds` of its start block).

    The frame ends at 0x1C: the 0x0D after it is read as filler before the next start block,
    so an engine that leaves the 0x0D out is answered rather than left waiting. Bytes outside
    a frame (an engine without MLLP wrapping, an HTTP request) are logged, without their
    content, and counted, once per run of them; reading resumes at the next start block."""
    try:
        phase = "idle"
        async with asyncio.timeout(idle_seconds) as deadline:
            while (byte := await reader.read(1)) != START_BLOCK:
                if not byte:
                    return None
                if byte not in _FILLER:
                    MLLP_FRAMING_ERRORS.labels("no_start_block").inc()
                    log.warning("MLLP bytes outside a frame (no start block) skipped")
                    await reader.readuntil(START_BLOCK)
                    break
            # The whole frame within its own, shorter, budget: a peer trickling a byte now
            # and then cannot keep a socket by never finishing.
            phase = "partial_frame"
            deadline.reschedule(asyncio.get_running_loop().time() + frame_seconds)
            return (await reader.readuntil(_FRAME_END))[:-1]
    except TimeoutError:
        MLLP_TIMEOUTS.labels(phase).inc()
        log.warning("MLLP connection closed: nothing read in time", extra={"phase": phase})
        return None
    except asyncio.IncompleteReadError:
        return None  # the engine closed the connection, mid-frame or not: it resends
    except asyncio.LimitOverrunError:
        MLLP_FRAMING_ERRORS.labels("too_large").inc()
        log.warning("MLLP frame over 1 MiB: connection closed")
        return None


def frame(message: bytes) -> bytes:
    """`message` in MLLP's start and end blocks, as a sender puts it on the wire."""
    return START_BLOCK + message + END_BLOCK
