#!/usr/bin/env python3
"""What a 10,000-client fleet costs the dashboard's clients table, next to a 250-client one
measured in the same run.

    .venv/bin/python benchmarks/dashboard_clients.py [--clients 10000] [--baseline 250] [--repeat 15]

For each fleet size, a fresh data directory gets that many (disconnected) clients in rportd's
store, a real ``rportd`` starts on it, and the script times:

- the API requests the clients table makes (one page of 50 with the table's fields, sorted by
  name; a tag filter; a search; descending order; the last page) and ``GET /status`` as the
  floor: median and worst of ``--repeat`` runs, server-side work included;
- with Debian's chromium (Playwright; skipped where absent), what a user waits for: from a
  click or a keystroke to the new table on screen, for the same five views.

A benchmark, not a test: it prints the figures and the ratios of the big fleet to the baseline
and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import tomlkit

from rport.core.clients import Client
from rport.core.store import Store

HOST = "127.0.0.1"
_API_RE = re.compile(r"API listening on http://(\S+):(\d+)")
FIELDS = "id,name,os_full_name,os,hostname,address,tags,labels,groups,connection_state,disconnected_at"
SEARCH = "filter[id|name|hostname|address|os_full_name]"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def client(i: int) -> Client:
    return Client(
        id=f"host-{i:05d}", name=f"Host {i:05d}", version="0.1.0", auth_id="user1",
        address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
        facts={"os": "Linux", "os_full_name": "Debian GNU/Linux 12", "hostname": f"host-{i:05d}"},
        tags=[f"rack-{i % 20:02d}", "Linux"], labels={"dc": f"dc-{i % 4}"})


async def seed(db: Path, count: int) -> None:
    store = Store(default_path=db)
    await store.open()
    now = time.time()
    for i in range(count):
        c = client(i)
        await store.save_client(c.id, c.to_record(), now)
    await store.close()


class Rportd:
    def __init__(self, workdir: Path, count: int) -> None:
        data = workdir / "data"
        data.mkdir(parents=True)
        asyncio.run(seed(data / "rportd.db", count))
        conf = workdir / "rportd.conf"
        conf.write_text(tomlkit.dumps({
            "server": {"address": f"{HOST}:0", "auth": "bench:secret", "data_dir": str(data)},
            "api": {"address": f"{HOST}:0", "auth": "admin:bench"},
            "logging": {"log_level": "info"}}))
        self.log = workdir / "rportd.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "rport.core.cli", "-c", str(conf)],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (m := _API_RE.search(self.log.read_text(errors="replace"))):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rportd did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.base = f"http://{m.group(1)}:{m.group(2)}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def api_queries(count: int) -> dict[str, dict[str, Any]]:
    page = {"fields[clients]": FIELDS, "page[limit]": 50}
    return {
        "GET /status (floor)": {},
        "first page, by name": {**page, "sort": "name", "page[offset]": 0},
        "tag filter": {**page, "sort": "name", "filter[tags]": "rack-07"},
        "search": {**page, "sort": "name", SEARCH: "*host-0999*"},
        "by name, descending": {**page, "sort": "-name"},
        "last page": {**page, "sort": "name", "page[offset]": (count // 50) * 50},
    }


def time_api(base: str, count: int, repeat: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=base + "/api/v1", auth=("admin", "bench"), timeout=60) as api:
        for name, params in api_queries(count).items():
            path = "/status" if "status" in name else "/clients"
            api.get(path, params=params).raise_for_status()  # warm up
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                api.get(path, params=params).raise_for_status()
                times.append(time.perf_counter() - t)
            out[name] = times
    return out


def time_browser(base: str, count: int, repeat: int) -> dict[str, list[float]] | None:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    out: dict[str, list[float]] = {}
    total = count
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(base + "/")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill("bench")
        page.get_by_role("button", name="Log in").click()
        status = page.locator(".pager-status")

        def timed(name: str, action: Callable[[], Any], pattern: str) -> None:
            t = time.perf_counter()
            action()
            expect(status).to_have_text(re.compile(pattern), timeout=60_000)
            out.setdefault(name, []).append(time.perf_counter() - t)

        first = f"^Showing 1–{min(50, total)} of {total} "
        expect(status).to_have_text(re.compile(first), timeout=60_000)
        pages = -(-total // 50)
        tagged = (total - 7 + 19) // 20  # clients i with i % 20 == 7
        for _ in range(repeat):
            timed("reload the clients page", page.reload, first)
            timed("next page", lambda: page.get_by_role("button", name="Next").click(), f"^Showing 51–100 of {total} ")
            timed("last page", lambda: page.get_by_role("button", name="Last").click(),
                  f"^Showing {(pages - 1) * 50 + 1}–{total} of {total} ")
            timed("tag filter", lambda: page.get_by_label("Tag").select_option("rack-07"),
                  f"^Showing 1–{min(50, tagged)} of {tagged} ")
            timed("clear the filter", lambda: page.get_by_label("Tag").select_option(""), first)
            timed("search (typed; 300 ms debounce)", lambda: page.get_by_label("Search").fill("host-0001"),
                  "^Showing 1–10 of 10 ")
            page.get_by_label("Search").fill("")
            expect(status).to_have_text(re.compile(first), timeout=60_000)
        browser.close()
    return out


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--browser-repeat", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    results: dict[int, dict[str, Any]] = {}
    load = os.getloadavg()[0]
    try:
        for count in (args.baseline, args.clients):
            server = Rportd(tmp / f"n{count}", count)
            try:
                results[count] = {"api": time_api(server.base, count, args.repeat)}
                if not args.no_browser:
                    results[count]["browser"] = time_browser(server.base, count, args.browser_repeat)
            finally:
                server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    small, big = results[args.baseline], results[args.clients]
    print(f"machine: {os.cpu_count()} CPUs, 1-min load {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"\nAPI requests of the clients table (median / worst of {args.repeat}, ms)")
    head = f"{'request':34} {args.baseline:>7} clients {args.clients:>7} clients   ratio"
    print(head + "\n" + "-" * len(head))
    for name, times in big["api"].items():
        base = small["api"][name]
        print(f"{name:34} {median_ms(base):7.1f} / {max(base) * 1000:5.1f} "
              f"{median_ms(times):7.1f} / {max(times) * 1000:5.1f}  {median_ms(times) / median_ms(base):6.1f}x")
    if big.get("browser") and small.get("browser"):
        print(f"\nIn chromium, from the action to the new table on screen (median of {args.browser_repeat}, ms)")
        print(head + "\n" + "-" * len(head))
        for name, times in big["browser"].items():
            base = small["browser"][name]
            print(f"{name:34} {median_ms(base):15.0f} {median_ms(times):15.0f}  "
                  f"{median_ms(times) / median_ms(base):6.1f}x")
    elif not args.no_browser:
        print("\n(no chromium or playwright: browser timings skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
