"""Throttling of failed logins, so that guessing passwords is slow.

After each failure a key (an auth id, a user name, an address) must wait ``wait`` seconds before
it may try again; after ``max_failures`` failures in a row it is banned for ``ban_time``. A success
resets the key. Memory is bounded: the oldest keys are forgotten past ``max_keys``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

import attrs


@attrs.define
class _Entry:
    failures: int = 0
    until: float = 0.0


class Throttle:
    def __init__(self, *, wait: float, max_failures: int, ban_time: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000,
                 on_ban: Callable[[str], None] | None = None) -> None:
        self.wait = wait
        self.max_failures = max_failures
        self.ban_time = ban_time
        self.clock = clock
        self.max_keys = max_keys
        self.on_ban = on_ban
        """Called with the key when a failure starts a ban (not again while it lasts)."""
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def blocked_for(self, *keys: str) -> float:
        """Seconds until all of ``keys`` may try again (0 when they may now)."""
        now = self.clock()
        return max([0.0, *(entry.until - now for key in keys
                            if (entry := self._entries.get(key)) is not None)])

    def failure(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            entry = self._entries.pop(key, None) or _Entry()
            was_banned = entry.failures >= self.max_failures and entry.until > now
            entry.failures += 1
            banned = entry.failures >= self.max_failures
            entry.until = now + (self.ban_time if banned else self.wait)
            self._entries[key] = entry
            if banned and not was_banned and self.on_ban is not None:
                self.on_ban(key)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def success(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)

    def failures(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry.failures if entry else 0
