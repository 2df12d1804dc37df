"""Writes of the same thing in the order they were made.

SQLite's store runs every transaction in one thread, first come first served. On PostgreSQL
transactions run side by side on a pool of connections, so two writes of the same row started
one after the other may commit in either order, and an older state of a job could overwrite a
newer one. :class:`KeyedLocks` puts the writes of one key (a job id, a client id) in line again,
in the order they were asked for; writes of different keys still run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class KeyedLocks:
    """``async with locks(key):`` one holder per key at a time, waiters served in arrival order
    (asyncio.Lock is fair). A key's lock exists only while someone holds or waits for it.
    Take the snapshot you write (``json.dumps(job)``) inside the block, so that the last write
    is of the latest state."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
