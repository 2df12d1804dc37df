#!/usr/bin/env python3
"""Push a large file to real agents through a real rportd (``POST /files``): speed and memory,
against a copy of the same file on the same disk, in one run.

    .venv/bin/python benchmarks/file_push.py [--size-mib 256] [--agents 2] [--repeat 3] [--keep]

Everything runs on 127.0.0.1 in a temporary directory (removed unless ``--keep``): a real
``rportd`` (``[api] max_filepush_size`` raised to fit) and ``--agents`` real agents
(``python -m rport.agent.cli``), each writing the file to its own destination. Per round:

* **baseline**: ``shutil.copyfile`` of the file on the same disk, once per agent (what the
  machine's disk allows for the bytes every agent writes);
* **push**: ``POST /files`` (httpx streams the file from disk) until ``GET /files/{uuid}`` has a
  result from every agent; every destination is then checked (size and MD5).

Printed: MiB/s of both (bytes written to all destinations over the time), their ratio, and
rportd's and one agent's peak resident memory (``VmHWM``) at idle and after the pushes: the
growth stays far below the file's size because neither holds the file in memory (the server
writes it to disk as it arrives and reads it back in chunks; agents write each chunk as it comes,
behind the stream's 1 MiB window). The median round is reported.

A benchmark, not a test: it asserts nothing. Every wait is bounded, every process stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.procs import Agent, Server, wait_for  # noqa: E402

MIB = 1 << 20


def hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MIB
    return 0.0


def make_file(path: Path, size: int) -> str:
    md5 = hashlib.md5()
    block = os.urandom(MIB)
    with open(path, "wb") as fh:
        for i in range(size // MIB):
            chunk = block[i % 251:] + block[:i % 251]  # not one repeated block
            fh.write(chunk)
            md5.update(chunk)
    return md5.hexdigest()


def file_md5(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MIB):
            md5.update(chunk)
    return md5.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="rport-file-push-"))
    server = Server(work / "server", extra={"api": {"max_filepush_size": size},
                                            "logging": {"log_level": "info"}})
    agents: list[Agent] = []
    try:
        server.start()
        ids = [f"push-{i}" for i in range(args.agents)]
        agents = [Agent(work / f"agent-{cid}", server, cid) for cid in ids]
        for cid in ids:
            server.wait_connected(cid)
        src = work / "payload.bin"
        digest = make_file(src, size)
        server_pid, agent_pid = server.proc.pid, agents[0].proc.pid  # type: ignore[union-attr]
        idle = (hwm(server_pid), hwm(agent_pid))
        base_rates, push_rates = [], []
        api = httpx.Client(base_url=server.api_url + "/api/v1", auth=("admin", "foobaz"), timeout=600)
        for round_ in range(args.repeat):
            copies = [work / f"copy-{round_}-{i}.bin" for i in range(args.agents)]
            start = time.perf_counter()
            for copy in copies:
                shutil.copyfile(src, copy)
                with open(copy, "rb+") as fh:
                    os.fsync(fh.fileno())  # as written as the agents' files (page cache either way)
            base_rates.append(size * args.agents / MIB / (time.perf_counter() - start))
            for copy in copies:
                copy.unlink()

            # the API's model: one destination, the same on every client; here the agents all
            # write it on this one machine (each replaces it in one rename)
            dest = work / "out" / f"round-{round_}" / "payload.bin"
            start = time.perf_counter()
            with open(src, "rb") as fh:
                resp = api.post("/files", files={"upload": ("payload.bin", fh)},
                                data={"client_id": ids, "dest": str(dest)})
            resp.raise_for_status()
            upload_id = resp.json()["data"]["uuid"]
            wait_for(lambda: all(c["status"] != "pending" for c in
                                 api.get(f"/files/{upload_id}").json()["data"]["clients"]),
                     600, "every agent's result", interval=0.05)
            elapsed = time.perf_counter() - start
            results = api.get(f"/files/{upload_id}").json()["data"]["clients"]
            ok = all(r["status"] == "success" for r in results) and file_md5(dest) == digest
            push_rates.append(size * args.agents / MIB / elapsed if ok else 0.0)
            print(f"round {round_ + 1}: copy {base_rates[-1]:.0f} MiB/s, push {push_rates[-1]:.0f} "
                  f"MiB/s ({'ok' if ok else 'FAILED: ' + str(results)})", flush=True)
            shutil.rmtree(work / "out", ignore_errors=True)
        peak = (hwm(server_pid), hwm(agent_pid))
        base, push = statistics.median(base_rates), statistics.median(push_rates)
        print(f"\nfile {args.size_mib} MiB to {args.agents} agent(s), median of {args.repeat}, "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"  disk copy (baseline)  {base:8.0f} MiB/s")
        print(f"  POST /files           {push:8.0f} MiB/s   ratio {push / base:.2f} of the copy")
        print(f"  rportd peak RSS       {idle[0]:8.1f} MiB idle -> {peak[0]:.1f} MiB "
              f"(+{peak[0] - idle[0]:.1f} MiB for a {args.size_mib} MiB file)")
        print(f"  agent peak RSS        {idle[1]:8.1f} MiB idle -> {peak[1]:.1f} MiB "
              f"(+{peak[1] - idle[1]:.1f} MiB)")
        return 0
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
