"""What the tunnels of one server carried (metrics): counted per connection when it ends, from
the byte counts its stream keeps anyway, so the data path pays nothing per chunk here; open
connections are added when a scrape asks (:meth:`TunnelService.traffic_totals`)."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define
class Traffic:
    connections: int = 0
    """Connections accepted (past the ACL) since start-up."""
    refused: int = 0
    """Connections refused by the tunnel's ACL."""
    sent: int = 0
    """Bytes of ended connections sent towards the target (through the agent)."""
    received: int = 0
    """Bytes of ended connections received from the target."""

    def ended(self, stream: Any) -> None:
        if stream is not None:
            self.sent += stream.bytes_sent
            self.received += stream.bytes_received
