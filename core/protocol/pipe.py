"""Join a TCP connection and a session stream, both ways, in callbacks only.

:class:`SocketPipe` is the ``asyncio.Protocol`` of the TCP connection and the sink of the
stream: bytes read from the socket are written to the stream from ``data_received``, and bytes
from the stream are written to the socket from the link's receive callback. No task, queue or
await lies on the data path, so a tunnelled round trip costs each process two callbacks.

Half-close is passed on both ways. Memory is bounded by flow control, not by buffers: when the
peer's window or the link is full, reading from the socket pauses (at most one read is held);
when the socket's send buffer is above its limit, the stream stops acknowledging data (the peer
then sends at most one more window). An error on either side aborts both: the stream is reset
with the reason and the socket aborted.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..session import SessionClosed, Stream


def _noop() -> None:
    pass


class SocketPipe(asyncio.Protocol):
    """Use as the protocol of a TCP connection (``loop.create_server``/``create_connection``),
    then :meth:`attach` the stream; :meth:`wait` returns when both directions are finished.

    ``on_connect(pipe)`` is called from ``connection_made`` (e.g. to check the source address
    and :meth:`abort`); ``on_activity()`` whenever data moves (idle tracking)."""

    def __init__(self, *, on_connect: Callable[["SocketPipe"], None] | None = None,
                 on_activity: Callable[[], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self._on_connect = on_connect
        self._touch = on_activity or _noop
        self._done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending: Any = b""  # read from the socket, not yet taken by the stream
        self._eof_pending = False  # the socket's EOF, behind _pending
        self._reading_paused = False
        self._writing_paused = False
        self._up_done = False  # socket -> stream finished (EOF passed on)
        self._down_done = False  # stream -> socket finished (EOF written)

    @property
    def peername(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport else None

    async def wait(self) -> str:
        """Until both directions are finished; returns "" or why the connection was aborted."""
        return await asyncio.shield(self._done)

    @property
    def finished(self) -> bool:
        return self._done.done()

    def add_done_callback(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` (soon) once both directions are finished, as :meth:`wait`
        would return."""
        self._done.add_done_callback(lambda done: callback(done.result()))

    def attach(self, stream: Stream) -> None:
        """Start moving data. Data read from the socket before is sent first; data the stream
        received before is written to the socket at once."""
        self.stream = stream
        if self._writing_paused:
            stream.hold_credit(True)
        stream.attach(self)
        if not self._done.done():
            self._flush()

    def abort(self, reason: str) -> None:
        """Abort both directions: reset the stream, abort the socket."""
        self._finish(reason or "aborted")

    # -- socket side ----------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._touch()
        if self._pending or self.stream is None:
            self._pending = bytes(self._pending) + data if self._pending else data
            self._pause_reading()
        else:
            self._send(data)

    def eof_received(self) -> bool:
        if self._pending or self.stream is None:
            self._eof_pending = True
        else:
            self._send_eof()
        return True  # keep the socket open for the other direction

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.stream is not None:
            self.stream.hold_credit(True)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.stream is not None:
            self.stream.hold_credit(False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done.done():
            return
        if exc is None and self._up_done and self._down_done:
            self._done.set_result("")
        else:
            self._finish(str(exc) if exc is not None else "connection closed")

    # -- stream side (StreamSink) ---------------------------------------------------------------

    def stream_data(self, data: Any) -> None:
        self._touch()
        assert self.transport is not None
        self.transport.write(data)

    def stream_eof(self) -> None:
        assert self.transport is not None
        self._down_done = True
        if self.transport.can_write_eof() and not self.transport.is_closing():
            self.transport.write_eof()
        self._maybe_close()

    def stream_reset(self, reason: str) -> None:
        self._finish(reason or "reset")

    def stream_writable(self) -> None:
        self._flush()

    # -- internals --------------------------------------------------------------------------------

    def _send(self, data: Any) -> None:
        assert self.stream is not None
        try:
            n = self.stream.write_nowait(data)
        except SessionClosed as exc:
            self._finish(str(exc) or "session closed")
            return
        if n < len(data):
            self._pending = memoryview(data)[n:]
            self._pause_reading()

    def _flush(self) -> None:
        if self._pending:
            data, self._pending = self._pending, b""
            self._send(data)
        if not self._pending and not self._done.done():
            if self._eof_pending:
                self._eof_pending = False
                self._send_eof()
            elif self._reading_paused and not self._up_done:
                self._reading_paused = False
                assert self.transport is not None
                self.transport.resume_reading()

    def _send_eof(self) -> None:
        assert self.stream is not None
        self._up_done = True
        self.stream.write_eof_nowait()
        self._maybe_close()

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def _maybe_close(self) -> None:
        if self._up_done and self._down_done and self.transport is not None:
            self.transport.close()  # connection_lost then resolves the pipe

    def _finish(self, reason: str) -> None:
        if self._done.done():
            return
        self._done.set_result(reason)
        self._pending = b""
        if self.stream is not None:
            self.stream.reset(reason)
        if self.transport is not None:
            self.transport.abort()
