"""rportd's garbage collection policy (rport.core.gcpolicy), in this process: survivors are
frozen instead of walked again, full collections are the policy's own, and a cycle that dies
after it was frozen is freed by a sweep."""

from __future__ import annotations

import asyncio
import gc
import weakref

from rport.core.gcpolicy import Collector

TIMEOUT = 20.0


class Node:
    other: "Node"


def test_survivors_are_frozen_and_a_sweep_frees_what_died_frozen() -> None:
    async def main() -> None:
        before = gc.get_threshold()
        collector = Collector(freeze_every=3600, sweep_every=3600)  # steps made by hand here
        collector.start()
        try:
            assert gc.get_threshold()[:2] == before[:2]
            assert gc.get_threshold()[2] > 1_000_000  # no automatic full collection
            frozen = gc.get_freeze_count()
            survivors = [[i] for i in range(20_000)]
            gc.collect(1)  # (as the interpreter does) they reach the oldest generation
            collector.step()
            assert gc.get_freeze_count() >= frozen + len(survivors)

            a, b = Node(), Node()
            a.other, b.other = b, a
            dead = weakref.ref(a)
            gc.collect(1)
            collector.step()  # the cycle is frozen while alive...
            del a, b
            gc.collect()  # ...so that a collection does not walk it any more
            assert dead() is not None
            assert collector.sweep() >= 2  # a sweep does
            assert dead() is None
            del survivors
        finally:
            await collector.stop()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0

    asyncio.run(main())


def test_sweeps_wait_for_a_quiet_agent_endpoint() -> None:
    async def main() -> None:
        connections = 0
        collector = Collector(lambda: connections, freeze_every=0.01, sweep_every=0.05,
                              quiet=0.2, sweep_at_latest=3600)
        collector.start()
        try:
            loop = asyncio.get_running_loop()
            busy_until = loop.time() + 0.5
            while loop.time() < busy_until:  # agents keep connecting: no sweep
                connections += 1
                await asyncio.sleep(0.01)
            assert collector.sweeps == 0
            assert collector.steps > 0 or gc.get_count()[2] == 0
            deadline = loop.time() + TIMEOUT
            while collector.sweeps == 0 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert collector.sweeps == 1  # once quiet
        finally:
            await collector.stop()

    asyncio.run(main())
