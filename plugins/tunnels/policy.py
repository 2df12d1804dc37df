"""The agent's ``tunnel_allowed``: where its tunnels may lead.

Entries are ``IP``, ``CIDR``, ``:port`` (any address on that port, as RPort does) or
``IP:port``/``CIDR:port`` (IPv6 in brackets: ``[fd00::/8]:22``). An empty list allows everything.
Host names are resolved and every address they resolve to must be allowed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    network: Network | None  # None: any address
    port: int | None  # None: any port

    def matches(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.network is None:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.version == self.network.version and address in self.network


def parse_rule(text: str) -> Rule:
    entry = text.strip()
    if not entry:  # not "any destination": that is what an empty *list* means
        raise ValueError(f"empty value not allowed: {text!r}")
    host, port = entry, None
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid tunnel_allowed entry {text!r}")
        port = rest[1:] or None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(f"invalid port in tunnel_allowed entry {text!r}")
    try:
        network = ipaddress.ip_network(host, strict=False) if host else None
    except ValueError:
        raise ValueError(f"invalid address in tunnel_allowed entry {text!r}") from None
    return Rule(network, int(port) if port else None)


class TunnelPolicy:
    def __init__(self, entries: Iterable[str]) -> None:
        self.rules = [parse_rule(e) for e in entries]

    def allows_now(self, host: str, port: int) -> bool | None:
        """:meth:`allows` without waiting, or None when ``host`` is a name to resolve."""
        if not self.rules:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return any(r.matches(address, port) for r in self.rules)

    async def allows(self, host: str, port: int) -> bool:
        allowed = self.allows_now(host, port)
        if allowed is not None:
            return allowed
        # A name: every address it resolves to must be allowed.
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):  # UnicodeError: not a valid host name
            return False
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        return bool(addresses) and all(any(r.matches(a, port) for r in self.rules) for a in addresses)
