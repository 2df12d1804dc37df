"""The server's tunnels: creation with RPort's checks in RPort's order, deletion, restoring
tunnels when an agent reconnects (RPort §4.11), and persistence in the server's store."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections import Counter
from typing import Any, Mapping

from rport.core.plugin import ApiError, Client, KeyedLocks, RemoteError, SessionClosed, call_each

from . import store
from .events import TunnelClosed, TunnelOpened, TunnelsChanged
from .ports import PortPool, port_free
from .remote import Remote, RemoteError as DecodeError, decode_remote, hello_remotes, parse_local
from .traffic import Traffic
from .tunnel import Tunnel

log = logging.getLogger("rport.plugins.tunnels")

IDLE_MAX = 10080
AUTO_CLOSE_MAX = 744 * 3600
PROXY_SCHEMES = ("http", "https")  # RPort also proxies vnc/rdp through Guacamole; we do not
PUT_PARAMS = ("local", "remote", "scheme", "acl", "idle-timeout-minutes", "skip-idle-timeout",
              "auto-close", "check_port", "http_proxy", "host_header", "auth_user",
              "auth_password", "name", "protocol")
_GO_DURATION = re.compile(r"^([-+]?)(0|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$")


def bad(title: str, code: str = "", detail: str = "", status: int = 400) -> ApiError:
    return ApiError(status, title, code=code, detail=detail)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cannot_listen(host: str, port: int, exc: OSError) -> ApiError:
    """RPort's 409 for a listener that cannot start (an address this machine does not have...)."""
    reason = (exc.strerror or str(exc)).lower()
    return bad(f"unable to start tunnel: listen tcp {host_port(host, port)}: bind: {reason}",
               "ERR_CODE_TUNNEL_START", status=409)


def _answer(answer: Any, key: str, *, default: bool = True) -> bool:
    """A yes/no field of an agent's answer; anything malformed is a no (never a traceback)."""
    if answer is None:
        return default
    return isinstance(answer, dict) and answer.get(key, default) is True


def _named(tunnel: Tunnel) -> str:
    """"tunnel 3", or "tunnel" for one of an agent's remotes not opened yet (no id)."""
    return f"tunnel {tunnel.id}" if tunnel.id else "tunnel"


def parse_bool(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    if name not in params:
        return default
    value = params[name].strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise bad(f"invalid {name} param: {params[name]!r} (use 1 or 0)", "ERR_CODE_INVALID_PARAM")


def parse_go_duration(text: str) -> float:
    """Seconds, as Go's time.ParseDuration reads ``text`` (a sign, "0" alone, units)."""
    from rport.core.plugin import parse_duration

    match = _GO_DURATION.match(text.strip())
    if not match:
        raise ValueError(text)
    sign, body = match.group(1), match.group(2)
    seconds = 0.0 if body == "0" else float(parse_duration(body))
    return -seconds if sign == "-" else seconds


def too_many(limit: int) -> ApiError:
    return bad("too many tunnels for this client", "ERR_CODE_TUNNEL_LIMIT",
               f"at most {limit} tunnels per client (plugins.tunnels.max_per_client)", status=409)


class TunnelService:
    def __init__(self, server: Any, *, max_per_client: int = 256) -> None:
        self.server = server
        self.max_per_client = max_per_client
        cfg = server.config.server
        self.pool = PortPool(cfg.used_ports, cfg.excluded_ports)
        self.check_port_timeout = cfg.check_port_timeout
        self.tunnels: dict[str, dict[str, Tunnel]] = {}  # client id -> tunnel id -> tunnel
        self.saved: dict[str, list[dict[str, Any]]] = {}  # client id -> specs kept for reconnects
        # client id -> the last tunnel id given: ids are not reused while rportd runs, so a
        # script holding the id of a closed tunnel cannot delete the next one by mistake
        self._last_id: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._persisting = KeyedLocks()
        self._claimed: Counter[int] = Counter()
        """Fixed local ports of tunnels being restored, not listening yet: kept from the random
        picks of the tunnels restored before them."""
        self._unwritten: set[str] = set()  # clients whose saved specs the store may not hold
        self.traffic = Traffic()
        """What every tunnel's ended connections carried since start-up (metrics)."""
        self.cluster = server.cluster
        """In a cluster: the port pool is the cluster's, and tunnels of agents held by other
        nodes are listed from their kept specs (see :meth:`listed`)."""
        self._remote_json: dict[str, list[dict[str, Any]]] = {}

    # -- store -------------------------------------------------------------------------------------

    async def load(self) -> None:
        for client_id, spec in await self.server.store.run(store.load):
            self.saved.setdefault(client_id, []).append(spec)

    async def _persist(self, client_id: str, *, force: bool = False) -> None:
        # One client's writes in the order they were asked for, each of the tunnels as they are
        # when its turn comes (on PostgreSQL, two writes could otherwise commit crosswise).
        async with self._persisting(client_id):
            specs = [t.spec() for t in self.tunnels.get(client_id, {}).values()]
            if (not force and client_id not in self._unwritten
                    and specs == self.saved.get(client_id, [])):
                return  # what the store holds (e.g. an agent without tunnels connecting)
            self.saved[client_id] = specs
            self._unwritten.add(client_id)  # until the store has it (a failed write is retried)
            await self.server.store.run(store.replace, client_id, specs)
            self._unwritten.discard(client_id)
        if self.cluster is not None:
            self.server.bus.publish(TunnelsChanged(client_id))

    def lock(self, client_id: str) -> asyncio.Lock:
        return self._locks.setdefault(client_id, asyncio.Lock())

    # -- queries -------------------------------------------------------------------------------------

    def of(self, client_id: str) -> list[Tunnel]:
        return list(self.tunnels.get(client_id, {}).values())

    def listed(self, client: Client) -> list[dict[str, Any]]:
        """The client's tunnels as the API shows them: in a cluster, those of an agent held by
        another node are its kept specs (that node listens)."""
        if client.node_id:
            return list(self._remote_json.get(client.id, ())) if client.connected else []
        return [t.to_json() for t in self.of(client.id)]

    async def reload(self, client_id: str) -> None:
        """Another node changed the tunnels of an agent it holds: read them again."""
        client = self.server.clients.get(client_id)
        if client is not None and not client.node_id:
            return  # held here: ours are the truth
        specs = await self.server.store.run(store.load_of, client_id)
        self.saved[client_id] = specs
        self._remote_json[client_id] = [_spec_json(client_id, spec) for spec in specs]
        self.server.clients.changed(client_id)  # its document's "tunnels"

    def all(self) -> list[Tunnel]:
        return [t for tunnels in self.tunnels.values() for t in tunnels.values()]

    def traffic_totals(self) -> dict[str, int]:
        """For metrics: tunnels and connections open now; connections, refusals and bytes
        since start-up (ended connections and what the open ones carried so far)."""
        tunnels = self.all()
        sent, received = self.traffic.sent, self.traffic.received
        for tunnel in tunnels:
            live_sent, live_received = tunnel.live_bytes()
            sent, received = sent + live_sent, received + live_received
        return {"tunnels": len(tunnels), "open_connections": sum(t.connections for t in tunnels),
                "connections": self.traffic.connections, "refused": self.traffic.refused,
                "sent": sent, "received": received}

    def taken_ports(self) -> set[int]:
        return {t.lport for t in self.all()} | {t.raw_port for t in self.all() if t.raw_port}

    # -- create ------------------------------------------------------------------------------------

    async def create_from_params(self, client: Client, params: Mapping[str, str], owner: str) -> Tunnel:
        """PUT /clients/{id}/tunnels: every check of RPort's table, in its order."""
        server = self.server
        session = server.clients.session(client.id)
        if session is None:
            raise bad(f"client with id {client.id} not found", "ERR_CODE_CLIENT_NOT_FOUND", status=404)
        # 2. the remote (and local) notation
        remote_text = params.get("remote", "")
        local_text = params.get("local", "")
        if not remote_text:
            raise bad('failed to decode "": Missing ports', "ERR_CODE_INVALID_REMOTE")
        combined = f"{local_text}:{remote_text}" if local_text else remote_text
        try:
            remote = decode_remote(remote_text)
            if remote.local_port is not None and local_text:
                raise DecodeError(f'failed to decode "{combined}": Invalid remote')
            if local_text:
                try:
                    lhost, lport = parse_local(local_text)
                except ValueError:
                    raise bad(f"Invalid port: {local_text}.", "ERR_CODE_INVALID_LOCAL") from None
                remote = Remote(lhost, lport, remote.remote_host, remote.remote_port, remote.protocol)
        except DecodeError as exc:
            raise bad(str(exc), "ERR_CODE_INVALID_REMOTE") from None
        protocol = params.get("protocol", remote.protocol)
        if protocol != "tcp":
            raise bad(f"protocol {protocol} is not supported: only tcp tunnels are",
                      "ERR_CODE_INVALID_PROTOCOL")
        # 3. scheme
        scheme = params.get("scheme") or None
        if scheme is not None and len(scheme) > 15:
            raise bad("Invalid URI scheme.", "ERR_CODE_URI_SCHEME_LENGTH_EXCEED",
                      "scheme must not be longer than 15 characters")
        # 4.-6. the HTTP proxy and its options (plugin proxy)
        http_proxy = parse_bool(params, "http_proxy")
        host_header = params.get("host_header", "")
        auth_user, auth_password = params.get("auth_user", ""), params.get("auth_password", "")
        if http_proxy:
            proxy_ok = server.state.get("tunnels.proxy")
            if proxy_ok is None:
                raise bad("creation of tunnel proxy not enabled", "ERR_CODE_TUNNEL_PROXY_NOT_ENABLED",
                          "set tunnel_proxy_cert_file and tunnel_proxy_key_file in [server]")
            if scheme not in (None, *PROXY_SCHEMES):
                raise bad(f"tunnel proxy not allowed with scheme {scheme}", "ERR_CODE_INVALID_SCHEME",
                          "the proxy serves http and https targets")
            scheme = scheme or "http"
        if host_header and not http_proxy:
            raise bad("host_header not allowed when http_proxy is false", "ERR_CODE_INVALID_PARAM")
        if (auth_user or auth_password) and not http_proxy:
            raise bad("auth_user and auth_password are not allowed when http_proxy is false",
                      "ERR_CODE_INVALID_PARAM")
        if auth_user and not auth_password:
            raise bad("auth_user requires auth_password", "ERR_CODE_INVALID_PARAM")
        if auth_password and not auth_user:
            raise bad("auth_password requires auth_user", "ERR_CODE_INVALID_PARAM")
        # 7. idle timeout
        if "idle-timeout-minutes" in params and "skip-idle-timeout" in params:
            raise bad("conflicting parameters idle-timeout-minutes and skip-idle-timeout",
                      "ERR_CODE_INVALID_IDLE_TIMEOUT")
        idle = 5
        if "idle-timeout-minutes" in params:
            raw = params["idle-timeout-minutes"].strip()
            if not raw.lstrip("-").isdigit():
                raise bad("invalid idle timeout param", "ERR_CODE_INVALID_IDLE_TIMEOUT",
                          f"{raw!r} is not a whole number of minutes")
            idle = int(raw)
            if not 0 <= idle <= IDLE_MAX:
                raise bad(f"idle timeout param should be in range [0, {IDLE_MAX}]",
                          "ERR_CODE_INVALID_IDLE_TIMEOUT")
        if parse_bool(params, "skip-idle-timeout"):
            idle = 0
        # 8. auto-close
        auto_close = 0.0
        if params.get("auto-close"):
            try:
                auto_close = parse_go_duration(params["auto-close"])
            except ValueError:
                raise bad("invalid tunnel auto-close format", "ERR_CODE_INVALID_AUTO_CLOSE",
                          "use a duration such as 30m or 2h") from None
            if auto_close < 0:  # 0 is no auto-close, as in RPort
                raise bad("tunnel auto-close should be more than 0", "ERR_CODE_INVALID_AUTO_CLOSE")
            if auto_close > AUTO_CLOSE_MAX:
                raise bad("tunnel auto-close should not be more than 744h0m0s",
                          "ERR_CODE_INVALID_AUTO_CLOSE")
        # 9. ACL (plugin acl); refused, never widened, when no plugin handles ACLs
        acl = params.get("acl") or None
        acl_check = await self.parse_acl(acl)
        tunnel = Tunnel(
            id="", client_id=client.id, lhost=remote.local_host, lport=remote.local_port or 0,
            rhost=remote.remote_host, rport=remote.remote_port, lport_random=remote.local_port is None,
            name=params.get("name", ""), scheme=scheme, acl=acl, idle_timeout_minutes=idle,
            auto_close=auto_close, http_proxy=http_proxy, host_header=host_header,
            auth_user=auth_user, auth_password=auth_password, owner=owner, acl_check=acl_check)
        async with self.lock(client.id):
            if len(self.of(client.id)) >= self.max_per_client:
                raise too_many(self.max_per_client)
            # 10. the agent's tunnel_allowed
            try:
                answer = await session.request("check_tunnel_allowed", {"remote": tunnel.remote})
                allowed = _answer(answer, "allowed")
            except RemoteError as exc:
                allowed = "unknown request" in str(exc)  # an agent without tunnels policy
            except SessionClosed:
                raise bad(f"client with id {client.id} not found", "ERR_CODE_CLIENT_NOT_FOUND",
                          status=404) from None
            except TimeoutError:
                raise bad("client did not answer the tunnel_allowed check",
                          "ERR_CODE_CLIENT_ERROR", status=409) from None
            if not allowed:
                raise bad("Tunnel destination is not allowed by client configuration.",
                          "ERR_CODE_TUNNEL_NOT_ALLOWED", f"{tunnel.remote} is not in tunnel_allowed")
            # 11.-12. duplicates
            for other in self.of(client.id):
                if (other.rhost, other.rport, other.acl) == (tunnel.rhost, tunnel.rport, tunnel.acl):
                    if remote.local_port is None or (other.lhost, other.lport) == (tunnel.lhost, tunnel.lport):
                        raise bad("Tunnel already exists.", "ERR_CODE_TUNNEL_EXIST",
                                  f"tunnel {other.id} leads from {other.lhost}:{other.lport} to {other.remote}")
                    raise bad(f"Tunnel to port {tunnel.rport} already exists.",
                              "ERR_CODE_TUNNEL_TO_PORT_EXIST", f"tunnel {other.id}")
            # 13. check_port: the agent dials the remote
            # (check_port= with no value is the default, as in RPort, where only 0 skips it)
            if not params.get("check_port", "").strip() or parse_bool(params, "check_port", True):
                try:
                    answer = await session.request("check_port", {
                        "remote": tunnel.remote, "timeout": self.check_port_timeout},
                        timeout=self.check_port_timeout + 10)
                except RemoteError as exc:
                    raise bad(f"client error: {exc}", "ERR_CODE_CLIENT_ERROR", status=409) from None
                except (SessionClosed, TimeoutError) as exc:
                    raise bad("client did not answer the port check", "ERR_CODE_CLIENT_ERROR",
                              str(exc) or "timeout", status=409) from None
                if not _answer(answer, "open", default=False):
                    error = answer.get("error", "") if isinstance(answer, dict) else ""
                    raise bad(f"Port {tunnel.rport} is not in listening state.",
                              "ERR_CODE_REMOTE_PORT_NOT_OPEN", str(error))
            # 14.-15. the local port
            await self._assign_port(tunnel, given=remote.local_port is not None)
            self._assign_raw_port(tunnel)
            await self._start(tunnel)
            await self._persist(client.id)
        log.info("tunnel %s of %s opened by %s: %s -> %s", tunnel.id, client.id, owner,
                 host_port(tunnel.lhost, tunnel.lport), tunnel.remote)
        return tunnel

    async def parse_acl(self, acl: str | None) -> Any:
        if not acl:
            return None
        for _, result in await call_each(self.server.hook.rport_tunnel_acl,
                                         server=self.server, acl=acl):
            if result is not None:
                return result
        raise bad("tunnel ACLs are not available: the acl plugin is disabled",
                  "ERR_CODE_ACL_UNAVAILABLE", "remove the acl parameter or enable the acl plugin")

    async def _assign_port(self, tunnel: Tunnel, *, given: bool) -> None:
        taken = self.taken_ports()
        if self.cluster is not None and not given:
            taken |= await self.cluster.taken_ports()  # on the other nodes
        if given:
            port = tunnel.lport
            try:
                free = port not in taken and port_free(tunnel.lhost, port)
            except OSError as exc:
                raise cannot_listen(tunnel.lhost, port, exc) from None
            if not free:
                raise bad(f"Port {port} already in use.", "ERR_CODE_LOCAL_PORT_IN_USE")
            if port not in self.pool:
                raise bad(f"Local port {port} is not among allowed ports.", "ERR_CODE_PORT_NOT_ALLOWED",
                          "see used_ports and excluded_ports in [server]")
            return
        try:
            port = self.pool.pick(tunnel.lhost, taken | set(self._claimed))
        except OSError as exc:
            raise cannot_listen(tunnel.lhost, 0, exc) from None
        if port is None:
            raise bad("no ports available", "ERR_CODE_NO_PORTS", "every allowed port is in use",
                      status=500)
        tunnel.lport = port

    def _assign_raw_port(self, tunnel: Tunnel) -> None:
        """A proxied tunnel's raw listener: a pool port on 127.0.0.1 (RPort §4.9)."""
        if not tunnel.http_proxy:
            return
        port = self.pool.pick("127.0.0.1", self.taken_ports() | {tunnel.lport} | set(self._claimed))
        if port is None:
            raise bad("no ports available", "ERR_CODE_NO_PORTS",
                      "a proxied tunnel needs a second port for its raw tunnel", status=500)
        tunnel.raw_port = port

    async def _start(self, tunnel: Tunnel) -> None:
        existing = self.tunnels.setdefault(tunnel.client_id, {})
        if not tunnel.id:
            used = {int(t.id) for t in existing.values() if t.id.isdigit()}
            used |= {int(s["id"]) for s in self.saved.get(tunnel.client_id, []) if str(s["id"]).isdigit()}
            new_id = max(used, default=0) + 1
            new_id = max(new_id, self._last_id.get(tunnel.client_id, 0) + 1)
            self._last_id[tunnel.client_id] = new_id
            tunnel.id = str(new_id)
        client_id = tunnel.client_id
        tunnel.traffic = self.traffic
        tunnel.session = self.server.clients.session(client_id)
        if self.cluster is not None:
            tunnel.tunnel_host = self.cluster.tunnel_host
            if not await self.cluster.claim_port(tunnel.lport, client_id):
                raise bad(f"Local port {tunnel.lport} already in use.", "ERR_CODE_LOCAL_PORT_IN_USE",
                          "a tunnel on another node of the cluster uses it", status=409)
        try:
            await tunnel.start(lambda: self.server.clients.session(client_id))
        except OSError as exc:
            if self.cluster is not None:
                await self.cluster.free_port(tunnel.lport)
            if exc.errno != errno.EADDRINUSE:
                raise cannot_listen(tunnel.lhost, tunnel.lport, exc) from None
            raise bad(f"Local port {tunnel.lport} already in use.", "ERR_CODE_LOCAL_PORT_IN_USE",
                      exc.strerror or str(exc), status=409) from None
        if tunnel.http_proxy:
            factory = self.server.state.get("tunnels.proxy")
            try:
                if factory is None:
                    raise OSError("the proxy plugin is not enabled")
                tunnel.proxy = await factory.start(tunnel)
            except OSError as exc:
                await tunnel.close()
                raise bad(f"unable to start tunnel: {exc.strerror or exc}", "ERR_CODE_TUNNEL_PROXY",
                          status=409) from None
        existing[tunnel.id] = tunnel
        self.server.clients.changed(client_id)  # its document's "tunnels"
        self.server.bus.publish(TunnelOpened(client_id, tunnel))

    # -- delete ------------------------------------------------------------------------------------

    async def delete(self, client_id: str, tunnel_id: str, *, force: bool) -> None:
        async with self.lock(client_id):
            tunnel = self.tunnels.get(client_id, {}).get(tunnel_id)
            if tunnel is None:
                raise bad("tunnel not found", "ERR_CODE_TUNNEL_NOT_FOUND", status=404)
            if tunnel.connections and not force:
                raise bad(f"tunnel has {tunnel.connections} active connection(s)",
                          "ERR_CODE_TUNNEL_HAS_CONNECTIONS", "use force=1 to close them", status=409)
            await self.close(tunnel, "deleted")

    async def close(self, tunnel: Tunnel, reason: str, *, forget: bool = True) -> None:
        """Close a tunnel; ``forget`` also removes it from what reconnects restore."""
        if self.tunnels.get(tunnel.client_id, {}).get(tunnel.id) is tunnel:
            del self.tunnels[tunnel.client_id][tunnel.id]
            self.server.clients.changed(tunnel.client_id)
        await tunnel.close()
        if self.cluster is not None:
            await self.cluster.free_port(tunnel.lport)
        if forget:
            await self._persist(tunnel.client_id)
        log.info("tunnel %s of %s closed: %s", tunnel.id, tunnel.client_id, reason)
        self.server.bus.publish(TunnelClosed(tunnel.client_id, tunnel.id, reason))

    # -- agent lifecycle ---------------------------------------------------------------------------

    async def client_gone(self, client_id: str) -> None:
        """Listeners close and ports are free at once; the list stays for the reconnect."""
        async with self.lock(client_id):
            for tunnel in self.of(client_id):
                await self.close(tunnel, "client disconnected", forget=False)

    async def client_connected(self, client: Client) -> None:
        """Start the tunnels the agent asks for, and restore the others (RPort §4.11): if the
        agent asks for tunnels that match none of the old ones, its configuration changed and
        only the new ones start."""
        if client.session is None:
            return
        requested = []
        try:  # checked when the agent was admitted (rport_agent_accepting)
            asked = hello_remotes(client.plugin_data.get("tunnels"))
        except ValueError as exc:
            log.warning("client %s: %s", client.id, exc)
            asked = []
        for remote in asked:
            if remote.protocol != "tcp":
                log.error("client %s asked for a %s tunnel to %s: only tcp tunnels are supported",
                          client.id, remote.protocol, remote.remote)
                continue
            requested.append(remote)
        if self.cluster is not None:  # another node may have kept them (the agent moved here)
            self.saved[client.id] = await self.server.store.run(store.load_of, client.id)
        old = list(self.saved.get(client.id, []))

        def matches(spec: dict[str, Any], r: Remote) -> bool:
            return ((spec["rhost"], spec["rport"]) == (r.remote_host, r.remote_port)
                    and (r.local_port is None or (spec["lhost"], spec["lport"]) == (r.local_host, r.local_port)))

        changed = any(not any(matches(s, r) for s in old) for r in requested)
        if changed:
            old = []
        async with self.lock(client.id):
            kept: dict[str, Tunnel] = {}
            for tunnel in self.of(client.id):
                if tunnel.session is client.session:
                    kept[tunnel.id] = tunnel  # created through the API on this very connection
                else:  # left over from a connection this one replaced
                    await self.close(tunnel, "client reconnected", forget=False)
            self.tunnels[client.id] = kept
            self.server.clients.changed(client.id)
            restore = [spec for spec in old if str(spec.get("id")) not in kept]
            for r in requested:
                spec = next((s for s in restore if matches(s, r)), None)
                if spec is None:
                    restore.append({"id": "", "lhost": r.local_host, "lport": r.local_port or 0,
                                    "lport_random": r.local_port is None, "rhost": r.remote_host,
                                    "rport": r.remote_port, "idle_timeout_minutes": 0,
                                    "owner": client.id})
            room = max(0, self.max_per_client - len(kept))
            restore, refused = restore[:room], restore[room:]
            claimed = Counter(int(s["lport"]) for s in restore
                              if s.get("lport") and not s.get("lport_random"))
            self._claimed.update(claimed)
            try:
                for spec in restore:
                    await self._restore(client, spec)
            finally:
                self._claimed.subtract(claimed)
                self._claimed = +self._claimed  # (drops the ports no longer claimed)
            await self._persist(client.id)
        if refused:
            await self._refuse(client, refused)

    async def _refuse(self, client: Client, specs: list[dict[str, Any]]) -> None:
        """Tunnels over the per-client limit: logged, and the agent is told (it logs it too)."""
        reason = too_many(self.max_per_client).items[0].detail
        remotes = [f"{host_port(s['lhost'], s.get('lport') or 0)} -> "
                   f"{host_port(s['rhost'], s['rport'])}" for s in specs]
        log.warning("%d tunnel(s) of %s not opened: %s; the first: %s", len(specs), client.id,
                    reason, remotes[0])
        if client.session is None:
            return
        try:
            await client.session.request("tunnels_refused", {"reason": reason, "remotes": remotes})
        except RemoteError:
            pass  # an agent without this notice (an older one): the server's log says it
        except (SessionClosed, TimeoutError):
            pass

    async def _restore(self, client: Client, spec: dict[str, Any]) -> None:
        fields = {k: v for k, v in spec.items() if k not in ("client_id",)}
        tunnel = Tunnel(client_id=client.id, **fields)
        if client.session is not None:  # RPort §4.11: restored tunnels pass tunnel_allowed too
            try:
                answer = await client.session.request("check_tunnel_allowed", {"remote": tunnel.remote})
                allowed = _answer(answer, "allowed")
            except RemoteError as exc:
                allowed = "unknown request" in str(exc)
            except SessionClosed:
                return
            except TimeoutError:
                log.warning("%s of %s to %s not restored: the agent did not answer the "
                            "tunnel_allowed check", _named(tunnel), client.id, tunnel.remote)
                return
            if not allowed:
                log.warning("%s of %s to %s not restored: not allowed by the client's "
                            "tunnel_allowed", _named(tunnel), client.id, tunnel.remote)
                return
        try:
            tunnel.acl_check = await self.parse_acl(tunnel.acl)
        except ApiError as exc:
            log.error("%s of %s to %s not restored: %s", _named(tunnel), client.id, tunnel.remote, exc)
            return
        if not (tunnel.lport_random or not tunnel.lport) and tunnel.lport not in self.pool:
            # The same rule as the API's: an agent cannot open server ports outside the pool.
            log.error("tunnel of %s to %s not opened: local port %d is not among the allowed "
                      "ports (server.used_ports minus excluded_ports)", client.id, tunnel.remote,
                      tunnel.lport)
            return
        try:
            if tunnel.lport_random or not tunnel.lport:
                if not await self._same_port(tunnel):
                    await self._assign_port(tunnel, given=False)
            self._assign_raw_port(tunnel)
            await self._start(tunnel)
        except ApiError as exc:
            log.error("tunnel of %s to %s not restored: %s", client.id, tunnel.remote, exc)
            return
        log.info("tunnel %s of %s %s: %s -> %s", tunnel.id, client.id,
                 "restored" if spec.get("id") else "opened", host_port(tunnel.lhost, tunnel.lport),
                 tunnel.remote)

    async def _same_port(self, tunnel: Tunnel) -> bool:
        """In a cluster, a tunnel that moved with its agent from another node keeps its port
        when it can (its claim on the port is its client's)."""
        if self.cluster is None or not tunnel.lport or tunnel.lport not in self.pool:
            return False
        try:
            await self._assign_port(tunnel, given=True)
        except ApiError:
            return False
        return True

    async def forget_client(self, client_id: str) -> None:
        self.saved.pop(client_id, None)
        if self._remote_json.pop(client_id, None) is not None:
            self.server.clients.changed(client_id)  # its document's "tunnels"
        await self._persist(client_id, force=True)

    async def shutdown(self) -> None:
        for tunnel in self.all():
            await tunnel.close()


def _spec_json(client_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in spec.items() if k != "client_id"}
    return Tunnel(client_id=client_id, **fields).to_json()
