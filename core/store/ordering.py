"""Writes of the same thing in the order they were made.

SQLite's store runs every transaction in one thread, first come first served. On PostgreSQL
transactions run side by side on a pool of connections, so two writes of the same row started
one after the other may commit in either order, and an older state of a job could overwrite a
newer one. :class:`KeyedLocks` puts the writes of one key (a job id, a client id) in line again,
in the order they were asked for; writes of different keys still run side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class KeyedLocks:
    """``async with locks(key):`` one holder per key at a time, waiters served in arrival order
    (asyncio.Lock is fair). A key's lock exists only while someone holds or waits for it.
    Take the snapshot you write (``json.dumps(job)``) inside the block, so that the last write
    is of the latest state."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, _Held] = {}

    def __call__(self, key: Hashable) -> "_Held":
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = _Held(self._locks, key)
        return held

    def __len__(self) -> int:
        return len(self._locks)


class _Held:
    """The lock of one key and how many are in its block or waiting for it."""

    __slots__ = ("_owner", "_key", "_lock", "_users")

    def __init__(self, owner: dict[Hashable, "_Held"], key: Hashable) -> None:
        self._owner, self._key = owner, key
        self._lock = asyncio.Lock()
        self._users = 0

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        self._users -= 1
        if not self._users:
            del self._owner[self._key]
