"""API requests that need an agent held by another node run on that node.

A route registered with ``agent=True`` (it talks to the agent of its ``{client_id}``: opens a
tunnel, runs or cancels a command, follows live output) is, once this node has authenticated
the caller and checked its access, sent over NATS to the node holding the agent: method, path,
path parameters, query, the request's body (never more than ``[api] max_request_bytes`` + 1
bytes are read, so an oversized one is refused there with the same 413) and the verified user.
That node runs the same endpoint, without authenticating again (it trusts only messages signed
with the cluster's secret), and answers status, headers and body, which this node returns as
they are: the caller sees what one node would have answered.

A streaming answer (the server-sent events of a command's live output) is pulled: this node
asks for the next chunks as its caller reads them, so the stream is flow-controlled end to end
(the holding node's buffer per stream is bounded and its producer waits), and a stream nobody
pulls for a while is closed on the holding node.
"""

from __future__ import annotations

import asyncio
import json
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import ApiError
from ..users import User

if TYPE_CHECKING:
    from ..api.routing import RouteSpec
    from .node import Cluster

log = logging.getLogger("rport.cluster")

PULL_WAIT = 20.0
"""A pull waits this long for a chunk before answering with none (the puller asks again)."""
STREAM_IDLE = 60.0
"""A forwarded stream not pulled for this long is closed on the holding node."""
STREAM_BUFFER = 16
"""Chunks a forwarded stream buffers on the holding node before its producer waits."""
PULL_BYTES = 256 << 10
FORWARDED_HEADERS = ("content-type", "accept", "accept-encoding", "user-agent", "last-event-id")
_END = object()


class _Stream:
    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(STREAM_BUFFER)
        self.pulled = time.monotonic()
        self.task = asyncio.create_task(self._pump(iterator))

    async def _pump(self, iterator: AsyncIterator[Any]) -> None:
        try:
            async for chunk in iterator:
                await self.queue.put(chunk.encode() if isinstance(chunk, str) else bytes(chunk))
        except asyncio.CancelledError:  # nobody pulls any more: the endpoint's generator ends
            with contextlib.suppress(Exception):
                await iterator.aclose()  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # the endpoint's generator failed: the stream ends
            log.warning("cluster: a forwarded stream failed: %s", exc)
        await self.queue.put(_END)


class Forwarder:
    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster
        self._streams: dict[str, _Stream] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for stream in self._streams.values():
            stream.task.cancel()
        await asyncio.gather(*(s.task for s in self._streams.values()), return_exceptions=True)
        self._streams.clear()

    # -- the node that received the request ---------------------------------------------------------

    async def forward(self, request: Request, spec: "RouteSpec", node_id: str) -> Response:
        cluster = self.cluster
        limit = cluster.server.config.api.max_request_bytes + 1
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) >= limit:
                del body[limit:]
                break
        # Kept on the request (Starlette's cache of it), in case it runs here after all.
        request._body = bytes(body)  # type: ignore[attr-defined]
        if body and hasattr(request.state, "audit"):  # this node's audit entry records it
            try:
                json.loads(body)
                request.state.audit_body = bytes(body)
            except ValueError:
                pass
        user: User = request.state.user
        header = {
            "route": spec.name, "method": request.method, "path": request.url.path,
            "query": request.url.query, "path_params": dict(request.path_params),
            "headers": [[k, v] for k, v in request.headers.items() if k in FORWARDED_HEADERS],
            "client": request.client.host if request.client else "",
            "user": {"username": user.username, "groups": list(user.groups), "via": user.via,
                     "scopes": list(user.scopes)},
        }
        cluster.forwarded += 1
        try:
            answer = await cluster.call_node_raw(node_id, "api", header, bytes(body),
                                                 timeout=cluster.config.forward_timeout)
        except TimeoutError as exc:
            raise ApiError(504, "the node holding the client did not answer",
                           code="ERR_CODE_NODE_TIMEOUT", detail=f"{exc}") from None
        if answer is None:
            return None  # type: ignore[return-value]  # gone: the caller runs it here
        head, rest = answer
        if "status" not in head:
            raise ApiError(502, "the node holding the client failed", code="ERR_CODE_NODE_FAILED",
                           detail=str(head.get("message", "")))
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.get("headers", [])]
        if head.get("stream"):
            response: Response = StreamingResponse(
                self._pull(node_id, str(head["stream"])), status_code=int(head["status"]))
            response.raw_headers = [h for h in raw if h[0] != b"content-length"]
            return response
        response = Response(rest, status_code=int(head["status"]))
        response.raw_headers = raw
        return response

    async def _pull(self, node_id: str, stream_id: str) -> AsyncIterator[bytes]:
        cluster = self.cluster
        done = False
        try:
            while True:
                try:
                    answer = await cluster.call_node_raw(node_id, "pull", {"stream": stream_id},
                                                         timeout=PULL_WAIT + 10)
                except TimeoutError:
                    return
                if answer is None:
                    return  # the node is gone
                head, rest = answer
                if rest:
                    yield rest
                if head.get("end"):
                    done = True
                    return
        finally:
            if not done:  # our caller went away (or the node did): let the node stop it
                with contextlib.suppress(Exception):
                    await cluster.call_node_raw(node_id, "cancel", {"stream": stream_id}, timeout=2)

    # -- the node that holds the agent ------------------------------------------------------------

    async def serve(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        from ..api.routing import API_PREFIX, run_route  # noqa: PLC0415

        server = self.cluster.server
        spec = next((s for s in server.routes.specs if s.name == header.get("route")), None)
        if spec is None or not spec.agent:
            return {"error": "failed", "message": f"no agent route {header.get('route')!r}"}, b""
        path = str(header.get("path", ""))
        if not path.startswith(API_PREFIX):
            return {"error": "failed", "message": "bad path"}, b""
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # no disconnect to report
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
                   for k, v in header.get("headers", []) if str(k).lower() in FORWARDED_HEADERS]
        headers.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": str(header.get("method", "GET")), "scheme": "http", "path": path,
            "raw_path": path.encode("utf-8"), "root_path": "",
            "query_string": str(header.get("query", "")).encode("latin-1"), "headers": headers,
            "client": (str(header.get("client", "")), 0), "server": None,
            "path_params": {str(k): str(v) for k, v in (header.get("path_params") or {}).items()},
            "state": {},
        }
        request = Request(scope, receive)
        u = header.get("user") or {}
        request.state.user = User(str(u.get("username", "")), tuple(u.get("groups", ())),
                                  via=str(u.get("via", "")),
                                  scopes=tuple(u.get("scopes", ("read+write",))))
        self.cluster.served += 1
        response = await run_route(server, spec, request)
        head: dict[str, Any] = {
            "status": response.status_code,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in response.raw_headers]}
        if isinstance(response, StreamingResponse):
            stream_id = uuid.uuid4().hex
            self._streams[stream_id] = _Stream(response.body_iterator)
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.create_task(self._reap())
            head["stream"] = stream_id
            return head, b""
        return head, bytes(response.body)

    async def pull(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        stream = self._streams.get(str(header.get("stream")))
        if stream is None:
            return {"end": True}, b""
        stream.pulled = time.monotonic()
        try:
            first = await asyncio.wait_for(stream.queue.get(), PULL_WAIT)
        except TimeoutError:
            return {}, b""
        chunks: list[bytes] = []
        item = first
        size = 0
        while True:
            if item is _END:
                self._streams.pop(str(header.get("stream")), None)
                return {"end": True}, b"".join(chunks)
            chunks.append(item)
            size += len(item)
            if size >= PULL_BYTES:
                break
            try:
                item = stream.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
        stream.pulled = time.monotonic()
        return {}, b"".join(chunks)

    async def cancel(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        stream = self._streams.pop(str(header.get("stream")), None)
        if stream is not None:
            stream.task.cancel()
        return {}, b""

    async def _reap(self) -> None:
        while self._streams:
            await asyncio.sleep(STREAM_IDLE / 4)
            idle = time.monotonic() - STREAM_IDLE
            for stream_id, stream in list(self._streams.items()):
                if stream.pulled < idle:
                    log.info("cluster: forwarded stream %s not pulled for %gs: closed",
                             stream_id, STREAM_IDLE)
                    self._streams.pop(stream_id, None)
                    stream.task.cancel()
