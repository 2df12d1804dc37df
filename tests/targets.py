"""Real targets for tunnel tests: TCP servers in background threads of the test process, an HTTP
file server and a real OpenSSH sshd, all on loopback ports chosen at run time.

Readiness is immediate for the in-process servers (the socket listens before the constructor
returns); sshd is awaited on its "Server listening" log line. Every target is closed by its owner
(the tests use them as context managers or fixtures).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import random
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from .procs import Proc

LOOPBACK = "127.0.0.1"


# -- ports ---------------------------------------------------------------------------------------

def can_listen(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as servers bind: only
    another listener makes this fail, not connections in TIME_WAIT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            return False
    return True


def free_port(lo: int = 2000, hi: int = 30000, host: str = "0.0.0.0", avoid: set[int] | None = None) -> int:
    """A port in [lo, hi] nobody listens on right now (checked by binding and closing)."""
    avoid = avoid or set()
    for _ in range(500):
        port = random.randint(lo, hi)
        if port not in avoid and can_listen(host, port) and (host != "0.0.0.0" or can_listen(LOOPBACK, port)):
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def closed_port() -> int:
    """A loopback port with no listener (bound to 0 by the OS, then closed)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def connect(port: int, host: str = LOOPBACK, source: str | None = None, timeout: float = 10) -> socket.socket:
    """A TCP connection to host:port, optionally from a given source address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(1 << 16, size - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def is_closed_by_peer(sock: socket.socket) -> bool:
    """Reads until the peer closes: True on EOF or reset, False if data arrives instead."""
    try:
        return sock.recv(1 << 16) == b""
    except ConnectionResetError:
        return True


# -- TCP servers in a thread ---------------------------------------------------------------------

class ThreadedTcpServer:
    """A TCP server on host:0 whose connections run ``handle(conn)`` each in a daemon thread.
    ``accepted`` counts connections, ``sources`` records their peer addresses."""

    def __init__(self, handle: Callable[[socket.socket], None], host: str = LOOPBACK) -> None:
        self._handle = handle
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(512)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.sources: list[str] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"{type(self).__name__}-{self.port}")
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.accepted += 1
                self.sources.append(peer[0])
                self._conns.add(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except OSError:
            pass  # the client went away; nothing to report from a target
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _echo(conn: socket.socket) -> None:
    """Echo everything; at EOF from the client, half-close back."""
    while data := conn.recv(1 << 16):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def _sha256(conn: socket.socket) -> None:
    """Read until EOF, then answer with the hex SHA-256 and the byte count, and close."""
    digest, total = hashlib.sha256(), 0
    while data := conn.recv(1 << 18):
        digest.update(data)
        total += len(data)
    conn.sendall(f"{digest.hexdigest()} {total}\n".encode())


class EchoServer(ThreadedTcpServer):
    def __init__(self, host: str = LOOPBACK) -> None:
        super().__init__(_echo, host)


class HashServer(ThreadedTcpServer):
    """Replies ``<sha256 hex> <byte count>\\n`` once the client half-closes."""

    def __init__(self, host: str = LOOPBACK) -> None:
        super().__init__(_sha256, host)


# -- HTTP --------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class HttpFileServer:
    """http.server serving ``root`` on 127.0.0.1:0 in a background thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"http-{self.port}")
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- OpenSSH -----------------------------------------------------------------------------------

SSHD = "/usr/sbin/sshd"


class Sshd:
    """A real OpenSSH sshd on 127.0.0.1:<free port>, accepting ``client_key`` for root."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        host_key = workdir / "ssh_host_ed25519_key"
        self.client_key = workdir / "client_ed25519"
        for key in (host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True, capture_output=True, timeout=30)
        authorized = workdir / "authorized_keys"
        authorized.write_bytes(Path(f"{self.client_key}.pub").read_bytes())
        # sshd refuses to start without its privilege separation directory, which the
        # openssh-server package normally creates at boot (systemd RuntimeDirectory).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.proc: Proc | None = None
        last = ""
        for _ in range(5):  # the port is free when chosen; retry in the unlikely event of a race
            self.port = closed_port()
            config = workdir / "sshd_config"
            config.write_text("\n".join([
                f"ListenAddress {LOOPBACK}:{self.port}",
                f"HostKey {host_key}",
                "PermitRootLogin yes",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                f"AuthorizedKeysFile {authorized}",
                "StrictModes no",
                "UsePAM no",
                "PidFile none",
                "",
            ]))
            proc = Proc([SSHD, "-D", "-e", "-f", str(config)], workdir / "sshd.log")
            try:
                proc.wait_log(rf"Server listening on {LOOPBACK} port {self.port}")
            except RuntimeError:
                last = proc.log()
                proc.stop()
                continue
            self.proc = proc
            return
        raise RuntimeError(f"sshd did not start:\n{last}")

    def ssh_argv(self, port: int, *command: str) -> list[str]:
        return ["ssh", "-p", str(port), "-i", str(self.client_key), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=20", f"root@{LOOPBACK}", *command]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
