#!/usr/bin/env python3
"""Connect N real agents to a real rportd and measure what it costs the server.

    .venv/bin/python benchmarks/agents_connect.py --agents 1000 --procs 4 [--bcrypt]

The parent starts ``rportd`` (``python -m rport.core.cli -c <conf>``) on 127.0.0.1 with ports
chosen by the kernel, measures its RSS once it is up, then starts ``--procs`` worker processes
(this script in ``--worker`` mode), each running its share of real agents
(:class:`rport.agent.client.RportAgent`, TLS WebSocket, hello, password check, session) in one
asyncio loop. Meanwhile it polls ``GET /api/v1/status`` every 20 ms and records the latencies.
It then measures the server at rest, kills and restarts it on the same ports ("reconnect storm")
and times the agents' return.

A benchmark, not a test: it prints figures next to their targets and asserts nothing. Every wait
is bounded (``--timeout``); workers and server are stopped on every exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from light_api import LightApi

HOST = "127.0.0.1"
API_USER, API_PASSWORD = "admin", "bench"
AGENT_ID, AGENT_PASSWORD = "bench", "secret"
POLL_INTERVAL = 0.020

TARGET_CONNECT_S = 10.0
TARGET_KIB_PER_AGENT = 100.0
TARGET_API_MS = 100.0
# From 10,000 agents (speed issue, item 3): connected and reconnected in < 20 s, <= 60 KiB each.
TARGET_10K = {"connect_s": 20.0, "kib": 60.0}


def targets(n: int) -> tuple[float, float]:
    """(connect and storm seconds, KiB per agent) asked for N agents."""
    if n >= 10_000:
        return TARGET_10K["connect_s"], TARGET_10K["kib"]
    return TARGET_CONNECT_S, TARGET_KIB_PER_AGENT

_API_RE = re.compile(r"API listening on (https?)://(\S+):(\d+)")


# =================================================================================================
# Worker mode: N/P real agents in one asyncio loop, progress reported as JSON lines on stdout.
# =================================================================================================

def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps({"t": time.time(), **event}) + "\n")
    sys.stdout.flush()


def agent_auth_id(i: int, spec: dict[str, Any]) -> str:
    return f"{AGENT_ID}-{i}" if spec["distinct_ids"] else AGENT_ID


def source_address(i: int) -> str:
    """Agent ``i``'s own loopback address (Linux routes all of 127.0.0.0/8 to the loopback
    device): as many source addresses as agents, as a fleet of machines has."""
    return f"127.{10 + i // 62500}.{(i // 250) % 250 + 1}.{i % 250 + 1}"


def lower_priority(nice: int) -> None:
    """This process at nice ``nice``, and so its session's autogroup: with the kernel's
    autogroup scheduling (sched_autogroup_enabled, the default of most distributions) a session
    of its own gets as much CPU as the server's, whatever the nice value of its processes,
    unless the group itself is niced."""
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:
        pass  # no autogroups here: the process's nice value is what counts


def raise_nofile() -> None:
    """The soft limit of open files up to the hard one (a worker holds thousands of sockets;
    rportd raises its own the same way)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(spec: dict[str, Any]) -> int:
    import asyncio
    import contextvars
    import logging
    import types

    raise_nofile()
    if spec["nice"]:
        lower_priority(spec["nice"])  # leave the CPU to the server first, as remote agents would
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from rport.agent import sysinfo
    from rport.agent.config import load_agent_config

    if not spec["gather_each"]:
        # Every RportAgent gathers its system facts once (in a thread), which is start-up cost
        # only; in this benchmark they are gathered once per worker and every agent gets a copy.
        facts = sysinfo.gather()
        sysinfo.gather = lambda: dict(facts)  # type: ignore[assignment]
    # Each real agent is a process of its own that reads the installed entry points once; the
    # thousands of agents of a worker read them once in all (it was half of the time to build
    # them, while the other workers' agents already connected).
    from importlib import metadata

    import rport.core.plugins as plugins_module

    found: dict[str, Any] = {}

    def entry_points(group: str) -> Any:
        if group not in found:
            found[group] = metadata.entry_points(group=group)
        return found[group]
    plugins_module.metadata = types.SimpleNamespace(  # type: ignore[assignment]
        entry_points=entry_points, EntryPoint=metadata.EntryPoint)
    if spec["shared_ssl"]:
        # Each RportAgent builds one cheap client_ssl_context() (no CA bundle: the server is
        # verified by fingerprint). --shared-client-ssl shares one among all agents of a worker,
        # to measure the server's side alone (it was the fix for a 20 ms-per-attempt context).
        import rport.agent.client as agent_client
        from rport.core.keys import client_ssl_context

        shared = client_ssl_context()
        agent_client.client_ssl_context = lambda: shared  # type: ignore[assignment]

    def configs() -> list[Any]:
        return [load_agent_config(None, overrides={
            "client": {"server": spec["server"], "auth": f"{agent_auth_id(i, spec)}:{AGENT_PASSWORD}",
                       "id": f"bench-{i}", "name": f"bench-{i}",
                       "fingerprint": spec["fingerprint"], "data_dir": spec["data_dir"]},
            "connection": {"min_retry_interval": spec["min_retry"],
                           "max_retry_interval": spec["max_retry"]},
        }, environ={}) for i in range(spec["first"], spec["first"] + spec["count"])]

    if not spec.get("spread"):
        try:  # the loop the real `rport` runs its agent on (uvloop when installed)
            from rport.core.logs import run as run_main
        except ImportError:
            run_main = asyncio.run
        return run_main(serve_fleet(configs, build_first=spec.get("build_first", False)))

    # Each agent connects from its own loopback address: the loop the real `rport` runs on
    # (uvloop), whose create_connection binds the address of the agent calling it.
    import uvloop

    source: contextvars.ContextVar[str] = contextvars.ContextVar("source")

    class SpreadLoop(uvloop.Loop):  # type: ignore[misc]
        async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("sock") is None and "local_addr" not in kwargs:
                kwargs["local_addr"] = (source.get(), 0)
            return await super().create_connection(*args, **kwargs)

    def context(index: int) -> contextvars.Context:
        ctx = contextvars.copy_context()
        ctx.run(source.set, source_address(spec["first"] + index))
        return ctx

    bytearray(1 << 20)  # (as rport.core.logs.run: glibc's mmap threshold raised)
    with asyncio.Runner(loop_factory=SpreadLoop) as runner:
        return runner.run(serve_fleet(configs, context=context,
                                      build_first=spec.get("build_first", False)))


async def serve_fleet(configs: Callable[[], list[Any]],
                      on_line: Callable[[str], Any] | None = None,
                      context: Callable[[int], Any] | None = None,
                      build_first: bool = False) -> int:
    """Worker mode of this benchmark and command_fanout.py: run an agent for each config in
    this loop until SIGTERM/SIGINT or the parent closes stdin, reporting "built", "progress"
    (agents connected) and "error" (an agent stopped) as JSON lines on stdout. Each agent starts
    once it is built (``build_first``: once all are)."""
    import asyncio

    from rport.agent.client import RportAgent, create_agent

    plugins: Any = None

    def build(config: Any) -> Any:
        """An agent, on the worker's one plugin manager (a real agent, one per process, makes
        one too; the plugins keep each agent's state in ``agent.state``)."""
        nonlocal plugins
        if plugins is None:
            agent = create_agent(config)
            plugins = agent.plugins
            return agent
        agent = RportAgent(config, plugins)
        agent.configure_plugins()
        return agent

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def watch_stdin() -> None:  # the parent went away: stop too
        try:
            for line in sys.stdin:  # or tells this worker something (on_line, in the loop)
                if on_line is not None and line.strip():
                    loop.call_soon_threadsafe(on_line, line.strip())
        finally:
            loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=watch_stdin, daemon=True).start()

    agents: list[Any] = []
    tasks: list[asyncio.Task[Any]] = []
    for i, config in enumerate(configs()):
        agents.append(build(config))
        if not build_first:  # each starts once built, as a machine's agent does
            tasks.append(asyncio.create_task(
                agents[-1].run(), name=agents[-1].client_id,
                context=context(i) if context is not None else None))
            if i % 20 == 19:
                await asyncio.sleep(0)
    _emit(event="built", count=len(agents))
    if build_first:
        tasks = [asyncio.create_task(agent.run(), name=agent.client_id,
                                     context=context(i) if context is not None else None)
                 for i, agent in enumerate(agents)]
    last = -1
    while not stop.is_set():
        connected = sum(agent.connected.is_set() for agent in agents)
        if connected != last:
            _emit(event="progress", connected=connected)
            last = connected
        ended = [t for t in tasks if t.done()]
        if ended:
            exc = ended[0].exception() if not ended[0].cancelled() else None
            _emit(event="error", message=f"{len(ended)} agent(s) stopped: {exc!r}")
            stop.set()
            break
        try:  # (all connected: looked at less often, this loop is no load on the runs)
            await asyncio.wait_for(stop.wait(), 0.05 if connected < len(agents) else 0.5)
        except TimeoutError:
            pass
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=10)
    return 0


# =================================================================================================
# Parent: server process, workers, API poller, report.
# =================================================================================================

def write_toml(path: Path, data: dict[str, dict[str, Any]]) -> None:
    import tomlkit  # the project's TOML library (a dependency of rport)
    path.write_text(tomlkit.dumps(data))


def listening_ports(pid: int) -> list[tuple[int, int]]:
    """(fd, port) of the TCP sockets ``pid`` listens on at 127.0.0.1."""
    import psutil
    proc = psutil.Process(pid)
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") \
        else proc.connections(kind="tcp")
    return sorted((c.fd, c.laddr.port) for c in conns
                  if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip == HOST)


class ServerProc:
    """One run of rportd; its output goes to ``log_path``."""

    def __init__(self, conf_path: Path, log_path: Path, launcher: str | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.started_at = time.monotonic()
        command = [launcher] if launcher else ["-m", "rport.core.cli"]
        self.proc = subprocess.Popen(
            [sys.executable, *command, "-c", str(conf_path)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.api_port = 0
        self.agent_port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float, known: tuple[int, int] | None = None) -> float:
        """Wait until the API answers /status; find the ports. Returns the seconds it took.

        The "... listening on" lines are logged at INFO, so with ``log_level = "warning"`` they
        are not in the log: the bound ports are then read from the process's listening sockets
        (psutil) and told apart by asking each for /status (the agent port is in its connect_url).
        """
        import httpx
        deadline = time.monotonic() + timeout
        auth = (API_USER, API_PASSWORD)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rportd exited ({self.proc.returncode}) during start-up:\n"
                                   f"{self.log()[-3000:]}")
            text = self.log()
            candidates: list[int] = []
            if known:
                candidates = [known[0]]
            elif (m := _API_RE.search(text)) and m.group(1) == "http":
                candidates = [int(m.group(3))]
            else:
                try:
                    # The API socket is bound after the agent socket: try the newest fd first.
                    candidates = [port for _, port in reversed(listening_ports(self.pid))]
                except Exception:
                    candidates = []
                if len(candidates) < 2:
                    candidates = []  # the API is not bound yet
            for port in candidates:
                try:
                    resp = httpx.get(f"http://{HOST}:{port}/api/v1/status", auth=auth, timeout=2)
                except httpx.HTTPError:
                    continue
                if resp.status_code == 401:
                    raise RuntimeError(f"the API on port {port} refused {API_USER}:{API_PASSWORD}")
                if resp.status_code == 200:
                    self.api_port = port
                    url = resp.json()["data"]["connect_url"][0]
                    self.agent_port = int(url.rsplit(":", 1)[1].strip("/"))
                    if known and known[1] != self.agent_port:
                        raise RuntimeError(f"agent port changed: {known[1]} -> {self.agent_port}")
                    return time.monotonic() - self.started_at
            time.sleep(0.02)
        raise TimeoutError(f"rportd did not answer /status within {timeout}s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the seconds it took to exit."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return time.monotonic() - t0


class Spy:
    """``py-spy record`` of a process (collapsed stacks) until :meth:`stop` (--profile)."""

    def __init__(self, pid: int, out: Path, rate: int = 200, native: bool = False) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).parent / "py-spy"
        self._log = open(out.with_suffix(".log"), "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(exe) if exe.exists() else "py-spy", "record", "--pid", str(pid), "--rate",
             str(rate), "--format", "raw", "--output", str(out), "--threads",
             *(["--native"] if native else ["--nonblocking"])],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        time.sleep(0.5)  # attached before what is measured starts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class Worker:
    """A worker process (``<script> --worker <spec>``) and what it reports."""

    def __init__(self, index: int, spec: dict[str, Any], log_path: Path,
                 script: str = __file__) -> None:
        self.index = index
        self.count = spec["count"]
        self._log = open(log_path, "ab")
        # In their own session (process group): apart from the server's, so that what is
        # measured of it is its own (and a signal to one group does not reach the other).
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.PIPE, text=True,
            start_new_session=True)
        self.connected = 0
        self.events: list[dict[str, Any]] = []  # other events, as reported
        self.built_at: float | None = None  # wall clock (time.time()), as reported
        self.ready_at: float | None = None
        self.errors: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "built":
                self.built_at = event["t"]
            elif kind == "progress":
                self.connected = event["connected"]
                if self.connected == self.count and self.ready_at is None:
                    self.ready_at = event["t"]
            elif kind == "error":
                self.errors.append(event.get("message", "?"))
            else:
                self.events.append(event)

    def tell(self, line: str) -> None:
        """A line for the worker's ``on_line``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def cpu_seconds(self) -> float:
        import psutil
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")

    def rss(self) -> int:
        import psutil
        try:
            return psutil.Process(self.proc.pid).memory_info().rss
        except psutil.Error:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._log.close()


class Poller(threading.Thread):
    """GET /api/v1/status every 20 ms: latency, clients_connected, server RSS; one sample list
    per phase (the phase is switched by the main thread)."""

    def __init__(self, api_port: int, server_pid: int, new_connections: bool = False) -> None:
        super().__init__(daemon=True)
        # keep-alive (one connection, as API clients use) unless --api-new-connections
        self.client = LightApi(api_port, API_USER, API_PASSWORD, host=HOST,
                               new_connections=new_connections)
        self.server_pid = server_pid
        self.phase = "start"
        self.samples: dict[str, list[float]] = {}  # phase -> latencies (s) of answered requests
        self.errors: dict[str, int] = {}
        self.peak_rss: dict[str, int] = {}
        self.connected = -1
        self.connected_at = 0.0  # monotonic time of the answer carrying ``connected``
        self.answered_at: dict[str, list[float]] = {}  # phase -> monotonic times of answers
        self._halt = threading.Event()

    def run(self) -> None:
        import http.client

        import psutil
        server: Any = None
        next_at = time.monotonic()
        while not self._halt.is_set():
            phase = self.phase
            t0 = time.monotonic()
            try:
                status, body = self.client.get("/status")
                latency = time.monotonic() - t0
                if status != 200:
                    raise http.client.HTTPException(f"HTTP {status}")
                connected = body["data"]["clients_connected"]
            except (OSError, http.client.HTTPException, TypeError, KeyError):
                self.errors[phase] = self.errors.get(phase, 0) + 1
            else:
                if phase == self.phase:
                    self.samples.setdefault(phase, []).append(latency)
                    self.answered_at.setdefault(phase, []).append(time.monotonic())
                self.connected = connected
                self.connected_at = time.monotonic()
            try:
                server = server or psutil.Process(self.server_pid)
                rss = server.memory_info().rss
                self.peak_rss[phase] = max(self.peak_rss.get(phase, 0), rss)
            except psutil.Error:
                pass
            next_at = max(next_at + POLL_INTERVAL, time.monotonic())
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def wait_connected(self, n: int, deadline: float, since: float = 0.0) -> float | None:
        """Monotonic time of the first answer (after ``since``) reporting ``n`` connected."""
        while time.monotonic() < deadline:
            if self.connected >= n and self.connected_at > since:
                return self.connected_at
            time.sleep(0.005)
        return None

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.client.close()


def server_cpu(pid: int) -> float:
    import psutil
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


def run_queue_wait(pid: int) -> float:
    """Seconds the process's threads have waited for a CPU while runnable (Linux schedstat;
    NaN elsewhere): the time others' work took from the server."""
    try:
        return sum(int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
                   for tid in os.listdir(f"/proc/{pid}/task")) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


def server_rss(pid: int) -> int:
    import psutil
    return psutil.Process(pid).memory_info().rss


def uvloop_version() -> str:
    try:
        import uvloop
    except ImportError:
        return "not installed"
    return uvloop.__version__


def listen_overflows() -> int | None:
    """The kernel's TcpExt ListenOverflows counter (Linux, system-wide): connections dropped
    because a listening socket's accept queue was full; the client retries after >= 1 s."""
    try:
        lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
                 if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1]))["ListenOverflows"])
    except (OSError, KeyError, IndexError, ValueError):
        return None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def latency_summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 0.50) * 1000, "p95_ms": pct(values, 0.95) * 1000,
            "p99_ms": pct(values, 0.99) * 1000,
            "max_ms": (max(values) * 1000) if values else float("nan")}


def answered(poller: "Poller", phase: str, since: float = 0.0) -> list[tuple[float, float]]:
    """(time of the request, latency) of a phase's answers to requests made after ``since``."""
    pairs = zip(poller.answered_at.get(phase, []), poller.samples.get(phase, []))
    return [(at - latency, latency) for at, latency in pairs if at - latency >= since]


def slowest(pairs: list[tuple[float, float]], since: float, k: int = 5) -> list[list[float]]:
    """The ``k`` slowest of ``pairs``: [seconds from ``since`` to the request, ms]."""
    worst = sorted(pairs, key=lambda p: -p[1])[:k]
    return [[round(at - since, 2), round(latency * 1000, 1)] for at, latency in worst]


def bench(args: argparse.Namespace, tmp: Path, cleanup: list[Any]) -> dict[str, Any]:
    import bcrypt
    import httpx

    n, procs = args.agents, max(1, min(args.procs, args.agents))
    data_dir = tmp / "server-data"
    conf: dict[str, dict[str, Any]] = {
        "server": {"address": f"{HOST}:0", "data_dir": str(data_dir), "key_seed": "rport-bench",
                   "keep_alive": "30s"},
        "api": {"address": f"{HOST}:0", "auth": f"{API_USER}:{API_PASSWORD}"},
        "logging": {"log_level": "warning"},
    }
    if args.same_address:
        # All agents behind one address, as behind a NAT: its pre-auth cap (64 by default)
        # would turn most of a storm away; raised as operations.md says for such setups.
        conf["server"]["max_pending_per_address"] = 1024
    result: dict[str, Any] = {"agents": n, "procs": procs, "bcrypt": args.bcrypt,
                              "same_address": args.same_address,
                              "build_first": args.build_first,
                              "shared_client_ssl": args.shared_client_ssl,
                              "api_new_connections": args.api_new_connections,
                              "gather_each": args.gather_each, "worker_nice": args.worker_nice,
                              "distinct_ids": args.distinct_ids, "api_bcrypt": args.api_bcrypt,
                              "cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
                              "uvloop": uvloop_version()}
    secret = AGENT_PASSWORD
    if args.bcrypt or args.api_bcrypt:
        secret = bcrypt.hashpw(AGENT_PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        t1 = time.perf_counter()
        bcrypt.checkpw(AGENT_PASSWORD.encode(), secret.encode())
        result["bcrypt_check_ms"] = (time.perf_counter() - t1) * 1000
    if args.bcrypt or args.distinct_ids:
        # --distinct-ids: one credential per agent (each a separate check for the server; with
        # --bcrypt they share one hash, which costs the server the same as distinct hashes).
        ids = sorted({agent_auth_id(i, {"distinct_ids": args.distinct_ids}) for i in range(n)})
        auth_file = tmp / "agents-auth.json"
        auth_file.write_text(json.dumps({i: secret if args.bcrypt else AGENT_PASSWORD
                                         for i in ids}))
        conf["server"]["auth_file"] = str(auth_file)
    else:
        conf["server"]["auth"] = f"{AGENT_ID}:{AGENT_PASSWORD}"
    if args.api_bcrypt:
        api_file = tmp / "api-auth.json"
        api_hash = bcrypt.hashpw(API_PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        api_file.write_text(json.dumps([{"username": API_USER, "password": api_hash,
                                         "groups": ["Administrators"]}]))
        del conf["api"]["auth"]
        conf["api"]["auth_file"] = str(api_file)
    conf_path = tmp / "rportd.conf"
    write_toml(conf_path, conf)

    # -- server up, baseline ----------------------------------------------------------------------
    server = ServerProc(conf_path, tmp / "rportd-1.log", args.server_launcher)
    cleanup.append(server.stop)
    result["server_start_s"] = server.wait_ready(args.timeout)
    conf["server"]["address"] = f"{HOST}:{server.agent_port}"  # restarts keep the ports
    conf["api"]["address"] = f"{HOST}:{server.api_port}"
    write_toml(conf_path, conf)
    fingerprint = (data_dir / "rportd-fingerprint.txt").read_text().strip()
    with httpx.Client(base_url=f"http://{HOST}:{server.api_port}/api/v1",
                      auth=(API_USER, API_PASSWORD), timeout=5) as api:
        for _ in range(20):  # warm the API up (first requests import and cache things)
            api.get("/status").raise_for_status()
            api.get("/clients").raise_for_status()
    time.sleep(1.0)
    baseline = server_rss(server.pid)
    result["rss_baseline_mib"] = baseline / 2**20

    poller = Poller(server.api_port, server.pid, args.api_new_connections)
    poller.start()
    cleanup.insert(0, poller.stop)
    time.sleep(0.5)

    # -- connect phase ----------------------------------------------------------------------------
    poller.set_phase("connect")
    profiler = Spy(server.pid, args.profile / "rportd-connect.txt",
                   native=args.profile_native) if args.profile else None
    if profiler is not None:
        cleanup.insert(0, profiler.stop)
    cpu0, wait0 = server_cpu(server.pid), run_queue_wait(server.pid)
    overflows0 = listen_overflows()
    share, extra = divmod(n, procs)
    workers: list[Worker] = []
    t_launch = time.monotonic()
    wall_launch = time.time()
    first = 0
    for k in range(procs):
        count = share + (1 if k < extra else 0)
        # The worker's agents share one data directory: made here, or they race to make it.
        (tmp / f"agent-data-{k}").mkdir(mode=0o700, exist_ok=True)
        spec = {"server": f"{HOST}:{server.agent_port}", "fingerprint": fingerprint,
                "first": first, "count": count, "data_dir": str(tmp / f"agent-data-{k}"),
                "min_retry": "1s", "max_retry": "10s", "gather_each": args.gather_each,
                "shared_ssl": args.shared_client_ssl, "nice": args.worker_nice,
                "distinct_ids": args.distinct_ids, "spread": not args.same_address,
                "build_first": args.build_first}
        first += count
        workers.append(Worker(k, spec, tmp / f"worker-{k}.log"))
    cleanup.insert(0, lambda: [w.stop() for w in workers])
    deadline = t_launch + args.timeout
    t_all = poller.wait_connected(n, deadline)
    if profiler is not None:
        profiler.stop()
    cpu1, wait1 = server_cpu(server.pid), run_queue_wait(server.pid)
    overflows1 = listen_overflows()
    rss_connected = server_rss(server.pid)
    if t_all is None:
        errors = [e for w in workers for e in w.errors]
        raise TimeoutError(f"only {poller.connected} of {n} agents connected within "
                           f"{args.timeout}s; worker errors: {errors[:3]}; see {tmp}")
    result["connect_s"] = t_all - t_launch
    built = [w.built_at for w in workers if w.built_at]
    if len(built) == procs:
        result["workers_built_s"] = max(built) - wall_launch
        result["connect_after_built_s"] = result["connect_s"] - result["workers_built_s"]
    result["server_cpu_connect_s"] = cpu1 - cpu0
    result["server_run_queue_connect_s"] = wait1 - wait0
    if overflows0 is not None and overflows1 is not None:
        result["listen_overflows_connect"] = overflows1 - overflows0
    result["workers_cpu_connect_s"] = sum(w.cpu_seconds() for w in workers)
    result["rss_connected_mib"] = rss_connected / 2**20
    result["rss_peak_connect_mib"] = max(poller.peak_rss.get("connect", 0), rss_connected) / 2**20
    result["kib_per_agent_connected"] = (rss_connected - baseline) / 1024 / n
    result["api_connect"] = latency_summary(poller.samples.get("connect", []))
    result["api_connect_slowest"] = slowest(answered(poller, "connect"), t_launch)
    result["api_connect_errors"] = poller.errors.get("connect", 0)
    # the workers' own view: every agent's connected event set
    ready_deadline = time.monotonic() + 30
    while time.monotonic() < ready_deadline and not all(w.ready_at for w in workers):
        time.sleep(0.01)
    if all(w.ready_at for w in workers):
        result["agents_ready_s"] = max(w.ready_at for w in workers) - wall_launch  # type: ignore

    # -- idle phase -------------------------------------------------------------------------------
    poller.set_phase("idle")
    time.sleep(args.idle)
    rss_idle = server_rss(server.pid)
    result["rss_idle_mib"] = rss_idle / 2**20
    result["kib_per_agent"] = (rss_idle - baseline) / 1024 / n
    result["api_idle"] = latency_summary(poller.samples.get("idle", []))
    result["api_idle_errors"] = poller.errors.get("idle", 0)
    result["server_cpu_idle_pct"] = 0.0
    worker_rss = sum(w.rss() for w in workers)
    result["worker_kib_per_agent"] = worker_rss / 1024 / n
    with httpx.Client(base_url=f"http://{HOST}:{server.api_port}/api/v1",
                      auth=(API_USER, API_PASSWORD), timeout=30) as api:
        t0 = time.monotonic()
        resp = api.get("/clients")
        result["list_clients_ms"] = (time.monotonic() - t0) * 1000
        result["list_clients_count"] = len(resp.json().get("data", []))
        result["list_clients_bytes"] = len(resp.content)
        t0 = time.monotonic()
        api.get("/clients", params={"page[limit]": "50"}).raise_for_status()
        result["list_clients_page_ms"] = (time.monotonic() - t0) * 1000
    c0, t0 = server_cpu(server.pid), time.monotonic()
    time.sleep(2.0)
    result["server_cpu_idle_pct"] = (server_cpu(server.pid) - c0) / (time.monotonic() - t0) * 100

    # -- reconnect storm --------------------------------------------------------------------------
    if not args.no_storm:
        poller.set_phase("storm")
        stop_spy = Spy(server.pid, args.profile / "rportd-stop.txt",
                       native=args.profile_native) if args.profile else None
        t_kill = time.monotonic()
        result["server_stop_s"] = server.stop()
        cleanup.remove(server.stop)
        if stop_spy is not None:
            stop_spy.stop()  # (it ended with the process)
        t_restart = time.monotonic()
        overflows0 = listen_overflows()
        server = ServerProc(conf_path, tmp / "rportd-2.log", args.server_launcher)
        cleanup.append(server.stop)
        poller.server_pid = server.pid
        server.wait_ready(args.timeout, known=(int(conf["api"]["address"].rsplit(":", 1)[1]),
                                               int(conf["server"]["address"].rsplit(":", 1)[1])))
        profiler = Spy(server.pid, args.profile / "rportd-storm.txt",
                       native=args.profile_native) if args.profile else None
        if profiler is not None:
            cleanup.insert(0, profiler.stop)
        t_all2 = poller.wait_connected(n, t_restart + args.timeout, since=t_restart)
        if profiler is not None:
            profiler.stop()
        if t_all2 is None:
            result["storm_error"] = (f"only {poller.connected} of {n} agents reconnected within "
                                     f"{args.timeout}s")
        else:
            result["storm_s"] = t_all2 - t_restart
            result["storm_from_kill_s"] = t_all2 - t_kill
            up = [t for t in poller.answered_at.get("storm", []) if t > t_restart]
            if up:
                result["storm_api_up_s"] = up[0] - t_restart
            result["storm_server_cpu_s"] = server_cpu(server.pid)
            overflows1 = listen_overflows()
            if overflows0 is not None and overflows1 is not None:
                result["listen_overflows_storm"] = overflows1 - overflows0
            result["rss_after_storm_mib"] = server_rss(server.pid) / 2**20
        # Requests made once the new rportd was started (those during the old one's stop are
        # counted apart: it closes every agent's session first).
        after = answered(poller, "storm", t_restart)
        result["api_storm"] = latency_summary([latency for _, latency in after])
        result["api_storm_slowest"] = slowest(after, t_restart)
        stopping = [latency for at, latency in answered(poller, "storm") if at < t_restart]
        result["api_stopping"] = latency_summary(stopping)
        result["api_storm_errors"] = poller.errors.get("storm", 0)

    result["worker_errors"] = [e for w in workers for e in w.errors]
    result["load_after"] = os.getloadavg()[0]
    return result


# =================================================================================================
# OpenRPort's route, and ours at the same N.
# =================================================================================================

def peer_routes(args: argparse.Namespace, tmp: Path, cleanup: list[Any]) -> dict[str, Any]:
    """OpenRPort 0.9.14 with ``--openrport-agents`` N of its clients (one process each), and
    ours with N agents, one after the other: server memory and CPU per agent, the API while
    they connect, and the storm after a restart."""
    from openrport import OpenRport, openrport_bin

    n = min(args.openrport_agents, args.agents)
    bin_dir = openrport_bin()
    if bin_dir is None:
        return {"skipped": "the OpenRPort binaries are not there (OPENRPORT_BIN)"}
    ours_args = argparse.Namespace(**{**vars(args), "agents": n, "procs": 1, "profile": None})
    (tmp / "ours-at-n").mkdir()
    ours = bench(ours_args, tmp / "ours-at-n", cleanup)
    for fn in cleanup:
        fn()
    cleanup.clear()
    out: dict[str, Any] = {"n": n, "ours": ours}
    try:
        peer = OpenRport(bin_dir, tmp, n, args.worker_nice, args.timeout, start_clients=False)
    except RuntimeError as exc:
        return {**out, "skipped": str(exc)}
    cleanup.insert(0, peer.stop)
    assert peer.server is not None
    time.sleep(1.0)
    theirs: dict[str, Any] = {"rss_baseline_mib": server_rss(peer.server.pid) / 2**20}
    baseline = server_rss(peer.server.pid)
    poller = Poller(peer.api_port, peer.server.pid)
    poller.start()
    cleanup.insert(0, poller.stop)
    time.sleep(0.5)
    poller.set_phase("connect")
    cpu0, t0 = server_cpu(peer.server.pid), time.monotonic()
    peer.start_clients()
    t_all = poller.wait_connected(n, t0 + args.timeout)
    if t_all is None:
        return {**out, "skipped": f"only {poller.connected} of {n} OpenRPort clients connected"}
    theirs["connect_s"] = t_all - t0  # (each of its clients first waits 0-10 s at random)
    theirs["server_cpu_connect_s"] = server_cpu(peer.server.pid) - cpu0
    theirs["api_connect"] = latency_summary(poller.samples.get("connect", []))
    poller.set_phase("idle")
    time.sleep(args.idle)
    rss = server_rss(peer.server.pid)
    theirs["rss_idle_mib"] = rss / 2**20
    theirs["kib_per_agent"] = (rss - baseline) / 1024 / n
    if not args.no_storm:
        poller.set_phase("storm")
        theirs["server_stop_s"] = peer.stop_server()
        t_restart = time.monotonic()
        peer.start_server()
        poller.server_pid = peer.server.pid
        t_all2 = poller.wait_connected(n, t_restart + args.timeout, since=t_restart)
        if t_all2 is not None:
            theirs["storm_s"] = t_all2 - t_restart
        theirs["storm_server_cpu_s"] = server_cpu(peer.server.pid)
        after = answered(poller, "storm", t_restart)
        theirs["api_storm"] = latency_summary([latency for _, latency in after])
    out["openrport"] = theirs
    return out


def fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


class ReportTable:
    """The report's rows (metric, value, target, value / target), rendered as aligned text;
    command_fanout.py's report uses it too."""

    HEAD = ("metric", "value", "target", "ratio")

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def row(self, name: str, value: Any, unit: str = "", target: float | None = None,
            digits: int = 2) -> None:
        if target is not None and isinstance(value, (int, float)) and value == value:
            self.rows.append((name, fmt(value, unit, digits), f"{target:g}{unit}",
                              f"{value / target:.2f}x"))
        else:
            self.rows.append((name, fmt(value, unit, digits), "", ""))

    def render(self) -> str:
        widths = [max(len(x[i]) for x in [*self.rows, self.HEAD]) for i in range(4)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(self.HEAD, widths)),
                 "  ".join("-" * w for w in widths)]
        for name, value, target, ratio in self.rows:
            lines.append(f"{name.ljust(widths[0])}  {value.rjust(widths[1])}  "
                         f"{target.rjust(widths[2])}  {ratio.rjust(widths[3])}")
        lines.append("ratio = value / target (below 1.00x is within the target)")
        return "\n".join(lines)


def peer_report(peer: dict[str, Any] | None, row: Callable[..., None]) -> None:
    """OpenRPort's route next to ours at the same N (ratio = ours / theirs)."""
    if not peer:
        return
    n = peer.get("n", 0)
    if "skipped" in peer and "openrport" not in peer:
        row(f"OpenRPort 0.9.14 at {n} agents", f"skipped: {peer['skipped']}"[:90], "")
        if "ours" not in peer:
            return
    ours, theirs = peer.get("ours", {}), peer.get("openrport", {})

    def pair(name: str, a: Any, b: Any, unit: str, digits: int = 1) -> None:
        ratio = f" ({a / b:.2f}x)" if isinstance(a, float) and isinstance(b, float) and b else ""
        row(f"at {n}: {name}, ours / OpenRPort", f"{fmt(a, unit, digits)} / {fmt(b, unit, digits)}"
            + ratio, "")
    pair("server KiB per agent", ours.get("kib_per_agent"), theirs.get("kib_per_agent"), " KiB")
    cpu_o = ours.get("server_cpu_connect_s")
    cpu_t = theirs.get("server_cpu_connect_s")
    pair("server CPU per agent connecting", cpu_o / n * 1000 if cpu_o is not None else None,
         cpu_t / n * 1000 if cpu_t is not None else None, " ms", 2)
    pair("API /status max while they connect", ours.get("api_connect", {}).get("max_ms"),
         theirs.get("api_connect", {}).get("max_ms"), " ms")
    pair("API /status p99 while they connect", ours.get("api_connect", {}).get("p99_ms"),
         theirs.get("api_connect", {}).get("p99_ms"), " ms")
    pair("connect time (OpenRPort's clients wait 0-10 s first)", ours.get("connect_s"),
         theirs.get("connect_s"), " s", 2)
    pair("storm: restart -> N reconnected", ours.get("storm_s"), theirs.get("storm_s"), " s", 2)
    pair("storm: API max after the restart", ours.get("api_storm", {}).get("max_ms"),
         theirs.get("api_storm", {}).get("max_ms"), " ms")


def _slowest(pairs: list[list[float]] | None) -> str:
    return ", ".join(f"{t:g}: {ms:g}" for t, ms in pairs[:3]) if pairs else "-"


def report(r: dict[str, Any]) -> str:
    table = ReportTable()
    row = table.row
    target_s, target_kib = targets(r["agents"])

    ac, ai = r.get("api_connect", {}), r.get("api_idle", {})
    row("agents (N)", r["agents"], "")
    row("machine: CPUs / 1-min load before, after", "{} / {:.2f}, {:.2f}".format(
        r["cpus"], r["load_before"], r.get("load_after", float("nan"))), "")
    row("processes carrying agents", r["procs"], "")
    row("uvloop in this environment", r["uvloop"], "")
    row("agent password check", ("bcrypt cost 10" if r["bcrypt"] else "plain")
        + (", one id per agent" if r["distinct_ids"] else ", one id for all"), "")
    row("API password check", "bcrypt cost 10" if r["api_bcrypt"] else "plain", "")
    row("agents' TLS context", "shared (emulated fix)" if r["shared_client_ssl"]
        else "one per attempt (as shipped)", "")
    row("agents' system facts", "gathered per agent" if r["gather_each"]
        else "gathered once per worker", "")
    row("API connection", "new per request" if r["api_new_connections"] else "keep-alive", "")
    row("agent workers' nice value", r["worker_nice"], "")
    row("agents' source addresses", "127.0.0.1 (max_pending_per_address raised to 1024)"
        if r.get("same_address") else "one loopback address each (127.10.x.y)", "")
    if r["bcrypt"] or r["api_bcrypt"]:
        row("  one bcrypt check (this machine)", r.get("bcrypt_check_ms"), " ms", digits=1)
    row("connect time, workers launched -> N connected", r.get("connect_s"), " s", target_s)
    row("  workers started + every agent built" + ("" if r.get("build_first") else
        " (each connecting once built)"), r.get("workers_built_s"), " s")
    row("  connect time after the last agent was built", r.get("connect_after_built_s"), " s",
        target_s)
    row("  all agents saw WELCOME (worker view)", r.get("agents_ready_s"), " s")
    row("server memory per agent (idle, after connect)", r.get("kib_per_agent"), " KiB",
        target_kib, digits=1)
    row("  per agent at the moment N connected", r.get("kib_per_agent_connected"), " KiB",
        target_kib, digits=1)
    row("  server RSS baseline / N connected / idle", "{} / {} / {}".format(
        fmt(r.get("rss_baseline_mib"), " MiB", 1), fmt(r.get("rss_connected_mib"), " MiB", 1),
        fmt(r.get("rss_idle_mib"), " MiB", 1)), "")
    row("  server RSS peak during connect", r.get("rss_peak_connect_mib"), " MiB", digits=1)
    row("API /status p50, connect phase", ac.get("p50_ms"), " ms", TARGET_API_MS, digits=1)
    row("API /status p95, connect phase", ac.get("p95_ms"), " ms", TARGET_API_MS, digits=1)
    row("API /status p99, connect phase", ac.get("p99_ms"), " ms", TARGET_API_MS, digits=1)
    row("API /status max, connect phase", ac.get("max_ms"), " ms", TARGET_API_MS, digits=1)
    row("  requests / failed, connect phase", f"{ac.get('n', 0)} / {r.get('api_connect_errors', 0)}", "")
    row("  slowest, connect phase (s after launch: ms)", _slowest(r.get("api_connect_slowest")), "")
    row("API /status p50, idle", ai.get("p50_ms"), " ms", TARGET_API_MS, digits=1)
    row("API /status p95, idle", ai.get("p95_ms"), " ms", TARGET_API_MS, digits=1)
    row("API /status max, idle", ai.get("max_ms"), " ms", TARGET_API_MS, digits=1)
    row("  requests / failed, idle", f"{ai.get('n', 0)} / {r.get('api_idle_errors', 0)}", "")
    row("server CPU during connect", r.get("server_cpu_connect_s"), " s")
    row("  server time waiting for a CPU (run queue)", r.get("server_run_queue_connect_s"),
        " s")
    row("  server CPU per agent", (r["server_cpu_connect_s"] / r["agents"] * 1000)
        if "server_cpu_connect_s" in r else None, " ms", digits=2)
    row("  accept-queue overflows (kernel, system-wide)", r.get("listen_overflows_connect"), "")
    row("  worker CPU during connect (all workers)", r.get("workers_cpu_connect_s"), " s")
    row("server CPU while idle", r.get("server_cpu_idle_pct"), " %", digits=1)
    row("worker memory per agent (client side)", r.get("worker_kib_per_agent"), " KiB", digits=1)
    row(f"GET /clients, all {r.get('list_clients_count', '?')} "
        f"({(r.get('list_clients_bytes') or 0) / 2**20:.1f} MiB)", r.get("list_clients_ms"),
        " ms", TARGET_API_MS, digits=1)
    row("GET /clients?page[limit]=50", r.get("list_clients_page_ms"), " ms", TARGET_API_MS,
        digits=1)
    if "server_stop_s" in r:
        a = r.get("api_storm", {})
        row("storm: server stop (SIGTERM -> exit)", r.get("server_stop_s"), " s")
        row("storm: restart -> API answering", r.get("storm_api_up_s"), " s")
        row("storm: restart -> N reconnected", r.get("storm_s"), " s", target_s)
        row("storm: SIGTERM -> N reconnected", r.get("storm_from_kill_s"), " s")
        row("storm: server CPU since restart", r.get("storm_server_cpu_s"), " s")
        row("storm: accept-queue overflows (system-wide)", r.get("listen_overflows_storm"), "")
        row("storm: server RSS, N reconnected", r.get("rss_after_storm_mib"), " MiB", digits=1)
        row("storm: API max while the old rportd stopped", r.get("api_stopping", {}).get("max_ms"),
            " ms", digits=1)
        row("storm: API p50 / p95 / max (answered, after the restart)", "{} / {} / {}".format(
            fmt(a.get("p50_ms"), " ms", 1), fmt(a.get("p95_ms"), " ms", 1),
            fmt(a.get("max_ms"), " ms", 1)), "")
        row("  requests / failed (server down)", f"{a.get('n', 0)} / {r.get('api_storm_errors', 0)}", "")
        row("  slowest (s after restart: ms)", _slowest(r.get("api_storm_slowest")), "")
        if "storm_error" in r:
            row("storm: error", r["storm_error"], "")
    if r.get("worker_errors"):
        row("worker errors", "; ".join(r["worker_errors"])[:200], "")
    peer_report(r.get("peer"), row)
    return table.render()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=1000, help="number of agents (default 1000)")
    p.add_argument("--procs", type=int, default=4, help="worker processes carrying them (default 4)")
    p.add_argument("--bcrypt", action="store_true",
                   help="agent password as a bcrypt hash (cost 10) in an auth_file")
    p.add_argument("--distinct-ids", action="store_true",
                   help="one agent credential (auth id) per agent instead of one for all")
    p.add_argument("--api-bcrypt", action="store_true",
                   help="the API user's password as a bcrypt hash (cost 10) in api.auth_file")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle API polling (default 5)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this (default 120 s)")
    p.add_argument("--no-storm", action="store_true", help="skip the reconnect storm")
    p.add_argument("--gather-each", action="store_true",
                   help="let every agent gather its system facts (default: once per worker)")
    p.add_argument("--shared-client-ssl", action="store_true",
                   help="agents share one TLS client context instead of building one (and "
                        "loading the CA bundle) per connection attempt")
    p.add_argument("--worker-nice", type=int, default=10, metavar="N",
                   help="run the agent workers at nice N (default 10; 0 to share the CPU "
                        "evenly) so that their CPU use, which real agents spend on other "
                        "machines, does not delay the server")
    p.add_argument("--build-first", action="store_true",
                   help="each worker builds all its agents before starting any (default: each "
                        "starts once built, as on machines of its own)")
    p.add_argument("--same-address", action="store_true",
                   help="connect every agent from 127.0.0.1 (default: each from its own "
                        "loopback address, as a fleet of machines); the server's "
                        "max_pending_per_address is then raised to max_pending_connections")
    p.add_argument("--api-new-connections", action="store_true",
                   help="poll the API on a new TCP connection per request (default: keep-alive)")
    p.add_argument("--server-launcher", metavar="FILE",
                   help="run this Python file (given -c CONF) instead of -m rport.core.cli, "
                        "e.g. to try a patched server; default: the real rportd")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy record rportd while the agents connect, while it stops and "
                        "during the storm "
                        "(collapsed stacks in DIR; needs py-spy and ptrace permission)")
    p.add_argument("--profile-native", action="store_true",
                   help="with --profile: native frames too (OpenSSL, uvloop; pauses rportd "
                        "at each sample)")
    p.add_argument("--openrport-agents", type=int, default=200, metavar="N",
                   help="then N agents of OpenRPort 0.9.14 (its rportd and one rport process "
                        "each) and N of ours, one after the other, where its binaries are "
                        "(OPENRPORT_BIN or shared/peers/openrport/bin; skipped otherwise); 0: "
                        "not at all (default 200)")
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    if args.agents < 1:
        p.error("--agents must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="rport-bench-"))
    cleanup: list[Any] = []
    print(f"rportd + {args.agents} agents in {min(args.procs, args.agents)} process(es)"
          f"{' (bcrypt)' if args.bcrypt else ''}; work dir {tmp}", flush=True)
    code = 0

    def clean() -> None:
        for fn in cleanup:
            try:
                fn()
            except Exception as exc:  # keep cleaning up
                print(f"cleanup: {exc!r}", file=sys.stderr)
        cleanup.clear()
    try:
        result = bench(args, tmp, cleanup)
        clean()  # the machine to the next route alone
        if args.openrport_agents > 0:
            result["peer"] = peer_routes(args, tmp, cleanup)
    except Exception as exc:  # noqa: BLE001 - report, clean up, keep the logs
        print(f"benchmark failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        code, result = 1, None
    except KeyboardInterrupt:
        code, result = 130, None
    finally:
        clean()
    if result is not None:
        print(report(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    if args.keep or code:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
