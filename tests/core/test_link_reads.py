"""How ``WebSocketLink`` puts messages together from what the TLS transport reads.

These tests feed a link's byte stream to ``data_received`` as the transport does, cut at every
possible place, and check that every message comes out whole, and that a message handed on (as
bytes, or a memoryview of them for large ones) is not changed by later reads, which go through
the link's reassembly buffer. The transport under the link is a stand-in that records what the
link writes; the end-to-end behaviour over real TLS is in test_link.py and test_mux.py.
"""

from __future__ import annotations

import asyncio
import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from rport.core.protocol.websocket import LinkSettings, WebSocketLink

from .test_link import client_frame

SETTINGS = LinkSettings(max_message=1 << 20, ping_interval=None, ping_timeout=None)


class RecordingTransport:
    """What the link needs of a transport; ``written`` keeps what it sent (pongs, closes)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def frame(payload: bytes, *, opcode: int = 0x2, masked: bool = False) -> bytes:
    """One RFC 6455 frame; ``masked`` as the agent sends them (what the server reads)."""
    return client_frame(opcode, payload, masked=masked)


def make_link(*, client: bool) -> tuple[WebSocketLink, list[bytes], RecordingTransport]:
    transport = RecordingTransport()
    link = WebSocketLink(SimpleNamespace(transport=transport), SETTINGS, client=client)
    received: list[Any] = []
    link.set_receiver(received.append)
    return link, received, transport


def feed(link: WebSocketLink, data: bytes) -> None:
    """Hand ``data`` to the link as one read of the transport."""
    link.data_received(data)


def as_bytes(messages: list[Any]) -> list[bytes]:
    return [bytes(m) for m in messages]


MESSAGES = [b"x" * 64, b"", os.urandom(125), os.urandom(126), os.urandom(5000), os.urandom(70000)]


@pytest.mark.parametrize("client", [True, False], ids=["agent-end", "server-end"])
def test_messages_whole_whatever_the_cut(client: bool) -> None:
    async def main() -> None:
        stream = b"".join(frame(m, masked=not client) for m in MESSAGES)
        # every cut into two reads in the small frames, and a spread of cuts in the large ones
        cuts = list(range(1, 400)) + list(range(400, len(stream), 997))
        for cut in cuts:
            link, received, _ = make_link(client=client)
            feed(link, stream[:cut])
            feed(link, stream[cut:])
            assert as_bytes(received) == MESSAGES, f"cut at {cut}"
        # and one byte per read
        link, received, _ = make_link(client=client)
        for i in range(len(stream[:2000])):
            feed(link, stream[i:i + 1])
        feed(link, stream[2000:])
        assert as_bytes(received) == MESSAGES

    asyncio.run(main())


def test_received_messages_survive_later_reads() -> None:
    """Messages completed in the reassembly buffer (a frame cut across reads) are copied out:
    the buffer is reused by the next read."""
    async def main() -> None:
        link, received, _ = make_link(client=True)
        big, small = os.urandom(100_000), os.urandom(64)
        stream = frame(big) + frame(small) + frame(b"\0" * 200_000)
        for cut in (10, 50_000, 100_020, 100_070, 250_000):
            feed(link, stream[:cut])
            stream = stream[cut:]
        feed(link, stream)
        assert as_bytes(received) == [big, small, b"\0" * 200_000]

    asyncio.run(main())


def test_ping_split_across_reads_is_answered_and_close_ends_parsing() -> None:
    async def main() -> None:
        link, received, transport = make_link(client=True)
        stream = frame(b"hi", opcode=0x9) + frame(b"m1") + frame(struct.pack("!H", 1000), opcode=0x8)
        stream += frame(b"after close")
        for i in range(len(stream)):
            feed(link, stream[i:i + 1])
        assert as_bytes(received) == [b"m1"]
        # a pong with the ping's payload (masked: this is the agent's end), then our close frame
        assert transport.written[0][0] == 0x8A and transport.written[1][0] == 0x88
        assert transport.closed

    asyncio.run(main())


def test_a_link_and_its_session_that_are_done_are_freed_without_the_garbage_collector() -> None:
    """rportd freezes long-lived objects (core/gcpolicy.py): a disconnected agent's link and
    session must not wait for a sweep, i.e. form no reference cycle once the link is lost."""
    import gc
    import weakref

    from rport.core.protocol.mux import MuxSession
    from rport.core.session import Handlers

    async def main() -> tuple[Any, Any]:
        transport = RecordingTransport()
        link = WebSocketLink(SimpleNamespace(transport=transport), SETTINGS, client=False)
        session = MuxSession(link, Handlers(), initiator=False)
        link.set_receiver(session._on_message)  # as session.run() does
        link.connection_lost(None)
        await asyncio.sleep(0)
        return weakref.ref(link), weakref.ref(session)

    gc.disable()
    try:
        link, session = asyncio.run(main())
        assert link() is None and session() is None
    finally:
        gc.enable()
