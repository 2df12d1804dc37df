"""The ``[plugins.diskusage]`` tables: one in ``rportd.conf``, one in ``rport.conf``.

The core structures each table into these frozen attrs classes (unknown keys and wrong types stop
start-up as ``plugins.diskusage.<key>: ...``); an absent table gives the defaults.
"""

from __future__ import annotations

import attrs
from rport.core.plugin import Duration

DEFAULT_TIMEOUT = Duration(10)


@attrs.frozen
class DiskUsageServerConfig:
    """``[plugins.diskusage]`` in ``rportd.conf``."""

    timeout: Duration = DEFAULT_TIMEOUT
    """How long the route waits for the client's answer (seconds, or "10s")."""


@attrs.frozen
class DiskUsageAgentConfig:
    """``[plugins.diskusage]`` in ``rport.conf``."""

    paths: list[str] = attrs.field(factory=lambda: ["/"])
    """The only paths the server may ask about; the first one is the default."""
