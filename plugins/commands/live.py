"""Live output of running jobs, fanned out to followers through bounded queues. A follower that
cannot keep up loses chunks (the job's stored result keeps all output up to send_back_limit),
never the final status; nothing grows unbounded. Output from before a follower attached is
not replayed: it is in the job's result."""

from __future__ import annotations

import asyncio
from typing import Any

QUEUE = 256


class LiveHub:
    def __init__(self) -> None:
        self._followers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    def follow(self, jid: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._followers.setdefault(jid, set()).add(queue)
        return queue

    def unfollow(self, jid: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        followers = self._followers.get(jid)
        if followers is not None:
            followers.discard(queue)
            if not followers:
                del self._followers[jid]

    def publish(self, jid: str, event: dict[str, Any], *, final: bool = False) -> None:
        for queue in list(self._followers.get(jid, ())):
            if final:
                while queue.full():  # make room: the final status always arrives
                    queue.get_nowait()
                queue.put_nowait(event)
            else:
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    pass
