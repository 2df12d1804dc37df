#!/usr/bin/env python3
"""Requests per second and latency of small GETs through the HTTPS tunnel proxy (``http_proxy=1``),
next to the same target reached directly.

    .venv/bin/python benchmarks/proxy_requests.py [--seconds 5] [--warmup 1] [--concurrency 16]
        [--procs 2] [--body 100] [--client raw|httpx] [--routes direct,direct-tls,tunnel,proxy]
        [--repeat 1] [--json FILE] [--keep]

Everything runs on 127.0.0.1, in a temporary directory removed afterwards (``--keep`` keeps it):

* a **target** in its own process (this script with ``--target-server``): an asyncio HTTP/1.1
  server that answers every request with a ``--body``-byte body and keeps connections alive; a
  second one with TLS (certificate from a test CA, trustme) for the ``direct-tls`` baseline;
* a real ``rportd`` (``python -m rport.core.cli``, log_level warning) with
  ``[server] tunnel_proxy_cert_file/key_file`` from the same test CA, and a real agent
  (``python -m rport.agent.cli``); two tunnels to the target through the API:
  ``PUT /api/v1/clients/<id>/tunnels?remote=<port>&http_proxy=1&scheme=http&skip-idle-timeout=1``
  and, to tell the tunnel's share from the proxy's, a plain one (``acl=127.0.0.0/8``);
* four **routes**, each loaded in turn:

  - ``direct``: plain HTTP to the target's port;
  - ``direct-tls``: HTTPS to the TLS target (what TLS alone costs: the baseline for a TLS
    reverse proxy in front of a plain HTTP target, as ours is);
  - ``tunnel``: plain HTTP through the raw tunnel (rportd and the agent, no proxy);
  - ``proxy``: HTTPS through our proxy (``https://localhost:<lport>``, verified with the CA);

* the **load**: ``--procs`` client processes (this script with ``--client-worker``), together
  ``--concurrency`` connections, each sending GET / one after the other on its keep-alive
  connection for ``--warmup`` + ``--seconds`` seconds; only the requests completed in the last
  ``--seconds`` count. ``--client raw`` (default) is a minimal asyncio HTTP/1.1 client (little
  client overhead, so the servers are what is measured); ``--client httpx`` uses
  ``httpx.AsyncClient`` (one per connection).

It prints per route: requests/s, latency p50/p95/p99 (ms), errors, and for the tunnel routes the
CPU time rportd and the agent used per request; then the ratios of ``proxy`` (and ``tunnel``) to
``direct`` and to ``direct-tls``: requests/s (higher is better) and p50/p95 latency (lower is
better). With ``--repeat N`` every route is measured N times, interleaved, and the best run (by
requests/s) is kept. The clients share the machine's CPUs with the servers: the load average and
CPU count are printed, and on a small machine the figures say as much about the CPU split as
about the proxy.

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
from tunnel_throughput import HOST, Procs, RportPair, wait_until  # noqa: E402

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


def measure(url: str, args: argparse.Namespace, ca: Path, cpu_pids: list[int]) -> dict[str, Any]:
    per_proc = [args.concurrency // args.procs + (1 if i < args.concurrency % args.procs else 0)
                for i in range(args.procs)]
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
            Procs.stop(proc)
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
    return {"requests": count, "rps": count / args.seconds, "p50_ms": pct(50), "p95_ms": pct(95),
            "p99_ms": pct(99), "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
            "errors": error_count, "error_samples": errors[:3],
            "cpu_ms_per_request": (cpu_after - cpu_before) * 1000 / count if cpu_pids and count else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--body", type=int, default=100)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--routes", default="direct,direct-tls,tunnel,proxy")
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

    import trustme

    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = set(routes) - {"direct", "direct-tls", "tunnel", "proxy"}
    if unknown:
        parser.error(f"unknown routes: {', '.join(sorted(unknown))}")
    args.procs = max(1, min(args.procs, args.concurrency))
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    procs = Procs()
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
        if "direct-tls" in routes:
            tls_target = start_target(procs, args.body, cert_file, key_file)
            urls["direct-tls"] = f"https://localhost:{tls_target}/"
        rport = None
        if {"tunnel", "proxy"} & set(routes):
            rport = RportPair(procs, tmp, client_id=CLIENT_ID, key_seed="proxy-requests-bench",
                              server_lines=(f'tunnel_proxy_cert_file = "{cert_file}"',
                                            f'tunnel_proxy_key_file = "{key_file}"'))
            pids = [rport.server.pid, rport.agent.pid]
            cpu["tunnel"] = cpu["proxy"] = pids
            proxied = rport.tunnel(f"remote={target}&http_proxy=1&scheme=http&skip-idle-timeout=1")
            urls["proxy"] = f"https://localhost:{proxied['lport']}/"
            plain = rport.tunnel(f"remote={target}&acl=127.0.0.0/8&skip-idle-timeout=1")
            urls["tunnel"] = f"http://{HOST}:{plain['lport']}/"
        for route in routes:
            wait_until(f"{route} to answer", lambda route=route: http_ok(urls[route], ca_file))

        import psutil
        print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}, "
              f"Python {sys.version.split()[0]}")
        print(f"load: {args.concurrency} keep-alive connections in {args.procs} client process(es) "
              f"({args.client} client), GET / with a {args.body}-byte body, {args.warmup:g} s warm-up + "
              f"{args.seconds:g} s measured, best of {args.repeat}")
        results: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for route in routes:
                result = measure(urls[route], args, ca_file, cpu.get(route, []))
                if route not in results or result["rps"] > results[route]["rps"]:
                    results[route] = result

        print()
        print(f"{'route':<11} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} "
              f"{'rportd+agent CPU ms/req':>24}")
        for route in routes:
            r = results[route]
            cpu_text = f"{r['cpu_ms_per_request']:.3f}" if r["cpu_ms_per_request"] is not None else "-"
            print(f"{route:<11} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                  f"{r['errors']:>7} {cpu_text:>24}")
            for sample in r["error_samples"]:
                print(f"            error: {sample}")
        print()
        for base in ("direct", "direct-tls"):
            if base not in results:
                continue
            for ours in ("proxy", "tunnel"):
                if ours not in results:
                    continue
                b, o = results[base], results[ours]
                print(f"{ours}/{base}: req/s x{o['rps'] / b['rps']:.2f}, "
                      f"p50 latency x{o['p50_ms'] / b['p50_ms']:.2f}, p95 latency x{o['p95_ms'] / b['p95_ms']:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        return 0
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
