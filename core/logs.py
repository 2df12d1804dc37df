"""Logging set-up shared by rportd and rport: one line per event, to stderr and optionally a file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


def run(main: Any) -> Any:
    """Run the program's main coroutine on uvloop when it is installed (it halves the Python
    work per tunnelled message, see docs/performance.md), else on asyncio's own loop."""
    _raise_mmap_threshold()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _raise_mmap_threshold() -> None:
    """uvloop decrypts each TLS read into a fresh 256 KiB buffer, then shrinks it. That is above
    glibc's initial mmap threshold (128 KiB), so every message through the agent link cost an
    mmap, a page fault, an mremap and a munmap (seen with strace: one of each per tunnelled
    round trip), until something happened to free a larger mmapped block: glibc then raises the
    threshold to that block's size (mallopt(3), "dynamic mmap threshold"), and such buffers come
    from the heap and are reused. Free one such block at start-up rather than by chance (a
    leaner agent no longer did by chance). Other allocators ignore it."""
    bytearray(1 << 20)  # allocated with mmap, freed at once


def setup_logging(level: str = "info", log_file: str = "", *, name: str = "rport") -> None:
    fmt = _UTCFormatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
                        "%Y-%m-%dT%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    # Third-party libraries only speak up when something is wrong.
    for noisy in ("websockets", "rport.websockets", "uvicorn", "uvicorn.error", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


class BurstLog:
    """One log line for a burst of similar events: the first is logged at once, the others of
    the next ``window`` seconds are counted and summed up in one line when it ends. For events
    an attacker can cause by the thousand (connections refused, closed, evicted), so that the
    log says what happens without growing by a line per connection."""

    def __init__(self, logger: logging.Logger, level: int, window: float = 10.0) -> None:
        self.logger = logger
        self.level = level
        self.window = window
        self._quiet_until = 0.0
        self._more = 0
        self._last: tuple[str, tuple[Any, ...]] = ("", ())
        self._timer: asyncio.TimerHandle | None = None

    def note(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._quiet_until and not self._more:
            self.logger.log(self.level, message, *args)
            self._quiet_until = now + self.window
            return
        self._more += 1
        self._last = (message, args)
        if self._timer is None:
            with contextlib.suppress(RuntimeError):  # no loop: summed up at the next event
                self._timer = asyncio.get_running_loop().call_later(
                    max(0.0, self._quiet_until - now), self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._more:
            message, args = self._last
            self.logger.log(self.level, message + " (and %d more like it in %gs)", *args,
                            self._more, self.window)
            self._more = 0
            self._quiet_until = time.monotonic() + self.window
