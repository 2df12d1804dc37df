#!/usr/bin/env python3
"""What the audit log and the metrics cost the API: the same requests against two real rportd
in one run, one with the plugins ``auditlog`` and ``metrics`` (the default), one without
(``[plugins] disabled = ["auditlog", "metrics"]``).

    .venv/bin/python benchmarks/api_observation.py [--requests 2000] [--rounds 3] [--keep]

Each round sends ``--requests`` requests, one after the other on one keep-alive connection
(httpx), to each server in turn (interleaved, so that a change in the machine's load hits both):

* ``GET /status``: what every request pays, an ApiRequestServed event for the metrics;
* ``PUT /client-groups/bench`` (the same body each time, 204): a mutating route, also an
  AuditEvent and, a few milliseconds later, an audit log row (written in batches).

Printed per kind: requests per second (median of the rounds) and the server's CPU time per
request (psutil, the rportd process: event loop and store thread), with and without the plugins,
and their ratio. A benchmark, not a test: it asserts nothing. With ``--keep`` the temporary
directory (logs, databases) is kept.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import tomlkit

API_RE = re.compile(r"API listening on http://(\S+)")
GROUP = {"description": "benchmark", "params": {"tag": ["bench"]}}


class Rportd:
    def __init__(self, root: Path, name: str, disabled: list[str]) -> None:
        self.dir = root / name
        self.dir.mkdir()
        conf = {"server": {"address": "127.0.0.1:0", "auth": "bench:secret",
                           "data_dir": str(self.dir / "data")},
                "api": {"address": "127.0.0.1:0", "auth": "admin:secret"},
                "plugins": {"disabled": disabled}}
        (self.dir / "rportd.conf").write_text(tomlkit.dumps(conf))
        self.log_path = self.dir / "rportd.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rport.core.cli", "-c", str(self.dir / "rportd.conf"),
             "--log-level", "info"],
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + 30
        while not (match := API_RE.search(self.log_path.read_text(errors="replace"))):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rportd did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        self.api = httpx.Client(base_url=f"http://{match.group(1)}/api/v1",
                                auth=("admin", "secret"), timeout=30)
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def run(self, kind: str, n: int) -> tuple[float, float]:
        """Requests per second and server CPU seconds per request."""
        cpu, start = self.cpu(), time.perf_counter()
        for _ in range(n):
            if kind == "status":
                resp = self.api.get("/status")
            else:
                resp = self.api.put("/client-groups/bench", json=GROUP)
            if resp.status_code >= 300:
                raise RuntimeError(resp.text)
        wall = time.perf_counter() - start
        return n / wall, (self.cpu() - cpu) / n

    def stop(self) -> None:
        self.api.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--disable", default="auditlog,metrics",
                        help="plugins disabled on the 'without' server (default: both)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rport-api-observation-"))
    servers: dict[str, Rportd] = {}
    try:
        servers = {"with": Rportd(root, "with", []),
                   "without": Rportd(root, "without", args.disable.split(","))}
        for server in servers.values():  # warm up: first requests, the group created
            server.run("status", 200)
            server.run("put", 200)
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        print(f"'without': plugins {args.disable} disabled")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} CPUs)")
        for round_ in range(args.rounds):
            for kind in ("status", "put"):
                for name, server in servers.items():
                    results.setdefault((kind, name), []).append(server.run(kind, args.requests))
            print(f"round {round_ + 1}/{args.rounds} done")
        audit = servers["with"].api.get("/auditlog", params={"page[limit]": 1}).json()
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"audit log entries written by the 'with' server: {audit['meta']['count']}")
        print()
        print(f"{'':34}{'with':>12}{'without':>12}{'ratio':>8}")
        for kind, label in (("status", "GET /status"), ("put", "PUT /client-groups/bench")):
            rates = {name: statistics.median(r for r, _ in results[(kind, name)])
                     for name in servers}
            cpus = {name: statistics.median(c for _, c in results[(kind, name)]) * 1e6
                    for name in servers}
            print(f"{label + ', req/s':34}{rates['with']:>12.0f}{rates['without']:>12.0f}"
                  f"{rates['with'] / rates['without']:>7.2f}x")
            print(f"{label + ', server CPU µs/req':34}{cpus['with']:>12.0f}{cpus['without']:>12.0f}"
                  f"{cpus['with'] / cpus['without']:>7.2f}x")
        return 0
    finally:
        for server in servers.values():
            server.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
