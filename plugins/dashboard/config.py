"""``[plugins.dashboard]`` in rportd.conf."""

from __future__ import annotations

import attrs

from rport.core.plugin import Duration


@attrs.frozen
class DashboardConfig:
    refresh_interval: Duration = Duration(5)
    """How often an open dashboard asks the API again for what it shows (clients, tunnels,
    jobs); ``0`` turns live updates off (pages then change on reload or navigation only).
    Updates pause while the browser tab is hidden or its user has been inactive for
    ``idle_pause``."""
    idle_pause: Duration = Duration(300)
    """Live updates stop after this long without a key press, click or scroll, so that an
    unattended dashboard lets its login session expire (``token_lifetime`` later); ``0``: never
    (an open dashboard then keeps its session alive)."""
