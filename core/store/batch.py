"""Many small writes in few transactions ("group commit"), each committed before its caller
goes on.

A thousand jobs saved at once, or a thousand agents connecting, each cost a transaction (a
thread hop, ``BEGIN``, the statement, ``COMMIT``; on PostgreSQL a round trip each): most of the
work is the transaction, not the row. :class:`WriteBatcher` makes the writes that come while a
transaction runs wait for the next one, which carries them all:

- ``await batcher.write(key, value)`` returns once a transaction holding the key's value has
  committed (or raises what that transaction raised), as ``await store.run(...)`` would;
- a key written again before its transaction started is written once, with the newer value
  (the writes of one key land in the order they were made, the last one last);
- ``prepare(value)`` turns a value into what the transaction writes when its turn comes, on
  the event loop (a job's document as it is then: a dict the loop changes is never read by the
  store's thread);
- at most ``max_batch`` writes per transaction, one transaction at a time: what waits is one
  entry per waiting caller, no more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

V = TypeVar("V")


class WriteBatcher(Generic[V]):
    """Writes of ``(key, value)`` through ``apply(conn, [prepare(value), ...])``, batched."""

    def __init__(self, store: Any, apply: Callable[[sa.Connection, list[Any]], None], *,
                 prepare: Callable[[V], Any] = lambda value: value, max_batch: int = 500) -> None:
        self.store = store
        self._apply = apply
        self._prepare = prepare
        self._max_batch = max_batch
        self._pending: dict[Hashable, tuple[V, asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def write(self, key: Hashable, value: V) -> None:
        """Write ``value`` under ``key``; returns once it is committed."""
        pending = self._pending.get(key)
        if pending is not None:
            fut = pending[1]
        else:
            fut = asyncio.get_running_loop().create_future()
            # (read here if its writer was cancelled meanwhile: no "never retrieved" noise)
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending[key] = (value, fut)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.shield(fut)

    async def drain(self) -> None:
        """Until every write asked for so far is committed (or has failed)."""
        while self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._pending:
                keys = list(self._pending)[:self._max_batch]
                batch = [self._pending.pop(key) for key in keys]
                try:
                    rows = [self._prepare(value) for value, _ in batch]
                    await self.store.run(self._apply, rows)
                except BaseException as exc:  # every writer of the batch is told
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._task = None
            for _, fut in self._pending.values():  # cancelled with writes still waiting
                fut.cancel()
            self._pending.clear()
