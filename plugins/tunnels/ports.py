"""The pool of server ports tunnels may use: ``used_ports`` minus ``excluded_ports``."""

from __future__ import annotations

import errno
import random
import socket
from typing import Iterable


def parse_ranges(specs: Iterable[str], key: str) -> set[int]:
    """``["20000-30000", "4000"]`` → the set of ports; a bad entry raises ValueError naming key."""
    ports: set[int] = set()
    for spec in specs:
        lo, _, hi = str(spec).strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f'{key}: invalid port range "{spec}"') from None
        if not 0 < a <= b < 65536:
            raise ValueError(f'{key}: invalid port range "{spec}"')
        ports.update(range(a, b + 1))
    return ports


def port_free(host: str, port: int) -> bool:
    """Whether the OS would let us listen on host:port now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class PortPool:
    def __init__(self, used: Iterable[str], excluded: Iterable[str]) -> None:
        self.allowed = parse_ranges(used, "server.used_ports") - parse_ranges(excluded, "server.excluded_ports")
        if not self.allowed:
            raise ValueError("server.used_ports: no port is left once excluded_ports are removed")

    def __contains__(self, port: int) -> bool:
        return port in self.allowed

    def pick(self, host: str, taken: set[int], attempts: int = 64) -> int | None:
        """A random allowed port, not taken by our tunnels, free on the OS; None if none found."""
        candidates = self.allowed - taken
        if not candidates:
            return None
        sample = random.sample(sorted(candidates), min(attempts, len(candidates)))
        for port in sample:
            if port_free(host, port):
                return port
        return None
