"""RPort's remote notation: ``[[local_host:]local_port:][remote_host:]remote_port[/protocol]``.

``3000`` → remote 127.0.0.1:3000 on a random local port; ``h:3000`` → remote h:3000;
``3000:80`` → local 0.0.0.0:3000 to 127.0.0.1:80; ``3000:h:80``; ``1.2.3.4:3000:h:80``.
IPv6 hosts are written in brackets: ``[::1]:3000:[fd00::5]:22``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

DEFAULT_LOCAL_HOST = "0.0.0.0"
DEFAULT_REMOTE_HOST = "127.0.0.1"
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


class RemoteError(ValueError):
    """``failed to decode "<s>": <reason>`` as RPort words it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Remote:
    local_host: str
    local_port: int | None  # None: pick a free port
    remote_host: str
    remote_port: int
    protocol: str = "tcp"

    @property
    def remote(self) -> str:
        return join_host_port(self.remote_host, self.remote_port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split(text: str) -> list[str]:
    parts, i = [], 0
    while i <= len(text):
        if text.startswith("[", i):
            end = text.find("]", i)
            if end < 0:
                raise ValueError("Invalid host")
            parts.append(text[i + 1:end])
            i = end + 1
            if i < len(text) and text[i] != ":":
                raise ValueError("Invalid remote")
            i += 1
        else:
            end = text.find(":", i)
            end = len(text) if end < 0 else end
            parts.append(text[i:end])
            i = end + 1
    return parts


def _port(text: str) -> int:
    if not text.isdigit():
        raise ValueError("Missing ports")
    if not 0 < int(text) < 65536:
        raise ValueError("Invalid remote")
    return int(text)


def _host(text: str) -> str:
    if ":" in text:  # IPv6 (was bracketed)
        return text
    if not text or not _HOST.match(text):
        raise ValueError("Invalid host")
    return text


def decode_remote(text: str) -> Remote:
    raw = text
    protocol = "tcp"
    if "/" in text:
        text, _, protocol = text.rpartition("/")
        if protocol not in ("tcp", "udp", "tcp+udp"):
            raise RemoteError(f'failed to decode "{raw}": Invalid protocol')
    try:
        parts = _split(text.strip())
        if not parts or parts == [""]:
            raise ValueError("Missing ports")
        if len(parts) == 1:
            return Remote(DEFAULT_LOCAL_HOST, None, DEFAULT_REMOTE_HOST, _port(parts[0]), protocol)
        if len(parts) == 2:
            if parts[0].isdigit():
                return Remote(DEFAULT_LOCAL_HOST, _port(parts[0]), DEFAULT_REMOTE_HOST,
                              _port(parts[1]), protocol)
            return Remote(DEFAULT_LOCAL_HOST, None, _host(parts[0]), _port(parts[1]), protocol)
        if len(parts) == 3:
            return Remote(DEFAULT_LOCAL_HOST, _port(parts[0]), _host(parts[1]), _port(parts[2]),
                          protocol)
        if len(parts) == 4:
            return Remote(_host(parts[0]), _port(parts[1]), _host(parts[2]), _port(parts[3]),
                          protocol)
        raise ValueError("Invalid remote")
    except ValueError as exc:
        raise RemoteError(f'failed to decode "{raw}": {exc}') from None


def parse_local(text: str) -> tuple[str, int]:
    """The API's ``local`` parameter: ``port`` or ``host:port``."""
    parts = _split(text.strip())
    if len(parts) == 1:
        return DEFAULT_LOCAL_HOST, _port(parts[0])
    if len(parts) == 2:
        return _host(parts[0]), _port(parts[1])
    raise ValueError("Invalid local address")


def hello_remotes(data: Any) -> list[Remote]:
    """The remotes an agent's hello asks for (what its tunnels plugin sent: ``{"remotes":
    [{"local_host", "local_port", "remote_host", "remote_port", "protocol"}, ...]}``). A
    ValueError says what is wrong, naming the field."""
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ValueError("plugins.tunnels must be an object")
    items = data.get("remotes", [])
    if not isinstance(items, list):
        raise ValueError("plugins.tunnels.remotes must be a list")
    remotes = []
    for i, raw in enumerate(items):
        where = f"plugins.tunnels.remotes[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be an object")
        local_host, local_port = raw.get("local_host"), raw.get("local_port")
        remote_host, remote_port = raw.get("remote_host"), raw.get("remote_port")
        protocol = raw.get("protocol", "tcp")
        for name, value in (("local_host", local_host), ("remote_host", remote_host),
                            ("protocol", protocol)):
            if not isinstance(value, str) or not value or len(value) > 255:
                raise ValueError(f"{where}.{name} must be a non-empty string")
        if local_port is not None and not _is_port(local_port):
            raise ValueError(f"{where}.local_port must be a port number or null")
        if not _is_port(remote_port):
            raise ValueError(f"{where}.remote_port must be a port number")
        remotes.append(Remote(local_host, local_port, remote_host, remote_port, protocol))
    return remotes


def _is_port(value: Any) -> bool:
    return type(value) is int and 0 < value < 65536
