#!/usr/bin/env python3
"""Fan a command out to N real agents through a real rportd; time it and the API meanwhile.

    .venv/bin/python benchmarks/command_fanout.py --agents 200 --procs 4
    .venv/bin/python benchmarks/command_fanout.py --agents 200 --procs 4 --full-sequential
    .venv/bin/python benchmarks/command_fanout.py --agents 200 --procs 4 --profile DIR
    .venv/bin/python benchmarks/command_fanout.py --agents 200 --procs 4 --database-url postgresql://...

The parent starts ``rportd`` (``python -m rport.core.cli -c <conf>``; ``log_level = "warning"``,
API user ``admin:bench``, agent credential ``bench:secret``) on 127.0.0.1 with ports chosen by the
kernel, then ``--procs`` worker processes (this script in ``--worker`` mode) that each run their
share of real agents (:class:`rport.agent.client.RportAgent`, each with its own client id
``bench-<i>`` and data dir, the commands plugin with its default ``[remote-commands]``, whose
allow list requires full paths: hence ``/usr/bin/date``) in one asyncio loop. Once
``GET /api/v1/status`` reports all N connected, each worker freezes what its agents hold out of
its garbage collector (``gc.freeze()``): a real agent is a process of its own, whose collections
walk one agent's objects, not a few hundred agents'. Then:

* concurrent (``--repeat`` times, default 3): ``POST /api/v1/commands`` with all N client ids and
  ``execute_concurrently = true``, then every ``--poll-interval`` (50 ms) RPort's
  ``GET /api/v1/commands/{jid}/jobs?filter[status]=queued,running&sort=jid&page[limit]=1``
  (how many
  jobs are still to finish, in ``meta.count``) until none is, then ``GET /api/v1/commands/{jid}``
  once for every job. Measured: POST -> the poll that saw the last job final; POST -> the latest
  ``finished_at`` (the agents' clock: the same machine); POST -> the latest ``started_at`` (all
  dispatched); rportd's and the workers' CPU time (psutil) meanwhile;
* sequential: the same with ``execute_concurrently = false`` on min(N, 50) agents (all N with
  ``--full-sequential``); the time per job is printed;

while a separate thread polls ``GET /api/v1/status`` every 20 ms on its own keep-alive connection
(API latency p50/p95/max per run). One single-client command is run first as a warm-up (not
counted). ``--profile DIR`` runs ``py-spy record --threads`` on rportd during each concurrent run
(needs py-spy in the virtualenv and ptrace permission) and writes its output there (flame graphs,
or collapsed stacks with ``--profile-format raw``).

A benchmark, not a test: it prints figures next to their targets and asserts nothing. Every wait
is bounded (``--timeout``, 120 s); workers, profilers and server are stopped on every exit path.
Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Shared with the connect benchmark (same folder: run as `python benchmarks/command_fanout.py`).
import agents_connect  # noqa: E402
from agents_connect import (  # noqa: E402,F401
    Poller,
    ReportTable,
    ServerProc,
    _emit,
    fmt,
    latency_summary,
    listening_ports,
    lower_priority,
    pct,
    serve_fleet,
    write_toml,
)
from light_api import LightApi  # noqa: E402
from openrport import OpenRport, openrport_bin  # noqa: E402

HOST = "127.0.0.1"
API_USER, API_PASSWORD = "admin", "bench"
AGENT_ID, AGENT_PASSWORD = "bench", "secret"
POLL_INTERVAL = 0.020
COMMAND = "/usr/bin/date"
FINAL = ("successful", "failed", "unknown", "cancelled", "skipped")

TARGET_CONCURRENT_S = 2.0
TARGET_API_MS = 100.0  # not in the issue: agents_connect.py's API target, for comparison

_API_RE = re.compile(r"API listening on (https?)://(\S+):(\d+)")


# =================================================================================================
# Worker mode: N/P real agents in one asyncio loop (as in agents_connect.py), progress reported
# as JSON lines on stdout.
# =================================================================================================

def worker_main(spec: dict[str, Any]) -> int:
    import asyncio

    if spec.get("nice"):
        lower_priority(spec["nice"])  # the agents' side after the server, as on other machines
    # the agents' default logging (log_level "info", to stderr: the worker's log file)
    from rport.core.logs import setup_logging
    setup_logging()
    from rport.agent import sysinfo
    from rport.agent.config import load_agent_config

    # RportAgent.run() gathers the system facts for every agent (in a thread); in this benchmark
    # they are gathered once per worker and every agent gets a copy (start-up cost only).
    facts = sysinfo.gather()
    sysinfo.gather = lambda: dict(facts)  # type: ignore[assignment]

    def configs() -> list[Any]:
        result = []
        for i in range(spec["first"], spec["first"] + spec["count"]):
            data_dir = Path(spec["data_root"]) / f"bench-{i}"
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            result.append(load_agent_config(None, overrides={
                "client": {"server": spec["server"], "auth": f"{AGENT_ID}:{AGENT_PASSWORD}",
                           "id": f"bench-{i}", "name": f"bench-{i}",
                           "fingerprint": spec["fingerprint"], "data_dir": str(data_dir)},
                "connection": {"min_retry_interval": "1s", "max_retry_interval": "10s"},
                # the plugin's table (RPort's [remote-commands]); defaults: allow ^/usr/bin/.* ...
                "remote-commands": {"enabled": True},
            }, environ={}))
        return result

    def on_line(line: str) -> None:
        if line.startswith("floor "):
            asyncio.ensure_future(floor(int(line.split()[1])))
        elif line == "freeze":
            # The agents are connected: what they hold is frozen out of the garbage collector,
            # whose collections would otherwise walk every agent of this worker. A real agent
            # is a process of its own, whose collections walk one agent's objects.
            import gc
            gc.collect()
            gc.freeze()

    runners: list[Any] = []

    async def floor(count: int) -> None:
        """The floor: ``count`` commands through the agent's own runner, as the agents run
        them, without a server (spawn, journal, output, result)."""
        from rport.plugins.commands.runner import Runner

        done = asyncio.Event()
        results: list[dict[str, Any]] = []

        async def on_result(result: dict[str, Any]) -> None:
            results.append(result)
            runners[int(result["jid"].split("-")[1])].delivered(result["jid"])
            if len(results) == count:
                done.set()
        while len(runners) < count:  # a runner per agent, each with its own data directory
            runners.append(Runner(
                Path(spec["data_root"]) / f"floor-{spec['first'] + len(runners)}", 4 << 20,
                on_output=lambda *_: None, on_result=on_result))
            runners[-1].recover()  # (as an agent does at start: its directories made)
        for runner in runners:
            runner.on_result = on_result
        floor_round = time.monotonic_ns()
        t0 = time.time()
        await asyncio.gather(*(runners[i].start({"jid": f"floor-{i}-{floor_round}",
                                                 "command": COMMAND, "timeout_sec": 30})
                               for i in range(count)))
        await done.wait()
        _emit(event="floor", t0=t0, t1=time.time(),
              ok=sum(1 for r in results if r["status"] == "successful"))

    # the loop the real `rport` runs its agent on (uvloop where installed)
    from rport.core.logs import run as run_main
    return run_main(serve_fleet(configs, on_line))


# =================================================================================================
# Parent: server process, workers, API pollers, runs, report.
# =================================================================================================

def fs_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), or "?"."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and os.path.commonpath([str(path.resolve()), fields[1]]) == fields[1]:
                    if len(fields[1]) > len(best):
                        best, kind = fields[1], fields[2]
    except (OSError, ValueError):
        pass
    return kind


def default_agents_dir() -> str:
    """/dev/shm where it is a writable tmpfs (see --agents-data-dir), else ""."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) and fs_type(shm) == "tmpfs" else ""


def cpu_seconds(pid: int) -> float:
    import psutil
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


class Worker(agents_connect.Worker):
    """agents_connect's worker process, running this script's worker mode."""

    def __init__(self, index: int, spec: dict[str, Any], log_path: Path) -> None:
        super().__init__(index, spec, log_path, script=__file__)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the worker, and of its children that have been waited for (the
        commands)."""
        import psutil
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system, t.children_user + t.children_system
        except psutil.Error:
            return float("nan"), float("nan")


class Profiler:
    """``py-spy record`` on rportd for the duration of one run."""

    def __init__(self, pid: int, out: Path, rate: int, fmt: str) -> None:
        exe = Path(sys.executable).parent / "py-spy"
        self.out = out
        self._log = open(out.with_suffix(".log"), "ab")  # noqa: SIM115 - as above
        self.proc = subprocess.Popen(
            [str(exe) if exe.exists() else "py-spy", "record", "--pid", str(pid), "--rate",
             str(rate), "--format", fmt, "--output", str(out), "--threads", "--nonblocking"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach before the run starts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC).timestamp()
    except ValueError:
        return None


def fan_out(api: Any, ids: list[str], concurrent: bool, timeout: float, server_pid: int,
            workers: list[Worker], poll_interval: float = 0.05,
            light: LightApi | None = None) -> dict[str, Any]:
    """One multi-client command; asks every ``poll_interval`` how many of its jobs are still to
    finish (RPort's ``GET /commands/{jid}/jobs`` with ``filter[status]=queued,running``,
    ``sort=jid`` and ``page[limit]=1``: a count the database makes, not a thousand jobs), and
    once none is, reads them all. The polls go through ``light`` (a lean client: the observer
    shares the machine) when given."""
    body = {"command": COMMAND, "client_ids": ids, "execute_concurrently": concurrent,
            "timeout_sec": 30}
    cpu_s0, cpu_w0 = cpu_seconds(server_pid), [sum(c) for c in zip(*(w.cpu() for w in workers))]
    cpu_b0 = cpu_seconds(os.getpid())
    wall0 = time.time()
    t0 = time.monotonic()
    resp = api.post("/commands", json=body)
    t_posted = time.monotonic()
    resp.raise_for_status()
    jid = resp.json()["data"]["jid"]
    deadline = t0 + timeout
    jobs: list[dict[str, Any]] = []
    polls, poll_latency, t_done = 0, [], None
    next_at = time.monotonic()
    unfinished = {"filter[status]": "queued,running", "sort": "jid", "page[limit]": "1"}
    while time.monotonic() < deadline:
        p0 = time.monotonic()
        if light is not None:
            try:
                status, answer = light.get(f"/commands/{jid}/jobs", unfinished)
            except (OSError, http.client.HTTPException):
                status, answer = 0, None
        else:
            r = api.get(f"/commands/{jid}/jobs", params=unfinished)
            status, answer = r.status_code, r.json()
        p1 = time.monotonic()
        polls += 1
        poll_latency.append(p1 - p0)
        if status == 200 and answer["meta"]["count"] == 0:
            t_done = p1
            break
        next_at = max(next_at + poll_interval, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))
    cpu_s1, cpu_w1 = cpu_seconds(server_pid), [sum(c) for c in zip(*(w.cpu() for w in workers))]
    cpu_b1 = cpu_seconds(os.getpid())
    r = api.get(f"/commands/{jid}")
    jobs = r.json()["data"].get("jobs") or [] if r.status_code == 200 else []
    if t_done is not None and not (len(jobs) == len(ids)
                                   and all(j.get("status") in FINAL for j in jobs)):
        t_done = None  # (the count said none was left: the jobs must say the same)
    finished = [t for t in (parse_time(j.get("finished_at")) for j in jobs) if t is not None]
    started = [t for t in (parse_time(j.get("started_at")) for j in jobs) if t is not None]
    statuses: dict[str, int] = {}
    for j in jobs:
        statuses[j.get("status")] = statuses.get(j.get("status"), 0) + 1
    errors = sorted({str(j.get("error")) for j in jobs if j.get("status") != "successful"})
    return {
        "jid": jid, "n": len(ids), "concurrent": concurrent,
        "done": t_done is not None, "jobs_seen": len(jobs),
        "post_ms": (t_posted - t0) * 1000,
        "total_s": (t_done - t0) if t_done is not None else None,
        "finished_s": (max(finished) - wall0) if finished else None,
        "dispatched_s": (max(started) - wall0) if started else None,
        "first_finished_s": (min(finished) - wall0) if finished else None,
        "run_s": statistics.median([parse_time(j["finished_at"]) - parse_time(j["started_at"])
                                    for j in jobs if parse_time(j.get("finished_at"))
                                    and parse_time(j.get("started_at"))] or [float("nan")]),
        "successful": statuses.get("successful", 0), "statuses": statuses, "errors": errors[:3],
        "stdout_ok": sum(1 for j in jobs if (j.get("result") or {}).get("stdout", "").strip()),
        "server_cpu_s": cpu_s1 - cpu_s0, "workers_cpu_s": cpu_w1[0] - cpu_w0[0],
        "commands_cpu_s": cpu_w1[1] - cpu_w0[1], "observer_cpu_s": cpu_b1 - cpu_b0,
        "polls": polls, "poll": latency_summary(poll_latency),
    }


def run_floor(workers: list[Worker], timeout: float) -> float:
    """Every worker runs its share of the commands itself at once; seconds until the last
    result (the workers' clock, the same machine)."""
    before = [len(w.events) for w in workers]
    t0 = time.time()
    for w in workers:
        w.tell(f"floor {w.count}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        news = [[e for e in w.events[b:] if e.get("event") == "floor"]
                for w, b in zip(workers, before)]
        if all(news):
            return max(e[0]["t1"] for e in news) - t0
        time.sleep(0.01)
    raise TimeoutError(f"the floor runs did not end within {timeout}s")


def bench(args: argparse.Namespace, tmp: Path, cleanup: list[Any]) -> dict[str, Any]:
    import httpx

    n, procs = args.agents, max(1, min(args.procs, args.agents))
    agents_root = Path(tempfile.mkdtemp(prefix="rport-fanout-agents-", dir=args.agents_data_dir)
                       if args.agents_data_dir else tmp / "agents")
    if args.agents_data_dir:
        cleanup.append(lambda: shutil.rmtree(agents_root, ignore_errors=True))
    data_dir = tmp / "server-data"
    conf: dict[str, dict[str, Any]] = {
        "server": {"address": f"{HOST}:0", "data_dir": str(data_dir), "key_seed": "rport-bench",
                   "auth": f"{AGENT_ID}:{AGENT_PASSWORD}"},
        "api": {"address": f"{HOST}:0", "auth": f"{API_USER}:{API_PASSWORD}"},
    }  # (logging as by default: log_level "info", to stderr, the benchmark's rportd.log)
    if args.database_url:
        conf["database"] = {"url": args.database_url}
    conf_path = tmp / "rportd.conf"
    write_toml(conf_path, conf)
    result: dict[str, Any] = {"agents": n, "procs": procs, "cpus": os.cpu_count(),
                              "load_before": os.getloadavg()[0], "runs": [],
                              "agents_data": f"{agents_root.parent} ({fs_type(agents_root)})",
                              "worker_nice": args.worker_nice, "poll_s": args.poll_interval}

    server = ServerProc(conf_path, tmp / "rportd.log")
    cleanup.append(server.stop)
    server.wait_ready(args.timeout)
    result["server_pid"] = server.pid
    print(f"rportd pid {server.pid}, API port {server.api_port}, agent port {server.agent_port}",
          flush=True)
    fingerprint = (data_dir / "rportd-fingerprint.txt").read_text().strip()

    poller = Poller(server.api_port, server.pid)
    poller.start()
    cleanup.insert(0, poller.stop)

    # -- agents -----------------------------------------------------------------------------------
    share, extra = divmod(n, procs)
    workers: list[Worker] = []
    first = 0
    t_launch = time.monotonic()
    for k in range(procs):
        count = share + (1 if k < extra else 0)
        spec = {"server": f"{HOST}:{server.agent_port}", "fingerprint": fingerprint,
                "first": first, "count": count, "data_root": str(agents_root / "ours"),
                "nice": args.worker_nice}
        first += count
        workers.append(Worker(k, spec, tmp / f"worker-{k}.log"))
    cleanup.insert(0, lambda: [w.stop() for w in workers])
    poller.phase = "connect"
    t_all = poller.wait_connected(n, t_launch + args.timeout)
    if t_all is None:
        errors = [e for w in workers for e in w.errors]
        raise TimeoutError(f"only {poller.connected} of {n} agents connected within "
                           f"{args.timeout}s; worker errors: {errors[:3]}; see {tmp}")
    result["connect_s"] = t_all - t_launch
    print(f"{n} agents connected in {result['connect_s']:.1f}s ({procs} worker processes)",
          flush=True)
    for w in workers:
        w.tell("freeze")
    ids = [f"bench-{i}" for i in range(n)]

    api = httpx.Client(base_url=f"http://{HOST}:{server.api_port}/api/v1",
                       auth=(API_USER, API_PASSWORD), timeout=30)
    cleanup.insert(0, api.close)
    light = LightApi(server.api_port, API_USER, API_PASSWORD, host=HOST)
    cleanup.insert(0, light.close)

    # -- warm-up: one single-client command (first use of the routes, imports) -------------------
    poller.phase = "warmup"
    resp = api.post(f"/clients/{ids[0]}/commands", json={"command": COMMAND})
    resp.raise_for_status()
    wjid = resp.json()["data"]["jid"]
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        job = api.get(f"/clients/{ids[0]}/commands/{wjid}").json().get("data") or {}
        if job.get("status") in FINAL:
            result["warmup_status"] = job.get("status")
            break
        time.sleep(POLL_INTERVAL)
    else:
        raise TimeoutError(f"the warm-up command did not finish within {args.timeout}s")
    time.sleep(1.0)
    poller.phase = "idle"
    time.sleep(2.0)
    result["api_idle"] = latency_summary(poller.samples.get("idle", []))

    # -- the agents' floor: the same commands run by each worker's agents' runner, no server ----
    result["floors"] = [run_floor(workers, args.timeout) for _ in range(args.repeat)]
    print("floor (agents' side alone): " + ", ".join(f"{f:.3f}s" for f in result["floors"]),
          flush=True)
    time.sleep(1.0)

    # -- runs -------------------------------------------------------------------------------------
    seq_n = n if args.full_sequential else min(n, 50)
    plan = [("concurrent", True, ids)] * args.repeat
    if not args.no_sequential:
        plan.append(("sequential", False, ids[:seq_n]))
    for index, (kind, concurrent, targets) in enumerate(plan, 1):
        label = f"{kind}-{index}"
        profiler = None
        worker_profiler: Profiler | None = None
        if args.profile and concurrent:
            args.profile.mkdir(parents=True, exist_ok=True)
            suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[args.profile_format]
            profiler = Profiler(server.pid, args.profile / f"rportd-{label}.{suffix}",
                                args.profile_rate, args.profile_format)
            cleanup.insert(0, profiler.stop)
            if args.profile_worker:
                worker_profiler = Profiler(workers[0].proc.pid,
                                           args.profile / f"worker-{label}.{suffix}",
                                           args.profile_rate, args.profile_format)
                cleanup.insert(0, worker_profiler.stop)
        poller.phase = label
        try:
            run = fan_out(api, targets, concurrent, args.timeout, server.pid, workers,
                          args.poll_interval, light)
        finally:
            poller.phase = "between"
            if profiler is not None:
                profiler.stop()
                cleanup.remove(profiler.stop)
            if worker_profiler is not None:
                worker_profiler.stop()
                cleanup.remove(worker_profiler.stop)
        run["label"] = label
        run["api"] = latency_summary(poller.samples.get(label, []))
        run["api_errors"] = poller.errors.get(label, 0)
        result["runs"].append(run)
        print(f"{label}: {len(targets)} jobs, "
              + (f"all final after {run['total_s']:.3f}s" if run["done"]
                 else f"NOT all final after {args.timeout}s ({run['jobs_seen']} jobs seen)")
              + f", {run['successful']} successful, rportd CPU {run['server_cpu_s']:.2f}s",
              flush=True)
        time.sleep(1.0)  # let the server settle (late writes, GC) between runs

    # -- OpenRPort's route, and ours at the same N ------------------------------------------------
    n_open = min(args.openrport_agents, n)
    bin_dir = openrport_bin() if n_open > 0 else None
    if n_open > 0 and bin_dir is None:
        result["openrport_skipped"] = "the OpenRPort binaries are not there (OPENRPORT_BIN)"
    elif n_open > 0:
        ours = []
        for _ in range(args.repeat):
            ours.append(fan_out(api, ids[:n_open], True, args.timeout, server.pid, workers,
                                args.poll_interval, light))
            time.sleep(1.0)
        result["ours_at_openrport_n"] = ours
        poller.stop()
        cleanup.remove(poller.stop)
        for w in workers:  # the machine to OpenRPort alone
            w.stop()
        server.stop()
        cleanup.remove(server.stop)
        try:
            peer = OpenRport(bin_dir, tmp, n_open, args.worker_nice, args.timeout,
                             clients_dir=agents_root / "openrport")
        except RuntimeError as exc:
            result["openrport_skipped"] = str(exc)
        else:
            cleanup.insert(0, peer.stop)
            theirs = []
            for _ in range(args.repeat):
                theirs.append(peer.fan_out(COMMAND, args.timeout, args.poll_interval))
                time.sleep(1.0)
            result["openrport"] = theirs
        result["openrport_n"] = n_open
    result["worker_errors"] = [e for w in workers for e in w.errors]
    result["load_after"] = os.getloadavg()[0]
    return result


def report(r: dict[str, Any]) -> str:
    table = ReportTable()
    row = table.row

    def api(a: dict[str, Any]) -> str:
        return "{} / {} / {}".format(fmt(a.get("p50_ms"), "", 1), fmt(a.get("p95_ms"), "", 1),
                                     fmt(a.get("max_ms"), " ms", 1))

    conc = [x for x in r["runs"] if x["concurrent"]]
    seq = [x for x in r["runs"] if not x["concurrent"]]
    row("agents (N)", r["agents"])
    row("processes carrying agents", f"{r['procs']} (~{r['agents'] // r['procs']} agents each)")
    row("machine: CPUs / 1-min load before, after", "{} / {:.2f}, {:.2f}".format(
        r["cpus"], r["load_before"], r.get("load_after", float("nan"))))
    row("command", COMMAND)
    row("agents' data directories", r.get("agents_data", "?"))
    row("agent workers' nice / GET /commands/{jid}/jobs poll interval",
        f"{r['worker_nice']} / {r['poll_s'] * 1000:.0f} ms")
    row("agents connected after", r.get("connect_s"), " s")
    row("API /status p50 / p95 / max, idle", api(r.get("api_idle", {})))
    for x in conc:
        name = x["label"]
        row(f"{name}: POST -> last job final (poll)", x["total_s"], " s", TARGET_CONCURRENT_S, 3)
        row("  POST -> latest finished_at (agents' clock)", x["finished_s"], " s",
            TARGET_CONCURRENT_S, 3)
        row("  POST -> latest started_at (all dispatched)", x["dispatched_s"], " s", digits=3)
        row("  POST -> first finished_at", x["first_finished_s"], " s", digits=3)
        row("  command run time (started -> finished), median", x["run_s"] * 1000, " ms", digits=1)
        row("  POST answered in", x["post_ms"], " ms", digits=1)
        row("  successful jobs / N", f"{x['successful']} / {x['n']}"
            + ("" if x["successful"] == x["n"] else f"  {x['statuses']} {x['errors']}"))
        row("  jobs with stdout", x["stdout_ok"])
        row("  API /status p50 / p95 / max", api(x["api"]))
        row("  API /status p95 (target as agents_connect.py)", x["api"].get("p95_ms"), " ms",
            TARGET_API_MS, 1)
        row("  GET /commands/{jid}/jobs (unfinished) p50 / p95 / max (polls)",
            api(x["poll"]) + f" ({x['polls']})")
        row("  rportd CPU time", x["server_cpu_s"], " s")
        row("  agent workers' CPU time / their commands'", f"{x['workers_cpu_s']:.2f} s / "
            f"{x['commands_cpu_s']:.2f} s")
        if "observer_cpu_s" in x:
            row("  this benchmark's own CPU time (its API pollers)", x["observer_cpu_s"], " s")
    totals = [x["total_s"] for x in conc if x["total_s"] is not None]
    if conc:
        row("concurrent: POST -> last final, each", ", ".join(fmt(t, " s", 3) for t in totals)
            or "-")
        med = statistics.median(totals) if len(totals) == len(conc) else None
        row("concurrent: median", med, " s", TARGET_CONCURRENT_S, 3)
        fin = [x["finished_s"] for x in conc if x["finished_s"] is not None]
        row("concurrent: median (finished_at based)",
            statistics.median(fin) if fin else None, " s", TARGET_CONCURRENT_S, 3)
        row("concurrent: rportd CPU, median",
            statistics.median([x["server_cpu_s"] for x in conc]), " s")
        row("concurrent: successful jobs, each", ", ".join(f"{x['successful']}/{x['n']}"
                                                           for x in conc))
    floors = r.get("floors") or []
    if floors and conc:
        floor = statistics.median(floors)
        fin = [x["finished_s"] for x in conc if x["finished_s"] is not None]
        row("floor: the agents' runners alone, each", ", ".join(fmt(f, " s", 3) for f in floors))
        row("floor: median (the agents' side, no server)", floor, " s", digits=3)
        if fin:
            row("concurrent (finished_at) / floor", f"{statistics.median(fin) / floor:.2f}x")
            row("concurrent (finished_at) - floor: the server's share", statistics.median(fin)
                - floor, " s", TARGET_CONCURRENT_S, 3)
    if r.get("openrport"):
        n_open = r["openrport_n"]
        ours = [x["total_s"] for x in r["ours_at_openrport_n"] if x["total_s"] is not None]
        theirs = [x["total_s"] for x in r["openrport"] if x["total_s"] is not None]
        row(f"at {n_open} agents: ours, POST -> last final, each",
            ", ".join(fmt(t, " s", 3) for t in ours))
        row(f"at {n_open} agents: OpenRPort 0.9.14, each", ", ".join(fmt(t, " s", 3) for t in theirs)
            + f"  ({', '.join(str(x['successful']) for x in r['openrport'])} successful)")
        if ours and theirs:
            row(f"at {n_open} agents: ours / OpenRPort (medians)",
                f"{statistics.median(ours) / statistics.median(theirs):.2f}x")
            row(f"at {n_open} agents: rportd CPU ours / OpenRPort's", "{} / {}".format(
                fmt(statistics.median([x["server_cpu_s"] for x in r["ours_at_openrport_n"]]), " s"),
                fmt(statistics.median([x["server_cpu_s"] for x in r["openrport"]]), " s")))
    elif r.get("openrport_skipped"):
        row("OpenRPort route", "skipped: " + r["openrport_skipped"])
    for x in seq:
        row(f"sequential ({x['n']} agents): POST -> last final", x["total_s"], " s", digits=3)
        row("  per job (mean)", (x["total_s"] / x["n"] * 1000) if x["total_s"] else None,
            " ms", digits=1)
        row("  per job, finished_at based", (x["finished_s"] / x["n"] * 1000)
            if x["finished_s"] else None, " ms", digits=1)
        row("  extrapolated to N", (x["total_s"] / x["n"] * r["agents"]) if x["total_s"] else None,
            " s", digits=1)
        row("  successful jobs", f"{x['successful']} / {x['n']}"
            + ("" if x["successful"] == x["n"] else f"  {x['statuses']} {x['errors']}"))
        row("  API /status p50 / p95 / max", api(x["api"]))
        row("  rportd CPU time", x["server_cpu_s"], " s")
    if r.get("worker_errors"):
        row("worker errors", "; ".join(r["worker_errors"])[:200])
    return table.render()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=200, help="number of agents (default 200)")
    p.add_argument("--procs", type=int, default=4, help="worker processes carrying them (default 4)")
    p.add_argument("--repeat", type=int, default=3, help="concurrent runs (default 3)")
    p.add_argument("--full-sequential", action="store_true",
                   help="run the sequential fan-out on all N agents (default: min(N, 50))")
    p.add_argument("--no-sequential", action="store_true", help="skip the sequential run")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this (default 120 s)")
    p.add_argument("--worker-nice", type=int, default=10, metavar="N",
                   help="run the agent workers at nice N (default 10), so that the agents' side, "
                        "which runs on other machines in a real fleet, does not delay the server")
    p.add_argument("--poll-interval", type=float, default=0.05, metavar="S",
                   help="ask how many jobs are left every S seconds (default 0.05)")
    p.add_argument("--openrport-agents", type=int, default=200, metavar="N",
                   help="also fan out to N agents of OpenRPort (its rportd and one rport process "
                        "each), and to N of ours, where the binaries exist (0: skip)")
    p.add_argument("--agents-data-dir", metavar="DIR", default=default_agents_dir(),
                   help="make the agents' data directories (their scripts and job journals) in a "
                        "new directory under DIR (default: /dev/shm where it is a tmpfs, else "
                        "beside rportd's in the work directory; '' for the work directory). "
                        "A thousand agents creating and deleting their scripts on one disk "
                        "contend for its inode allocator as a thousand machines would not: on "
                        "an ext4 without a journal, each new file scans the inodes freed in the "
                        "last seconds (0.6 ms of kernel CPU per script at 1,000 agents here)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy record rportd during each concurrent run; flame graphs in DIR")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-worker", action="store_true",
                   help="with --profile, also profile the first agent worker process")
    p.add_argument("--profile-format", choices=("flamegraph", "raw", "speedscope"),
                   default="flamegraph", help="py-spy output: flamegraph (.svg, default), raw "
                   "(collapsed stacks, .txt) or speedscope (.json)")
    p.add_argument("--database-url", default="", help="[database] url of rportd (default: "
                   "its embedded SQLite), e.g. sqlite+aiosqlite:///tmp/x.db or postgresql://...")
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    if args.agents < 1 or args.repeat < 1:
        p.error("--agents and --repeat must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="rport-fanout-"))
    cleanup: list[Any] = []
    print(f"rportd + {args.agents} agents in {min(args.procs, args.agents)} process(es); "
          f"work dir {tmp}", flush=True)
    code, result = 0, None
    try:
        result = bench(args, tmp, cleanup)
    except Exception as exc:  # noqa: BLE001 - report, clean up, keep the logs
        print(f"benchmark failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        for fn in cleanup:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"cleanup: {exc!r}", file=sys.stderr)
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
