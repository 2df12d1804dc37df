"""Attackers for the hardening tests: plain sockets that connect and then say nothing (or little).

Several source addresses come from the loopback network (Linux routes all of 127.0.0.0/8 to the
loopback device), so a test can play many hosts.
"""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Iterator

import pytest

TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def enough_fds() -> Iterator[None]:
    """Attacks hold over a thousand sockets in the test process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def idle_connections(port: int, sources: list[str]) -> Iterator[list[socket.socket]]:
    """One TCP connection to ``port`` from each address in ``sources``, in order; none sends a
    byte. Closed at the end."""
    socks: list[socket.socket] = []
    try:
        for source in sources:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((source, 0))
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)  # is_open() peeks without waiting
        yield socks
    finally:
        for sock in socks:
            sock.close()


def is_open(sock: socket.socket) -> bool:
    """The server has neither closed nor reset the connection (nor sent anything on it)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def is_closed(sock: socket.socket) -> bool:
    return not is_open(sock)


def spread(n: int, per_address: int, net: str = "127.0.1") -> list[str]:
    """``n`` source addresses, ``per_address`` connections from each."""
    return [f"{net}.{1 + i // per_address}" for i in range(n)]


