"""Tunnel ACLs: a comma list of IPv4/IPv6 addresses and CIDR networks. A bare address is a
/32 or /128; a network containing every address (0.0.0.0/0, ::/0) is refused, since it would
allow access to everyone (leave acl out for that)."""

from __future__ import annotations

import ipaddress

import attrs

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AclError(ValueError):
    pass


@attrs.frozen
class Acl:
    networks: tuple[Network, ...]

    def allows(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == n.version and address in n for n in self.networks)


def parse_acl(text: str) -> Acl:
    networks = []
    for item in text.split(","):
        # As RPort: every item an address or network, written without spaces or a zone (%eth0).
        try:
            if not item or item != item.strip() or "%" in item:
                raise ValueError(item)
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise AclError(f"invalid IP addr: {item}") from None
        if network.network_address.is_unspecified:
            raise AclError(f"{item} would allow access to everyone; "
                           "leave acl out for a tunnel open to all")
        networks.append(network)
    if not networks:
        raise AclError("no address given")
    return Acl(tuple(networks))
