#!/usr/bin/env python3
"""What keeping API users in the database and checking per-function permissions costs a request,
next to users from an auth file, measured in the same run.

    .venv/bin/python benchmarks/api_users.py [--requests 400]

Two real ``rportd`` start on 127.0.0.1: one with ``[api] auth_file`` (the baseline: users in
memory, no group permissions) and one with ``auth_user_table`` and ``auth_group_details_table``
(every request reads the user, and a non-administrator's route with a permission reads the
groups' permissions, from the embedded SQLite). For each, ``--requests`` sequential calls of
``GET /commands`` (a route that needs ``commands``) are timed with a login token (Bearer) and
with HTTP Basic (a bcrypt password, whose check is remembered after the first), as an
administrator and as a user whose group grants ``commands``.

A benchmark, not a test: it prints the medians and their ratio to the baseline and asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import httpx
import tomlkit

HOST = "127.0.0.1"
_API_RE = re.compile(r"API listening on http://(\S+):(\d+)")
USERS = {"admin": ("admin-password", ["Administrators"]), "bob": ("bob-password", ["Ops"])}


def users_file(path: Path) -> Path:
    path.write_text(json.dumps([
        {"username": name, "groups": groups,
         "password": "$2y$" + bcrypt.hashpw(pw.encode(), bcrypt.gensalt(10)).decode()[4:]}
        for name, (pw, groups) in USERS.items()]))
    return path


class Rportd:
    def __init__(self, workdir: Path, api: dict, plugins: dict) -> None:
        data = workdir / "data"
        data.mkdir(parents=True)
        conf = workdir / "rportd.conf"
        conf.write_text(tomlkit.dumps({
            "server": {"address": f"{HOST}:0", "auth": "bench:secret", "data_dir": str(data)},
            "api": {"address": f"{HOST}:0", "jwt_secret": "bench-" * 8, "user_login_wait": "0s",
                    **api},
            "plugins": plugins, "logging": {"log_level": "info"}}))
        self.log = workdir / "rportd.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "rport.core.cli", "-c", str(conf)],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (m := _API_RE.search(self.log.read_text(errors="replace"))):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rportd did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.base = f"http://{m.group(1)}:{m.group(2)}/api/v1"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def timed(client: httpx.Client, requests: int) -> float:
    """Median seconds of GET /commands."""
    client.get("/commands").raise_for_status()  # warm up (and the bcrypt check, remembered)
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        client.get("/commands").raise_for_status()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(base: str, requests: int) -> dict[str, float]:
    out = {}
    for name, (password, _) in USERS.items():
        with httpx.Client(base_url=base, timeout=30) as anon:
            token = anon.post("/login", json={"username": name, "password": password}).json()["data"]["token"]
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as api:
            out[f"{name}, Bearer"] = timed(api, requests)
        with httpx.Client(base_url=base, timeout=30, auth=(name, password)) as api:
            out[f"{name}, Basic (bcrypt)"] = timed(api, requests)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="users-bench-"))
    load = os.getloadavg()[0]
    results = {}
    try:
        seed = users_file(tmp / "api-auth.json")
        setups = {
            "auth_file": ({"auth_file": str(seed)}, {}),
            "database": ({"auth_user_table": "users", "auth_group_table": "groups",
                          "auth_group_details_table": "group_details"},
                         {"users": {"import_auth_file": str(seed)}}),
        }
        for label, (api, plugins) in setups.items():
            server = Rportd(tmp / label, api, plugins)
            try:
                if label == "database":
                    with httpx.Client(base_url=server.base, auth=("admin", USERS["admin"][0])) as admin:
                        admin.put("/user-groups/Ops", json={"permissions": {"commands": True}}).raise_for_status()
                results[label] = measure(server.base, args.requests)
            finally:
                server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPUs, 1-min load {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"\nGET /api/v1/commands, median of {args.requests} sequential requests (ms)")
    print(f"{'caller':<24}{'auth_file':>12}{'database':>12}{'ratio':>8}")
    for key in results["auth_file"]:
        a, d = results["auth_file"][key] * 1000, results["database"][key] * 1000
        print(f"{key:<24}{a:>12.2f}{d:>12.2f}{d / a:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
