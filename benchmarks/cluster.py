#!/usr/bin/env python3
"""A cluster of 1, 2 and 3 rportd nodes (one PostgreSQL, one nats-server, started for the run
as the tests start them) against one rportd on its own (SQLite, no NATS) in the same run.

    .venv/bin/python benchmarks/cluster.py [--agents 30] [--seconds 5] [--concurrency 16]

For each setup, real agents are spread evenly over the nodes and the API load is spread over
them too (each worker talks to one node, round robin):

* ``reads``: ``GET /clients/{id}`` of an agent, answered by the node asked (every node knows
  every agent), with wrk on every node at once when it is installed (else the Python client):
  requests per second per node and in total;
* ``commands``: ``POST /clients/{id}/commands`` (``true``) on random agents, so most calls need
  an agent held by another node and are forwarded there: per node and in total;
* ``forwarded vs local``: calls made one after the other (latency), alternately on the node
  holding the agent and through another node: the cost of a forwarded call. Two agent routes:
  ``POST /clients/{id}/commands`` (the agent starts ``true``; three job saves) and
  ``POST /clients/{id}/commands/{jid}/cancel`` of a finished job (a 409 after one read of the
  store: the forwarding's own cost stands out).

Ratios are against the first setup of the run (one node on its own). A benchmark, not a test:
it asserts nothing. On a 2-core machine three nodes, PostgreSQL, NATS and the agents share two
cores: the total cannot grow much past one node's; the point is what forwarding costs and that
nothing collapses as nodes are added.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Agent, Server, wait_for  # noqa: E402
from tests.services import Nats, PostgreSQL, ServiceUnavailable  # noqa: E402

SECRET = "benchmark-cluster-secret-0123456789"
JWT = "benchmark-jwt-secret-0123456789abcdefgh"
OPEN = {"allow": [".*"], "deny": []}


class Setup:
    def __init__(self, name: str, nodes: list[Server], agents: dict[str, Agent],
                 home: dict[str, int]) -> None:
        self.name, self.nodes, self.agents, self.home = name, nodes, agents, home

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for node in self.nodes:
            node.stop()


def start(name: str, count: int, agents: int, root: Path, pg: PostgreSQL | None,
          nats: Nats | None) -> Setup:
    nodes: list[Server] = []
    fleet: dict[str, Agent] = {}
    try:
        return _start(name, count, agents, root, pg, nats, nodes, fleet)
    except BaseException:  # nothing left running when a setup does not come up
        Setup(name, nodes, fleet, {}).stop()
        raise


def _start(name: str, count: int, agents: int, root: Path, pg: PostgreSQL | None,
           nats: Nats | None, nodes: list[Server], fleet: dict[str, Agent]) -> Setup:
    database = pg.create_database("bench") if pg is not None else ""
    for i in range(count):
        extra: dict[str, Any] = {"logging": {"log_level": "info"},
                                 "api": {"max_connections": 4096}}
        if nats is not None:
            extra |= {"database": {"url": database},
                      "cluster": {"nats_url": nats.url, "node_id": f"n{i}", "secret": SECRET},
                      "api": {"jwt_secret": JWT, "max_connections": 4096}}
        node = Server(root / name / f"node{i}", extra=extra)
        nodes.append(node)
        node.start(timeout=60)
    home: dict[str, int] = {}
    for j in range(agents):
        node = j % count
        cid = f"{name}-agent{j:03d}"
        home[cid] = node
        others = [n.agent_url for k, n in enumerate(nodes) if k != node]
        fleet[cid] = Agent(root / name / f"agent{j}", nodes[node], cid, config={
            "client": {"fallback_servers": others}, "remote-commands": OPEN,
            "logging": {"log_level": "warning"}})
    for cid, node in home.items():
        wait_for(lambda c=cid, n=node: _state(nodes[n], c) == "connected", 120, f"{cid} to connect")
    for node in nodes:  # every node lists every agent before the load starts
        wait_for(lambda n=node: len(_list(n)) == agents, 60, "every node to list every agent")
    return Setup(name, nodes, fleet, home)


def _state(node: Server, cid: str) -> str:
    resp = node.api.get(f"/clients/{cid}")  # type: ignore[union-attr]
    return resp.json()["data"]["connection_state"] if resp.status_code == 200 else ""


def _list(node: Server) -> list[Any]:
    return node.api.get("/clients").json()["data"]  # type: ignore[union-attr]


async def load(setup: Setup, kind: str, seconds: float, concurrency: int) -> tuple[list[int], int]:
    """Requests answered per node in ``seconds``; and the errors."""
    done = [0] * len(setup.nodes)
    errors = 0
    ids = list(setup.home)
    deadline = time.monotonic() + seconds
    clients = [httpx.AsyncClient(base_url=n.api_url + "/api/v1", auth=("admin", "foobaz"),
                                 timeout=30, limits=httpx.Limits(max_connections=concurrency))
               for n in setup.nodes]

    async def worker(w: int) -> None:
        nonlocal errors
        index = w % len(setup.nodes)
        http = clients[index]
        while time.monotonic() < deadline:
            cid = random.choice(ids)
            if kind == "reads":
                resp = await http.get(f"/clients/{cid}")
            else:
                resp = await http.post(f"/clients/{cid}/commands", json={"command": "true"})
            if resp.status_code == 200:
                done[index] += 1
            else:
                errors += 1

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        for http in clients:
            await http.aclose()
    return done, errors


BLOCK = 20


def wrk_reads(setup: Setup, seconds: float, concurrency: int) -> tuple[list[int], int]:
    """``GET /clients/{id}`` with wrk on every node at once (one wrk per node, its share of the
    connections): requests answered per node, and the non-2xx ones."""
    import base64
    import re
    import subprocess

    auth = "Basic " + base64.b64encode(b"admin:foobaz").decode()
    ids = list(setup.home)
    procs = []
    for index, node in enumerate(setup.nodes):
        conns = max(1, concurrency // len(setup.nodes))
        url = f"{node.api_url}/api/v1/clients/{ids[(index + 1) % len(ids)]}"
        procs.append(subprocess.Popen(["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "-H",
                                       f"Authorization: {auth}", url],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    done, errors = [], 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 30)
        total = re.search(r"(\d+) requests in", out)
        done.append(int(total.group(1)) if total else 0)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors += int(bad.group(1)) if bad else 0
    return done, errors


async def latency(local: Server, remote: Server, cid: str, calls: int,
                  cpu: list[psutil.Process]) -> dict[str, dict[str, float]]:
    """Blocks of calls alternately on the holder and through another node, so that load
    drifts hit both: median wall-clock time per call, and CPU time per call of every node and
    nats-server together (steadier on a shared machine)."""
    keys = ("run local", "run forwarded", "cancel local", "cancel forwarded")
    times: dict[str, list[float]] = {k: [] for k in keys}
    used: dict[str, float] = {k: 0.0 for k in keys}
    pair = [httpx.AsyncClient(base_url=n.api_url + "/api/v1", auth=("admin", "foobaz"), timeout=30)
            for n in (local, remote)]

    def cpu_now() -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in cpu))

    try:
        first = await pair[0].post(f"/clients/{cid}/commands", json={"command": "true"})
        jid = first.json()["data"]["jid"]
        wait_for(lambda: local.api.get(f"/clients/{cid}/commands/{jid}").json()["data"]["status"]  # type: ignore[union-attr]
                 != "running", 30, "the first job to finish")
        for _ in range(max(1, calls // BLOCK)):
            for http, where in zip(pair, ("local", "forwarded")):
                for route in ("run", "cancel"):
                    key = f"{route} {where}"
                    before = cpu_now()
                    for _ in range(BLOCK):
                        start = time.perf_counter()
                        if route == "run":
                            resp = await http.post(f"/clients/{cid}/commands", json={"command": "true"})
                        else:
                            resp = await http.post(f"/clients/{cid}/commands/{jid}/cancel")
                        times[key].append(time.perf_counter() - start)
                        assert resp.status_code == (200 if route == "run" else 409), resp.text
                    used[key] += cpu_now() - before
    finally:
        for http in pair:
            await http.aclose()
    return {k: {"wall": statistics.median(times[k]), "cpu": used[k] / len(times[k])} for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=200, help="calls per latency figure")
    args = parser.parse_args()
    try:
        pg, nats = PostgreSQL(), Nats()
    except ServiceUnavailable as exc:
        print(f"skipped: {exc}")
        return 0
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    pg.start()
    nats.start()
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rport-bench-cluster-") as tmp:
            root = Path(tmp)
            for name, count, clustered in (("single", 1, False), ("cluster1", 1, True),
                                           ("cluster2", 2, True), ("cluster3", 3, True)):
                setup = start(name, count, args.agents, root, pg if clustered else None,
                              nats if clustered else None)
                try:
                    row: dict[str, Any] = {"name": name, "nodes": count}
                    procs = [psutil.Process(n.proc.pid) for n in setup.nodes]  # type: ignore[union-attr]
                    for kind in ("reads", "commands"):
                        before = [_cpu(p) for p in procs]
                        if kind == "reads" and shutil.which("wrk"):
                            done, errors = wrk_reads(setup, args.seconds, args.concurrency)
                        else:
                            done, errors = asyncio.run(load(setup, kind, args.seconds, args.concurrency))
                        used = [_cpu(p) - b for p, b in zip(procs, before)]
                        row[kind] = [d / args.seconds for d in done]
                        # each node's CPU per request it answered (forwarded ones cost the
                        # holder too: it is counted where the caller was answered)
                        row[kind + "_cpu"] = sum(used) / max(1, sum(done))
                        row[kind + "_errors"] = errors
                    if count > 1:
                        cid = next(c for c, n in setup.home.items() if n == 1)
                        cpu = [psutil.Process(n.proc.pid) for n in setup.nodes]  # type: ignore[union-attr]
                        cpu.append(psutil.Process(nats.service.proc.pid))  # type: ignore[union-attr]
                        row["latency"] = asyncio.run(latency(setup.nodes[1], setup.nodes[0], cid,
                                                             args.calls, cpu))
                    results.append(row)
                finally:
                    setup.stop()
    finally:
        nats.stop()
        pg.stop()
    report(results, args)
    return 0


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = results[0]
    print(f"\n{args.agents} agents spread over the nodes, {args.concurrency} API workers spread "
          f"over the nodes, {args.seconds:g} s per figure")
    print("(the load generators share the same cores; rportd CPU per request, all nodes "
          "together, is the steadier figure)")
    print(f"{'setup':10} {'nodes':>5}  {'reads/s per node':24} {'total':>7} {'ratio':>6} {'CPU/req':>9}  "
          f"{'commands/s per node':24} {'total':>7} {'ratio':>6} {'CPU/req':>9}")
    for row in results:
        cells = []
        for kind in ("reads", "commands"):
            per = " ".join(f"{x:7.0f}" for x in row[kind])
            total = sum(row[kind])
            cells.append(f"{per:24} {total:7.0f} {total / sum(base[kind]):6.2f} "
                         f"{row[kind + '_cpu'] * 1000:6.2f} ms")
        errors = row["reads_errors"] + row["commands_errors"]
        print(f"{row['name']:10} {row['nodes']:>5}  {cells[0]}  {cells[1]}"
              + (f"  ({errors} errors)" if errors else ""))
    print(f"\nOne call at a time ({args.calls} of each, in alternating blocks of {BLOCK}): on "
          "the node holding the agent vs through another node; wall clock (median) and CPU of "
          "all nodes and nats-server per call")
    for row in results:
        lat = row.get("latency")
        if lat is None:
            continue
        for route in ("run", "cancel"):
            local, forwarded = lat[f"{route} local"], lat[f"{route} forwarded"]
            line = f"{row['name']:10} {route:7}"
            for what in ("wall", "cpu"):
                a, b = local[what] * 1000, forwarded[what] * 1000
                line += f"  {what} {a:6.2f} -> {b:6.2f} ms ({b - a:+5.2f}, {b / a:.2f}x)"
            print(line)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
