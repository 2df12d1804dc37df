"""Logging set-up shared by rportd and rport: one line per event, to stderr and optionally a file."""

from __future__ import annotations

import asyncio
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
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


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
