"""Real rportd and rport processes for tests, on loopback ports chosen at run time.

Readiness is awaited on log lines and polled endpoints, never on fixed sleeps. Every process is
killed at the end of its test (the fixtures in conftest.py own them).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import httpx
import tomlkit

PY = sys.executable
_API_RE = re.compile(r"API listening on (https?)://(\S+):(\d+)")
_AGENT_RE = re.compile(r"agent endpoint listening on (\S+):(\d+)")
DEFAULT_TIMEOUT = 20.0


def wait_for(predicate: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT, what: str = "condition",
             interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _toml_ready(value: Any) -> Any:
    """Values tomlkit can write: paths and other objects as their text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _toml_ready(v) for k, v in value.items()}
    return str(value)


def write_toml(path: Path, data: dict[str, dict[str, Any]]) -> Path:
    """Write ``{section: {key: value}}`` as a TOML file (tomlkit, the project's TOML library);
    a dotted section name (``plugins.idle``) is a nested table, as in a TOML header."""
    doc: dict[str, Any] = {}
    for section, values in data.items():
        node = doc
        for part in section.split("."):
            node = node.setdefault(part, {})
        node.update(_toml_ready(values))
    path.write_text(tomlkit.dumps(doc))
    return path


class Proc:
    """A child process whose combined output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str | re.Pattern[str], timeout: float = DEFAULT_TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def check() -> re.Match[str] | None:
            if self.proc.poll() is not None and not regex.search(self.log()):
                raise RuntimeError(f"process exited ({self.proc.returncode}) before logging "
                                   f"{regex.pattern!r}:\n{self.log()[-3000:]}")
            return regex.search(self.log())
        return wait_for(check, timeout, f"log line {regex.pattern!r}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Server:
    """A real rportd. ``api`` is an httpx client authenticated as admin:foobaz."""

    def __init__(self, workdir: Path, *, extra: dict[str, dict[str, Any]] | None = None,
                 agent_port: int = 0, api_port: int = 0, key_seed: str = "test-seed") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.config: dict[str, dict[str, Any]] = {
            "server": {"address": f"127.0.0.1:{agent_port}", "auth": "user1:1234",
                       "data_dir": str(self.data_dir), "key_seed": key_seed,
                       "keep_alive": "5s", "keep_alive_timeout": "5s"},
            # Tests try wrong and right credentials back to back: no wait between them (the
            # default of 2 s is tested in test_auth_jwt).
            "api": {"address": f"127.0.0.1:{api_port}", "auth": "admin:foobaz",
                    "user_login_wait": "0s"},
            "logging": {"log_level": "debug"},
        }
        for section, values in (extra or {}).items():
            self.config.setdefault(section, {}).update(values)
        self.proc: Proc | None = None
        self.api_url = ""
        self.agent_port = 0
        self.api: httpx.Client | None = None
        self.starts = 0

    @property
    def conf_path(self) -> Path:
        return self.workdir / "rportd.conf"

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> "Server":
        write_toml(self.conf_path, self.config)
        self.starts += 1
        self.proc = Proc([PY, "-m", "rport.core.cli", "-c", str(self.conf_path)],
                         self.workdir / f"rportd-{self.starts}.log")
        api = self.proc.wait_log(_API_RE, timeout)
        agent = _AGENT_RE.search(self.proc.log())
        assert agent, self.proc.log()
        self.agent_port = int(agent.group(2))
        self.api_url = f"{api.group(1)}://{api.group(2)}:{api.group(3)}"
        # Restarts keep the same ports, as a real deployment would.
        self.config["server"]["address"] = f"127.0.0.1:{self.agent_port}"
        self.config["api"]["address"] = f"127.0.0.1:{api.group(3)}"
        if self.api is not None:
            self.api.close()
        self.api = httpx.Client(base_url=self.api_url + "/api/v1", auth=("admin", "foobaz"),
                                timeout=10, verify=False)
        return self

    @property
    def fingerprint(self) -> str:
        return (self.data_dir / "rportd-fingerprint.txt").read_text().strip()

    @property
    def agent_url(self) -> str:
        return f"127.0.0.1:{self.agent_port}"

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("rportd-*.log")))

    def client(self, client_id: str) -> dict[str, Any] | None:
        assert self.api is not None
        resp = self.api.get(f"/clients/{client_id}")
        return resp.json()["data"] if resp.status_code == 200 else None

    def wait_connected(self, client_id: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        return wait_for(lambda: (c := self.client(client_id)) and c["connection_state"] == "connected" and c,
                        timeout, f"client {client_id} to connect")

    def wait_disconnected(self, client_id: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        return wait_for(lambda: (c := self.client(client_id)) and c["connection_state"] == "disconnected" and c,
                        timeout, f"client {client_id} to disconnect")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = self.proc.stop(sig) if self.proc else 0
        if self.api is not None:
            self.api.close()
            self.api = None
        return code


@contextlib.contextmanager
def running(server: Server, agents: list["Agent"]) -> Iterator[Server]:
    """A started server with its agents: waits until every agent is connected, and stops them
    all, then the server, at the end (also when waiting fails)."""
    try:
        for agent in agents:
            server.wait_connected(agent.id)
        yield server
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


class Agent:
    """A real rport agent process."""

    def __init__(self, workdir: Path, server: Server, client_id: str, *, args: Iterable[str] = (),
                 auth: str = "user1:1234", fingerprint: str | None = "", config: dict | None = None,
                 env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.id = client_id
        self.server = server
        argv = [PY, "-m", "rport.agent.cli", "--data-dir", str(workdir / "data"), "--log-level", "debug"]
        if config is not None:
            conf = {"client": {"server": server.agent_url, "auth": auth, "id": client_id,
                               "fingerprint": server.fingerprint}, "connection": {
                "min_retry_interval": "0.2s", "max_retry_interval": "2s"}}
            for section, values in config.items():
                conf.setdefault(section, {}).update(values)
            argv += ["-c", str(write_toml(workdir / "rport.conf", conf))]
        else:
            conf_path = write_toml(workdir / "rport.conf", {"connection": {
                "min_retry_interval": "0.2s", "max_retry_interval": "2s"}, "client": {}})
            argv += ["-c", str(conf_path), "--id", client_id, "--auth", auth]
            if fingerprint is not None:
                argv += ["--fingerprint", fingerprint or server.fingerprint]
            argv += [*args, server.agent_url]
        self.proc = Proc(argv, workdir / "rport.log", env=env)

    def log(self) -> str:
        return self.proc.log()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.proc.stop(sig)
