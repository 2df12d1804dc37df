"""A tunnel stream as the transport of the proxy's :class:`~.upstream.Upstream`.

For an http target the proxy does not connect to the raw tunnel's loopback listener: it opens
the tunnel's stream to the agent itself (``Tunnel.open_stream``), which saves a TCP connection
inside rportd and two socket reads and writes per exchange, and gives a refused connection's
real reason (``connection to 127.0.0.1:9 failed: Connection refused``). :class:`StreamTransport`
is the stream's sink and presents the few transport methods the Upstream uses, so the Upstream
works the same over a stream or over TCP (an https target needs TLS: the loopback listener).

Flow control is the stream's: a write the stream cannot take whole (no credit, or the agent link
is full) is held and pauses the writer (the client's reading) until the stream is writable;
pausing the reading holds the stream's credit, so the agent sends at most one window more.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from rport.core.plugin import SessionClosed


class TunnelStreamError(ConnectionError):
    """The stream was reset: by the agent (``refused``: it could not reach the target), or
    because the tunnel or the agent's session went away."""

    def __init__(self, reason: str, *, refused: bool) -> None:
        super().__init__(reason)
        self.refused = refused


class StreamTransport:
    def __init__(self, stream: Any, protocol: asyncio.Protocol,
                 on_end: Callable[[Any], None]) -> None:
        self._stream = stream
        self._protocol = protocol
        self._on_end = on_end
        self._pending: list[Any] = []  # what the stream did not take yet (writer paused)
        self._writer_paused = False
        self._closing = False  # closed or aborted by the protocol, or ended by the peer
        self._ended = False

    def start(self) -> None:
        """``connection_made``, then what the stream received meanwhile."""
        self._protocol.connection_made(self)  # type: ignore[arg-type]
        if not self._closing:
            self._stream.attach(self)

    # -- transport (called by the protocol) ------------------------------------------------------

    def write(self, data: Any) -> None:
        if self._closing:
            return
        if self._pending:
            self._pending.append(data)  # bounded: the writer is paused
            return
        try:
            n = self._stream.write_nowait(data)
        except SessionClosed:
            return  # reset: stream_reset reports it
        if n < len(data):
            self._pending.append(memoryview(data)[n:])
            if not self._writer_paused:
                self._writer_paused = True
                self._protocol.pause_writing()

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def pause_reading(self) -> None:
        self._stream.hold_credit(True)

    def resume_reading(self) -> None:
        self._stream.hold_credit(False)

    def close(self) -> None:
        """End our side after what was written (the target sees EOF); the stream ends when the
        target ends its side."""
        if self._closing:
            return
        self._closing = True
        if self._pending:  # our side cannot end cleanly: cut
            self._reset()
            return
        self._stream.write_eof_nowait()
        if self._stream.done:
            self._end()

    def abort(self) -> None:
        if self._ended:
            return
        self._closing = True
        self._reset()

    # -- sink (called by the stream) --------------------------------------------------------------

    def stream_data(self, data: Any) -> None:
        if not self._closing:
            self._protocol.data_received(data)

    def stream_eof(self) -> None:
        if self._closing:
            if self._stream.done:
                self._end()
            return
        if not self._protocol.eof_received():
            self._closing = True
            self._stream.write_eof_nowait()
            self._end()
            self._protocol.connection_lost(None)

    def stream_reset(self, reason: str) -> None:
        was_closing, self._closing = self._closing, True
        self._pending.clear()
        self._end()
        if not was_closing:
            self._protocol.connection_lost(TunnelStreamError(reason, refused=self._stream.refused))

    def stream_writable(self) -> None:
        pending, self._pending = self._pending, []
        for i, part in enumerate(pending):
            try:
                n = self._stream.write_nowait(part)
            except SessionClosed:
                return
            if n < len(part):
                self._pending = [memoryview(part)[n:], *pending[i + 1:]]
                return
        if self._writer_paused:
            self._writer_paused = False
            self._protocol.resume_writing()

    # -- internals ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._pending.clear()
        self._stream.reset("closed by the proxy")  # calls stream_reset at once
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._on_end(self._stream)
