"""The agent's way in: TCP, TLS and the WebSocket opening handshake (RFC 6455 §4.1).

Only the opening handshake of the link is WebSocket's business (then :class:`WebSocketLink`
frames the messages itself), and it is one request and one answer: ``GET`` with ``Upgrade:
websocket``, a random ``Sec-WebSocket-Key`` and the ``rport-py`` subprotocol; the server must
answer ``101`` with the matching ``Sec-WebSocket-Accept``, that subprotocol and no extension.
It is done here rather than by the ``websockets`` library's client, whose connection machinery
(and its HTTP, proxy and compression modules) cost an agent over a megabyte of memory for this
one exchange (docs/performance.md). rportd still uses ``websockets`` to answer it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import os
import ssl
from typing import Any

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_HEAD = 16 * 1024  # the server's 101 is a few hundred bytes


class HandshakeError(Exception):
    """The server did not accept the WebSocket as it should; ``status`` is its HTTP status
    (0 if it did not answer HTTP)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _Opening(asyncio.Protocol):
    """Reads the server's answer to the upgrade request, up to the end of its head."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: Any = None
        self.head = loop.create_future()
        # Read if nobody awaits it any more (the connection failed or timed out before the
        # head was awaited): no "Future exception was never retrieved" in the log.
        self.head.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._buf = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self.head.done():
            return
        if b"\r\n\r\n" in self._buf:
            self.head.set_result(self._buf)
        elif len(self._buf) > MAX_HEAD:
            self.head.set_exception(HandshakeError("the server's answer is too long"))

    def eof_received(self) -> bool:
        if not self.head.done():
            self.head.set_exception(HandshakeError("the server closed the connection during "
                                                   "the WebSocket handshake"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(exc or HandshakeError("connection closed during the "
                                                          "WebSocket handshake"))


class Handshaken:
    """What :func:`rport.core.protocol.websocket.take_over` needs of the opened connection."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Told by the link when the transport is gone (nothing to do here)."""


def _accept(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()


def _check(head: bytes, key: bytes, subprotocol: str) -> None:
    lines = head.split(b"\r\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HandshakeError(f"the server did not answer HTTP: {status_line[:80]!r}")
    status = int(parts[1])
    if status != 101:
        raise HandshakeError(f"the server answered HTTP {status}", status)
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HandshakeError(f"invalid header line in the server's answer: {line[:80]!r}")
        headers.setdefault(name.strip().lower(), []).append(value.strip())

    def one(name: str) -> str:
        values = headers.get(name, [])
        return values[0] if len(values) == 1 else ""

    if one("upgrade").lower() != "websocket":
        raise HandshakeError("the server's 101 does not upgrade to websocket")
    tokens = {t.strip().lower() for v in headers.get("connection", []) for t in v.split(",")}
    if "upgrade" not in tokens:
        raise HandshakeError("the server's 101 lacks Connection: Upgrade")
    if one("sec-websocket-accept") != _accept(key):
        raise HandshakeError("the server's Sec-WebSocket-Accept does not match the key")
    if one("sec-websocket-protocol") != subprotocol:
        raise HandshakeError(f"the server did not accept the {subprotocol} subprotocol")
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("the server asked for WebSocket extensions that were not offered")


async def open_websocket(url_host: str, port: int, path: str, *, ssl_context: ssl.SSLContext,
                         subprotocol: str, timeout: float) -> Handshaken:
    """Connect to ``url_host:port`` (a name, an IPv4 address or a bracketed IPv6 one), do TLS
    with ``ssl_context`` and the WebSocket opening handshake for ``path``; returns the
    connection for ``take_over``. Raises OSError, TimeoutError, ssl.SSLError or
    :class:`HandshakeError`."""
    loop = asyncio.get_running_loop()
    host = url_host[1:-1] if url_host.startswith("[") else url_host
    key = base64.b64encode(os.urandom(16))
    request = (f"GET {path} HTTP/1.1\r\nHost: {url_host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n")
    # An ASCII name or address goes to the resolver as bytes: as a str, uvloop runs it through
    # the idna codec, whose tables then stay loaded (~0.3 MiB). An address needs no SNI (and
    # "" keeps the ssl module's idna encoding away too); a name is sent as SNI, for a
    # TLS-terminating proxy in front of rportd.
    connect_to: str | bytes = host.encode("ascii") if host.isascii() else host
    try:
        ipaddress.ip_address(host)
        sni = ""
    except ValueError:
        sni = host
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, opening = await loop.create_connection(
                lambda: _Opening(loop), connect_to, port, ssl=ssl_context, server_hostname=sni)
            transport.write(request.encode("ascii"))
            head = await opening.head
        answer, _, rest = head.partition(b"\r\n\r\n")
        _check(answer, key, subprotocol)
        if rest:  # the server speaks only after the agent's hello
            raise HandshakeError("the server sent data right after its 101")
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    return Handshaken(transport)
