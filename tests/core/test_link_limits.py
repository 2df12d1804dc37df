"""The link's bounds, in process over a real TLS WebSocket on 127.0.0.1: output a peer does not
read (tighter before the agent is admitted), fragments, and the work done per read.

The peers are raw clients (tests/attackers.py) that write frames by hand and read (or do not
read) what they want; the server side is the link and session rportd uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from rport.core.keys import load_or_create_server_identity, server_ssl_context
from rport.core.protocol.frames import T, decode, encode_json
from rport.core.protocol.websocket import MAX_FRAMES_PER_READ, LinkSettings, server_process_response
from rport.core.session import Handlers
from websockets.asyncio.server import ServerConnection, serve

from ..attackers import OP_BINARY, OP_PING, OP_PONG, TIMEOUT, read_frame, ws_frame, ws_upgrade
from .test_mux import mux_listener, within

HELLO_LIMITS = LinkSettings(max_message=1 << 20, ping_interval=None, ping_timeout=None,
                            hello_max_message=64 << 10)


@contextlib.asynccontextmanager
async def handshake_listener(tmp_path: Path) -> AsyncIterator[tuple[int, asyncio.Queue]]:
    """A server whose links stay in the handshake (never admitted); each link's end reason and
    whether it was a violation go to the queue. Its sockets have a small send buffer (accepted
    sockets inherit it from the listening one), so that unread output reaches the link soon."""
    identity = load_or_create_server_identity(tmp_path / "identity")
    ended: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.bind(("127.0.0.1", 0))

    async def handler(ws: ServerConnection) -> None:
        link = ws.rport_link
        reason = await link.wait_lost()
        await ended.put((reason, link.violation))

    async with serve(handler, sock=sock, ssl=server_ssl_context(identity),
                     process_response=server_process_response(HELLO_LIMITS),
                     **HELLO_LIMITS.connection_options()):
        yield sock.getsockname()[1], ended


def test_unread_pongs_before_admission_are_bounded(tmp_path: Path) -> None:
    """Pings, one at a time, from a peer that reads nothing: before admission the link holds at
    most 64 KiB of pongs for it (after: max_unsent, 4 MiB), then drops it."""

    async def main() -> None:
        async with handshake_listener(tmp_path) as (port, ended):
            _, writer = await ws_upgrade(port, rcvbuf=4096)
            writer.transport.pause_reading()
            ping = ws_frame(OP_PING, b"p" * 125)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            sent = 0
            with contextlib.suppress(ConnectionError, OSError):
                while ended.empty() and loop.time() < deadline:
                    writer.write(ping)
                    sent += 1
                    await writer.drain()
                    await asyncio.sleep(0.001)  # one ping per read: each is answered
            writer.close()
            reason, violation = await within(ended.get(), TIMEOUT, "the link to end")
            assert reason == "the peer sends but does not read" and violation, reason
            # ~64 KiB of 127-byte pongs plus the kernel's buffers, far below 64 MiB
            assert sent < 5000, sent

    asyncio.run(main())


def test_a_burst_of_pings_gets_few_pongs(tmp_path: Path) -> None:
    async def main() -> None:
        async with handshake_listener(tmp_path) as (port, _):
            reader, writer = await ws_upgrade(port)
            n = 2000
            writer.write(ws_frame(OP_PING, b"burst") * n + ws_frame(OP_PING, b"last"))
            await writer.drain()
            pongs = 0
            while True:
                opcode, payload = await within(read_frame(reader), TIMEOUT, "a pong")
                assert opcode == OP_PONG
                pongs += 1
                if payload == b"last":
                    break
            # One pong per read of the burst (RFC 6455 5.5.3 allows answering only the last
            # ping): at most one per MAX_FRAMES_PER_READ frames or per TLS record.
            assert pongs <= n // 20, pongs
            writer.close()

    asyncio.run(main())


def test_a_burst_of_small_messages_is_handled_in_slices_in_order(tmp_path: Path) -> None:
    """Far more frames in one write than one read may handle: all are answered, in order (a
    request for no handler is answered at once, from the receive path)."""
    n = MAX_FRAMES_PER_READ * 12

    async def main() -> None:
        async with mux_listener(tmp_path, Handlers()) as listener:
            reader, writer = await ws_upgrade(listener.port)
            writer.write(b"".join(ws_frame(OP_BINARY, encode_json(T.REQUEST, i, {"name": "nope"}))
                                  for i in range(1, n + 1)))
            await writer.drain()
            for i in range(1, n + 1):
                opcode, payload = await within(read_frame(reader), TIMEOUT, f"answer {i}")
                ftype, ident, body = decode(payload)
                assert (opcode, ftype, ident) == (OP_BINARY, T.RESPONSE, i)
                assert json.loads(body) == {"ok": False, "error": "unknown request: nope"}
            writer.close()

    asyncio.run(main())
