"""The idle reaper: RPort's rules (§4.7). A tunnel with no open connection whose last activity
(traffic, or the close of its last connection) lies more than ``idle_timeout_minutes`` back is
closed; ``auto_close`` is a hard deadline from creation. The clock is injected."""

from __future__ import annotations

from typing import Any, Callable, Iterable


def due(tunnel: Any, now: float, minute: float, wall_now: float) -> str | None:
    """Why ``tunnel`` must close now, or None. ``now`` is on the clock of ``tunnel.last_active``
    (monotonic); ``wall_now`` on that of ``tunnel.created_at`` (epoch)."""
    if tunnel.auto_close and wall_now - tunnel.created_at >= tunnel.auto_close:
        return "auto-close deadline reached"
    if tunnel.idle_timeout_minutes > 0 and tunnel.connections == 0:
        idle = now - tunnel.last_active
        if idle >= tunnel.idle_timeout_minutes * minute:
            return f"idle for {idle / minute:.1f} minute(s)"
    return None


class Reaper:
    def __init__(self, *, minute: float, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self.minute = minute
        self.clock = clock
        self.wall_clock = wall_clock

    def expired(self, tunnels: Iterable[Any]) -> list[tuple[Any, str]]:
        now, wall = self.clock(), self.wall_clock()
        return [(t, reason) for t in tunnels if (reason := due(t, now, self.minute, wall))]
