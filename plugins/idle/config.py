from __future__ import annotations

import attrs

from rport.core.plugin import Duration


@attrs.frozen
class IdleConfig:
    check_interval: Duration = Duration(10)
    """How often tunnels are checked."""
    minute: Duration = Duration(60)
    """Length of a minute of idle-timeout-minutes, in seconds. Only tests shorten it."""
