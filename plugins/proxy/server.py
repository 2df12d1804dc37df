"""proxy, server side: with ``[server] tunnel_proxy_cert_file`` and ``tunnel_proxy_key_file``,
tunnels created with ``http_proxy=1`` get an HTTPS reverse proxy on their port (RPort §4.9).
Hook implementations only; see :mod:`.reverse` and :mod:`.listener`."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from rport.core.plugin import ConfigError, hookimpl

from .listener import ProxyListener, server_context
from .reverse import ReverseProxy

NAME = "proxy"
log = logging.getLogger("rport.plugins.proxy")


class ProxyFactory:
    """What the tunnels plugin calls (``server.state["tunnels.proxy"]``) for a proxied tunnel."""

    def __init__(self, server: Any, cert_file: str, key_file: str) -> None:
        self.server, self.cert_file, self.key_file = server, cert_file, key_file

    async def start(self, tunnel: Any) -> ProxyListener:
        app = ReverseProxy(scheme=tunnel.scheme or "http", raw_port=tunnel.raw_port,
                           host_header=tunnel.host_header, acl=tunnel.acl_check,
                           auth_user=tunnel.auth_user, auth_password=tunnel.auth_password,
                           on_activity=tunnel.touch,
                           open_stream=getattr(tunnel, "open_stream", None),
                           stream_ended=getattr(tunnel, "stream_ended", None))
        listener = await ProxyListener.start(app, tunnel.lhost, tunnel.lport, self.cert_file,
                                             self.key_file)
        host = self.server.config.server.tunnel_host or (
            "localhost" if tunnel.lhost in ("0.0.0.0", "::", "127.0.0.1") else tunnel.lhost)
        tunnel.tunnel_url = f"https://{host}:{tunnel.lport}"
        log.info("proxy for tunnel %s of %s on https://%s:%d -> %s://127.0.0.1:%d", tunnel.id,
                 tunnel.client_id, tunnel.lhost, tunnel.lport, tunnel.scheme, tunnel.raw_port)
        return listener


@hookimpl
def rport_server_startup(server: Any) -> None:
    cfg = server.config.server
    cert, key = cfg.tunnel_proxy_cert_file, cfg.tunnel_proxy_key_file
    if not cert and not key:
        return
    if not (cert and key):
        raise ConfigError(["server.tunnel_proxy_cert_file and tunnel_proxy_key_file must be set together"])
    try:
        server_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"server.tunnel_proxy_cert_file/key_file: cannot load {cert} / {key}: "
                           f"{exc}"]) from None
    server.state["tunnels.proxy"] = ProxyFactory(server, cert, key)


@hookimpl
def rport_status_document(server: Any, doc: dict) -> None:
    doc["tunnel_proxy_enabled"] = "tunnels.proxy" in server.state
