"""Real external services for tests, each started fresh in a temporary directory on loopback
ports chosen at run time, and stopped at the end: PostgreSQL (Debian's ``postgresql`` package)
and NATS (Debian's ``nats-server``).

The pattern for each service: find the binaries (or raise
:class:`ServiceUnavailable`, which the fixtures turn into a skip naming what is missing), make a
private directory the service's user can write, start the process as that user when the tests
run as root (PostgreSQL's ``initdb`` refuses root), wait until it answers, never on a sleep.

Fixtures (in conftest.py): ``postgresql`` (session-scoped server), ``database_url`` (function
scoped: ``""`` for the embedded SQLite, or a fresh PostgreSQL database when parametrised with
:data:`both_databases`).
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest

DATABASES = ["sqlite", "postgresql"]
both_databases = pytest.mark.parametrize("database_url", DATABASES, indirect=True)
"""Run a test on the embedded SQLite and on a fresh PostgreSQL database (skipped, with the
reason, when PostgreSQL is not installed)."""

START_TIMEOUT = 60.0


class ServiceUnavailable(Exception):
    """The service's binaries are not installed: the tests that need it are skipped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, alive: Callable[[], bool],
               log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if not alive():
            raise RuntimeError(f"{what}: the process exited:\n{log()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout}s:\n{log()[-3000:]}")
        time.sleep(0.05)


class ServiceProcess:
    """A service's private directory and process, run as an unprivileged user when we are root."""

    def __init__(self, name: str, user: str = "") -> None:
        self.name = name
        self.account = _account(user) if os.geteuid() == 0 else None
        # Not under pytest's tmp tree: its 0700 directories are closed to the service's user.
        self.dir = Path(tempfile.mkdtemp(prefix=f"rport-test-{name}-"))
        if self.account is not None:
            os.chown(self.dir, self.account.pw_uid, self.account.pw_gid)
        self.log_path = self.dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """A one-off command as the service's user (e.g. initdb); its output is in the error."""
        result = subprocess.run(args, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL, **self._as_user(), **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}")
        return result

    def start(self, args: list[str]) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         **self._as_user())
        finally:
            log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _as_user(self) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
               "TZ": "UTC"}
        if self.account is None:
            return {"env": env}
        env["HOME"] = str(self.dir)
        return {"env": env, "user": self.account.pw_uid, "group": self.account.pw_gid,
                "extra_groups": [], "cwd": str(self.dir)}


def _account(preferred: str) -> pwd.struct_passwd:
    for name in filter(None, (preferred, "nobody")):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceUnavailable(f"no unprivileged user ({preferred or 'nobody'}) to run it as")


# -- PostgreSQL ------------------------------------------------------------------------------------


def postgresql_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (``RPORT_TEST_PG_BINDIR`` overrides)."""
    configured = os.environ.get("RPORT_TEST_PG_BINDIR")
    candidates = [Path(configured)] if configured else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0], reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise ServiceUnavailable("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
                             "the Debian package postgresql, which .ci/run installs)")


class PostgreSQL:
    """A throw-away PostgreSQL cluster: TCP on 127.0.0.1 (a port chosen now), its unix socket in
    its own directory, password authentication (scram-sha-256) for user ``rport``, durability
    switched off (tests only)."""

    USER = "rport"

    def __init__(self) -> None:
        self.bindir = postgresql_bindir()
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self.service = ServiceProcess("postgresql", user="postgres")
        self._names = itertools.count(1)

    @property
    def dir(self) -> Path:
        return self.service.dir

    def start(self) -> "PostgreSQL":
        data, sockets = self.dir / "data", self.dir / "sockets"
        pwfile = self.dir / "password"
        pwfile.write_text(self.password + "\n")
        sockets.mkdir()
        if self.service.account is not None:
            for path in (pwfile, sockets):
                os.chown(path, self.service.account.pw_uid, self.service.account.pw_gid)
        self.service.run([str(self.bindir / "initdb"), "-D", str(data), "-U", self.USER,
                          f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                          "--locale=C", "--no-sync"])
        for attempt in range(3):  # the port chosen may be taken before postgres binds it
            self.port = free_port()
            self.service.start([str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                                "-k", str(sockets), "-c", "listen_addresses=127.0.0.1",
                                "-c", "fsync=off", "-c", "synchronous_commit=off",
                                "-c", "full_page_writes=off", "-c", "max_connections=200",
                                "-c", "shared_buffers=32MB"])
            try:
                wait_until(self._answers, START_TIMEOUT, "PostgreSQL", self.service.alive,
                           self.service.log)
                return self
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self.service.log():
                    raise
        return self

    def _answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def url(self, database: str) -> str:
        return f"postgresql://{self.USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"{prefix}{next(self._names)}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.service.stop(signal.SIGINT)  # "fast" shutdown: rolls back clients, ends at once


# -- NATS ------------------------------------------------------------------------------------------


def nats_server_binary() -> Path:
    """Debian's nats-server (``RPORT_TEST_NATS_SERVER`` overrides)."""
    configured = os.environ.get("RPORT_TEST_NATS_SERVER")
    for candidate in filter(None, (configured, "/usr/sbin/nats-server", shutil.which("nats-server"))):
        if Path(candidate).is_file():
            return Path(candidate)
    raise ServiceUnavailable("nats-server is not installed (the Debian package nats-server, "
                             "which .ci/run installs)")


class Nats:
    """A throw-away nats-server on 127.0.0.1 (a port chosen now), with a user and password,
    run as an unprivileged user when the tests run as root."""

    USER = "rport"

    def __init__(self) -> None:
        self.binary = nats_server_binary()
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self.service = ServiceProcess("nats")

    def start(self) -> "Nats":
        conf = self.service.dir / "nats.conf"
        for attempt in range(3):  # the port chosen may be taken before nats-server binds it
            self.port = free_port()
            conf.write_text(f'listen: "127.0.0.1:{self.port}"\n'
                            f'authorization {{ user: "{self.USER}", password: "{self.password}" }}\n'
                            "max_payload: 1048576\n")
            self.service.start([str(self.binary), "-c", str(conf)])
            try:
                wait_until(self._answers, START_TIMEOUT, "nats-server", self.service.alive,
                           self.service.log)
                return self
            except RuntimeError:
                if attempt == 2 or "address already in use" not in self.service.log():
                    raise
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"nats://{self.USER}:{self.password}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.service.stop(signal.SIGTERM)
