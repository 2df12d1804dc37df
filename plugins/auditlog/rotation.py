"""Rotation: entries older than one period of ``[api] audit_log_rotation`` (RPort's daily,
weekly, monthly or yearly), or beyond ``max_entries``, leave the table. RPort starts a new
database file each period and keeps the old ones for ever; here the table always holds the last
period (a sliding window) and what leaves it is appended to a gzipped JSON-lines archive of the
period it belongs to (``auditlog-2026-11.jsonl.gz``), of which ``keep_archives`` are kept, or
deleted without ``archive``. Bounded work per run: at most ``MAX_BATCHES`` x ``BATCH`` entries.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

from .record import timestamp_text

PERIODS = {"daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 30 * 86400.0,
           "yearly": 365 * 86400.0}
BATCH = 5000
MAX_BATCHES = 20
PREFIX, SUFFIX = "auditlog-", ".jsonl.gz"


def period_key(seconds: float, rotation: str) -> str:
    """The archive an entry of this time goes to: 2026-11-30 (daily), 2026-W48 (weekly),
    2026-11 (monthly), 2026 (yearly), in UTC."""
    t = time.gmtime(seconds)
    if rotation == "daily":
        return time.strftime("%Y-%m-%d", t)
    if rotation == "weekly":
        year, week, _ = datetime.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
        return f"{year}-W{week:02d}"
    if rotation == "yearly":
        return time.strftime("%Y", t)
    return time.strftime("%Y-%m", t)


def archive_line(row: dict[str, Any]) -> str:
    """An entry as the API shows it, one JSON object per line."""
    doc = {k: v for k, v in row.items() if k != "id"}
    doc["timestamp"] = timestamp_text(row["timestamp"])
    return json.dumps(doc, ensure_ascii=False) + "\n"


def write_archives(directory: Path, rows: list[dict[str, Any]], rotation: str) -> list[Path]:
    """Append ``rows`` to the archives of their periods, synced to disk before this returns
    (the rows are deleted afterwards). Blocking: run it in a thread."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    by_file: dict[Path, list[str]] = {}
    for row in rows:
        path = directory / f"{PREFIX}{period_key(row['timestamp'], rotation)}{SUFFIX}"
        by_file.setdefault(path, []).append(archive_line(row))
    for path, lines in by_file.items():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as raw:
            with gzip.GzipFile(fileobj=raw, mode="ab") as gz:  # one more gzip member
                gz.write("".join(lines).encode())
            raw.flush()
            os.fsync(raw.fileno())
    return list(by_file)


def prune_archives(directory: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest archives (by period, which their names sort by)."""
    if not directory.is_dir():
        return []
    archives = sorted(p for p in directory.iterdir()
                      if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))
    old = archives[:max(0, len(archives) - keep)]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def read_archive(path: Path) -> list[dict[str, Any]]:
    """The entries of an archive (every gzip member)."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]
