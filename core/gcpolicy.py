"""rportd's garbage collection: no pause that grows with the number of connected agents.

CPython's full collection walks every container object the process holds, with the event loop
stopped. A connected agent holds about a hundred of them (its TLS transport, link, session,
tasks and futures), and a full collection runs each time the long-lived objects have grown by a
quarter: while 10,000 agents connected, rportd made 16 full collections, the last ones 0.9-2.3 s
each (9 of the 18 s of CPU it spent; the API waited as long). Yet nearly everything such a
collection walks is alive, and stays so for as long as its agent is connected.

So the objects that have survived are *frozen* (``gc.freeze``: kept apart and never walked
again), a few times a second and only when the young generations were collected since
(``FREEZE_EVERY``): a collection first looks at what is new since the last freeze (the garbage
among it is freed as before), then the survivors join the frozen ones. Automatic full
collections are off (their threshold is out of reach); the pause of each step grows with what
the server allocated in the last quarter of a second, not with what it holds.

An object that dies after it was frozen is still freed at once if nothing refers to it in a
cycle (reference counting); a cycle of frozen objects that became garbage is freed by the
*sweep*: everything is unfrozen, collected and frozen again, at most hourly
(``SWEEP_EVERY``) and only once the agent endpoint has been quiet for ``QUIET`` seconds (no
agent connecting), or after ``SWEEP_AT_LATEST`` (6 h) in any case. The sweep is the one pause
that grows with the number of agents (0.7-0.8 s for 930,000 objects at 10,000 agents on the
project's machine); it is logged. The agent endpoint breaks the reference cycles of a connection
that ends, so that little is left for it (nothing, in that measurement).

Process-wide (the ``gc`` module is): started by the ``rportd`` program, not by
:class:`~rport.core.server.RportServer`, which tests run several at a time in one process; its
``stop()`` puts the collector back as it found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Callable

log = logging.getLogger("rport.server")

FREEZE_EVERY = 0.25
"""Seconds between two steps (collect what is new, freeze what survived)."""
SWEEP_EVERY = 3600.0
"""Seconds between two sweeps at least (full collections of everything, frozen included)..."""
QUIET = 10.0
"""...made once no agent has started connecting for this long..."""
SWEEP_AT_LATEST = 6 * 3600.0
"""...or after this long without a sweep in any case."""
_NEVER = 1 << 30  # a full-collection threshold never reached (gen1 collections between two)


class Collector:
    """The policy above, on the running event loop. ``activity()`` returns a number that
    changes whenever an agent starts connecting (the agent endpoint's count of handshakes)."""

    def __init__(self, activity: Callable[[], int] | None = None, *,
                 freeze_every: float = FREEZE_EVERY, sweep_every: float = SWEEP_EVERY,
                 quiet: float = QUIET, sweep_at_latest: float = SWEEP_AT_LATEST) -> None:
        self._activity = activity or (lambda: 0)
        self.freeze_every = freeze_every
        self.sweep_every = sweep_every
        self.quiet = quiet
        self.sweep_at_latest = sweep_at_latest
        self._thresholds: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.steps = 0  # collections made by a step (for tests and the log)
        self.sweeps = 0

    def start(self) -> None:
        """Freeze what start-up made (modules, routes, tables: alive for good) and take over
        full collections."""
        if self._task is not None:
            return
        self._thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gen0, gen1, _ = self._thresholds
        gc.set_threshold(gen0, gen1, _NEVER)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
        gc.unfreeze()

    def step(self) -> None:
        """Collect what is new since the last step (if the young generations were collected
        meanwhile: something survived them), then freeze the survivors."""
        if gc.get_count()[2] == 0:
            return
        gc.collect(2)  # walks only the objects that are not frozen
        gc.freeze()
        self.steps += 1

    def sweep(self) -> int:
        """Collect everything, frozen objects too; returns the number of objects freed."""
        t0 = time.perf_counter()
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self.sweeps += 1
        log.info("memory: full garbage collection of %d objects: %d freed in %.0f ms",
                 frozen, freed, (time.perf_counter() - t0) * 1000)
        return freed

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_sweep = last_change = loop.time()
        seen = self._activity()
        while True:
            await asyncio.sleep(self.freeze_every)
            now = loop.time()
            activity = self._activity()
            if activity != seen:
                seen, last_change = activity, now
            if now - last_sweep >= self.sweep_at_latest or (
                    now - last_sweep >= self.sweep_every and now - last_change >= self.quiet):
                self.sweep()
                last_sweep = loop.time()
            else:
                self.step()
