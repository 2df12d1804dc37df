"""How ``WebSocketLink`` takes what the TLS transport decrypts into its read buffer.

The link is a ``BufferedProtocol``: the transport decrypts into one buffer shared by every link
of the process, which is reused after each read. These tests feed a link's byte stream through
``get_buffer``/``buffer_updated`` exactly as uvloop's TLS transport does, cut at every possible
place, and check that every message comes out whole and is never changed by a later read (nothing
may keep a view of the shared buffer). The transport under the link is a stand-in that records
what the link writes; the end-to-end behaviour over real TLS is in test_link.py and test_mux.py.
"""

from __future__ import annotations

import asyncio
import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from rport.core.protocol.websocket import LinkSettings, WebSocketLink

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


def frame(payload: bytes, *, opcode: int = 0x2, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One RFC 6455 frame, masked when ``mask`` is given (what the agent sends)."""
    b0 = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head = bytes((b0, mask_bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def make_link(*, client: bool) -> tuple[WebSocketLink, list[bytes], RecordingTransport]:
    transport = RecordingTransport()
    link = WebSocketLink(SimpleNamespace(transport=transport), SETTINGS, client=client)
    received: list[Any] = []
    link.set_receiver(received.append)
    return link, received, transport


def feed(link: WebSocketLink, data: bytes) -> None:
    """Hand ``data`` to the link as one read of the transport."""
    buf = link.get_buffer(len(data) + 256)
    assert len(buf) >= len(data)
    buf[:len(data)] = data
    link.buffer_updated(len(data))


def as_bytes(messages: list[Any]) -> list[bytes]:
    return [bytes(m) for m in messages]


MESSAGES = [b"x" * 64, b"", os.urandom(125), os.urandom(126), os.urandom(5000), os.urandom(70000)]


@pytest.mark.parametrize("client", [True, False], ids=["agent-end", "server-end"])
def test_messages_whole_whatever_the_cut(client: bool) -> None:
    async def main() -> None:
        mask = None if client else b"\x11\x22\x33\x44"  # the server reads masked frames
        stream = b"".join(frame(m, mask=mask) for m in MESSAGES)
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
    """A message handed on (even a large one, passed as a memoryview) keeps its bytes after the
    shared buffer is filled again by another read, of this link or another."""
    async def main() -> None:
        link, received, _ = make_link(client=True)
        other, other_received, _ = make_link(client=True)
        big, small = os.urandom(100_000), os.urandom(64)
        feed(link, frame(big))
        feed(link, frame(small))
        feed(other, frame(b"\0" * 200_000))  # overwrites the whole shared buffer
        assert bytes(received[0]) == big and bytes(received[1]) == small
        assert bytes(other_received[0]) == b"\0" * 200_000

    asyncio.run(main())


def test_read_from_within_a_receiver_gets_its_own_buffer() -> None:
    """If a receiver made another link read synchronously (no transport does this today), that
    read must not land in the buffer the first link is still parsing."""
    async def main() -> None:
        first, inner = os.urandom(64), os.urandom(200)  # inner covers both frames
        second_frame = os.urandom(64)
        other, other_received, _ = make_link(client=True)
        transport = RecordingTransport()
        link = WebSocketLink(SimpleNamespace(transport=transport), SETTINGS, client=True)
        received: list[bytes] = []

        def receiver(message: Any) -> None:
            received.append(bytes(message))
            if len(received) == 1:
                feed(other, frame(inner))

        link.set_receiver(receiver)
        feed(link, frame(first) + frame(second_frame))  # two frames in one read: slow path
        assert received == [first, second_frame]
        assert as_bytes(other_received) == [inner]

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
