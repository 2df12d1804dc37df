"""Streams to an agent held by another node, relayed over NATS by pulls.

Code that opens a stream on an agent (``session.open_stream(kind, meta)``: the uploads plugin's
file push) gets, for an agent held by another node, a :class:`RelayStream`. The holder opens the
real stream on the agent's session, and each node *pulls* what it consumes from the other, as a
forwarded streaming answer is pulled (:mod:`.forward`):

- data for the agent: :meth:`RelayStream.write` fills a small bounded queue on this node; the
  holder pulls one chunk ahead of what the agent's stream took (its ``write()`` waits for the
  agent's credit), so the writer here waits as the agent does;
- data from the agent: :meth:`RelayStream.read` pulls from the holder, which reads the agent's
  stream into a bounded queue.

So flow control is end to end, each side of a stream buffers at most ``RELAY_BUFFER`` chunks
whatever the size of what goes through, and a chunk never exceeds a quarter of NATS's
``max_payload``. EOF and reset travel both ways (a reset also as its own message, so that a side
waiting on the agent stops at once). A relay with no pull either way for ``STREAM_IDLE`` seconds,
or whose other node is gone, is reset.

Requests to one node (see :mod:`.node`): ``sopen`` (open the agent's stream; answers the
holder's end), ``spull`` (the next data of an end), ``sreset`` (reset an end). A stream relayed
this way has no callback interface (``attach``, ``write_nowait``): tunnels, which need it, are
opened on the holder by forwarding their API routes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..session import SessionClosed, Stream, StreamRefused, StreamSink
from .forward import PULL_WAIT, STREAM_IDLE

if TYPE_CHECKING:
    from .node import Cluster
    from .relay import RelaySession

log = logging.getLogger("rport.cluster")

RELAY_CHUNK = 256 << 10
"""Largest chunk a relay queues (less if NATS's max_payload is small)."""
RELAY_BUFFER = 2
"""Chunks queued per direction of a relayed stream before its writer waits (at least 2: a
reset must find room after the writer waiting for it)."""
_EOF = object()


class _Reset:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Outbox:
    """What one side of a relayed stream sends: a bounded queue the other node pulls."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.queue: asyncio.Queue[Any] = asyncio.Queue(RELAY_BUFFER)
        self.closed = False  # reset: nothing more is queued
        self.finished = False  # its EOF or reset was pulled: nothing more will be

    async def put(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), self.chunk):
            if self.closed:
                return
            await self.queue.put(bytes(view[start:start + self.chunk]))

    async def put_eof(self) -> None:
        if not self.closed:
            await self.queue.put(_EOF)

    def put_reset(self, reason: str) -> None:
        """Whatever is queued is dropped; the next pull says reset (and a writer waiting for
        room gets it, to find the stream reset)."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_Reset(reason))

    async def pull(self) -> tuple[dict[str, Any], bytes]:
        try:
            item = await asyncio.wait_for(self.queue.get(), PULL_WAIT)
        except TimeoutError:
            return {}, b""
        chunks: list[bytes] = []
        size = 0
        while True:
            if item is _EOF:
                self.finished = True
                return {"end": True}, b"".join(chunks)
            if isinstance(item, _Reset):
                self.finished = True
                return {"reset": item.reason}, b""
            chunks.append(item)
            size += len(item)
            if size > self.chunk:  # (items are at most one chunk: a pull is at most two)
                return {}, b"".join(chunks)
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return {}, b"".join(chunks)


class RelayStream(Stream):
    """This node's side of a stream to an agent held by node ``node_id``."""

    def __init__(self, relays: "Relays", node_id: str, kind: str, meta: dict[str, Any]) -> None:
        self.relays = relays
        self.id = uuid.uuid4().hex
        self.node_id = node_id
        self.kind = kind
        self.meta = meta
        self.peer = ""  # the holder's end
        self.outbox = _Outbox(relays.chunk)
        self.active = time.monotonic()
        self._reset: str | None = None
        self._sent_eof = False
        self._recv_eof = False
        self.bytes_sent = 0
        self.bytes_received = 0

    def __repr__(self) -> str:
        return f"<RelayStream {self.kind} to node {self.node_id}>"

    async def accept(self) -> None:
        """Opened by this side: nothing to confirm."""

    def accept_nowait(self) -> None:
        """Opened by this side: nothing to confirm."""

    async def read(self) -> bytes:
        while True:
            if self._reset is not None:
                raise SessionClosed(f"stream reset: {self._reset}")
            if self._recv_eof:
                return b""
            cluster = self.relays.cluster
            try:
                answer = await cluster.call_node_raw(self.node_id, "spull", {"stream": self.peer},
                                                     timeout=PULL_WAIT + 10)
            except TimeoutError as exc:
                self.reset(f"node {self.node_id} did not answer: {exc}")
                continue
            if answer is None:
                self._gone(f"node {self.node_id} is gone")
                continue
            self.active = time.monotonic()
            head, data = answer
            if head.get("reset") is not None:
                self._gone(str(head["reset"]) or "reset")
                continue
            if head.get("end"):
                self._recv_eof = True
            if data:
                self.bytes_received += len(data)
                return data

    async def write(self, data: bytes | memoryview) -> None:
        if self._reset is not None:
            raise SessionClosed(f"stream reset: {self._reset}")
        if self._sent_eof:
            raise SessionClosed("write after EOF")
        await self.outbox.put(data)
        if self._reset is not None:  # reset while it waited for room
            raise SessionClosed(f"stream reset: {self._reset}")
        self.bytes_sent += len(data)

    async def write_eof(self) -> None:
        if self._sent_eof or self._reset is not None:
            return
        self._sent_eof = True
        await self.outbox.put_eof()

    def reset(self, reason: str = "") -> None:
        if self._reset is not None:
            return
        reason = reason or "reset"
        self._gone(reason)
        if self.peer:  # the holder stops at once, even while it waits on the agent
            self.relays.tell_reset(self.node_id, self.peer, reason)

    def _gone(self, reason: str) -> None:
        """Reset from either side: the outbox says so to the holder's next pull, and wakes a
        writer waiting for room."""
        if self._reset is None:
            self._reset = reason
            self.outbox.put_reset(reason)
            self.relays.drop(self.id)

    def attach(self, sink: StreamSink) -> None:
        raise NotImplementedError("a stream relayed through another node has no callback "
                                  "interface: open it on the node holding the agent")

    def write_nowait(self, data: bytes | memoryview) -> int:
        raise NotImplementedError("a stream relayed through another node has no callback "
                                  "interface: use write()")

    def write_eof_nowait(self) -> None:
        raise NotImplementedError("a stream relayed through another node has no callback "
                                  "interface: use write_eof()")

    def hold_credit(self, hold: bool) -> None:
        raise NotImplementedError("a stream relayed through another node has no callback "
                                  "interface")

    @property
    def reset_reason(self) -> str | None:
        return self._reset

    @property
    def done(self) -> bool:
        return self._reset is not None or (self._sent_eof and self._recv_eof)


class _HolderEnd:
    """On the node holding the agent: the agent's stream, fed by pulls from the opener's
    outbox, and read into an outbox the opener pulls."""

    def __init__(self, relays: "Relays", node_id: str, peer: str, stream: Stream) -> None:
        self.relays = relays
        self.id = uuid.uuid4().hex
        self.node_id = node_id  # the opener
        self.peer = peer  # the opener's outbox
        self.stream = stream
        self.outbox = _Outbox(relays.chunk)
        self.active = time.monotonic()
        self.tasks = [asyncio.create_task(self._pump_in()), asyncio.create_task(self._pump_out())]

    async def _pump_in(self) -> None:
        """The opener's data to the agent. The next pull is under way while a chunk is written
        to the agent (one chunk ahead, no more), so that a NATS round trip and the agent's
        write overlap."""
        cluster = self.relays.cluster

        def pull() -> "asyncio.Future[Any]":
            return asyncio.ensure_future(cluster.call_node_raw(
                self.node_id, "spull", {"stream": self.peer}, timeout=PULL_WAIT + 10))

        pending = pull()
        try:
            while True:
                try:
                    answer = await pending
                except TimeoutError as exc:
                    self.reset(f"node {self.node_id} did not answer: {exc}")
                    return
                if answer is None:
                    self.reset(f"node {self.node_id} is gone")
                    return
                self.active = time.monotonic()
                head, data = answer
                if head.get("reset") is not None:
                    self.reset(str(head["reset"]) or "reset")
                    return
                if head.get("end"):
                    if data:
                        await self.stream.write(data)
                    await self.stream.write_eof()
                    return
                pending = pull()
                if data:
                    await self.stream.write(data)
        except SessionClosed:
            return  # the agent's stream was reset: _pump_out tells the opener
        finally:
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # a pull ahead that failed: retrieved, nothing to do
            if self.outbox.finished:  # the opener has had the agent's last word already
                self.relays.drop(self.id)

    async def _pump_out(self) -> None:
        """The agent's data into the outbox the opener pulls."""
        try:
            while data := await self.stream.read():
                await self.outbox.put(data)
            await self.outbox.put_eof()
        except SessionClosed:  # the agent's stream was reset: the opener's next pull says why,
            reason = self.stream.reset_reason or "reset"  # and a writer of it waits no more
            self.outbox.put_reset(reason)
            self.tasks[0].cancel()
            self.relays.tell_reset(self.node_id, self.peer, reason)

    def reset(self, reason: str) -> None:
        self.stream.reset(reason)
        self.outbox.put_reset(reason)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.relays.drop(self.id)


class Relays:
    """The relayed streams of one node: those it opened (:class:`RelayStream`) and those it
    serves for agents it holds (:class:`_HolderEnd`), by id."""

    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster
        self._ends: dict[str, RelayStream | _HolderEnd] = {}
        self._reaper: asyncio.Task[None] | None = None

    @property
    def chunk(self) -> int:
        max_payload = getattr(self.cluster.nc, "max_payload", 0) or (1 << 20)
        return max(4096, min(RELAY_CHUNK, max_payload // 4))

    def _add(self, end: RelayStream | _HolderEnd) -> None:
        self._ends[end.id] = end
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())

    def drop(self, end_id: str) -> None:
        self._ends.pop(end_id, None)

    def tell_reset(self, node_id: str, end_id: str, reason: str) -> None:
        async def tell() -> None:
            with contextlib.suppress(Exception):
                await self.cluster.call_node_raw(node_id, "sreset",
                                                 {"stream": end_id, "reason": reason}, timeout=5)
        self.cluster.spawn(tell())

    # -- the node that opens the stream -------------------------------------------------------

    async def open(self, session: "RelaySession", kind: str, meta: dict[str, Any] | None,
                   timeout: float | None) -> RelayStream:
        stream = RelayStream(self, session.node_id, kind, dict(meta or {}))
        self._add(stream)
        cluster = self.cluster
        try:
            head = await cluster.call_node(session.node_id, "sopen", {
                "client_id": session.client_id, "kind": kind, "meta": stream.meta,
                "timeout": timeout, "stream": stream.id},
                timeout=(timeout or cluster.config.forward_timeout) + 5)
        except BaseException:
            self.drop(stream.id)
            raise
        if head is None:  # the holder did not answer: it is gone
            self.drop(stream.id)
            cluster.holder_gone(session)
            raise SessionClosed(f"node {session.node_id} is unreachable")
        if "end" in head:
            stream.peer = str(head["end"])
            return stream
        self.drop(stream.id)
        kind_of, message = head.get("error"), str(head.get("message", ""))
        if kind_of == "refused":
            raise StreamRefused(message)
        if kind_of == "timeout":
            raise TimeoutError(message)
        raise SessionClosed(message or "closed")

    # -- requests from other nodes ------------------------------------------------------------

    async def serve_open(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        """Open the stream on an agent this node holds, for the node that asks."""
        client = self.cluster.server.clients.get(str(header.get("client_id")))
        session = client.session if client is not None and not client.node_id else None
        if session is None or session.closed:
            return {"error": "closed", "message": "client is not connected"}, b""
        timeout = header.get("timeout")
        meta = header.get("meta")
        try:
            stream = await session.open_stream(str(header.get("kind")),
                                               meta if isinstance(meta, dict) else {},
                                               timeout=float(timeout) if timeout else None)
        except StreamRefused as exc:
            return {"error": "refused", "message": str(exc)}, b""
        except SessionClosed as exc:
            return {"error": "closed", "message": str(exc)}, b""
        except TimeoutError as exc:
            return {"error": "timeout", "message": str(exc) or "the client did not answer"}, b""
        end = _HolderEnd(self, str(header.get("from")), str(header.get("stream")), stream)
        self._add(end)
        return {"end": end.id}, b""

    async def serve_pull(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        end = self._ends.get(str(header.get("stream")))
        if end is None:
            return {"reset": "the relayed stream is gone"}, b""
        end.active = time.monotonic()
        head, data = await end.outbox.pull()
        end.active = time.monotonic()
        if end.outbox.finished and (isinstance(end, RelayStream) or end.tasks[0].done()):
            self.drop(end.id)  # its last word was taken, and it has nothing more to pull
        return head, data

    async def serve_reset(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        end = self._ends.get(str(header.get("stream")))
        reason = str(header.get("reason") or "reset")
        if isinstance(end, RelayStream):
            end._gone(reason)
        elif end is not None:
            end.reset(reason)
        return {}, b""

    # -- lifecycle ----------------------------------------------------------------------------

    def node_gone(self, node_id: str) -> None:
        for end in [e for e in self._ends.values() if e.node_id == node_id]:
            if isinstance(end, RelayStream):
                end._gone(f"node {node_id} is gone")
            else:
                end.reset(f"node {node_id} is gone")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        tasks = []
        for end in list(self._ends.values()):
            if isinstance(end, RelayStream):
                end._gone("the node is stopping")
            else:
                end.reset("the node is stopping")
                tasks += end.tasks
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ends.clear()

    async def _reap(self) -> None:
        while self._ends:
            await asyncio.sleep(STREAM_IDLE / 4)
            idle = time.monotonic() - STREAM_IDLE
            for end in [e for e in self._ends.values() if e.active < idle]:
                log.info("cluster: a relayed stream of node %s had no pull for %gs: reset",
                         end.node_id, STREAM_IDLE)
                end.reset(f"no pull for {STREAM_IDLE:g}s")
