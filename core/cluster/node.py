"""This node's membership of a cluster: the NATS connection, heartbeats, which node holds which
agent, and what nodes tell each other.

Subjects (``<prefix>`` is ``[cluster] subject_prefix``, default ``rport``):

- ``<prefix>.all``: broadcast, every node listens: heartbeats, agents connected / disconnected /
  removed / changed, shared bus events, failed logins. One subscription handled in order, so
  what a node says about one agent arrives in the order it said it.
- ``<prefix>.node.<node_id>.<op>``: request/reply to one node: ``api`` (a forwarded API
  request), ``pull``/``cancel`` (a forwarded streaming response), ``agent`` (a request to an
  agent the node holds), ``sopen``/``spull``/``sreset`` (a stream to an agent the node holds,
  relayed: :mod:`.streams`), ``close`` (close an agent's session), ``ping``.

Every message is signed with ``[cluster] secret`` (:mod:`.wire`); unsigned ones are dropped.
Agents' records and the holder of each agent's session are in the database too (tables of
:mod:`.tables`), so a node that starts later, or a node that takes over the agents of a dead
one, reads them from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import attrs

from ..clients import Client
from ..config import ClusterSection
from ..plugins import PluginError
from . import tables
from .relay import RelaySession
from .wire import BadMessage, pack, signing_key, unpack

if TYPE_CHECKING:
    from ..server import RportServer

log = logging.getLogger("rport.cluster")

OUTBOX = 10_000
"""Broadcasts waiting to be sent (bounded: past it they are dropped, with a log line)."""
LOADING_MAX = 200_000
"""Broadcasts kept while a starting node reads the database (applied after)."""
HANDLERS = 256
"""Requests from other nodes handled at once (more wait in NATS's bounded pending queue)."""


class Cluster:
    def __init__(self, server: "RportServer") -> None:
        self.server = server
        self.config: ClusterSection = server.config.cluster
        self.node_id = self.config.node_id or _default_node_id()
        self.prefix = self.config.subject_prefix
        self.key = signing_key(self.config.secret)
        self.nc: Any = None
        self.nodes: dict[str, dict[str, Any]] = {}
        """Live nodes other than this one: node id -> its last heartbeat (and ``heard``, when)."""
        self.started_at = time.time()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX)
        self._tasks: list[asyncio.Task[Any]] = []
        self._handlers = asyncio.Semaphore(HANDLERS)
        self._pending: set[asyncio.Task[Any]] = set()
        self._loading: list[tuple[dict[str, Any], bytes]] | None = None
        self._stopping = False
        self._joined = False
        self._throttles: dict[str, Any] = {}
        self._throttle_rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._throttle_dirty = asyncio.Event()
        self.forwarded = 0
        self.served = 0
        from .forward import Forwarder  # noqa: PLC0415 (modules of this package)
        from .members import Members  # noqa: PLC0415
        from .streams import Relays  # noqa: PLC0415

        self.forwarder = Forwarder(self)
        self.members = Members(self)
        self.relays = Relays(self)

    # -- lifecycle -------------------------------------------------------------------------------

    def subject(self, node_id: str, op: str) -> str:
        return f"{self.prefix}.node.{node_id}.{op}"

    @property
    def broadcast_subject(self) -> str:
        return f"{self.prefix}.all"

    async def start(self) -> None:
        """Join: connect to NATS, listen, read who holds which agent, then announce ourselves.
        Called after the store is open, before agents or the API are served."""
        import nats  # noqa: PLC0415 (only a cluster node needs it)

        cfg = self.config
        options: dict[str, Any] = {
            "servers": list(cfg.nats_url), "name": f"rportd {self.node_id}", "no_echo": True,
            "max_reconnect_attempts": -1, "reconnect_time_wait": 1, "connect_timeout": 5,
            "allow_reconnect": True, "ping_interval": 10, "max_outstanding_pings": 3,
            "error_cb": self._nats_error, "disconnected_cb": self._nats_disconnected,
            "reconnected_cb": self._nats_reconnected,
        }
        if cfg.nats_creds_file:
            options["user_credentials"] = cfg.nats_creds_file
        if cfg.nats_ca_file or cfg.nats_cert_file:
            context = ssl.create_default_context(cafile=cfg.nats_ca_file or None)
            if cfg.nats_cert_file:
                context.load_cert_chain(cfg.nats_cert_file, cfg.nats_key_file)
            options["tls"] = context
        try:
            self.nc = await nats.connect(**options)
        except Exception as exc:
            raise PluginError(f"cluster: cannot connect to NATS at {', '.join(_hide(u) for u in cfg.nats_url)}: "
                              f"{exc.__class__.__name__}: {exc}") from None
        try:  # a live process answering for our node id: two nodes must not share one
            other = await self.call_node(self.node_id, "ping", {}, timeout=2)
        except TimeoutError:
            other = None
        if other is not None:
            await self.nc.close()
            raise PluginError(f"cluster: another live node already has node_id {self.node_id!r}; "
                              "give each node its own ([cluster] node_id)")
        self._loading = []
        await self.nc.subscribe(self.broadcast_subject, cb=self._on_broadcast,
                                pending_msgs_limit=65536, pending_bytes_limit=64 << 20)
        await self.nc.subscribe(f"{self.prefix}.node.{self.node_id}.*", cb=self._on_request,
                                pending_msgs_limit=4096, pending_bytes_limit=64 << 20)
        await self.nc.flush()
        await self._beat()
        await self._load()
        loading, self._loading = self._loading, None
        for header, body in loading:  # what was said while we read the database
            await self._apply(header, body)
        self._joined = True
        self._tasks += [asyncio.create_task(self._send_loop(), name="cluster-send"),
                        asyncio.create_task(self._heartbeat_loop(), name="cluster-heartbeat"),
                        asyncio.create_task(self._monitor_loop(), name="cluster-monitor"),
                        asyncio.create_task(self._throttle_loop(), name="cluster-throttle")]
        log.info("cluster: node %s joined through NATS %s; %d other node(s) live", self.node_id,
                 ", ".join(_hide(u) for u in cfg.nats_url), len(self.nodes))

    async def stop(self) -> None:
        """Leave: what this node held is let go in the database and the others are told, so
        they do not wait for our heartbeat to time out."""
        self._stopping = True
        if self._joined:  # (a node refused at start leaves nothing of the live one's)
            with contextlib.suppress(Exception):
                await self.server.store.run(tables.leave, self.node_id, time.time())
            self.broadcast({"op": "leave", "node": self.node_id})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain_outbox(), 5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self.forwarder.close()
        await self.relays.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 5)
            with contextlib.suppress(Exception):
                await self.nc.close()

    # -- the agents this node holds ----------------------------------------------------------------

    async def client_connected(self, client: Client) -> None:
        """An agent finished its handshake on this node (see :meth:`Members.connected`)."""
        await self.members.connected(client)

    async def client_disconnected(self, client: Client, reason: str) -> bool:
        """This node's session of an agent ended; False if another node took it over."""
        return await self.members.disconnected(client, reason)

    def client_removed(self, client_id: str, reason: str) -> None:
        self.broadcast({"op": "removed", "client_id": client_id, "reason": reason})

    def client_changed(self, client: Client) -> None:
        """What was set on a client through the API: its ``allowed_user_groups``, and its
        tags and labels (client attributes, set by the node holding the agent)."""
        self.broadcast({"op": "changed", "client_id": client.id,
                        "allowed_user_groups": client.allowed_user_groups,
                        "tags": list(client.tags), "labels": dict(client.labels)})

    def holder(self, client_id: str) -> str | None:
        return self.members.holder(client_id)

    async def check_holder(self, client: Client) -> None:
        await self.members.check_holder(client)

    def holder_gone(self, relay: RelaySession) -> None:
        self.members.holder_gone(relay)

    async def forward_if_remote(self, request: Any, spec: Any) -> Any:
        """The answer of the node holding the request's agent, or None to run it here (the
        agent is not held elsewhere, or its holder is gone: then it is disconnected first)."""
        client_id = request.path_params.get("client_id", "")
        node_id = self.holder(client_id)
        if node_id is None:
            return None
        response = await self.forwarder.forward(request, spec, node_id)
        if response is None:
            client = self.server.clients.get(client_id)
            if client is not None and isinstance(client.session, RelaySession):
                self.holder_gone(client.session)
        return response

    def status(self) -> dict[str, Any]:
        """For ``GET /status``: this node and the live ones it hears."""
        fields = ("api_address", "agent_address", "tunnel_host")
        return {"node_id": self.node_id,
                "nodes": sorted([{"node_id": self.node_id, "tunnel_host": self.tunnel_host,
                                  "api_address": str(self.server.api_address or ""),
                                  "agent_address": str(self.server.agent_address)}]
                                + [{"node_id": n, **{k: str(info.get(k, "")) for k in fields}}
                                   for n, info in self.nodes.items()],
                                key=lambda row: row["node_id"])}

    async def live_node_ids(self) -> set[str]:
        """The nodes the database has a heartbeat of within ``node_timeout``, this one included
        (the database's view: a node that has just started may not have heard of them all)."""
        since = time.time() - self.config.node_timeout
        return set(await self.server.store.run(tables.live_nodes, since)) | {self.node_id}

    def may_purge(self) -> bool:
        """One node purges disconnected clients: the live one with the smallest id."""
        return self.node_id <= min(self.nodes, default=self.node_id)

    # -- ports ------------------------------------------------------------------------------------

    async def claim_port(self, port: int, client_id: str) -> bool:
        stale = time.time() - self.config.node_timeout
        return await self.server.store.run(tables.claim_port, port, self.node_id, client_id, stale)

    async def free_port(self, port: int) -> None:
        await self.server.store.run(tables.free_port, port, self.node_id)

    async def taken_ports(self) -> set[int]:
        return await self.server.store.run(tables.taken_ports, self.node_id)

    @property
    def tunnel_host(self) -> str:
        """Where this node's tunnels are reached: ``[server] tunnel_host``, else the host
        agents are told to connect to (``[server] url``, or this host's address)."""
        if self.server.config.server.tunnel_host:
            return self.server.config.server.tunnel_host
        from urllib.parse import urlsplit  # noqa: PLC0415

        return urlsplit(self.server.connect_urls[0]).hostname or self.server.agent_address.host

    # -- shared events ----------------------------------------------------------------------------

    def forward_event(self, event: Any) -> None:
        """A shared event published on this node's bus: to every other node's bus."""
        self.broadcast({"op": "event", "type": type(event).__name__,
                        "fields": attrs.asdict(event, recurse=False)})

    # -- failed logins ----------------------------------------------------------------------------

    def watch_throttles(self, throttles: dict[str, Any]) -> None:
        """Failed logins and bans of each named throttle reach every node (and the database,
        for nodes that start later)."""
        self._throttles = throttles
        for name, throttle in throttles.items():
            throttle.on_change = lambda key, failures, until, name=name: self._throttled(
                name, key, failures, until)

    def _throttled(self, name: str, key: str, failures: int, until: float) -> None:
        row = {"name": name, "key": key, "failures": failures, "until": until}
        self.broadcast({"op": "throttle", **row})
        # Stored in batches by one task, the latest state of each key (bounded: under a flood
        # of failures from new keys, the excess is only broadcast, not stored).
        if (name, key) in self._throttle_rows or len(self._throttle_rows) < OUTBOX:
            self._throttle_rows[(name, key)] = row
            self._throttle_dirty.set()

    async def _throttle_loop(self) -> None:
        while True:
            await self._throttle_dirty.wait()
            await asyncio.sleep(0.5)
            self._throttle_dirty.clear()
            rows, self._throttle_rows = list(self._throttle_rows.values()), {}
            try:
                await self.server.store.run(tables.save_throttle, rows)
            except Exception as exc:
                log.warning("cluster: %d failed login(s) not stored: %s", len(rows), exc)

    # -- talking to other nodes ---------------------------------------------------------------------

    def broadcast(self, header: dict[str, Any], body: bytes = b"") -> None:
        try:
            self._outbox.put_nowait(pack(self.key, {**header, "from": self.node_id}, body))
        except asyncio.QueueFull:
            log.error("cluster: %d messages wait to be sent; dropped %s", self._outbox.qsize(),
                      header.get("op"))

    async def call_node(self, node_id: str, op: str, header: dict[str, Any], body: bytes = b"",
                        *, timeout: float) -> dict[str, Any] | None:
        """Ask another node; its answer's header (``_body`` holds its body), or None if no node
        by that id listens (it is gone). Raises TimeoutError."""
        answer = await self.call_node_raw(node_id, op, header, body, timeout=timeout)
        if answer is None:
            return None
        head, rest = answer
        head["_body"] = rest
        return head

    async def call_node_raw(self, node_id: str, op: str, header: dict[str, Any],
                            body: bytes = b"", *, timeout: float) -> tuple[dict[str, Any], bytes] | None:
        import nats.errors  # noqa: PLC0415

        data = pack(self.key, {**header, "from": self.node_id}, body)
        try:
            msg = await self.nc.request(self.subject(node_id, op), data, timeout=timeout)
        except nats.errors.NoRespondersError:
            return None
        except nats.errors.TimeoutError:
            raise TimeoutError(f"node {node_id} did not answer within {timeout:g}s") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            raise TimeoutError(f"NATS is unreachable: {exc}") from None
        try:
            return unpack(self.key, msg.data)
        except BadMessage as exc:
            log.warning("cluster: dropped an answer of node %s: %s", node_id, exc)
            return None

    async def _send_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            try:
                await self.nc.publish(self.broadcast_subject, data)
            except Exception as exc:
                log.warning("cluster: a broadcast was not sent: %s", exc)
            finally:
                self._outbox.task_done()

    async def _drain_outbox(self) -> None:
        await self._outbox.join()
        await self.nc.flush()

    async def _on_request(self, msg: Any) -> None:
        try:
            header, body = unpack(self.key, msg.data)
        except BadMessage as exc:
            log.warning("cluster: dropped a request on %s: %s", msg.subject, exc)
            return
        op = msg.subject.rpartition(".")[2]
        handler: Callable[[dict[str, Any], bytes], Awaitable[tuple[dict[str, Any], bytes]]] | None = {
            "api": self.forwarder.serve, "pull": self.forwarder.pull, "cancel": self.forwarder.cancel,
            "agent": self._serve_agent, "close": self._serve_close, "ping": self._serve_ping,
            "sopen": self.relays.serve_open, "spull": self.relays.serve_pull,
            "sreset": self.relays.serve_reset,
        }.get(op)
        if handler is None or not msg.reply:
            return
        await self._handlers.acquire()
        task = asyncio.get_running_loop().create_task(self._answer(msg, handler, header, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _answer(self, msg: Any, handler: Any, header: dict[str, Any], body: bytes) -> None:
        try:
            try:
                head, rest = await handler(header, body)
            except Exception:
                log.exception("cluster: request %s from node %s failed", msg.subject, header.get("from"))
                head, rest = {"error": "failed", "message": "the node failed; see its log"}, b""
            with contextlib.suppress(Exception):
                await msg.respond(pack(self.key, head, rest))
        finally:
            self._handlers.release()

    async def _serve_ping(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        return {"node": self.node_id}, b""

    async def _serve_agent(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        from ..session import RemoteError, SessionClosed  # noqa: PLC0415

        client = self.server.clients.get(str(header.get("client_id")))
        session = client.session if client is not None and not client.node_id else None
        if session is None or session.closed:
            return {"error": "closed", "message": "client is not connected"}, b""
        timeout = header.get("timeout")
        try:
            answer = await session.request(str(header.get("name")), header.get("body"),
                                           timeout=float(timeout) if timeout else None)
        except RemoteError as exc:
            return {"error": "remote", "message": str(exc)}, b""
        except SessionClosed as exc:
            return {"error": "closed", "message": str(exc)}, b""
        except TimeoutError as exc:
            return {"error": "timeout", "message": str(exc)}, b""
        return {"answer": answer}, b""

    async def _serve_close(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        client = self.server.clients.get(str(header.get("client_id")))
        if (client is not None and not client.node_id and client.session is not None
                and client.session_id == header.get("session_id")):
            await client.session.close(str(header.get("reason") or "closed by another node"))
        return {"closed": True}, b""

    # -- what the others say ----------------------------------------------------------------------

    async def _on_broadcast(self, msg: Any) -> None:
        try:
            header, body = unpack(self.key, msg.data)
        except BadMessage as exc:
            log.warning("cluster: dropped a broadcast: %s", exc)
            return
        if header.get("from") == self.node_id:
            return
        if self._loading is not None and header.get("op") != "heartbeat":
            if len(self._loading) < LOADING_MAX:
                self._loading.append((header, body))
            else:
                log.error("cluster: more than %d messages while the clients were read; dropped a "
                          "%r message", LOADING_MAX, header.get("op"))
            return
        try:
            await self._apply(header, body)
        except Exception:
            log.exception("cluster: a %r message from node %s failed", header.get("op"),
                          header.get("from"))

    async def _apply(self, header: dict[str, Any], body: bytes) -> None:
        op, sender = header.get("op"), str(header.get("from"))
        if op == "heartbeat":
            known = sender in self.nodes
            self.nodes[sender] = {**header, "heard": time.monotonic()}
            if not known:
                log.info("cluster: node %s is live", sender)
                if self._loading is None:
                    await self.members.load_node(sender)
        elif op == "leave":
            self._node_gone(sender, "stopped")
        elif op in ("connected", "disconnected", "removed", "changed"):
            self.members.apply(op, sender, header)
        elif op == "event":
            event_type = next((t for t in self.server.bus.shared
                               if t.__name__ == header.get("type")), None)
            if event_type is not None:
                try:
                    event = event_type(**header.get("fields", {}))
                except TypeError as exc:
                    log.warning("cluster: event %s from node %s: %s", header.get("type"), sender, exc)
                    return
                self.server.bus.deliver(event)
        elif op == "throttle":
            throttle = self._throttles.get(header.get("name"))
            if throttle is not None:
                throttle.restore(str(header.get("key")), int(header.get("failures", 0)),
                                 float(header.get("until", 0)))

    def _node_gone(self, node_id: str, why: str) -> None:
        self.nodes.pop(node_id, None)
        self.members.node_gone(node_id, why)
        self.relays.node_gone(node_id)

    # -- the database -----------------------------------------------------------------------------

    async def _beat(self) -> None:
        server = self.server
        now = time.time()
        row = {"node_id": self.node_id, "api_address": str(server.api_address or ""),
               "agent_address": str(server.agent_address), "tunnel_host": self.tunnel_host,
               "started_at": self.started_at, "heartbeat_at": now}
        await server.store.run(tables.beat, row)
        self.broadcast({"op": "heartbeat", **{k: v for k, v in row.items() if k != "node_id"}})

    async def _load(self) -> None:
        """At start: the live nodes, every known client, the failed logins."""
        server = self.server
        now = time.time()
        live = await server.store.run(tables.live_nodes, now - self.config.node_timeout)
        live.pop(self.node_id, None)
        for node_id, row in live.items():
            self.nodes.setdefault(node_id, {**row, "heard": time.monotonic()})
        # What this node held before it stopped (or crashed) is free again.
        await server.store.run(tables.release_node, self.node_id, now)
        await self.members.load(set(self.nodes), now)
        throttles = self._throttles
        for row in await server.store.run(tables.load_throttle, now):
            throttle = throttles.get(row["name"])
            if throttle is not None:
                throttle.restore(row["key"], row["failures"], row["until"])

    # -- loops ------------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await self._beat()
            except Exception as exc:
                log.warning("cluster: heartbeat not recorded: %s", exc)

    async def _monitor_loop(self) -> None:
        sweeps = 0
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            deadline = time.monotonic() - self.config.node_timeout
            for node_id in [n for n, info in self.nodes.items() if info["heard"] < deadline]:
                self._node_gone(node_id, f"sent no heartbeat for {self.config.node_timeout:g}s")
            sweeps += 1
            if sweeps % 5 == 0 and self.may_purge():
                try:
                    await self._sweep()
                except Exception as exc:
                    log.warning("cluster: sweep of dead nodes failed: %s", exc)

    async def _sweep(self) -> None:
        """The database's view: nodes whose heartbeat is stale let go of what they held."""
        now = time.time()
        store = self.server.store
        live = await store.run(tables.live_nodes, 0)
        for node_id, row in live.items():
            if node_id != self.node_id and row["heartbeat_at"] < now - self.config.node_timeout:
                await store.run(tables.leave, node_id, now)
                log.info("cluster: node %s is gone (last heartbeat %.0fs ago): its agents and "
                         "ports are released", node_id, now - row["heartbeat_at"])

    # -- NATS callbacks ---------------------------------------------------------------------------

    async def _nats_error(self, exc: Exception) -> None:
        log.warning("cluster: NATS: %s: %s", exc.__class__.__name__, exc)

    async def _nats_disconnected(self) -> None:
        if not self._stopping:
            log.warning("cluster: disconnected from NATS; reconnecting")

    async def _nats_reconnected(self) -> None:
        log.info("cluster: reconnected to NATS")
        # Others may have declared us dead meanwhile: say again which agents we hold.
        self.spawn(self.members.reassert())

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def _default_node_id() -> str:
    name = socket.gethostname().split(".")[0]
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:64] or "node"


def _hide(url: str) -> str:
    """A NATS URL for logs: no password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        return f"{scheme}://{creds.partition(':')[0]}:***@{host}"
    return url
