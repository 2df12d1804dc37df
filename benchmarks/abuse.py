#!/usr/bin/env python3
"""Attack a real rportd the ways an unauthenticated (or merely authenticated) client could, and
measure what it costs the people it serves.

    .venv/bin/python benchmarks/abuse.py [--attackers 1000] [--duration 10]

One rportd (``python -m rport.core.cli``), started with a soft open-files limit of 1,024 as
systemd would, and one *resident* agent connected throughout. Then, one phase after another
(each ``--duration`` seconds, the first without any attack as the baseline of the run):

==================  =========================================================================
idle-agent-port     ``--attackers`` TCP connections to the agent port that never send a byte,
                    from 50 loopback addresses, reopened whenever the server closes one
stalled-tls         200 connections that send the first 5 bytes of a TLS ClientHello, then
                    nothing (more than the 64 TLS handshake slots)
idle-api            ``--attackers`` TCP connections to the API that never send a byte
slowloris-api       200 API connections that send a request's headers one byte a second
ping-flood          4 connections that upgrade to WebSocket without a hello and send pings
                    without reading the pongs
empty-fragments     4 agents that log in, then send one message in endless empty fragments
tunnels-in-hello    an agent whose hello asks for 600 tunnels (the hello's 64 KiB hold ~680)
==================  =========================================================================

During each phase a new, legitimate agent (a real ``rport`` process) connects: its time from
"connecting" to "connected" (its own log) is the figure; ``GET /api/v1/status`` is polled every
20 ms; rportd's RSS is read before, during (peak) and after the phase (attackers gone, 2 s
later). Every attacker connection the server closes is counted and reopened, so the attack is
sustained for the whole phase.

A benchmark, not a test: it prints figures next to their targets (legitimate agent < 5 s,
``/status`` p99 < 100 ms, RSS growth < 50 MB per attack) and asserts nothing. Every wait is
bounded; rportd and the agents are stopped on every exit path. ``--pythonpath DIR`` runs rportd
from another build (e.g. ``pip install --target DIR`` of an older commit) for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx

HOST = "127.0.0.1"
API_USER, API_PASSWORD = "admin", "bench"
AGENT_ID, AGENT_PASSWORD = "bench", "secret"
POLL_INTERVAL = 0.020
SOFT_NOFILE = 1024  # systemd's default soft limit, which rportd must raise itself

TARGET_AGENT_S = 5.0
TARGET_P99_MS = 100.0
TARGET_RSS_MB = 50.0

PY = sys.executable


# -- processes --------------------------------------------------------------------------------------

def write_toml(path: Path, data: dict[str, dict[str, Any]]) -> Path:
    import tomlkit

    path.write_text(tomlkit.dumps(data))
    return path


def rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Process:
    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            if match := regex.search(self.log()):
                return match
            if self.proc.poll() is not None:
                return regex.search(self.log())
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Rig:
    """rportd, the resident agent, and the legitimate agents of each phase."""

    def __init__(self, work: Path, pythonpath: str) -> None:
        self.work = work
        self.env = {"PYTHONPATH": pythonpath} if pythonpath else {}
        self.conf = write_toml(work / "rportd.conf", {
            "server": {"address": f"{HOST}:0", "auth": f"{AGENT_ID}:{AGENT_PASSWORD}",
                       "key_seed": "abuse-bench", "data_dir": str(work / "data"),
                       "keep_alive": "30s"},
            "api": {"address": f"{HOST}:0", "auth": f"{API_USER}:{API_PASSWORD}"},
            "logging": {"log_level": "info"},
        })
        command = (f"ulimit -Sn {SOFT_NOFILE} && exec {shlex.quote(PY)} -m rport.core.cli "
                   f"-c {shlex.quote(str(self.conf))}")
        self.server = Process(["sh", "-c", command], work / "rportd.log", self.env)
        api = self.server.wait_log(r"API listening on http://(\S+):(\d+)", 30)
        agent = re.search(r"agent endpoint listening on (\S+):(\d+)", self.server.log())
        if api is None or agent is None:
            raise SystemExit(f"rportd did not start:\n{self.server.log()[-3000:]}")
        self.api_port, self.agent_port = int(api.group(2)), int(agent.group(2))
        self.api_url = f"http://{HOST}:{self.api_port}"
        fingerprint = re.search(r"server key fingerprint (\S+)", self.server.log())
        assert fingerprint
        self.fingerprint = fingerprint.group(1)
        self.agents: list[Process] = []

    def agent(self, client_id: str) -> Process:
        work = self.work / f"agent-{client_id}"
        work.mkdir(parents=True, exist_ok=True)
        conf = write_toml(work / "rport.conf", {
            "client": {"server": f"{HOST}:{self.agent_port}", "auth": f"{AGENT_ID}:{AGENT_PASSWORD}",
                       "fingerprint": self.fingerprint, "id": client_id,
                       "data_dir": str(work / "data")},
            "connection": {"min_retry_interval": "0.5s", "max_retry_interval": "2s"},
            "logging": {"log_level": "info"}})
        proc = Process([PY, "-m", "rport.agent.cli", "-c", str(conf)], work / "rport.log", self.env)
        self.agents.append(proc)
        return proc

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.server.stop()


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z .*?: (connecting to|connected to)",
                 re.M)


def connect_time(agent: Process, timeout: float) -> float:
    """Seconds from the agent's first "connecting to" to its "connected to" (its own log), or
    inf if it did not connect within ``timeout``."""
    if agent.wait_log(r"connected to wss://", timeout) is None:
        return float("inf")
    stamps: dict[str, float] = {}
    for stamp, what in _TS.findall(agent.log()):
        t = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float(stamp[19:])
        stamps.setdefault(what, t)
    return stamps["connected to"] - stamps["connecting to"]


# -- the API poller and the memory sampler ----------------------------------------------------------

class Poller(threading.Thread):
    def __init__(self, rig: Rig) -> None:
        super().__init__(daemon=True)
        self.rig = rig
        self.samples: list[tuple[float, float, bool]] = []  # (time, latency ms, ok)
        self.rss: list[tuple[float, float]] = []
        self.fresh: list[tuple[float, bool]] = []  # a new connection's /status: answered?
        self.stopping = threading.Event()

    def run(self) -> None:
        client = httpx.Client(base_url=self.rig.api_url, auth=(API_USER, API_PASSWORD), timeout=10)
        last_rss = last_fresh = 0.0
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                ok = client.get("/api/v1/status").status_code == 200
            except httpx.HTTPError:
                ok = False
            self.samples.append((start, (time.monotonic() - start) * 1000, ok))
            if start - last_rss >= 0.1:
                self.rss.append((start, rss_mb(self.rig.server.pid)))
                last_rss = start
            if start - last_fresh >= 0.5:  # a caller that opens a new connection, as curl does
                last_fresh = start
                try:
                    fresh = httpx.get(f"{self.rig.api_url}/api/v1/status", timeout=5,
                                      auth=(API_USER, API_PASSWORD)).status_code == 200
                except httpx.HTTPError:
                    fresh = False
                self.fresh.append((start, fresh))
            self.stopping.wait(max(0.0, POLL_INTERVAL - (time.monotonic() - start)))
        client.close()

    def window(self, start: float, end: float) -> dict[str, Any]:
        lat = sorted(ms for t, ms, ok in self.samples if start <= t < end)
        errors = sum(1 for t, _, ok in self.samples if start <= t < end and not ok)
        peak = max((mb for t, mb in self.rss if start <= t < end), default=float("nan"))

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
        fresh = [ok for t, ok in self.fresh if start <= t < end]
        return {"n": len(lat), "p50": pct(0.5), "p99": pct(0.99), "max": lat[-1] if lat else
                float("nan"), "errors": errors, "rss_peak": peak,
                "fresh": f"{sum(fresh)}/{len(fresh)}"}


# -- attackers ----------------------------------------------------------------------------------------

class Attack:
    """Keeps ``n`` attacker connections going until ``stop``; counts those the server ended."""

    def __init__(self) -> None:
        self.closed_by_server = 0
        self.opened = 0
        self.errors: list[str] = []  # the attacker's own failures (a bug here, not the server)
        self.stop = asyncio.Event()

    async def keep(self, n: int, one: Callable[[int], Any]) -> None:
        async def loop(i: int) -> None:
            while not self.stop.is_set():
                try:
                    self.opened += 1
                    await one(i)
                    self.closed_by_server += 1
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError, EOFError):
                    self.closed_by_server += 1
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported, not hidden
                    self.errors.append(f"{exc.__class__.__name__}: {exc}")
                    await asyncio.sleep(0.5)
        tasks = [asyncio.create_task(loop(i)) for i in range(n)]
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def tcp(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def source(i: int, per_address: int = 20) -> str:
    return f"127.0.{10 + i // (per_address * 250)}.{1 + (i // per_address) % 250}"


async def silent(port: int, i: int, first: bytes = b"") -> None:
    """Connect, send ``first`` (maybe nothing), then wait until the server hangs up."""
    reader, writer = await tcp(port, source(i))
    try:
        if first:
            writer.write(first)
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def slowloris(port: int, i: int) -> None:
    reader, writer = await tcp(port, source(i))
    try:
        for byte in b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 1000:
            if reader.at_eof():
                return
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if not await asyncio.wait_for(reader.read(1), 1.0):
                    return
            except TimeoutError:
                pass
    finally:
        writer.close()


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((b0, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return header + mask + bytes(b ^ mask[k % 4] for k, b in enumerate(payload))


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def websocket(port: int, i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source(i, 1), 0))
    await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    reader, writer = await asyncio.open_connection(sock=sock, ssl=client_tls(),
                                                   server_hostname="rportd")
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13"
                 f"\r\nSec-WebSocket-Protocol: rport-py\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if b" 101 " not in head:
        raise EOFError("no upgrade")
    return reader, writer


def hello(client_id: str, plugins: dict[str, Any] | None = None) -> bytes:
    body = {"protocols": [1], "version": "abuse", "auth": {"id": AGENT_ID, "password": AGENT_PASSWORD},
            "client": {"id": client_id, "name": client_id}, "plugins": plugins or {}}
    return ws_frame(0x2, bytes([0x01]) + (0).to_bytes(4, "big")
                    + json.dumps(body, separators=(",", ":")).encode())


async def pings(port: int, i: int) -> None:
    reader, writer = await websocket(port, i)
    writer.transport.pause_reading()  # the pongs are never read
    ping = ws_frame(0x9, b"p" * 125) * 64
    try:
        while not writer.transport.is_closing():
            writer.write(ping)
            await writer.drain()
            await asyncio.sleep(0)  # drain() does not yield while the buffer is low
    finally:
        writer.close()


async def fragments(port: int, i: int) -> None:
    reader, writer = await websocket(port, i)
    writer.write(hello(f"frag-{i}"))
    await asyncio.wait_for(reader.readexactly(2), 30)  # the start of the WELCOME
    burst = ws_frame(0x0, b"", fin=False) * 512
    writer.write(ws_frame(0x2, b"", fin=False))
    try:
        while not writer.transport.is_closing():
            writer.write(burst)
            await writer.drain()
            await asyncio.sleep(0)
    finally:
        writer.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


async def many_tunnels(port: int, i: int, count: int = 600) -> None:
    """Logs in asking for ``count`` tunnels, then answers the server's requests as an agent
    would (every remote allowed), so that it gets every listener the server will open."""
    remotes = [{"local_host": HOST, "local_port": None, "remote_host": HOST,
                "remote_port": 1 + k, "protocol": "tcp"} for k in range(count)]
    reader, writer = await websocket(port, i)
    writer.write(hello(f"tunnels-{i}", {"tunnels": {"remotes": remotes}}))
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8:
                return
            if opcode == 0x2 and payload[:1] == b"\x10":  # a REQUEST: answer it
                ident = payload[1:5]
                name = json.loads(payload[5:]).get("name")
                body = {"allowed": True} if name == "check_tunnel_allowed" else {}
                writer.write(ws_frame(0x2, b"\x11" + ident + json.dumps(
                    {"ok": True, "body": body}).encode()))
    finally:
        writer.close()


# -- phases -------------------------------------------------------------------------------------------

def phases(rig: Rig, n: int) -> list[tuple[str, Callable[[Attack], Any], str]]:
    agent, api = rig.agent_port, rig.api_port
    return [
        ("baseline", lambda a: a.stop.wait(), "no attack"),
        ("idle-agent-port", lambda a: a.keep(n, lambda i: silent(agent, i)),
         f"{n} idle TCP connections to the agent port, 50 addresses"),
        ("stalled-tls", lambda a: a.keep(200, lambda i: silent(agent, i, b"\x16\x03\x01\x02\x00")),
         "200 connections stalled in the TLS ClientHello"),
        ("idle-api", lambda a: a.keep(n, lambda i: silent(api, i)),
         f"{n} idle TCP connections to the API"),
        ("slowloris-api", lambda a: a.keep(200, lambda i: slowloris(api, i)),
         "200 API requests sent one byte a second"),
        ("ping-flood", lambda a: a.keep(4, lambda i: pings(agent, i)),
         "4 pre-hello WebSockets flooding pings, reading nothing"),
        ("empty-fragments", lambda a: a.keep(4, lambda i: fragments(agent, i)),
         "4 logged-in agents sending endless empty fragments"),
        ("tunnels-in-hello", lambda a: a.keep(1, lambda i: many_tunnels(agent, i)),
         "an agent asking for 600 tunnels in its hello"),
    ]


async def run_phase(rig: Rig, name: str, attack_fn: Callable[[Attack], Any], duration: float,
                    poller: Poller) -> dict[str, Any]:
    pid = rig.server.pid
    rss_before, fds_before = rss_mb(pid), open_fds(pid)
    attack = Attack()
    start = time.monotonic()
    task = asyncio.create_task(attack_fn(attack))
    await asyncio.sleep(min(2.0, duration / 4))  # the attack is in full swing
    legit = rig.agent(f"legit-{name}")
    agent_s = await asyncio.to_thread(connect_time, legit, max(duration, 30.0))
    fds_during = open_fds(pid)
    remaining = duration - (time.monotonic() - start)
    if remaining > 0:
        await asyncio.sleep(remaining)
    end = time.monotonic()
    legit.stop()
    attack.stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    await asyncio.sleep(2.0)  # let the server notice the attackers are gone
    window = poller.window(start, end)
    return {"phase": name, "agent_s": agent_s, **window, "rss_before": rss_before,
            "rss_after": rss_mb(pid), "fds_before": fds_before, "fds_during": fds_during,
            "opened": attack.opened, "closed_by_server": attack.closed_by_server,
            "attacker_errors": attack.errors[:3]}


async def main_async(args: argparse.Namespace, rig: Rig) -> dict[str, Any]:
    resident = rig.agent("resident")
    if resident.wait_log(r"connected to wss://", 30) is None:
        raise SystemExit(f"the resident agent did not connect:\n{resident.log()[-2000:]}")
    poller = Poller(rig)
    poller.start()
    results = []
    rss_start = rss_mb(rig.server.pid)
    try:
        for name, attack_fn, what in phases(rig, args.attackers):
            if args.only and name not in args.only and name != "baseline":
                continue
            print(f"phase {name}: {what} ...", file=sys.stderr, flush=True)
            results.append({**await run_phase(rig, name, attack_fn, args.duration, poller),
                            "what": what})
    finally:
        poller.stopping.set()
        poller.join(5)
    log = rig.server.log()
    return {
        "results": results, "rss_start": rss_start, "rss_end": rss_mb(rig.server.pid),
        "resident_disconnections": log.count("client resident disconnected"),
        "resident_alive": resident.proc.poll() is None,
        "status_errors": sum(1 for _, _, ok in poller.samples if not ok),
        "status_samples": len(poller.samples),
        "fresh_failed": sum(1 for _, ok in poller.fresh if not ok),
        "fresh_total": len(poller.fresh),
        "tracebacks": log.count("Traceback"),
        "fd_limit": re.search(r"open files limit raised from \d+ to \d+", log),
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    def f(x: float, digits: int = 1) -> str:
        return "-" if x != x else ("> 30" if x == float("inf") else f"{x:.{digits}f}")

    head = ("phase", "agent s", "p50 ms", "p99 ms", "max ms", "err", "new conn ok",
            "RSS MB before/peak/after", "growth MB", "fds during", "attacker conns closed")
    rows = []
    for x in r["results"]:
        growth = max(x["rss_peak"], x["rss_after"]) - x["rss_before"]
        rows.append((x["phase"], f(x["agent_s"], 2), f(x["p50"]), f(x["p99"]), f(x["max"]),
                     str(x["errors"]), x["fresh"],
                     f"{f(x['rss_before'])} / {f(x['rss_peak'])} / {f(x['rss_after'])}",
                     f(growth), str(x["fds_during"]),
                     f"{x['closed_by_server']} of {x['opened']}"))
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    for x in r["results"]:
        if x["attacker_errors"]:
            lines.append(f"  {x['phase']}: the attacker itself failed: {x['attacker_errors']}")
    base = r["results"][0]
    attacks = r["results"][1:]
    worst_agent = max((x["agent_s"] for x in attacks), default=float("nan"))
    worst_p99 = max((x["p99"] for x in attacks), default=float("nan"))
    worst_growth = max((max(x["rss_peak"], x["rss_after"]) - x["rss_before"] for x in attacks),
                       default=float("nan"))
    lines += [
        "",
        f"targets: legitimate agent < {TARGET_AGENT_S:g} s, /status p99 < {TARGET_P99_MS:g} ms, "
        f"RSS growth < {TARGET_RSS_MB:g} MB under each attack, nothing lost",
        f"worst legitimate agent under attack   {f(worst_agent, 2)} s   "
        f"({worst_agent / TARGET_AGENT_S:.2f}x the target; baseline {f(base['agent_s'], 2)} s)",
        f"worst /status p99 under attack        {f(worst_p99)} ms  "
        f"({worst_p99 / TARGET_P99_MS:.2f}x the target; baseline {f(base['p99'])} ms)",
        f"worst RSS growth under attack         {f(worst_growth)} MB  "
        f"({worst_growth / TARGET_RSS_MB:.2f}x the target)",
        f"rportd RSS at the start / at the end  {f(r['rss_start'])} / {f(r['rss_end'])} MB",
        f"nothing lost: resident agent disconnections {r['resident_disconnections']}, still "
        f"running {r['resident_alive']}; /status errors {r['status_errors']} of "
        f"{r['status_samples']} (kept-alive connection), {r['fresh_failed']} of {r['fresh_total']}"
        f" (new connections); tracebacks in rportd's log {r['tracebacks']}",
        f"rportd started with soft open-files limit {SOFT_NOFILE}: "
        f"{r['fd_limit'].group(0) if r['fd_limit'] else 'not raised'}",
        f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        f" at the end; attackers ({args.attackers} per idle attack) run in this process",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attackers", type=int, default=1000, help="connections of the idle attacks")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    p.add_argument("--only", nargs="*", help="run only these attack phases (and the baseline)")
    p.add_argument("--pythonpath", default="", help="run rportd and the agents from this build")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = p.parse_args()
    # rportd and the agents run in their own sessions: a SIGTERM to this script (a timeout)
    # must still stop them, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4 * args.attackers + 4096) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # The attackers write into connections the server has dropped: asyncio's warnings about it
    # are the attack working, not news.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="rport-abuse-"))
    rig: Rig | None = None
    try:
        rig = Rig(work, args.pythonpath)
        result = asyncio.run(main_async(args, rig))
        print(report(result, args))
        if args.json:
            print(json.dumps(result["results"], indent=1, default=str))
    finally:
        if rig is not None:
            rig.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
