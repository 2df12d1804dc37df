"""Copy bytes between a TCP connection and a session stream, both ways, with half-close.

EOF from either side is passed on as a half-close; an error on either side aborts both (the
stream is reset with the reason, the socket aborted). Memory is bounded: one chunk in flight per
direction, plus the stream's window. The socket-to-stream direction runs in the caller's task and
the other in one extra task: a tunnelled connection costs as few task switches as possible.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from rport.core.plugin import SessionClosed, Stream

log = logging.getLogger("rport.plugins.tunnels")

CHUNK = 1 << 16
_ERRORS = (ConnectionError, OSError, SessionClosed)


def _noop() -> None:
    pass


async def _downstream(stream: Stream, writer: asyncio.StreamWriter, touch: Callable[[], None]) -> None:
    while data := await stream.read():
        touch()
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream,
                *, on_activity: Callable[[], None] | None = None, label: str = "") -> str:
    """Run until both directions are finished; returns "" or the reason of an abort."""
    touch = on_activity or _noop
    down = asyncio.ensure_future(_downstream(stream, writer, touch))

    def down_done(task: asyncio.Future[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            writer.transport.abort()  # wakes the upstream read below

    down.add_done_callback(down_done)
    reason = ""
    try:
        try:
            while data := await reader.read(CHUNK):
                touch()
                await stream.write(data)
            await stream.write_eof()
        except _ERRORS as exc:
            reason = str(exc) or exc.__class__.__name__
            stream.reset(reason)  # wakes the downstream task's read
        try:
            await down
        except _ERRORS as exc:
            reason = reason or str(exc) or exc.__class__.__name__
    except BaseException:  # cancelled: the tunnel is closing
        reason = reason or "tunnel closed"
        raise
    finally:
        if not down.done():
            down.cancel()
        if reason:
            stream.reset(reason)
            writer.transport.abort()
            log.debug("%s aborted: %s", label, reason)
        else:
            writer.close()
    return reason
