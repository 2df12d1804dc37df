"""Live output of running jobs, fanned out to followers through bounded queues. A follower that
cannot keep up loses chunks (the job's stored result keeps all output up to send_back_limit),
never the final status; nothing grows unbounded. A follower that attaches late first gets the
last ``REPLAY_CHARS`` of output the job has written so far (the whole of it for a job that has
written less), so that a dashboard opened a second after the start misses nothing.

The agent sends live output a moment late, and not at all once the job has ended (its result has
it all): at the final status, the output its followers have not had yet, the end of the
result's ``stdout`` and ``stderr``, is given to them first."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

QUEUE = 256
REPLAY_CHARS = 16 * 1024
"""Characters of output kept per running job for followers that attach later (the most
recent ones)."""


class LiveHub:
    def __init__(self) -> None:
        self._followers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._recent_size: dict[str, int] = {}
        self._published: dict[str, dict[str, int]] = {}
        """Characters of each stream published so far, by running job."""

    def follow(self, jid: str) -> tuple[asyncio.Queue[dict[str, Any]], list[dict[str, Any]]]:
        """A queue of the job's events from now on, and the output events written before."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._followers.setdefault(jid, set()).add(queue)
        return queue, list(self._recent.get(jid, ()))

    def unfollow(self, jid: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        followers = self._followers.get(jid)
        if followers is not None:
            followers.discard(queue)
            if not followers:
                del self._followers[jid]

    def _remember(self, jid: str, event: dict[str, Any]) -> None:
        recent = self._recent.setdefault(jid, deque())
        data = event["data"][-REPLAY_CHARS:]
        recent.append({**event, "data": data})
        size = self._recent_size.get(jid, 0) + len(data)
        while size > REPLAY_CHARS:
            size -= len(recent.popleft()["data"])
        self._recent_size[jid] = size

    def publish(self, jid: str, event: dict[str, Any], *, final: bool = False) -> None:
        """``event`` is ``{"event": "stdout"|"stderr", "data": text}`` (kept for late
        followers) or, with ``final``, the job's ``status`` (which forgets the kept output)."""
        if final:
            if jid in self._followers:  # first the output they have not had
                published = self._published.get(jid, {})
                result = event["data"].get("result") or {}
                for stream in ("stdout", "stderr"):
                    rest = str(result.get(stream) or "")[published.get(stream, 0):]
                    if rest:
                        self.publish(jid, {"event": stream, "data": rest})
            self._published.pop(jid, None)
            self._recent.pop(jid, None)
            self._recent_size.pop(jid, None)
        else:
            self._remember(jid, event)
            counts = self._published.setdefault(jid, {})
            counts[event["event"]] = counts.get(event["event"], 0) + len(event["data"])
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
