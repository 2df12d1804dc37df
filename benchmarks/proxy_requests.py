#!/usr/bin/env python3
"""Requests per second and server CPU per request of small GETs through the HTTPS tunnel proxy
(``http_proxy=1``), next to OpenRPort's proxy, nginx in front of our raw tunnel, the raw tunnels
and the target reached directly.

    .venv/bin/python benchmarks/proxy_requests.py [--seconds 5] [--warmup 1] [--concurrency 16]
        [--threads 2] [--body 100] [--client wrk|raw|httpx]
        [--routes direct,tunnel,proxy,nginx,openrport-tunnel,openrport-proxy]
        [--repeat 1] [--json FILE] [--keep]

Everything runs on 127.0.0.1, in a temporary directory removed afterwards (``--keep`` keeps it):

* a **target** in its own process (this script with ``--target-server``): an asyncio HTTP/1.1
  server that answers every request with a ``--body``-byte body and keeps connections alive; a
  second one with TLS (certificate from a test CA, trustme) for the ``direct-tls`` route;
* a real ``rportd`` (``python -m rport.core.cli``, log_level warning) with
  ``[server] tunnel_proxy_cert_file/key_file`` from the same test CA, and a real agent
  (``python -m rport.agent.cli``); two tunnels to the target through the API:
  ``PUT /api/v1/clients/<id>/tunnels?remote=<port>&http_proxy=1&scheme=http&skip-idle-timeout=1``
  and a plain one (``acl=127.0.0.0/8``);
* the **routes**, each loaded in turn (``--repeat N``: N rounds, interleaved; the best run of
  each route by requests/s is kept):

  - ``direct``: plain HTTP to the target's port; ``direct-tls``: HTTPS to the TLS target;
  - ``tunnel``: plain HTTP through our raw tunnel (rportd and the agent);
  - ``proxy``: HTTPS through our proxy (``https://localhost:<lport>``);
  - ``nginx``: Debian's nginx (one worker, TLS with the same certificate, HTTP/1.1 keep-alive
    upstream) in front of our raw tunnel: what a C proxy costs on the same tunnel. Skipped,
    with a note, when nginx is not installed;
  - ``openrport-tunnel``, ``openrport-proxy``: the real OpenRPort 0.9.14 (its ``rportd`` and
    ``rport``, the reference binaries the project compares itself with, found by
    ``tunnel_throughput.openrport_bin``: ``$OPENRPORT_BIN`` or ``shared/peers/openrport/bin``
    next to the repository) with the same certificate, its raw tunnel and its HTTPS proxy
    (``http_proxy=1``) to the same target. Skipped, with a note, when the binaries are absent;

* the **load**: ``--client wrk`` (the default when wrk is installed): ``wrk -t<threads>
  -c<concurrency> -d<seconds>s --latency`` after a ``--warmup`` run; ``raw``: ``--threads``
  client processes of a minimal asyncio HTTP/1.1 client (this script with ``--client-worker``),
  together ``--concurrency`` keep-alive connections; ``httpx``: the same with
  ``httpx.AsyncClient``.

It prints per route: requests/s, latency p50/p99 (ms), errors, and the CPU time (user + system,
psutil, over the measured seconds only) of the route's server processes per request: rportd and
the agent for ours (nginx's worker added for ``nginx``), OpenRPort's rportd and rport for
theirs. Then the ratios of our proxy to OpenRPort's proxy (requests/s, higher is better; CPU per
request, lower is better) and to nginx in front of our tunnel, with the issue's targets (at
least 1.0x OpenRPort's proxy; aim 0.5x nginx). The load generator shares the machine's CPUs
with the servers: the load average and CPU count are printed; ratios within one run are what
count.

A benchmark, not a test: it asserts nothing. Every wait is bounded, and every process it starts
is killed (by process group) on every exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# Shared with the tunnel benchmark (same folder: run as `python benchmarks/proxy_requests.py`).
from tunnel_throughput import (  # noqa: E402
    HOST,
    OpenRportPair,
    Procs,
    RportPair,
    free_port,
    wait_until,
)

CLIENT_ID = "proxy-bench"


def _fast_loop() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


# =================================================================================================
# The target (a separate process)
# =================================================================================================

def target_server_main(body_size: int, cert: str | None, key: str | None) -> int:
    _fast_loop()
    body = b"x" * body_size
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
    ctx = None
    if cert and key:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, 0, ssl=ctx, backlog=1024)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        loop = asyncio.get_running_loop()
        # the parent went away (stdin closed): exit
        await loop.run_in_executor(None, sys.stdin.read)
        os._exit(0)

    asyncio.run(main())
    return 0


# =================================================================================================
# The load (separate processes)
# =================================================================================================

async def _raw_connection(url: str, ctx: ssl.SSLContext | None, stop_at: float, count_from: float,
                          latencies: list[float], errors: list[str]) -> None:
    scheme, _, rest = url.partition("://")
    hostport = rest.split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    request = f"GET / HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: proxy-bench\r\n\r\n".encode()
    reader = writer = None
    while time.monotonic() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(
                    HOST, int(port), ssl=ctx, server_hostname=host if ctx else None)
            assert reader is not None
            started = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            lines = head.split(b"\r\n")
            if not lines[0].startswith(b"HTTP/1.1 200"):
                errors.append(lines[0].decode(errors="replace"))
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            done = time.monotonic()
            if started >= count_from:
                latencies.append(done - started)
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError) as exc:
            errors.append(f"{exc.__class__.__name__}: {exc}")
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _httpx_connection(url: str, ctx: ssl.SSLContext | None, stop_at: float, count_from: float,
                            latencies: list[float], errors: list[str]) -> None:
    import httpx
    async with httpx.AsyncClient(verify=ctx if ctx else False, trust_env=False, timeout=30,
                                 limits=httpx.Limits(max_connections=1)) as client:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                resp = await client.get(url)
                if resp.status_code != 200:
                    errors.append(str(resp.status_code))
            except httpx.HTTPError as exc:
                errors.append(f"{exc.__class__.__name__}: {exc}")
                await asyncio.sleep(0.01)
                continue
            if started >= count_from:
                latencies.append(time.monotonic() - started)


def client_worker_main(url: str, connections: int, warmup: float, seconds: float, ca: str | None,
                       kind: str, start_at: float) -> int:
    _fast_loop()
    ctx = ssl.create_default_context(cafile=ca) if url.startswith("https") and ca else None
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> None:
        # every worker starts at the same wall-clock instant
        await asyncio.sleep(max(0.0, start_at - time.time()))
        now = time.monotonic()
        count_from, stop_at = now + warmup, now + warmup + seconds
        run = _raw_connection if kind == "raw" else _httpx_connection
        await asyncio.gather(*(run(url, ctx, stop_at, count_from, latencies, errors)
                               for _ in range(connections)))

    asyncio.run(main())
    # os.write until all is out: an unbuffered stdout (PYTHONUNBUFFERED) may write a long line
    # only in part to a full pipe
    data = memoryview(json.dumps({"latencies": latencies, "errors": errors[:20],
                                  "error_count": len(errors)}).encode() + b"\n")
    os.set_blocking(1, True)
    while data:
        data = data[os.write(1, data):]
    return 0


# =================================================================================================
# Processes and setup
# =================================================================================================

def start_target(procs: Procs, body: int, cert: Path | None = None, key: Path | None = None) -> int:
    args = [sys.executable, __file__, "--target-server", "--body", str(body)]
    if cert and key:
        args += ["--cert", str(cert), "--key", str(key)]
    proc = procs.start("target", args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise RuntimeError(f"the target did not start: {line!r}")
    return int(line.split()[1])


def http_ok(url: str, ca: Path | None) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


# =================================================================================================
# nginx in front of our raw tunnel
# =================================================================================================

def start_nginx(procs: Procs, tmp: Path, upstream_port: int, cert: Path, key: Path) -> tuple[Any, str]:
    """Debian's nginx, one worker, TLS with our certificate, in front of ``upstream_port`` with
    keep-alive upstream connections (as our proxy keeps one per client connection). Returns the
    master process and the URL. Raises RuntimeError when nginx is not installed."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian package nginx-light or nginx)")
    d = tmp / "nginx"
    d.mkdir()
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream tunnel {{ server {HOST}:{upstream_port}; keepalive 32; }}
    server {{
        listen {HOST}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://tunnel;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffering off;
        }}
    }}
}}
""")
    proc = procs.start("nginx", [binary, "-c", str(conf), "-p", str(d), "-e", str(d / "error.log")],
                       d / "nginx.out")
    return proc, f"https://localhost:{port}/"


def nginx_pids(master: Any) -> list[int]:
    import psutil
    try:
        return [master.pid] + [c.pid for c in psutil.Process(master.pid).children()]
    except psutil.Error:
        return [master.pid]


# =================================================================================================
# Measuring
# =================================================================================================

def cpu_seconds(pids: list[int]) -> float:
    import psutil
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _ms(text: str) -> float:
    """wrk's latency (``812.00us``, ``1.23ms``, ``2.00s``) in ms."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    return float(text)


def run_wrk(url: str, args: argparse.Namespace, seconds: float, cpu_pids: list[int]) -> dict[str, Any]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.concurrency}", f"-d{seconds:g}s", "--latency",
           "--timeout", "10s", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.2)  # wrk's connections are up: the CPU window is the requests' alone
    cpu_before = cpu_seconds(cpu_pids)
    started = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        Procs.stop(Procs(), proc)
        raise RuntimeError("wrk did not finish") from None
    cpu_used = cpu_seconds(cpu_pids) - cpu_before
    window = time.monotonic() - started
    text = out.decode(errors="replace")
    result: dict[str, Any] = {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"),
                              "errors": 0, "error_samples": [], "requests": 0}
    for line in text.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(words[1])
        elif len(words) == 2 and words[0] in ("50%", "99%"):
            result[f"p{words[0][:-1]}_ms"] = _ms(words[1])
        elif "requests in" in line:
            result["requests"] = int(words[0])
        elif line.strip().startswith("Socket errors:"):
            counts = [int(w.rstrip(",")) for w in words if w.rstrip(",").isdigit()]
            result["errors"] += sum(counts)
            result["error_samples"].append(line.strip())
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(words[-1])
            result["error_samples"].append(line.strip())
    if not result["requests"]:
        raise RuntimeError(f"wrk printed no result:\n{text}")
    # CPU over the part of the run where requests were counted, per request: the window
    # includes wrk's own ramp-down, so the figure leans a little high (the same for every route).
    per_second = result["rps"]
    result["cpu_ms_per_request"] = (cpu_used * 1000 / (per_second * window)
                                    if cpu_pids and per_second else None)
    return result


def run_workers(url: str, args: argparse.Namespace, ca: Path, cpu_pids: list[int]) -> dict[str, Any]:
    procs_n = max(1, min(args.threads, args.concurrency))
    per_proc = [args.concurrency // procs_n + (1 if i < args.concurrency % procs_n else 0)
                for i in range(procs_n)]
    start_at = time.time() + 1.0
    workers = []
    for n in per_proc:
        if n == 0:
            continue
        workers.append(subprocess.Popen(
            [sys.executable, __file__, "--client-worker", "--url", url, "--connections", str(n),
             "--warmup", str(args.warmup), "--seconds", str(args.seconds), "--ca", str(ca),
             "--client", args.client, "--start-at", repr(start_at)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True))
    # CPU of the route's processes over the measured window only
    time.sleep(max(0.0, start_at - time.time()) + args.warmup)
    cpu_before = cpu_seconds(cpu_pids)
    time.sleep(args.seconds)
    cpu_after = cpu_seconds(cpu_pids)
    latencies: list[float] = []
    errors: list[str] = []
    error_count = 0
    for proc in workers:
        try:
            out, _ = proc.communicate(timeout=args.seconds + args.warmup + 60)
        except subprocess.TimeoutExpired:
            Procs.stop(Procs(), proc)
            raise RuntimeError("a client worker did not finish") from None
        try:
            result = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"a client worker printed no result: {out[-2000:]!r}") from None
        latencies += result["latencies"]
        errors += result["errors"]
        error_count += result["error_count"]
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    count = len(latencies)
    return {"requests": count, "rps": count / args.seconds, "p50_ms": pct(50), "p99_ms": pct(99),
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
            "errors": error_count, "error_samples": errors[:3],
            "cpu_ms_per_request": (cpu_after - cpu_before) * 1000 / count if cpu_pids and count else None}


def measure(url: str, args: argparse.Namespace, ca: Path, cpu_pids: list[int]) -> dict[str, Any]:
    if args.client == "wrk":
        if args.warmup:
            run_wrk(url, args, args.warmup, [])
        return run_wrk(url, args, args.seconds, cpu_pids)
    return run_workers(url, args, ca, cpu_pids)


# =================================================================================================
# Main
# =================================================================================================

ROUTES = ("direct", "direct-tls", "tunnel", "proxy", "nginx", "openrport-tunnel", "openrport-proxy")
DEFAULT_ROUTES = "direct,tunnel,proxy,nginx,openrport-tunnel,openrport-proxy"
TARGET_VS_OPENRPORT = 1.0  # our proxy's requests/s, x OpenRPort's proxy (higher is better)
AIM_VS_NGINX = 0.5  # x nginx in front of our raw tunnel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", "--procs", type=int, default=2,
                        help="wrk threads, or client processes for --client raw/httpx (default 2)")
    parser.add_argument("--body", type=int, default=100)
    parser.add_argument("--client", choices=("wrk", "raw", "httpx"),
                        default="wrk" if shutil.which("wrk") else "raw")
    parser.add_argument("--routes", default=DEFAULT_ROUTES,
                        help=f"comma-separated subset of {','.join(ROUTES)}")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--keep", action="store_true")
    # internal modes
    parser.add_argument("--target-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--client-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.target_server:
        return target_server_main(args.body, args.cert, args.key)
    if args.client_worker:
        return client_worker_main(args.url, args.connections, args.warmup, args.seconds, args.ca,
                                  args.client, args.start_at)

    import psutil
    import trustme

    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = set(routes) - set(ROUTES)
    if unknown:
        parser.error(f"unknown routes: {', '.join(sorted(unknown))}")
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    procs = Procs()
    notes: list[str] = []
    try:
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", HOST)
        ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        cert_file.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_file))

        target = start_target(procs, args.body)
        urls: dict[str, str] = {"direct": f"http://{HOST}:{target}/"}
        cpu: dict[str, list[int]] = {"direct": [], "direct-tls": []}
        labels: dict[str, str] = {"direct": "-", "direct-tls": "-"}
        if "direct-tls" in routes:
            tls_target = start_target(procs, args.body, cert_file, key_file)
            urls["direct-tls"] = f"https://localhost:{tls_target}/"
        if {"tunnel", "proxy", "nginx"} & set(routes):
            rport = RportPair(procs, tmp, client_id=CLIENT_ID, key_seed="proxy-requests-bench",
                              server_lines=(f'tunnel_proxy_cert_file = "{cert_file}"',
                                            f'tunnel_proxy_key_file = "{key_file}"'))
            pids = [rport.server.pid, rport.agent.pid]
            cpu["tunnel"] = cpu["proxy"] = pids
            labels["tunnel"] = labels["proxy"] = "rportd+agent"
            proxied = rport.tunnel(f"remote={target}&http_proxy=1&scheme=http&skip-idle-timeout=1")
            urls["proxy"] = f"https://localhost:{proxied['lport']}/"
            plain = rport.tunnel(f"remote={target}&acl=127.0.0.0/8&skip-idle-timeout=1")
            urls["tunnel"] = f"http://{HOST}:{plain['lport']}/"
            if "nginx" in routes:
                try:
                    master, urls["nginx"] = start_nginx(procs, tmp, int(plain["lport"]), cert_file, key_file)
                    wait_until("nginx to answer", lambda: http_ok(urls["nginx"], ca_file))
                    cpu["nginx"] = nginx_pids(master) + pids
                    labels["nginx"] = "nginx+rportd+agent"
                except (RuntimeError, OSError) as exc:
                    notes.append(f"route nginx skipped: {exc}")
                    routes.remove("nginx")
        if {"openrport-tunnel", "openrport-proxy"} & set(routes):
            try:
                theirs = OpenRportPair(procs, tmp, server_lines=(
                    f'tunnel_proxy_cert_file = "{cert_file}"', f'tunnel_proxy_key_file = "{key_file}"'))
                their_pids = [theirs.server.pid, theirs.agent.pid]
                if "openrport-proxy" in routes:
                    t = theirs.tunnel(f"remote={HOST}:{target}&scheme=http&http_proxy=1&skip-idle-timeout=1")
                    urls["openrport-proxy"] = f"https://localhost:{t['lport']}/"
                    cpu["openrport-proxy"] = their_pids
                    labels["openrport-proxy"] = "their rportd+rport"
                if "openrport-tunnel" in routes:
                    t = theirs.tunnel(f"remote={HOST}:{target}&acl=127.0.0.0/8&skip-idle-timeout=1")
                    urls["openrport-tunnel"] = f"http://{HOST}:{t['lport']}/"
                    cpu["openrport-tunnel"] = their_pids
                    labels["openrport-tunnel"] = "their rportd+rport"
            except (RuntimeError, OSError) as exc:
                notes.append(f"routes openrport-* skipped: {exc}")
                routes = [r for r in routes if not r.startswith("openrport-")]
        for route in routes:
            wait_until(f"{route} to answer", lambda route=route: http_ok(urls[route], ca_file))

        print(f"machine: {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in psutil.getloadavg())}, Python {sys.version.split()[0]}")
        load = (f"wrk -t{args.threads} -c{args.concurrency}" if args.client == "wrk" else
                f"{args.concurrency} keep-alive connections in {args.threads} {args.client} client process(es)")
        print(f"load: {load}, GET / with a {args.body}-byte body, {args.warmup:g} s warm-up + "
              f"{args.seconds:g} s measured, best of {args.repeat}")
        for note in notes:
            print(f"note: {note}")
        results: dict[str, dict[str, Any]] = {}
        for rep in range(args.repeat):
            for route in routes:
                print(f"[{rep + 1}/{args.repeat}] {route}...", file=sys.stderr)
                result = measure(urls[route], args, ca_file, cpu.get(route, []))
                if route not in results or result["rps"] > results[route]["rps"]:
                    results[route] = result
        report(routes, results, labels)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}")
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        return 0
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(routes: list[str], results: dict[str, dict[str, Any]], labels: dict[str, str]) -> None:
    print()
    print(f"{'route':<17} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} "
          f"{'CPU ms/req':>11}  server processes")
    for route in routes:
        r = results[route]
        cpu_text = f"{r['cpu_ms_per_request']:.3f}" if r["cpu_ms_per_request"] is not None else "-"
        print(f"{route:<17} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['errors']:>7} "
              f"{cpu_text:>11}  {labels.get(route, '-')}")
        for sample in r["error_samples"][:3]:
            print(f"                  error: {sample}")

    def ratio(ours: str, base: str) -> str:
        o, b = results[ours], results[base]
        text = f"req/s x{o['rps'] / b['rps']:.2f}"
        if o["cpu_ms_per_request"] and b["cpu_ms_per_request"]:
            text += f", CPU per request x{o['cpu_ms_per_request'] / b['cpu_ms_per_request']:.2f}"
        return text + f", p50 latency x{o['p50_ms'] / b['p50_ms']:.2f}"

    print()
    pairs = [("proxy", "openrport-proxy"), ("tunnel", "openrport-tunnel"), ("proxy", "nginx"),
             ("nginx", "tunnel"), ("proxy", "tunnel"), ("tunnel", "direct")]
    for ours, base in pairs:
        if ours in results and base in results:
            print(f"{ours}/{base}: {ratio(ours, base)}")
    if "proxy" in results and ("openrport-proxy" in results or "nginx" in results):
        print("\nTargets of the issue (requests/s):")
        if "openrport-proxy" in results:
            x = results["proxy"]["rps"] / results["openrport-proxy"]["rps"]
            print(f"  proxy >= {TARGET_VS_OPENRPORT}x OpenRPort's proxy: {x:.2f}x  "
                  f"{'MET' if x >= TARGET_VS_OPENRPORT else 'NOT MET'}")
        if "nginx" in results:
            x = results["proxy"]["rps"] / results["nginx"]["rps"]
            print(f"  aim: proxy >= {AIM_VS_NGINX}x nginx in front of our tunnel: {x:.2f}x  "
                  f"{'reached' if x >= AIM_VS_NGINX else 'not reached'}")


if __name__ == "__main__":
    sys.exit(main())
