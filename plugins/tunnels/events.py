"""Events the tunnels plugin publishes on the server's event bus."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class TunnelOpened:
    """A tunnel's listener is up. ``tunnel`` is a :class:`~.tunnel.Tunnel`."""

    client_id: str
    tunnel: Any = attrs.field(eq=False, repr=False)


@attrs.frozen
class TunnelClosed:
    client_id: str
    tunnel_id: str
    reason: str


@attrs.frozen
class TunnelsChanged:
    """In a cluster: the kept tunnels of a client changed on the node holding it (shared with
    the other nodes, which list them from the store)."""

    client_id: str
