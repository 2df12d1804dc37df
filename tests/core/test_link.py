"""The agent link's own WebSocket framing (after websockets' opening handshake), optimistic
stream opening, and SocketPipe, over a real TLS WebSocket on 127.0.0.1.

Fragment reassembly and its violations, masking rules, reserved bits, ping/pong, the link's own
keepalive, the closing handshake and its codes; ``open_stream_nowait`` (data before the peer
accepts, refusals, raw optimistic openers); and SocketPipe joining TCP connections end to end.
Raw frames that websockets will not produce (unmasked client frames, reserved bits, orphan
continuations) are written to the client's transport directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from rport.core.keys import (
    client_ssl_context,
    load_or_create_server_identity,
    server_ssl_context,
)
from rport.core.plugin import SocketPipe
from rport.core.protocol.frames import T, decode, decode_json_object, encode, encode_json
from rport.core.protocol.mux import MuxSession
from rport.core.protocol.websocket import LinkSettings, take_over
from rport.core.session import Handlers, Session, SessionClosed, StreamRefused
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from .test_mux import (
    LIMITS,
    LINK,
    WINDOW,
    MiB,
    Pair,
    handlers,
    mux_listener,
    mux_pair,
    pattern,
    pattern_digest,
    raw_client,
    read_all,
    until,
    within,
)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1 = 0x40
SHORT = 5.0  # bound on waits that should end within a fraction of a second when things work

KEEPALIVE = LinkSettings(max_message=LINK.max_message, ping_interval=0.2, ping_timeout=0.5,
                         close_timeout=0.5)


# -- helpers ------------------------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True,
                 rsv: int = 0) -> bytes:
    """One WebSocket frame as a client would write it (RFC 6455, section 5.2), built by hand so
    that the tests can also build the frames websockets refuses to send."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        header = bytes((b0, mask_bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def ping_round_trip(ws: ClientConnection) -> None:
    """A ping answered means the server has handled everything the client sent before it."""
    await within(await ws.ping(os.urandom(4)), SHORT, "the pong to the client's ping")


async def recv_frame(ws: ClientConnection, timeout: float = SHORT) -> tuple[T, int, bytes]:
    message = await within(ws.recv(), timeout, "a frame from the server")
    assert isinstance(message, bytes), message
    return decode(message)


async def expect_closed(ws: ClientConnection, what: str) -> None:
    """The server must close without answering anything more."""
    try:
        got = await asyncio.wait_for(ws.recv(), SHORT)
    except ConnectionClosed:
        return
    except TimeoutError:
        raise AssertionError(f"the server neither answered nor closed after {what}") from None
    raise AssertionError(f"the server handled a message after {what} instead of closing: "
                         f"got {decode(got)[:2]}")


async def echo_handler(session: Session, stream: Any) -> None:
    """Accept and echo everything back, then EOF."""
    await stream.accept()
    while chunk := await stream.read():
        await stream.write(chunk)
    await stream.write_eof()


async def ping_handler(session: Session, body: Any) -> Any:
    return {"pong": body}


def link_listener(tmp_path: Path, server_handlers: Handlers, **options: Any) -> Any:
    return mux_listener(tmp_path, server_handlers, **options)


def link_pair(tmp_path: Path, server_handlers: Handlers | None = None,
              agent_handlers: Handlers | None = None, *, server_peer_window: int | None = WINDOW,
              agent_peer_window: int | None = WINDOW, **options: Any) -> Any:
    """A mux pair whose sides know each other's window, as after a real handshake."""
    return mux_pair(tmp_path, server_handlers, agent_handlers, server_peer_window=server_peer_window,
                    agent_peer_window=agent_peer_window, **options)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- 1. fragmented messages are reassembled -------------------------------------------------------


def test_fragmented_request_is_reassembled(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_listener(tmp_path, handlers({"ping": ping_handler})) as listener:
            async with raw_client(listener.url) as ws:
                session, _ = await listener.next_session()
                body = {"text": "x" * 3000, "n": 42}
                frame = encode_json(T.REQUEST, 1, {"name": "ping", "body": body})
                third = len(frame) // 3
                fragments = [frame[:third], frame[third:2 * third], frame[2 * third:]]
                assert all(fragments)
                await ws.send(fragments)  # BINARY (no FIN), CONT, CONT (FIN)
                ftype, ident, payload = await recv_frame(ws)
                assert (ftype, ident) == (T.RESPONSE, 1)
                reply = decode_json_object(ftype, payload, "ok")
                assert reply == {"ok": True, "body": {"pong": body}}

                # Hand-made fragments too, with a ping between them (control frames may be
                # interleaved with a fragmented message).
                frame = encode_json(T.REQUEST, 2, {"name": "ping", "body": "again"})
                ws.transport.write(client_frame(OP_BINARY, frame[:4], fin=False))
                ws.transport.write(client_frame(OP_CONT, frame[4:9], fin=False))
                await ping_round_trip(ws)
                ws.transport.write(client_frame(OP_CONT, frame[9:]))
                ftype, ident, payload = await recv_frame(ws)
                assert (ftype, ident) == (T.RESPONSE, 2)
                assert decode_json_object(ftype, payload, "ok")["body"] == {"pong": "again"}
                assert not session.closed, session.close_reason

    asyncio.run(main())


# -- 2., 3. framing violations ------------------------------------------------------------------

REQ = encode_json(T.REQUEST, 1, {"name": "ping", "body": "should not be answered"})


async def _orphan_continuation(ws: ClientConnection) -> None:
    ws.transport.write(client_frame(OP_CONT, REQ))


async def _text(ws: ClientConnection) -> None:
    await ws.send("a text message")


async def _new_message_amid_fragments_same_read(ws: ClientConnection) -> None:
    ws.transport.write(client_frame(OP_BINARY, REQ[:3], fin=False) + client_frame(OP_BINARY, REQ))


async def _new_message_amid_fragments_own_read(ws: ClientConnection) -> None:
    # The first fragment is handled before the whole message arrives (the ping round trip
    # proves it), so the whole message comes alone in its own read.
    ws.transport.write(client_frame(OP_BINARY, REQ[:3], fin=False))
    await ping_round_trip(ws)
    ws.transport.write(client_frame(OP_BINARY, REQ))


async def _unmasked(ws: ClientConnection) -> None:
    ws.transport.write(client_frame(OP_BINARY, REQ, masked=False))


async def _reserved_bit(ws: ClientConnection) -> None:
    ws.transport.write(client_frame(OP_BINARY, REQ, rsv=RSV1))


FRAMING_VIOLATIONS = {
    "continuation-without-start": (_orphan_continuation, "fragments out of order"),
    "text-message": (_text, "text message"),
    "new-message-amid-fragments-same-read": (_new_message_amid_fragments_same_read,
                                             "fragments out of order"),
    "new-message-amid-fragments-own-read": (_new_message_amid_fragments_own_read,
                                            "fragments out of order"),
    "unmasked-client-frame": (_unmasked, "unmasked frame"),
    "reserved-bit": (_reserved_bit, "reserved bits"),
}


@pytest.mark.parametrize("case", list(FRAMING_VIOLATIONS))
def test_framing_violation_closes_with_1002(tmp_path: Path, case: str) -> None:
    send_bad, expected = FRAMING_VIOLATIONS[case]

    async def main() -> None:
        async with link_listener(tmp_path, handlers({"ping": ping_handler})) as listener:
            async with raw_client(listener.url, close_timeout=1) as ws:
                session, run = await listener.next_session()
                await send_bad(ws)
                await expect_closed(ws, case)
                assert ws.close_code == CloseCode.PROTOCOL_ERROR
                reason = await within(run, SHORT, "the server session to end")
                assert "protocol violation" in reason, reason
                assert expected in reason, reason
                assert session.closed and session.close_reason == reason

    asyncio.run(main())


def test_fragmented_message_over_max_message_closes_with_1009(tmp_path: Path) -> None:
    """Each fragment is small; their sum is over max_message."""
    fragment = 8 * 1024
    count = LINK.max_message // fragment + 2
    assert fragment < LINK.max_message < fragment * count

    async def main() -> None:
        async with link_listener(tmp_path, handlers({"ping": ping_handler})) as listener:
            async with raw_client(listener.url, close_timeout=1) as ws:
                session, run = await listener.next_session()
                await ws.send([encode(T.DATA, 1, b"f" * (fragment - 5))]
                              + [b"f" * fragment] * (count - 1))
                await expect_closed(ws, "an oversized fragmented message")
                assert ws.close_code == CloseCode.MESSAGE_TOO_BIG
                reason = await within(run, SHORT, "the server session to end")
                assert "larger than" in reason or "too big" in reason, reason
                assert session.closed

    asyncio.run(main())


# -- the agent's end: frames from the server ------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_server(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.Queue[ServerConnection]]]:
    """A bare websockets server (no link, no session): the test writes whatever frames it wants
    to the agent, whose end is taken over by WebSocketLink."""
    identity = load_or_create_server_identity(tmp_path / "identity")
    accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        await accepted.put(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, ssl=server_ssl_context(identity),
                     compression=None, ping_interval=None, close_timeout=1) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"wss://127.0.0.1:{port}", accepted


@contextlib.asynccontextmanager
async def agent_facing_raw_server(tmp_path: Path) -> AsyncIterator[
        tuple[ServerConnection, MuxSession, asyncio.Task[str]]]:
    async with raw_server(tmp_path) as (url, accepted):
        async with connect(url, ssl=client_ssl_context(), proxy=None,
                           **LINK.connection_options()) as ws:
            agent = MuxSession(take_over(ws, LINK, client=True), handlers({"ping": ping_handler}),
                               initiator=True, limits=LIMITS, name="agent side")
            run = asyncio.create_task(agent.run())
            server_ws = await within(accepted.get(), what="the raw server's connection")
            try:
                yield server_ws, agent, run
            finally:
                await agent.close("test over")
                await within(asyncio.gather(run, return_exceptions=True))


def test_agent_reassembles_fragments_from_server(tmp_path: Path) -> None:
    async def main() -> None:
        async with agent_facing_raw_server(tmp_path) as (server_ws, agent, _):
            frame = encode_json(T.REQUEST, 1, {"name": "ping", "body": "from the server"})
            server_ws.transport.write(client_frame(OP_BINARY, frame[:6], fin=False, masked=False))
            await within(await server_ws.ping(b"p"), SHORT, "the agent's pong")
            server_ws.transport.write(client_frame(OP_CONT, frame[6:], masked=False))
            message = await within(server_ws.recv(), SHORT, "the agent's answer")
            ftype, ident, payload = decode(message)
            assert (ftype, ident) == (T.RESPONSE, 1)
            assert decode_json_object(ftype, payload, "ok")["body"] == {"pong": "from the server"}
            assert not agent.closed, agent.close_reason

    asyncio.run(main())


BIG_REQ = encode_json(T.REQUEST, 1, {"name": "ping", "body": "b" * LINK.max_message})


async def _masked_server_frame(ws: ServerConnection) -> None:
    ws.transport.write(client_frame(OP_BINARY, REQ, masked=True))


async def _oversized_server_frame(ws: ServerConnection) -> None:
    assert LINK.max_message < len(BIG_REQ) < 65536  # one frame with a 16-bit length
    ws.transport.write(client_frame(OP_BINARY, BIG_REQ, masked=False))


async def _new_message_amid_server_fragments(ws: ServerConnection) -> None:
    ws.transport.write(client_frame(OP_BINARY, REQ[:3], fin=False, masked=False))
    await within(await ws.ping(b"p"), SHORT, "the agent's pong")
    ws.transport.write(client_frame(OP_BINARY, REQ, masked=False))


AGENT_VIOLATIONS = {
    "masked-server-frame": (_masked_server_frame, CloseCode.PROTOCOL_ERROR,
                            "masked frame from the server"),
    "oversized-single-frame": (_oversized_server_frame, CloseCode.MESSAGE_TOO_BIG,
                               "larger than the agreed maximum"),
    "new-message-amid-fragments": (_new_message_amid_server_fragments, CloseCode.PROTOCOL_ERROR,
                                   "fragments out of order"),
}


@pytest.mark.parametrize("case", list(AGENT_VIOLATIONS))
def test_agent_rejects_bad_server_frames(tmp_path: Path, case: str) -> None:
    send_bad, code, expected = AGENT_VIOLATIONS[case]

    async def main() -> None:
        async with agent_facing_raw_server(tmp_path) as (server_ws, agent, run):
            await send_bad(server_ws)
            try:
                got = await asyncio.wait_for(server_ws.recv(), SHORT)
            except ConnectionClosed:
                got = None
            assert got is None, (f"the agent handled the message ({case}) instead of closing: "
                                 f"it answered {decode(got)[:2]}")
            assert server_ws.close_code == code
            reason = await within(run, SHORT, "the agent session to end")
            assert expected in reason, reason
            assert agent.closed

    asyncio.run(main())


# -- 4. ping from the peer -----------------------------------------------------------------------


def test_ping_from_peer_is_answered(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_listener(tmp_path, handlers({"ping": ping_handler})) as listener:
            async with raw_client(listener.url) as ws:
                session, _ = await listener.next_session()
                for payload in (b"", b"hello", os.urandom(125)):
                    pong = await ws.ping(payload)
                    await within(pong, SHORT, f"the pong to a ping of {len(payload)} bytes")
                assert not session.closed, session.close_reason
                await ws.send(encode_json(T.REQUEST, 1, {"name": "ping", "body": 1}))
                ftype, ident, payload = await recv_frame(ws)
                assert (ftype, ident) == (T.RESPONSE, 1)
                assert decode_json_object(ftype, payload, "ok")["body"] == {"pong": 1}
                assert not session.closed

    asyncio.run(main())


# -- 5. keepalive -------------------------------------------------------------------------------


def test_keepalive_timeout_on_a_peer_that_stops_reading(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_listener(tmp_path, Handlers(), link=KEEPALIVE) as listener:
            async with raw_client(listener.url, close_timeout=1) as ws:
                session, run = await listener.next_session()
                ws.transport.pause_reading()  # it answers no ping from now on
                started = time.monotonic()
                reason = await within(run, SHORT, "the keepalive to end the session")
                elapsed = time.monotonic() - started
                assert "keepalive timeout" in reason, reason
                assert "protocol violation" not in reason, reason
                assert session.closed and session.close_reason == reason
                # One interval, one timeout, then at most close_timeout for the dead peer.
                assert elapsed < 3.0, elapsed
                ws.transport.resume_reading()

    asyncio.run(main())


def test_keepalive_keeps_a_live_peer(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_pair(tmp_path, handlers({"ping": ping_handler}),
                             handlers({"ping": ping_handler}), link=KEEPALIVE) as pair:
            await asyncio.sleep(1.5)  # 7 ping intervals, 3 timeouts
            assert not pair.server.closed, pair.server.close_reason
            assert not pair.agent.closed, pair.agent.close_reason
            assert await within(pair.agent.request("ping", "a"), SHORT) == {"pong": "a"}
            assert await within(pair.server.request("ping", "s"), SHORT) == {"pong": "s"}

    asyncio.run(main())


def test_keepalive_raw_client_that_reads_stays(tmp_path: Path) -> None:
    """The same raw client as in the timeout test, reading: websockets answers the pings."""
    async def main() -> None:
        async with link_listener(tmp_path, Handlers(), link=KEEPALIVE) as listener:
            async with raw_client(listener.url) as ws:
                session, _ = await listener.next_session()
                reader = asyncio.create_task(ws.recv())  # keeps the connection reading
                await asyncio.sleep(1.5)
                assert not session.closed, session.close_reason
                assert not reader.done()
                reader.cancel()

    asyncio.run(main())


# -- 6. closing handshake ------------------------------------------------------------------------


def test_agent_close_ends_both_sessions(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_pair(tmp_path) as pair:
            started = time.monotonic()
            await within(pair.agent.close("bye"), SHORT, "the agent's close")
            server_reason = await within(pair.server_run, SHORT, "the server session to end")
            agent_reason = await within(pair.agent_run, SHORT, "the agent session to end")
            elapsed = time.monotonic() - started
            assert server_reason.startswith("peer closed the connection (1000"), server_reason
            assert "bye" in server_reason, server_reason
            assert agent_reason == "bye"
            assert pair.server.closed and pair.agent.closed
            # A real handshake, not the close_timeout abort of an unanswered close.
            assert elapsed < LINK.close_timeout, elapsed

    asyncio.run(main())


def test_peer_close_code_in_reason(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_listener(tmp_path, Handlers()) as listener:
            async with raw_client(listener.url) as ws:
                session, run = await listener.next_session()
                await within(ws.close(4000, "custom"), SHORT, "the client's close")
                reason = await within(run, SHORT, "the server session to end")
                assert "4000" in reason and "custom" in reason, reason
                assert reason.startswith("peer closed the connection"), reason
                assert ws.close_code == 4000  # the server echoed the code
                assert session.closed

    asyncio.run(main())


def test_peer_that_sends_but_does_not_read_is_disconnected(tmp_path: Path) -> None:
    """Replies the link writes from its receive path (here: to requests for an unknown handler)
    bypass the writers' back-pressure; a peer that keeps asking without reading must not make
    the server buffer without bound: past max_unsent it is disconnected."""
    settings = LinkSettings(max_message=LINK.max_message, ping_interval=None, ping_timeout=None,
                            write_limit=64 * 1024, max_unsent=1 * MiB)
    name = "n" * 30_000

    async def main() -> None:
        async with link_listener(tmp_path, Handlers(), link=settings) as listener:
            async with raw_client(listener.url, max_size=None) as ws:
                session, run = await listener.next_session()
                ws.transport.pause_reading()  # we never read the answers
                sent = 0
                with contextlib.suppress(ConnectionClosed, OSError):
                    for ident in range(1, 2001):  # up to 60 MB of answers
                        # A send into a socket the server has dropped may succeed without
                        # yielding (asyncio only logs the failed write), so yield each time: the
                        # transport's connection_lost then runs and the next send raises.
                        await asyncio.sleep(0)
                        if run.done():
                            break
                        await ws.send(encode_json(T.REQUEST, ident, {"name": name}))
                        sent += 1
                reason = await within(run, SHORT, "the server session to end")
                assert "does not read" in reason, reason
                assert session.closed
                # far fewer than all: the server stopped buffering once 1 MiB was waiting
                assert sent < 2000, sent

    asyncio.run(main())


# -- 7. optimistic open -------------------------------------------------------------------------


def test_optimistic_open_data_before_accept(tmp_path: Path) -> None:
    """1 MiB written right after open_stream_nowait: a window of it reaches the handler before it
    accepts (the rest waits for credit), and all of it arrives intact."""
    total = 1 * MiB
    gate = asyncio.Event()
    seen: dict[str, Any] = {}

    async def digest(session: Session, stream: Any) -> None:
        seen["stream"] = stream
        await gate.wait()
        seen["buffered_before_accept"] = stream.buffered
        await stream.accept()
        data = await read_all(stream)
        await stream.write(f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())
        await stream.write_eof()

    async def main() -> None:
        async with link_pair(tmp_path, handlers(streams={"digest": digest})) as pair:
            stream = pair.agent.open_stream_nowait("digest", {"who": "test"})
            assert stream is not None
            async def send() -> None:
                for chunk in pattern("optimistic", total, 48 * 1024):
                    await stream.write(chunk)
                await stream.write_eof()
            sender = asyncio.create_task(send())
            await until(lambda: "stream" in seen, "the handler to get the stream")
            assert seen["stream"].meta == {"who": "test"}
            await until(lambda: seen["stream"].buffered == WINDOW,
                        "a full window to arrive before the accept")
            assert not sender.done()  # the rest waits for credit
            gate.set()
            await within(sender, what="the writer to finish")
            answer = await within(read_all(stream), what="the handler's answer")
            assert answer == f"{total} {pattern_digest('optimistic', total, 48 * 1024)}".encode()
            assert seen["buffered_before_accept"] == WINDOW
            assert stream.reset_reason is None and not stream.refused
            assert stream.done
            await until(lambda: pair.agent.open_streams == 0 and pair.server.open_streams == 0,
                        "the stream to be forgotten on both sides")
            assert not pair.agent.closed and not pair.server.closed

    asyncio.run(main())


def test_optimistic_open_refused(tmp_path: Path) -> None:
    got_open = asyncio.Event()
    gate = asyncio.Event()

    async def refuse(session: Session, stream: Any) -> None:
        got_open.set()
        await gate.wait()
        raise StreamRefused("no way")

    async def main() -> None:
        async with link_pair(tmp_path, handlers({"ping": ping_handler},
                                                {"refuse": refuse})) as pair:
            stream = pair.agent.open_stream_nowait("refuse")
            assert stream is not None
            assert stream.write_nowait(b"sent before the refusal") == 23
            await within(got_open.wait())
            gate.set()
            await until(lambda: stream.reset_reason is not None, "the refusal to reset the stream")
            assert stream.refused is True
            assert stream.reset_reason == "no way"
            assert stream.done
            with pytest.raises(SessionClosed, match="no way"):
                await within(stream.read())
            with pytest.raises(SessionClosed):
                await stream.write(b"more")
            # Data in flight when the stream was refused does not break the session.
            late = pair.agent.open_stream_nowait("refuse")
            assert late is not None
            late.write_nowait(b"x" * 1000)
            await until(lambda: late.refused, "the second refusal")
            assert await within(pair.agent.request("ping", 1)) == {"pong": 1}
            assert pair.agent.open_streams == 0
            await until(lambda: pair.server.open_streams == 0, "the refused streams forgotten")
            assert not pair.agent.closed and not pair.server.closed

    asyncio.run(main())


def test_optimistic_open_unknown_kind_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_pair(tmp_path) as pair:
            stream = pair.agent.open_stream_nowait("no-such-kind")
            assert stream is not None
            await until(lambda: stream.reset_reason is not None, "the refusal")
            assert stream.refused
            assert "unknown stream kind" in (stream.reset_reason or "")
            assert not pair.agent.closed and not pair.server.closed

    asyncio.run(main())


def test_optimistic_open_without_peer_window(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_pair(tmp_path, handlers(streams={"echo": echo_handler}),
                             agent_peer_window=None) as pair:
            assert pair.agent.open_stream_nowait("echo") is None
            assert pair.agent.open_streams == 0
            # The regular open still works, and the other side (which knows a window) may.
            stream = await within(pair.agent.open_stream("echo"))
            await stream.write(b"abc")
            await stream.write_eof()
            assert await within(read_all(stream)) == b"abc"
            other = pair.server.open_stream_nowait("nothing")
            assert other is not None
            await until(lambda: other.refused, "the agent's refusal of an unknown kind")
            assert "unknown stream kind" in (other.reset_reason or "")

    asyncio.run(main())


def test_raw_optimistic_opener_gets_no_open_ok(tmp_path: Path) -> None:
    async def main() -> None:
        async with link_listener(tmp_path, handlers(streams={"echo": echo_handler})) as listener:
            async with raw_client(listener.url) as ws:
                session, _ = await listener.next_session()

                # Optimistic: OPEN, DATA and EOF at once; the first answer is the echoed DATA.
                await ws.send(encode_json(T.OPEN, 1, {"kind": "echo", "meta": {},
                                                      "window": WINDOW, "optimistic": True}))
                await ws.send(encode(T.DATA, 1, b"hello, optimist"))
                await ws.send(encode(T.EOF, 1))
                received: list[tuple[T, int, bytes]] = []
                while not received or received[-1][0] is not T.EOF:
                    received.append(await recv_frame(ws))
                types = [f[0] for f in received]
                assert T.OPEN_OK not in types, types
                assert types[0] is T.DATA, types
                assert b"".join(p for t, _, p in received if t is T.DATA) == b"hello, optimist"
                assert {i for _, i, _ in received} == {1}

                # Not optimistic: OPEN_OK comes first.
                await ws.send(encode_json(T.OPEN, 3, {"kind": "echo", "meta": {},
                                                      "window": WINDOW}))
                ftype, ident, payload = await recv_frame(ws)
                assert (ftype, ident) == (T.OPEN_OK, 3)
                assert decode_json_object(ftype, payload, "window")["window"] == WINDOW
                await ws.send(encode(T.DATA, 3, b"hello, pessimist"))
                assert await recv_frame(ws) == (T.DATA, 3, b"hello, pessimist")
                await ws.send(encode(T.EOF, 3))
                assert await recv_frame(ws) == (T.EOF, 3, b"")
                assert not session.closed, session.close_reason
                await until(lambda: session.open_streams == 0, "both streams to finish")

    asyncio.run(main())


# -- 8. SocketPipe end to end -------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    """A TCP echo server: echoes, and half-closes when the client does."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.write_eof()
        return True


@attrs.define
class Tunnel:
    port: int  # where the test's TCP client connects
    server_pipes: list[SocketPipe]
    agent_results: asyncio.Queue[str]  # what each agent-side pipe.wait() returned


@contextlib.asynccontextmanager
async def tunnel(tmp_path: Path, target_port: int) -> AsyncIterator[tuple[Tunnel, Pair]]:
    """client -> [TCP] -> server SocketPipe -> stream -> agent SocketPipe -> [TCP] -> target."""
    loop = asyncio.get_running_loop()
    agent_results: asyncio.Queue[str] = asyncio.Queue()

    async def dial(session: Session, stream: Any) -> None:
        pipe = SocketPipe()
        try:
            await loop.create_connection(lambda: pipe, "127.0.0.1", stream.meta["port"])
        except OSError as exc:
            raise StreamRefused(f"cannot connect: {exc}") from None
        await stream.accept()
        pipe.attach(stream)
        await agent_results.put(await pipe.wait())

    async with link_pair(tmp_path, agent_handlers=handlers(streams={"tcp": dial})) as pair:
        server_pipes: list[SocketPipe] = []

        def on_connect(pipe: SocketPipe) -> None:
            server_pipes.append(pipe)
            stream = pair.server.open_stream_nowait("tcp", {"port": target_port})
            assert stream is not None
            pipe.attach(stream)

        server = await loop.create_server(lambda: SocketPipe(on_connect=on_connect),
                                          "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            yield Tunnel(port, server_pipes, agent_results), pair
        finally:
            server.close()
            await within(server.wait_closed())


def test_socket_pipe_echo_5mib(tmp_path: Path) -> None:
    total, size = 5 * MiB, 64 * 1024

    async def main() -> None:
        loop = asyncio.get_running_loop()
        echo = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        try:
            async with tunnel(tmp_path, echo.sockets[0].getsockname()[1]) as (tun, pair):
                reader, writer = await within(asyncio.open_connection("127.0.0.1", tun.port))

                async def send() -> None:
                    for chunk in pattern("pipe", total, size):
                        writer.write(chunk)
                        await writer.drain()
                    writer.write_eof()

                async def receive() -> tuple[int, str]:
                    digest, count = hashlib.sha256(), 0
                    while chunk := await reader.read(256 * 1024):
                        digest.update(chunk)
                        count += len(chunk)
                    return count, digest.hexdigest()

                _, (count, digest) = await within(asyncio.gather(send(), receive()),
                                                  what="5 MiB through the pipes and back")
                assert count == total
                assert digest == pattern_digest("pipe", total, size)
                assert await within(tun.server_pipes[0].wait()) == ""
                assert await within(tun.agent_results.get()) == ""
                writer.close()
                await within(writer.wait_closed())
                await until(lambda: pair.agent.open_streams == 0 and pair.server.open_streams == 0,
                            "the stream to be finished on both sides")
                assert not pair.agent.closed and not pair.server.closed
        finally:
            echo.close()
            await within(echo.wait_closed())

    asyncio.run(main())


def test_socket_pipe_target_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with tunnel(tmp_path, closed_port()) as (tun, pair):
            reader, writer = await within(asyncio.open_connection("127.0.0.1", tun.port))
            writer.write(b"anyone there?")
            started = time.monotonic()
            try:
                data = await within(reader.read(), SHORT, "the client's connection to close")
            except ConnectionResetError:
                data = b""
            assert data == b""
            assert time.monotonic() - started < SHORT
            reason = await within(tun.server_pipes[0].wait())
            assert reason, "the pipe's wait() must say why it was aborted"
            assert "cannot connect" in reason, reason
            stream = tun.server_pipes[0].stream
            assert stream is not None and stream.refused
            writer.close()
            with contextlib.suppress(ConnectionError):
                await within(writer.wait_closed())
            assert tun.agent_results.empty()
            assert not pair.agent.closed and not pair.server.closed

    asyncio.run(main())
