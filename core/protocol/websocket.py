"""The WebSocket transport of the agent link (the ``websockets`` library, inside TLS).

Adapts a websockets connection (client or server side, same API) to the message transport the
multiplexed session needs, and maps websockets' close codes to readable reasons.
"""

from __future__ import annotations

import attrs
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ..session import ProtocolViolation
from .mux import TransportClosed

SUBPROTOCOL = "rport-py"

FRAME_OVERHEAD = 64
"""Bytes a frame adds to its payload (header), rounded up generously for max_size."""


@attrs.frozen
class LinkSettings:
    """Explicit limits of one WebSocket, identical on both ends (see docs/operations.md)."""

    max_message: int  # largest message accepted (control JSON and DATA frames)
    ping_interval: float | None  # keepalive: a ping this often...
    ping_timeout: float | None  # ...and the peer is dead without a pong within this
    write_limit: int = 1 << 20  # high-water mark of the send buffer before send() waits
    max_queue: int = 64  # received messages buffered before reading from the socket pauses
    close_timeout: float = 2.0  # a dead peer is not waited for long when closing

    def connection_options(self) -> dict:
        return {
            "max_size": self.max_message,
            "ping_interval": self.ping_interval,
            "ping_timeout": self.ping_timeout,
            "write_limit": self.write_limit,
            "max_queue": self.max_queue,
            "close_timeout": self.close_timeout,
            "compression": None,  # no per-message compression: data is often compressed already
        }


def describe_close(exc: ConnectionClosed) -> str:
    """A readable reason for a closed connection, from either side's close frame."""
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "connection lost"
    if frame.code == CloseCode.MESSAGE_TOO_BIG:
        return "message too big"
    if frame.code == CloseCode.INTERNAL_ERROR and "keepalive" in frame.reason:
        return "keepalive timeout: the peer did not answer pings"
    who = "peer" if exc.rcvd is not None and exc.rcvd_then_sent is not False else "we"
    return f"{who} closed the connection ({frame.code}{': ' + frame.reason if frame.reason else ''})"


class WebSocketTransport:
    def __init__(self, ws: Connection) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        try:
            await self.ws.send(data)
        except ConnectionClosed as exc:
            raise TransportClosed(describe_close(exc)) from None

    async def recv(self) -> bytes:
        try:
            message = await self.ws.recv()
        except ConnectionClosed as exc:
            reason = describe_close(exc)
            if reason == "message too big":
                raise ProtocolViolation("message larger than the agreed maximum") from None
            raise TransportClosed(reason) from None
        if isinstance(message, str):
            raise ProtocolViolation("text message on the agent link (only binary frames are allowed)")
        return message

    async def close(self, reason: str = "", *, violation: bool = False) -> None:
        code = CloseCode.PROTOCOL_ERROR if violation else CloseCode.NORMAL_CLOSURE
        await self.ws.close(code, reason[:120])
