"""tunnels, agent side: dial targets for the server's tunnels, within ``tunnel_allowed``; report
the tunnels requested in rport.conf / on the command line. Hook implementations only."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rport.agent.plugin import ConfigError, SocketPipe, StreamRefused, hookimpl

from .policy import TunnelPolicy
from .remote import RemoteError, decode_remote, join_host_port

NAME = "tunnels"
DIAL_TIMEOUT = 10.0
log = logging.getLogger("rport.plugins.tunnels")


def _split_host_port(text: Any) -> tuple[str, int]:
    if not isinstance(text, str):
        raise StreamRefused("invalid remote")
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    if not host or not port.isdigit():
        raise StreamRefused(f"invalid remote {text!r}")
    return host, int(port)


@hookimpl
def rport_agent_startup(agent: Any) -> None:
    client = agent.config.client
    try:
        policy = TunnelPolicy(client.tunnel_allowed)
        remotes = [decode_remote(r) for r in client.remotes]
    except (ValueError, RemoteError) as exc:
        raise ConfigError([f"client.remotes / tunnel_allowed: {exc}"]) from None
    agent.state[NAME] = policy
    agent.state[NAME + ".remotes"] = remotes


def dial_error(exc: BaseException) -> str:
    if isinstance(exc, UnicodeError):  # the IDNA codec refuses the name (e.g. a label too long)
        return "invalid host name"
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__


@hookimpl
def rport_agent_hello(agent: Any) -> Any:
    remotes = agent.state.get(NAME + ".remotes", [])
    return {"remotes": [{
        "local_host": r.local_host, "local_port": r.local_port, "remote_host": r.remote_host,
        "remote_port": r.remote_port, "protocol": r.protocol} for r in remotes]}


@hookimpl
def rport_register_handlers(agent: Any, register: Any) -> None:
    async def tunnel(session: Any, stream: Any) -> None:
        host, port = _split_host_port(stream.meta.get("remote"))
        remote = join_host_port(host, port)
        policy = agent.state[NAME]
        allowed = policy.allows_now(host, port)  # an address needs no await (no DNS)
        if allowed is None:
            allowed = await policy.allows(host, port)
        if not allowed:
            log.warning("tunnel connection to %s refused: not allowed by tunnel_allowed", remote)
            raise StreamRefused(f"Prohibited: {remote} is not allowed by the client's tunnel_allowed")

        def connected(pipe: SocketPipe) -> None:
            # In the connection's connection_made: what the stream holds (the user's first
            # bytes, sent right behind the request to open) reaches the target now, not after
            # this task has been resumed.
            stream.accept_nowait()
            pipe.attach(stream)

        pipe = SocketPipe(on_connect=connected)
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):  # no extra task, unlike wait_for
                await asyncio.get_running_loop().create_connection(lambda: pipe, host, port)
        except (OSError, TimeoutError, UnicodeError) as exc:  # UnicodeError: an invalid name
            if pipe.stream is not None:  # connected just as the dial timed out: not a refusal
                pipe.abort(dial_error(exc))
                return
            reason = dial_error(exc)
            log.info("tunnel connection to %s failed: %s", remote, reason)
            raise StreamRefused(f"connection to {remote} failed: {reason}") from None
        # The task ends here; the pipe runs in callbacks until both sides are done (a session
        # that ends resets the stream, which aborts the pipe).
        pipe.add_done_callback(lambda reason: reason and log.info(
            "connection to %s ended: %s", remote, reason))

    async def check_port(session: Any, body: Any) -> Any:
        host, port = _split_host_port((body or {}).get("remote"))
        timeout = float((body or {}).get("timeout", 2.0))
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError, UnicodeError) as exc:  # UnicodeError: an invalid name
            reason = dial_error(exc)
            return {"open": False, "error": f"dial tcp {join_host_port(host, port)}: {reason}"}
        writer.close()
        return {"open": True, "error": ""}

    async def check_tunnel_allowed(session: Any, body: Any) -> Any:
        host, port = _split_host_port((body or {}).get("remote"))
        return {"allowed": await agent.state[NAME].allows(host, port)}

    async def tunnels_refused(session: Any, body: Any) -> Any:
        body = body if isinstance(body, dict) else {}
        remotes = body.get("remotes") if isinstance(body.get("remotes"), list) else []
        log.warning("the server did not open %d of the tunnels asked for: %s; the first: %s",
                    len(remotes), body.get("reason", "no reason given"),
                    remotes[0] if remotes else "?")
        return {}

    register.stream("tunnel", tunnel)
    register.request("check_port", check_port)
    register.request("check_tunnel_allowed", check_tunnel_allowed)
    register.request("tunnels_refused", tunnels_refused)
