"""The multiplexed session over a real TLS WebSocket, both ends in this process.

Requests both ways, per-stream flow control (a stalled stream stalls only itself and its receive
buffer is bounded by the window), half-close, reset, session close, and the protocol violations
that must end a session. Every connection is a real ``websockets`` TLS connection on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from rport.core.keys import (
    client_ssl_context,
    load_or_create_server_identity,
    server_ssl_context,
)
from rport.core.protocol.frames import (
    T,
    decode,
    decode_json_object,
    encode,
    encode_json,
)
from rport.core.protocol.mux import Limits, MuxSession, MuxStream
from rport.core.protocol.websocket import LinkSettings, server_process_response, take_over
from rport.core.session import (
    Handlers,
    RemoteError,
    Session,
    SessionClosed,
    StreamRefused,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import CloseCode

MiB = 1 << 20
WINDOW = 256 * 1024
MAX_FRAME = 32 * 1024
LIMITS = Limits(window=WINDOW, max_frame=MAX_FRAME)
LINK = LinkSettings(max_message=MAX_FRAME + 4096, ping_interval=None, ping_timeout=None)
TIMEOUT = 20.0  # bound on every wait for a condition; never reached when things work


# -- helpers ------------------------------------------------------------------------------------


async def until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Wait (bounded) for a condition that other tasks make true."""

    async def poll() -> Any:
        while not (value := predicate()):
            await asyncio.sleep(0.005)
        return value

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def within(awaitable: Awaitable[Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Await with a bound; with ``what``, running out of time is a test failure saying so."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        if not what:
            raise
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def handlers(requests: dict[str, Any] | None = None, streams: dict[str, Any] | None = None) -> Handlers:
    h = Handlers()
    for name, fn in (requests or {}).items():
        h.add_request(name, fn, "test")
    for kind, fn in (streams or {}).items():
        h.add_stream(kind, fn, "test")
    return h


def pattern(seed: str, total: int, size: int) -> Iterator[bytes]:
    """Deterministic pseudo-random chunks, generated on the fly (nothing big is held)."""
    rng = random.Random(seed)
    left = total
    while left:
        n = min(size, left)
        yield rng.randbytes(n)
        left -= n


def pattern_digest(seed: str, total: int, size: int) -> str:
    h = hashlib.sha256()
    for chunk in pattern(seed, total, size):
        h.update(chunk)
    return h.hexdigest()


async def read_all(stream: Any) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


@attrs.define
class Listener:
    """A TLS WebSocket server whose every connection is served by a server-side MuxSession."""

    port: int
    accepted: asyncio.Queue[tuple[MuxSession, asyncio.Task[str]]]

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    async def next_session(self) -> tuple[MuxSession, asyncio.Task[str]]:
        return await within(self.accepted.get())


@contextlib.asynccontextmanager
async def mux_listener(tmp_path: Path, server_handlers: Handlers, *, limits: Limits = LIMITS,
                       link: LinkSettings = LINK,
                       peer_window: int | None = None) -> AsyncIterator[Listener]:
    """``peer_window``: the agent's window as its hello would announce it (optimistic opens)."""
    identity = load_or_create_server_identity(tmp_path / "identity")
    accepted: asyncio.Queue[tuple[MuxSession, asyncio.Task[str]]] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        session = MuxSession(ws.rport_link, server_handlers, initiator=False,
                             limits=limits, name="server side", peer_window=peer_window)
        run = asyncio.create_task(session.run())
        await accepted.put((session, run))
        await run

    async with serve(handler, "127.0.0.1", 0, ssl=server_ssl_context(identity),
                     process_response=server_process_response(link),
                     **link.connection_options()) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Listener(port, accepted)


@contextlib.asynccontextmanager
async def raw_client(url: str, **options: Any) -> AsyncIterator[ClientConnection]:
    """A bare websockets client (no MuxSession): it sends whatever frames the test wants."""
    async with connect(url, ssl=client_ssl_context(), proxy=None, compression=None,
                       ping_interval=None, **options) as ws:
        yield ws


@attrs.define
class Pair:
    server: MuxSession  # the rportd side (initiator=False)
    agent: MuxSession  # the agent side (initiator=True)
    server_run: asyncio.Task[str]
    agent_run: asyncio.Task[str]


@contextlib.asynccontextmanager
async def mux_pair(tmp_path: Path, server_handlers: Handlers | None = None,
                   agent_handlers: Handlers | None = None, *, limits: Limits = LIMITS,
                   link: LinkSettings = LINK, server_peer_window: int | None = None,
                   agent_peer_window: int | None = None) -> AsyncIterator[Pair]:
    """Two MuxSessions joined by a real TLS WebSocket on 127.0.0.1; the peer windows are what
    the handshake would tell each side (None: no optimistic opens)."""
    async with mux_listener(tmp_path, server_handlers or Handlers(), limits=limits,
                            link=link, peer_window=server_peer_window) as listener:
        async with connect(listener.url, ssl=client_ssl_context(), proxy=None,
                           **link.connection_options()) as ws:
            agent = MuxSession(take_over(ws, link, client=True), agent_handlers or Handlers(),
                               initiator=True, limits=limits, name="agent side",
                               peer_window=agent_peer_window)
            agent_run = asyncio.create_task(agent.run())
            server, server_run = await listener.next_session()
            try:
                yield Pair(server, agent, server_run, agent_run)
            finally:
                await agent.close("test over")
                await server.close("test over")
                await within(asyncio.gather(agent_run, server_run, return_exceptions=True))


# -- a. requests --------------------------------------------------------------------------------


def test_requests_both_ways(tmp_path: Path) -> None:
    async def add(session: Session, body: Any) -> Any:
        return {"sum": body["a"] + body["b"]}

    async def refuse(session: Session, body: Any) -> Any:
        raise RemoteError("no such client: c42")

    async def buggy(session: Session, body: Any) -> Any:
        raise ValueError("bad input value")

    async def whoami(session: Session, body: Any) -> Any:
        return {"me": "agent", "echo": body}

    async def slow_echo(session: Session, body: Any) -> Any:
        await asyncio.sleep(0)  # let the others interleave
        return body

    async def main() -> None:
        async with mux_pair(
            tmp_path,
            server_handlers=handlers({"add": add, "refuse": refuse, "buggy": buggy,
                                      "echo": slow_echo}),
            agent_handlers=handlers({"whoami": whoami}),
        ) as pair:
            # agent -> server
            assert await pair.agent.request("add", {"a": 2, "b": 40}) == {"sum": 42}
            # server -> agent
            assert await pair.server.request("whoami", [1, "x", None]) == {
                "me": "agent", "echo": [1, "x", None]}

            with pytest.raises(RemoteError) as err:
                await pair.agent.request("refuse")
            assert str(err.value) == "no such client: c42"

            with pytest.raises(RemoteError, match="unknown request") as err:
                await pair.agent.request("no-such-request", {"x": 1})
            assert "no-such-request" in str(err.value)
            with pytest.raises(RemoteError, match="unknown request"):
                await pair.server.request("add", {"a": 1, "b": 1})  # the agent does not serve it

            with pytest.raises(RemoteError) as err:
                await pair.agent.request("buggy")
            assert "ValueError" in str(err.value) and "bad input value" in str(err.value)

            # A failing handler does not end the session: both directions still work.
            assert await pair.agent.request("add", {"a": 1, "b": 2}) == {"sum": 3}
            assert (await pair.server.request("whoami"))["me"] == "agent"

            # Many requests at once are matched to their own answers.
            answers = await within(asyncio.gather(
                *(pair.agent.request("echo", i) for i in range(100))))
            assert answers == list(range(100))

            assert not pair.server.closed and not pair.agent.closed

    asyncio.run(main())


# -- b. flow control ----------------------------------------------------------------------------


def test_stalled_stream_stalls_only_itself(tmp_path: Path) -> None:
    """THE flow-control proof: a stream whose reader stalls holds at most one window on the
    receiver and blocks only its own writer; another stream moves 20 MiB meanwhile and requests
    keep round-tripping, in bounded memory; once the reader resumes, everything arrives intact."""
    a_total, b_total = 8 * MiB, 20 * MiB
    a_chunk, b_chunk = MAX_FRAME, 64 * 1024
    received: dict[str, MuxStream] = {}
    digests: dict[str, asyncio.Future[tuple[str, int]]] = {}
    resume_a = asyncio.Event()
    peak_buffered_a = 0

    def sample_a() -> None:
        nonlocal peak_buffered_a
        if "A" in received:
            peak_buffered_a = max(peak_buffered_a, received["A"].buffered)

    async def sink(session: Session, stream: Any) -> None:
        name = stream.meta["name"]
        received[name] = stream
        await stream.accept()
        if name == "A":
            await resume_a.wait()
        h, n = hashlib.sha256(), 0
        while chunk := await stream.read():
            h.update(chunk)
            n += len(chunk)
            sample_a()
        digests[name].set_result((h.hexdigest(), n))
        await stream.write(json.dumps({"sha256": h.hexdigest(), "bytes": n}).encode())
        await stream.write_eof()

    async def ping(session: Session, body: Any) -> Any:
        return {"pong": body}

    async def main() -> None:
        nonlocal peak_buffered_a
        loop = asyncio.get_running_loop()
        digests.update(A=loop.create_future(), B=loop.create_future())
        async with mux_pair(tmp_path, server_handlers=handlers({"ping": ping}, {"sink": sink}),
                            agent_handlers=handlers({"ping": ping})) as pair:
            stream_a = await pair.agent.open_stream("sink", {"name": "A"})
            stream_b = await pair.agent.open_stream("sink", {"name": "B"})
            assert pair.agent.open_streams == 2

            a_written = 0

            async def write_a() -> None:
                nonlocal a_written
                for chunk in pattern("A", a_total, a_chunk):
                    await stream_a.write(chunk)
                    a_written += len(chunk)
                await stream_a.write_eof()

            async def monitor() -> None:
                while True:
                    sample_a()
                    await asyncio.sleep(0.001)

            monitor_task = asyncio.create_task(monitor())
            writer_a = asyncio.create_task(write_a())
            # A's writer gets exactly one window through, then waits for credit that never comes.
            await until(lambda: "A" in received and received["A"].buffered >= WINDOW
                        and a_written >= WINDOW, "A to fill its window")
            assert a_written <= WINDOW + MAX_FRAME
            assert received["A"].buffered <= WINDOW
            assert not writer_a.done()

            # Stream B moves 20 MiB while A is stalled, in bounded memory.
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                expected_b = hashlib.sha256()
                sent_b = 0
                for chunk in pattern("B", b_total, b_chunk):
                    expected_b.update(chunk)
                    await stream_b.write(chunk)
                    sent_b += len(chunk)
                    sample_a()
                    if sent_b == b_total // 2:  # requests round-trip mid-transfer, both ways
                        assert await within(pair.agent.request("ping", "mid")) == {"pong": "mid"}
                        assert await within(pair.server.request("ping", 7)) == {"pong": 7}
                await stream_b.write_eof()
                reply_b = json.loads(await within(read_all(stream_b)))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert reply_b == {"sha256": expected_b.hexdigest(), "bytes": b_total}
            assert await within(digests["B"]) == (expected_b.hexdigest(), b_total)
            assert peak - baseline < 8 * MiB, f"memory grew by {(peak - baseline) / MiB:.1f} MiB"

            # A is still stalled, its writer blocked, its receive buffer still one window at most.
            assert await within(pair.agent.request("ping", "after")) == {"pong": "after"}
            sample_a()
            assert not writer_a.done()
            assert a_written <= WINDOW + MAX_FRAME
            assert peak_buffered_a <= WINDOW
            assert not digests["A"].done()

            # The reader resumes: all of A's 8 MiB arrive intact, still within the window.
            resume_a.set()
            await within(writer_a)
            assert a_written == a_total
            reply_a = json.loads(await within(read_all(stream_a)))
            expected_a = pattern_digest("A", a_total, a_chunk)
            assert reply_a == {"sha256": expected_a, "bytes": a_total}
            assert await within(digests["A"]) == (expected_a, a_total)
            monitor_task.cancel()
            sample_a()
            assert peak_buffered_a <= WINDOW
            assert peak_buffered_a >= WINDOW  # it really did fill up while stalled

            assert stream_a.done and stream_b.done
            await until(lambda: pair.agent.open_streams == 0 and pair.server.open_streams == 0,
                        "both sessions to forget the finished streams")
            assert not pair.server.closed and not pair.agent.closed

    asyncio.run(main())


# -- c. half-close ------------------------------------------------------------------------------


def test_half_close(tmp_path: Path) -> None:
    server_side: dict[str, Any] = {}
    server_got_eof = asyncio.Event()
    handler_finished = asyncio.Event()

    async def reply_after_eof(session: Session, stream: Any) -> None:
        server_side["stream"] = stream
        await stream.accept()
        data = await read_all(stream)  # until the agent's EOF
        server_side["data"] = data
        assert await stream.read() == b""  # EOF stays EOF
        server_got_eof.set()
        # Our direction is still open: write back after the peer's half-close.
        await stream.write(b"reply to " + data)
        await stream.write(b" (after your EOF)")
        assert not stream.done
        await stream.write_eof()
        server_side["done"] = stream.done
        handler_finished.set()

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=handlers(streams={"half": reply_after_eof})) as pair:
            stream = await pair.agent.open_stream("half", {"purpose": "half-close"})
            await stream.write(b"hello")
            await stream.write_eof()
            assert not stream.done  # only our direction is finished
            with pytest.raises(SessionClosed, match="after EOF"):
                await stream.write(b"more")
            await within(server_got_eof.wait())
            assert server_side["data"] == b"hello"
            assert await within(read_all(stream)) == b"reply to hello (after your EOF)"
            await within(handler_finished.wait())
            assert stream.done and server_side["done"] is True
            assert server_side["stream"].meta == {"purpose": "half-close"}
            assert stream.reset_reason is None and server_side["stream"].reset_reason is None
            await until(lambda: pair.agent.open_streams == 0 and pair.server.open_streams == 0,
                        "open_streams to return to 0")
            assert not pair.agent.closed and not pair.server.closed

    asyncio.run(main())


# -- d. refusal and reset -----------------------------------------------------------------------


def test_refused_stream(tmp_path: Path) -> None:
    async def refuse(session: Session, stream: Any) -> None:
        raise StreamRefused("no")

    async def crash(session: Session, stream: Any) -> None:
        raise RuntimeError("handler bug")

    async def never_accepts(session: Session, stream: Any) -> None:
        return None

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=handlers(
                streams={"refuse": refuse, "crash": crash, "lazy": never_accepts})) as pair:
            with pytest.raises(StreamRefused) as err:
                await pair.agent.open_stream("refuse")
            assert str(err.value) == "no"
            with pytest.raises(StreamRefused, match="unknown stream kind"):
                await pair.agent.open_stream("no-such-kind")
            with pytest.raises(StreamRefused, match="RuntimeError: handler bug"):
                await pair.agent.open_stream("crash")
            with pytest.raises(StreamRefused, match="not accepted"):
                await pair.agent.open_stream("lazy")
            assert pair.agent.open_streams == 0
            await until(lambda: pair.server.open_streams == 0, "refused streams to be forgotten")
            assert not pair.agent.closed and not pair.server.closed
            with pytest.raises(RemoteError, match="unknown request"):
                await pair.agent.request("nothing-here")

    asyncio.run(main())


def test_reset_during_transfer_by_writer(tmp_path: Path) -> None:
    got_some = asyncio.Event()
    outcome: asyncio.Future[str] | None = None
    server_stream: dict[str, Any] = {}

    async def sink(session: Session, stream: Any) -> None:
        server_stream["s"] = stream
        await stream.accept()
        try:
            while await stream.read():
                got_some.set()
        except SessionClosed as exc:
            assert outcome is not None
            outcome.set_result(str(exc))
            raise
        assert outcome is not None
        outcome.set_result("clean EOF")

    async def main() -> None:
        nonlocal outcome
        outcome = asyncio.get_running_loop().create_future()
        async with mux_pair(tmp_path, server_handlers=handlers(streams={"sink": sink})) as pair:
            stream = await pair.agent.open_stream("sink")
            await stream.write(b"x" * 100_000)
            await within(got_some.wait())
            stream.reset("agent gave up")
            assert stream.done and stream.reset_reason == "agent gave up"
            with pytest.raises(SessionClosed, match="agent gave up"):
                await stream.write(b"more")
            with pytest.raises(SessionClosed, match="agent gave up"):
                await stream.read()
            message = await within(outcome)
            assert "agent gave up" in message
            assert server_stream["s"].reset_reason == "agent gave up"
            await until(lambda: pair.agent.open_streams == 0 and pair.server.open_streams == 0,
                        "the reset stream to be forgotten")
            assert not pair.agent.closed and not pair.server.closed

    asyncio.run(main())


def test_reset_by_reader_unblocks_writer(tmp_path: Path) -> None:
    """The receiver resets while the sender is blocked on credit: the sender's write and read
    fail with the reason, and the session carries on."""
    started = asyncio.Event()

    async def reset_after_first(session: Session, stream: Any) -> None:
        await stream.accept()
        await stream.read()
        started.set()
        stream.reset("disk full")

    async def ping(session: Session, body: Any) -> Any:
        return "pong"

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=handlers(
                {"ping": ping}, {"upload": reset_after_first})) as pair:
            stream = await pair.agent.open_stream("upload")
            writer = asyncio.create_task(stream.write(b"y" * (8 * MiB)))
            await within(started.wait())
            with pytest.raises(SessionClosed, match="disk full"):
                await within(writer)
            with pytest.raises(SessionClosed, match="disk full"):
                await stream.read()
            assert stream.reset_reason == "disk full"
            assert await pair.agent.request("ping") == "pong"
            await until(lambda: pair.agent.open_streams == 0 and pair.server.open_streams == 0,
                        "the reset stream to be forgotten")

    asyncio.run(main())


# -- e. session close ---------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["server", "agent"])
def test_session_close_fails_pending_operations(tmp_path: Path, closer: str) -> None:
    entered = asyncio.Event()
    accepted = asyncio.Event()

    async def hang(session: Session, body: Any) -> Any:
        entered.set()
        await asyncio.Event().wait()

    async def hold(session: Session, stream: Any) -> None:
        await stream.accept()
        accepted.set()
        await asyncio.Event().wait()

    def both() -> Handlers:
        return handlers({"hang": hang}, {"hold": hold})

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=both(), agent_handlers=both()) as pair:
            closing, other = (pair.server, pair.agent) if closer == "server" else (pair.agent, pair.server)
            other_run = pair.agent_run if closer == "server" else pair.server_run
            pending = asyncio.create_task(other.request("hang", timeout=None))
            stream = await other.open_stream("hold")
            reading = asyncio.create_task(stream.read())
            writer = asyncio.create_task(stream.write(b"z" * (4 * MiB)))  # blocks on credit
            await within(entered.wait())
            await within(accepted.wait())
            assert not pending.done() and not reading.done()

            await closing.close("maintenance")

            with pytest.raises(SessionClosed, match="maintenance"):
                await within(pending)
            with pytest.raises(SessionClosed, match="maintenance"):
                await within(reading)
            with pytest.raises(SessionClosed):
                await within(writer)
            reason = await within(other_run)
            assert "maintenance" in reason
            assert other.closed and other.close_reason == reason
            assert other.open_streams == 0 and closing.open_streams == 0
            with pytest.raises(SessionClosed):
                await other.request("hang")
            with pytest.raises(SessionClosed):
                await other.open_stream("hold")
            await within(other.wait_closed())

    asyncio.run(main())


# -- f. protocol violations ---------------------------------------------------------------------


async def _data_unknown_stream(ws: ClientConnection) -> None:
    await ws.send(encode(T.DATA, 7, b"data for nobody"))


async def _short_frame(ws: ClientConnection) -> None:
    await ws.send(b"\x23\x00\x00")


async def _unknown_type(ws: ClientConnection) -> None:
    await ws.send(bytes([0x7F]) + b"\x00\x00\x00\x01" + b"payload")


async def _text_message(ws: ClientConnection) -> None:
    await ws.send("hello, I am text")


async def _request_bad_json(ws: ClientConnection) -> None:
    await ws.send(encode(T.REQUEST, 1, b'{"name": "ping", '))


async def _data_beyond_window(ws: ClientConnection) -> None:
    await ws.send(encode_json(T.OPEN, 1, {"kind": "sink", "meta": {}, "window": WINDOW}))
    ftype, ident, payload = decode(await within(ws.recv()))
    assert (ftype, ident) == (T.OPEN_OK, 1)
    window = decode_json_object(ftype, payload, "window")["window"]
    assert window == WINDOW
    sent = 0
    while sent < window:  # the whole window, legitimately...
        n = min(MAX_FRAME, window - sent)
        await ws.send(encode(T.DATA, 1, b"w" * n))
        sent += n
    await ws.send(encode(T.DATA, 1, b"!"))  # ...and one byte more, without waiting for credit


VIOLATIONS = {
    "data-for-unopened-stream": (_data_unknown_stream, "stream 7, which was never opened"),
    "frame-shorter-than-header": (_short_frame, "3 bytes is shorter than its header"),
    "unknown-frame-type": (_unknown_type, "unknown frame type 0x7f"),
    "text-message": (_text_message, "text message"),
    "request-invalid-json": (_request_bad_json, "REQUEST frame with invalid JSON"),
    "data-beyond-window": (_data_beyond_window, "stream 1 sent 1 bytes with 0 of credit"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_protocol_violation_ends_session(tmp_path: Path, case: str) -> None:
    send_bad, expected = VIOLATIONS[case]

    async def sink(session: Session, stream: Any) -> None:
        await stream.accept()
        await asyncio.Event().wait()  # never reads

    async def main() -> None:
        async with mux_listener(tmp_path, handlers(streams={"sink": sink})) as listener:
            async with raw_client(listener.url, max_size=LINK.max_message) as ws:
                session, run = await listener.next_session()
                await send_bad(ws)
                reason = await within(run)
                assert "protocol violation" in reason, reason
                assert expected in reason, reason
                assert session.closed and session.close_reason == reason
                assert session.open_streams == 0
                await within(ws.wait_closed())
                assert ws.close_code == CloseCode.PROTOCOL_ERROR

    asyncio.run(main())


# -- g. oversized message -----------------------------------------------------------------------


def test_oversized_message_ends_session(tmp_path: Path) -> None:
    async def main() -> None:
        async with mux_listener(tmp_path, Handlers()) as listener:
            async with raw_client(listener.url) as ws:
                session, run = await listener.next_session()
                await ws.send(encode(T.DATA, 1, b"o" * (LINK.max_message + 1)))
                reason = await within(run)
                assert "larger than" in reason or "too big" in reason, reason
                assert session.closed
                await within(ws.wait_closed())
                assert ws.close_code == CloseCode.MESSAGE_TOO_BIG

    asyncio.run(main())


def test_oversized_request_from_mux_peer(tmp_path: Path) -> None:
    """The same through a MuxSession: an agent request bigger than the server's maximum ends the
    session on the server, with the size as the reason; the agent's request fails."""

    async def echo(session: Session, body: Any) -> Any:
        return body

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=handlers({"echo": echo})) as pair:
            assert await pair.agent.request("echo", "small") == "small"
            with pytest.raises(SessionClosed):
                await within(pair.agent.request("echo", "b" * (2 * LINK.max_message)))
            reason = await within(pair.server_run)
            assert "larger than" in reason or "too big" in reason, reason
            await within(pair.agent_run)
            assert pair.agent.closed

    asyncio.run(main())


# -- frames that follow OPEN_OK at once ---------------------------------------------------------


@pytest.mark.parametrize("then", ["data", "eof", "reset"])
def test_frames_right_after_accept_are_not_lost(tmp_path: Path, then: str) -> None:
    """A stream handler may speak first (an SSH or SMTP banner through a tunnel): what it sends
    right after accept() follows OPEN_OK on the wire, often in the same read, and must reach the
    opener's stream, not be dropped because open_stream() had not resumed yet."""

    async def speak_first(session: Session, stream: Any) -> None:
        await stream.accept()
        if then == "data":
            await stream.write(b"SSH-2.0-banner\r\n")
            await stream.write_eof()
        elif then == "eof":
            await stream.write_eof()
        else:
            stream.reset("refused after accept")
            return
        await stream.read()

    async def ping(session: Session, body: Any) -> Any:
        return "pong"

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=handlers(
                {"ping": ping}, {"first": speak_first})) as pair:
            for _ in range(5):
                try:
                    stream = await within(pair.agent.open_stream("first"), 5)
                except StreamRefused:
                    assert then == "reset"
                    continue
                if then == "reset":
                    with pytest.raises(SessionClosed, match="refused after accept"):
                        await within(stream.read(), 5, "the RESET that followed OPEN_OK (lost?)")
                else:
                    expected = b"SSH-2.0-banner\r\n" if then == "data" else b""
                    assert await within(read_all(stream), 5,
                                        f"the {then.upper()} that followed OPEN_OK (lost?)") == expected
                    await stream.write_eof()
                    assert stream.done
                assert not pair.agent.closed, pair.agent.close_reason
            assert await within(pair.agent.request("ping"), 5) == "pong"
            await until(lambda: pair.agent.open_streams == 0 and pair.server.open_streams == 0,
                        "every stream to be finished", 5)

    asyncio.run(main())


def test_late_accept_after_open_timeout_keeps_session(tmp_path: Path) -> None:
    """open_stream() gave up waiting; the peer accepts later. Like a late RESPONSE to a timed-out
    request, the late OPEN_OK is legitimate: it must not end the session, and the stream nobody
    wants must not stay open on the peer."""
    allow = asyncio.Event()
    accepted = asyncio.Event()

    async def slow(session: Session, stream: Any) -> None:
        await allow.wait()
        await stream.accept()
        accepted.set()
        await read_all(stream)

    async def ping(session: Session, body: Any) -> Any:
        return "pong"

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=handlers({"ping": ping}, {"slow": slow}),
                            agent_handlers=handlers({"ping": ping})) as pair:
            with pytest.raises(TimeoutError):
                await pair.agent.open_stream("slow", timeout=0.2)
            allow.set()
            await within(accepted.wait())
            # The server's OPEN_OK went out before this request, so the agent has handled it
            # by the time it answers.
            assert await within(pair.server.request("ping"), 5) == "pong"
            assert not pair.agent.closed, pair.agent.close_reason
            assert not pair.server.closed, pair.server.close_reason
            assert await within(pair.agent.request("ping"), 5) == "pong"
            await until(lambda: pair.server.open_streams == 0,
                        "the unwanted late stream to be closed on the server", 5)

    asyncio.run(main())


def test_unserializable_answer_is_an_error_response(tmp_path: Path) -> None:
    """A handler's bug (an answer that is not JSON) must come back as an error, not leave the
    caller waiting for its timeout."""

    async def returns_a_set(session: Session, body: Any) -> Any:
        return {1, 2}

    async def main() -> None:
        async with mux_pair(tmp_path, server_handlers=handlers({"bad": returns_a_set})) as pair:
            with pytest.raises(RemoteError):
                await within(pair.agent.request("bad", timeout=None), 5,
                             "an error RESPONSE to a request whose answer is not JSON")
            assert not pair.agent.closed and not pair.server.closed

    asyncio.run(main())
