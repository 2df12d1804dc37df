"""OpenRPort's route in the benchmarks: its reference ``rportd`` and N of its ``rport`` clients
(one process each) on loopback, where the binaries are (``$OPENRPORT_BIN`` or
``shared/peers/openrport/bin`` near the repository; never shipped). Used by agents_connect.py
and command_fanout.py to measure it in the same run as ours.

Facts from ``shared/peers/openrport/README.md``: the client reads the server's address from its
config file only, ``updates_interval = "0s"`` keeps it from running ``sudo apt-get update``, and
each client waits a random 0-10 s before it registers.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from light_api import LightApi

HOST = "127.0.0.1"
API_USER, API_PASSWORD = "admin", "bench"
AGENT_ID, AGENT_PASSWORD = "bench", "secret"
FINAL = ("successful", "failed", "unknown", "cancelled", "skipped")


def openrport_bin() -> Path | None:
    """The directory of OpenRPort's ``rportd`` and ``rport``, or None."""
    here = Path(__file__).resolve().parent.parent
    candidates = [Path(os.environ["OPENRPORT_BIN"])] if os.environ.get("OPENRPORT_BIN") else []
    candidates += [here.parent / "shared/peers/openrport/bin",
                   here.parent.parent / "shared/peers/openrport/bin"]
    for d in candidates:
        if (d / "rportd").is_file() and (d / "rport").is_file() and os.access(d / "rportd", os.X_OK):
            return d
    return None


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def cpu_seconds(pid: int) -> float:
    import psutil
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


class OpenRport:
    """OpenRPort's rportd, then (``start_clients``) ``n`` of its clients, each a process at nice
    ``nice`` in a process group of its own (as our agent workers). Raises RuntimeError if they
    do not come up (the route is then skipped)."""

    def __init__(self, bin_dir: Path, tmp: Path, n: int, nice: int, timeout: float, *,
                 start_clients: bool = True, clients_dir: Path | None = None) -> None:
        """``clients_dir``: where the clients' data directories go (default: beside rportd's)."""
        self.bin_dir, self.n, self.nice, self.timeout = bin_dir, n, nice, timeout
        self.clients_dir = clients_dir
        self.api: Any = None
        self.server: subprocess.Popen[bytes] | None = None
        self.clients: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self.dir = tmp / "openrport"
        try:
            self._configure()
            self.start_server()
            if start_clients:
                self.start_clients()
                self.wait_connected(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _configure(self) -> None:
        import httpx

        d = self.dir
        (d / "server-data").mkdir(parents=True)
        self.agent_port, self.api_port = free_ports(2)
        self.conf = d / "rportd.conf"
        self.conf.write_text("\n".join([
            "[server]", f'address = "{HOST}:{self.agent_port}"', 'key_seed = "openrport-bench-seed"',
            f'auth = "{AGENT_ID}:{AGENT_PASSWORD}"', f'data_dir = "{d / "server-data"}"',
            "allow_root = true",
            "[api]", f'address = "{HOST}:{self.api_port}"', f'auth = "{API_USER}:{API_PASSWORD}"',
            'jwt_secret = "openrport-bench-jwt-secret-0123456789"',
            "[logging]", 'log_level = "error"', ""]))
        self.api = httpx.Client(base_url=f"http://{HOST}:{self.api_port}/api/v1",
                                auth=(API_USER, API_PASSWORD), timeout=30)

    def start_server(self) -> float:
        """Start (or start again) its rportd; returns the seconds until its API answers."""
        t0 = time.monotonic()
        self.server = self._start([str(self.bin_dir / "rportd"), "-c", str(self.conf)],
                                  self.dir / "rportd.log", 0)
        fp_file = self.dir / "server-data" / "rportd-fingerprint.txt"
        deadline = t0 + self.timeout
        while not (fp_file.exists() and self._status_ok()):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"OpenRPort's rportd did not start (see {self.dir / 'rportd.log'})")
            time.sleep(0.02)
        self.fingerprint = fp_file.read_text().strip()
        return time.monotonic() - t0

    def stop_server(self) -> float:
        """SIGTERM its rportd and wait; returns the seconds it took to exit."""
        t0 = time.monotonic()
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(10)
        return time.monotonic() - t0

    def start_clients(self) -> None:
        self.ids = [f"or-{i}" for i in range(self.n)]
        for cid in self.ids:
            cd = self.dir / cid
            (cd / "data").mkdir(parents=True)
            data = (self.clients_dir / cid) if self.clients_dir is not None else cd / "data"
            data.mkdir(parents=True, exist_ok=True)
            (cd / "rport.conf").write_text("\n".join([
                "[client]", f'server = "{HOST}:{self.agent_port}"',
                f'fingerprint = "{self.fingerprint}"', f'auth = "{AGENT_ID}:{AGENT_PASSWORD}"',
                f'id = "{cid}"', f'data_dir = "{data}"', 'updates_interval = "0s"',
                "[logging]", 'log_level = "error"', ""]))
            self.clients.append(self._start(
                [str(self.bin_dir / "rport"), "--allow-root", "-c", str(cd / "rport.conf")],
                cd / "rport.log", self.nice))

    def wait_connected(self, deadline: float) -> None:
        while self.connected() < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.connected()} of {self.n} OpenRPort clients connected")
            time.sleep(0.2)

    def _start(self, argv: list[str], log: Path, nice: int) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(out)

        def setup() -> None:  # (in the child, after its new session: see lower_priority)
            if nice:
                os.nice(nice)
                try:
                    with open("/proc/self/autogroup", "w") as autogroup:
                        autogroup.write(str(nice))
                except OSError:
                    pass
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=setup,
                                start_new_session=True)

    def _status_ok(self) -> bool:
        try:
            return self.api.get("/status").status_code == 200
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def connected(self) -> int:
        # (its GET /clients pages by 50 by default: the count of the filtered list instead)
        try:
            resp = self.api.get("/clients", params={"filter[connection_state]": "connected",
                                                    "fields[clients]": "id", "page[limit]": "1"})
        except Exception:  # noqa: BLE001 - restarting
            return 0
        return int(resp.json().get("meta", {}).get("count", 0)) if resp.status_code == 200 else 0

    def fan_out(self, command: str, timeout: float, poll_interval: float) -> dict[str, Any]:
        """``command`` on every client at once through its API, polled until all are final."""
        assert self.server is not None
        cpu0 = cpu_seconds(self.server.pid)
        t0 = time.monotonic()
        resp = self.api.post("/commands", json={"command": command, "client_ids": self.ids,
                                                "execute_concurrently": True, "timeout_sec": 30})
        resp.raise_for_status()
        jid = resp.json()["data"]["jid"]
        jobs: list[dict[str, Any]] = []
        t_done = None
        light = LightApi(self.api_port, API_USER, API_PASSWORD, host=HOST)  # (as for ours)
        while time.monotonic() < t0 + timeout:
            # (its GET /commands/{jid} lists the first 100 jobs; this lists up to 1,000)
            try:
                status, answer = light.get(f"/commands/{jid}/jobs", {
                    "page[limit]": "1000", "fields[commands]": "jid,status"})
            except (OSError, http.client.HTTPException):
                status, answer = 0, None
            if status == 200 and isinstance(answer, dict):
                jobs = answer.get("data") or []
                if len(jobs) == len(self.ids) and all(j.get("status") in FINAL for j in jobs):
                    t_done = time.monotonic()
                    break
            time.sleep(poll_interval)
        light.close()
        return {"total_s": None if t_done is None else t_done - t0,
                "successful": sum(1 for j in jobs if j.get("status") == "successful"),
                "server_cpu_s": cpu_seconds(self.server.pid) - cpu0}

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        for proc in [*self.clients, *([self.server] if self.server is not None else [])]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.clients, *([self.server] if self.server is not None else [])]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for out in self._logs:
            out.close()
        self._logs.clear()
