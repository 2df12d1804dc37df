from __future__ import annotations

import attrs


@attrs.frozen
class TunnelsConfig:
    max_per_client: int = 256
    """Tunnels one client may have open at once, from the API and its ``remotes`` together (each
    holds a server port and a file descriptor, two when proxied). RPort sets no such limit; this
    one is far above what its setups use."""
