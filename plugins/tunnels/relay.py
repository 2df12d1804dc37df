"""Copy bytes between a TCP connection and a session stream, both ways, with half-close.

EOF from either side is passed on as a half-close; an error on either side aborts both (the
stream is reset with the reason, the socket closed). Memory is bounded: one chunk in flight per
direction, plus the stream's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

from rport.core.plugin import SessionClosed, Stream

log = logging.getLogger("rport.plugins.tunnels")

CHUNK = 1 << 16


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream,
                *, on_activity: Callable[[], None] | None = None, label: str = "") -> str:
    """Run until both directions are finished; returns "" or the reason of an abort."""
    touch = on_activity or (lambda: None)

    async def upstream() -> None:  # socket -> stream
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            touch()
            await stream.write(data)
        await stream.write_eof()

    async def downstream() -> None:  # stream -> socket
        while True:
            data = await stream.read()
            if not data:
                break
            touch()
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()

    tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
    reason = ""
    try:
        for fut in asyncio.as_completed(tasks):
            try:
                await fut
            except (ConnectionError, OSError, SessionClosed) as exc:
                reason = str(exc) or exc.__class__.__name__
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if reason:
            stream.reset(reason)
            log.debug("%s aborted: %s", label, reason)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return reason
