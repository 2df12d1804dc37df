#!/usr/bin/env python3
"""Resident memory of an idle, connected agent: ours next to OpenRPort's, in one run.

    .venv/bin/python benchmarks/agent_memory.py [--idle 3] [--repeat 3] [--json FILE] [--keep]

Everything runs on 127.0.0.1, in a temporary directory removed afterwards (``--keep`` keeps it):

* **ours**: a real ``rportd`` and a real agent (``python -m rport.agent.cli -c rport.conf``, as a
  service runs it: server, credentials, id, fingerprint and data_dir in the file, everything else
  default, so the default plugins ``tunnels`` and ``commands`` are loaded);
* **ours, no plugins**: a second agent of ours on the same rportd, the same file but with
  ``[plugins] disabled = ["tunnels", "commands"]``: what the core holds, and by difference what
  the default plugins add;
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
RSS, and the ratio of ours to OpenRPort's against the issue's target (at most 2x; the aim, 1.7x).

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
from tunnel_throughput import (  # noqa: E402
    OpenRportPair,
    Procs,
    RportPair,
    exited,
    load_average,
    wait_until,
)

TARGET_RATIO = 2.0  # ours / OpenRPort's RSS, at most (the target)
AIM_RATIO = 1.7  # ... and what we aim for, to keep a margin
MIB = 1 << 20


class BareAgent:
    """Another agent of ours on ``pair``'s rportd, configured as ``pair``'s but with every
    plugin disabled."""

    def __init__(self, pair: RportPair, procs: Procs, tmp: Path) -> None:
        conf = Path(pair.agent_argv[-1])
        self.client_id = f"{pair.client_id}-bare"
        text = conf.read_text().replace(f'id = "{pair.client_id}"', f'id = "{self.client_id}"')
        text = text.replace("agent-data", "agent-data-bare").replace(
            "[logging]", '[plugins]\ndisabled = ["tunnels", "commands"]\n[logging]')
        self.conf = conf.with_name("rport-bare.conf")
        self.conf.write_text(text)
        self.log = conf.with_name("rport-bare.log")
        self.pair, self.procs = pair, procs
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = self.procs.start("rport (no plugins)", [*self.pair.agent_argv[:-1], str(self.conf)],
                                self.log, env=self.pair._env)
        wait_until("the agent without plugins to connect", lambda: self._state() == "connected",
                   alive=exited(proc, self.log))
        return proc

    def _state(self) -> str | None:
        status, body = self.pair.api("GET", f"/clients/{self.client_id}")
        return body["data"].get("connection_state") if status == 200 else None

    def restart(self) -> None:
        self.procs.stop(self.proc)
        wait_until("the agent without plugins to disconnect", lambda: self._state() != "connected")
        self.proc = self._start()


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
        bare = BareAgent(ours, procs, tmp)
        floor = procs.start("python floor", [
            sys.executable, "-c", "import asyncio, ssl, sys, uvloop; sys.stdin.read()"],
            stdin=subprocess.PIPE)
        rounds: dict[str, list[dict[str, float]]] = {
            "ours": [], "openrport": [], "no plugins": [], "python floor": []}
        for rnd in range(args.repeat):
            print(f"[{rnd + 1}/{args.repeat}] starting the agents...", file=sys.stderr)
            if rnd:
                ours.restart_agent()
                bare.restart()
                if theirs is not None:
                    theirs.restart_agent()
            time.sleep(args.idle)
            rounds["ours"].append(measure(ours.agent.pid))
            if theirs is not None:
                rounds["openrport"].append(measure(theirs.agent.pid))
            rounds["no plugins"].append(measure(bare.proc.pid))
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
    names = [n for n in ("ours", "openrport", "no plugins", "python floor")
             if medians[n] is not None]
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
        margin = TARGET_RATIO * medians["openrport"]["rss"] - medians["ours"]["rss"]  # type: ignore[index]
        print(f"\nTarget of the issue: agent RSS <= {TARGET_RATIO:g}x OpenRPort's: {ratio:.2f}x  "
              f"{'MET' if ratio <= TARGET_RATIO else 'NOT MET'} ({margin:.1f} MiB to spare; "
              f"aim {AIM_RATIO:g}x: {'met' if ratio <= AIM_RATIO else 'not met'})")


if __name__ == "__main__":
    sys.exit(main())
