#!/usr/bin/env python3
"""Resident memory of an idle, connected agent: ours next to OpenRPort's, in one run.

    .venv/bin/python benchmarks/agent_memory.py [--idle 3] [--repeat 3] [--json FILE] [--keep]

Everything runs on 127.0.0.1, in a temporary directory removed afterwards (``--keep`` keeps it):

* **ours**: a real ``rportd`` and a real agent (``python -m rport.agent.cli -c rport.conf``, as a
  service runs it: server, credentials, id, fingerprint and data_dir in the file, everything else
  default, so the default plugins ``tunnels`` and ``commands`` are loaded);
* **OpenRPort's**: its ``rportd`` and ``rport`` 0.9.14 (the reference binaries, found as by
  ``tunnel_throughput.openrport_bin``; skipped with a note when absent), its client configured
  the same way;
* **a Python floor**: ``python -c "import asyncio, ssl, uvloop"`` idling: what any agent written in
  Python on uvloop with TLS holds before its first line of code.

The rport package's modules are byte-compiled first (``compileall``), as an installed package's
are: a module compiled from its source at start-up (a stale ``.pyc`` that
``PYTHONDONTWRITEBYTECODE`` keeps from being rewritten) would add the compiler's leftovers.

For each of ``--repeat`` rounds, each agent is started afresh, awaited until the server lists it
as connected, left idle for ``--idle`` seconds, and measured from /proc: RSS (with its anonymous
and file-backed parts), USS and PSS (psutil). The median round is reported, with every round's
RSS, and the ratio of ours to OpenRPort's against the issue's target (at most 2x).

A benchmark, not a test: it asserts nothing. Every wait is bounded, and every process it starts is
killed (by process group) on every exit path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Shared with the tunnel benchmark (same folder: run as `python benchmarks/agent_memory.py`).
from tunnel_throughput import OpenRportPair, Procs, RportPair, load_average  # noqa: E402

TARGET_RATIO = 2.0  # ours / OpenRPort's RSS, at most
MIB = 1 << 20


def measure(pid: int) -> dict[str, float]:
    import psutil
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024 / MIB
    full = psutil.Process(pid).memory_full_info()
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"], "file": fields["RssFile"],
            "uss": full.uss / MIB, "pss": full.pss / MIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=3.0, help="seconds idle before measuring")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="agent-memory-"))
    procs = Procs()
    notes: list[str] = [f"load average before: {load_average()}"]
    # An installed package has its bytecode files; a module compiled from its source at start-up
    # (a stale .pyc, with PYTHONDONTWRITEBYTECODE set) leaves the compiler's garbage behind.
    import importlib
    for package in ("rport.core", "rport.agent", "rport.plugins"):
        root = Path(importlib.import_module(package).__file__ or ".").parent
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root)], check=False,
                       stdout=subprocess.DEVNULL)
    try:
        ours = RportPair(procs, tmp, client_id="memory-bench", key_seed="agent-memory-bench",
                         agent_conf=True)
        try:
            theirs: OpenRportPair | None = OpenRportPair(procs, tmp)
        except (RuntimeError, OSError) as exc:
            theirs = None
            notes.append(f"OpenRPort skipped: {exc}")
        floor = procs.start("python floor", [
            sys.executable, "-c", "import asyncio, ssl, sys, uvloop; sys.stdin.read()"],
            stdin=subprocess.PIPE)
        rounds: dict[str, list[dict[str, float]]] = {"ours": [], "openrport": [], "python floor": []}
        for rnd in range(args.repeat):
            print(f"[{rnd + 1}/{args.repeat}] starting the agents...", file=sys.stderr)
            if rnd:
                ours.restart_agent()
                if theirs is not None:
                    theirs.restart_agent()
            time.sleep(args.idle)
            rounds["ours"].append(measure(ours.agent.pid))
            if theirs is not None:
                rounds["openrport"].append(measure(theirs.agent.pid))
            rounds["python floor"].append(measure(floor.pid))
        notes.append(f"load average after: {load_average()}")
        report(rounds, notes, args)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rounds}, indent=2))
        return 0
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(rounds: dict[str, list[dict[str, float]]], notes: list[str], args: argparse.Namespace) -> None:
    def median_round(name: str) -> dict[str, float] | None:
        taken = sorted(rounds[name], key=lambda r: r["rss"])
        return taken[len(taken) // 2] if taken else None

    medians = {name: median_round(name) for name in rounds}
    names = [n for n in ("ours", "openrport", "python floor") if medians[n] is not None]
    print(f"\nIdle connected agent, {args.idle:g} s after connecting; median of {args.repeat} "
          f"round(s), MiB (2^20 bytes)")
    for note in notes:
        print(f"note: {note}")
    header = f"{'':24}" + "".join(f"{n:>14}" for n in names)
    if "openrport" in names:
        header += f"{'ours/openrport':>16}"
    print(header)
    for key, label in (("rss", "RSS"), ("anon", "  anonymous"), ("file", "  file-backed"),
                       ("uss", "USS"), ("pss", "PSS")):
        row = f"{label:24}" + "".join(f"{medians[n][key]:>14.1f}" for n in names)  # type: ignore[index]
        if "openrport" in names:
            row += f"{medians['ours'][key] / medians['openrport'][key]:>15.2f}x"  # type: ignore[index]
        print(row)
    for name in names:
        print(f"RSS per round, {name}: " + ", ".join(f"{r['rss']:.1f}" for r in rounds[name]))
    if "openrport" in names:
        ratio = medians["ours"]["rss"] / medians["openrport"]["rss"]  # type: ignore[index]
        print(f"\nTarget of the issue: agent RSS <= {TARGET_RATIO:g}x OpenRPort's: {ratio:.2f}x  "
              f"{'MET' if ratio <= TARGET_RATIO else 'NOT MET'}")


if __name__ == "__main__":
    sys.exit(main())
