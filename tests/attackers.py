"""Attackers for the hardening tests: plain sockets that connect and then say nothing (or little).

Several source addresses come from the loopback network (Linux routes all of 127.0.0.0/8 to the
loopback device), so a test can play many hosts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import socket
import struct
from collections.abc import Iterator

import pytest

TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def enough_fds() -> Iterator[None]:
    """Attacks hold over a thousand sockets in the test process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def idle_connections(port: int, sources: list[str]) -> Iterator[list[socket.socket]]:
    """One TCP connection to ``port`` from each address in ``sources``, in order; none sends a
    byte. Closed at the end."""
    socks: list[socket.socket] = []
    try:
        for source in sources:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((source, 0))
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)  # is_open() peeks without waiting
        yield socks
    finally:
        for sock in socks:
            sock.close()


def is_open(sock: socket.socket) -> bool:
    """The server has neither closed nor reset the connection (nor sent anything on it)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def is_closed(sock: socket.socket) -> bool:
    return not is_open(sock)


def spread(n: int, per_address: int, net: str = "127.0.1") -> list[str]:
    """``n`` source addresses, ``per_address`` connections from each."""
    return [f"{net}.{1 + i // per_address}" for i in range(n)]




# -- raw WebSocket clients --------------------------------------------------------------------------

OP_CONT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked WebSocket frame, as an agent sends it (RFC 6455 section 5.2), by hand."""
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((b0, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", b0, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def ws_upgrade(port: int, *, rcvbuf: int = 0) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
    """TLS and the WebSocket upgrade to rportd's agent endpoint, by hand: afterwards the caller
    writes frames (``ws_frame``) and reads what it wants. ``rcvbuf``: a small receive buffer
    (set before connecting), for a peer that reads slowly or not at all."""
    from rport.core.keys import client_ssl_context

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, ssl=client_ssl_context(),
                                                   server_hostname="rportd")
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rport-py\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame from the server (unmasked): (opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


async def register_clients(port: int, ids: list[str], *, auth: tuple[str, str] = ("user1", "1234"),
                           ) -> None:
    """Make rportd know clients ``ids`` (each says a valid hello, is welcomed, and hangs up):
    many known clients without as many agent processes."""
    from rport.core.protocol.frames import T, decode, encode_json

    async def one(client_id: str) -> None:
        reader, writer = await ws_upgrade(port)
        try:
            writer.write(ws_frame(OP_BINARY, encode_json(T.HELLO, 0, {
                "protocols": [1], "version": "test", "auth": {"id": auth[0], "password": auth[1]},
                "client": {"id": client_id, "name": client_id}})))
            _, payload = await asyncio.wait_for(read_frame(reader), TIMEOUT)
            assert decode(payload)[0] is T.WELCOME, payload
        finally:
            writer.close()

    for start in range(0, len(ids), 20):
        await asyncio.gather(*(one(cid) for cid in ids[start:start + 20]))
